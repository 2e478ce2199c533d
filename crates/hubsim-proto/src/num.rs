//! Decimal text to `f64`, as `str::parse::<f64>` does it, without core's parser.
//!
//! Why: core's parser (Eisel-Lemire) carries a 10 KB table of powers of five that gzip cannot shrink, a
//! fifteenth of the browser app's budget. [`parse_f64`] takes the exact fast path when the digits and the power
//! of ten both fit a double (nearly every number a person or a device writes), and otherwise starts from an
//! estimate and corrects it by comparing the decimal value, exactly, with the halfway points between doubles
//! (big integers of a few hundred bytes). The result is the same correctly rounded double, ties to even.

use std::cmp::Ordering;

/// `s` as `str::parse::<f64>` reads it: an optional sign, then digits with an optional `.` (at least one digit)
/// and an optional exponent (`e`/`E`, optional sign, digits), or `inf`, `infinity`, `nan` in any case.
/// `None` where that parser fails.
pub fn parse_f64(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let (neg, b) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let v = if b.eq_ignore_ascii_case(b"inf") || b.eq_ignore_ascii_case(b"infinity") {
        f64::INFINITY
    } else if b.eq_ignore_ascii_case(b"nan") {
        f64::NAN
    } else {
        decimal(b)?
    };
    Some(if neg { -v } else { v })
}

/// Unsigned decimal text: the value of its digits times a power of ten, correctly rounded.
fn decimal(b: &[u8]) -> Option<f64> {
    let mut digits: Vec<u8> = Vec::new();
    let mut exp: i64 = 0;
    let mut seen = false;
    let mut i = 0;
    let mut point = false;
    while i < b.len() {
        match b[i] {
            c @ b'0'..=b'9' => {
                seen = true;
                // Leading zeros carry no value; a zero after the point still moves it.
                if c != b'0' || !digits.is_empty() {
                    digits.push(c - b'0');
                }
                if point {
                    exp -= 1;
                }
            }
            b'.' if !point => point = true,
            _ => break,
        }
        i += 1;
    }
    if !seen {
        return None;
    }
    if i < b.len() {
        if !matches!(b[i], b'e' | b'E') {
            return None;
        }
        i += 1;
        let neg = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        if i == b.len() {
            return None;
        }
        let mut e: i64 = 0;
        for &c in &b[i..] {
            if !c.is_ascii_digit() {
                return None;
            }
            // Saturates far beyond any double; the digits' own count is added below.
            e = (e * 10 + i64::from(c - b'0')).min(1 << 40);
        }
        exp += if neg { -e } else { e };
    }
    // Trailing zeros only scale the power of ten.
    while digits.last() == Some(&0) {
        digits.pop();
        exp += 1;
    }
    if digits.is_empty() {
        return Some(0.0);
    }
    let n = digits.len() as i64;
    // The value is below 10^(n+exp) and at least 10^(n+exp-1).
    if n + exp > 310 {
        return Some(f64::INFINITY);
    }
    if n + exp < -324 {
        return Some(0.0);
    }
    let head = digits.len().min(19);
    let w = digits[..head].iter().fold(0u64, |w, &d| w * 10 + u64::from(d));
    let e = exp + (digits.len() - head) as i64;
    if head == digits.len() && w <= 1 << 53 && (-22..=22).contains(&e) {
        // Both exact: one correctly rounded operation.
        let p = pow10(e.unsigned_abs() as u32);
        return Some(if e < 0 { w as f64 / p } else { w as f64 * p });
    }
    Some(correct(&digits, exp, estimate(w, e)))
}

/// 10^k for k up to 22, exact.
fn pow10(k: u32) -> f64 {
    (0..k).fold(1.0, |p, _| p * 10.0)
}

/// `w × 10^e` to within some units in the last place, kept finite.
fn estimate(w: u64, mut e: i64) -> f64 {
    let mut x = w as f64;
    while e > 0 {
        let k = e.min(22);
        x *= pow10(k as u32);
        e -= k;
    }
    while e < 0 {
        let k = (-e).min(22);
        x /= pow10(k as u32);
        e += k;
    }
    x.min(f64::MAX)
}

/// The double nearest to `digits × 10^exp`, found by stepping from `x` one unit at a time while the exact value
/// lies beyond a halfway point.
fn correct(digits: &[u8], exp: i64, mut x: f64) -> f64 {
    let mut value = Big::default();
    for &d in digits {
        value.mul_add(10, u32::from(d));
    }
    loop {
        match compare(&value, exp, x) {
            Ordering::Greater => {
                x = f64::from_bits(x.to_bits() + 1);
                if x.is_infinite() {
                    return x;
                }
                continue;
            }
            Ordering::Equal => return if x.to_bits() & 1 == 0 { x } else { f64::from_bits(x.to_bits() + 1) },
            Ordering::Less => {}
        }
        if x == 0.0 {
            return x;
        }
        let below = f64::from_bits(x.to_bits() - 1);
        match compare(&value, exp, below) {
            Ordering::Less => x = below,
            Ordering::Equal => return if below.to_bits() & 1 == 0 { below } else { x },
            Ordering::Greater => return x,
        }
    }
}

/// `value × 10^exp` against the halfway point between the finite `x` and the next double up.
fn compare(value: &Big, exp: i64, x: f64) -> Ordering {
    let bits = x.to_bits();
    let (biased, fraction) = ((bits >> 52) as i64, bits & ((1 << 52) - 1));
    let (mant, e2) = if biased == 0 { (fraction, -1074) } else { (fraction | 1 << 52, biased - 1075) };
    // Halfway: (2 mant + 1) × 2^(e2 - 1).
    let half = 2 * mant + 1;
    let mut left = value.clone();
    let mut right = Big::default();
    right.mul_add(1 << 31, (half >> 31) as u32);
    right.mul_add(1 << 31, (half & ((1 << 31) - 1)) as u32);
    if exp >= 0 {
        left.mul_pow10(exp as u32);
    } else {
        right.mul_pow10((-exp) as u32);
    }
    let k = e2 - 1;
    if k >= 0 {
        right.shl(k as u32);
    } else {
        left.shl((-k) as u32);
    }
    left.cmp(&right)
}

/// An unsigned big integer, 32-bit limbs, least significant first, no high zero limbs.
#[derive(Clone, Default)]
struct Big(Vec<u32>);

impl Big {
    /// self = self × m + a
    fn mul_add(&mut self, m: u32, a: u32) {
        let mut carry = u64::from(a);
        for l in &mut self.0 {
            let t = u64::from(*l) * u64::from(m) + carry;
            *l = t as u32;
            carry = t >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    fn mul_pow10(&mut self, mut k: u32) {
        while k > 0 {
            let step = k.min(9);
            self.mul_add(10u32.pow(step), 0);
            k -= step;
        }
    }

    fn shl(&mut self, k: u32) {
        if self.0.is_empty() {
            return;
        }
        let (limbs, bits) = ((k / 32) as usize, k % 32);
        if bits > 0 {
            let mut carry = 0;
            for l in &mut self.0 {
                let t = (u64::from(*l) << bits) | carry;
                *l = t as u32;
                carry = t >> 32;
            }
            if carry > 0 {
                self.0.push(carry as u32);
            }
        }
        self.0.splice(0..0, std::iter::repeat_n(0, limbs));
    }

    fn cmp(&self, other: &Big) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(s: &str) {
        let ours = parse_f64(s);
        let core = s.parse::<f64>().ok();
        match (ours, core) {
            (Some(a), Some(b)) => assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{s}: {a} != {b}"),
            (a, b) => assert_eq!(a, b, "{s}"),
        }
    }

    #[test]
    fn agrees_with_core_on_edge_cases() {
        for s in [
            "0", "-0", "+0", "0.0", ".5", "5.", ".", "", "-", "+", "e5", "1e", "1e+", "1e-", "1.5e3", "1E3", "1e-3",
            "00012.3400", "0.000", "inf", "-INF", "Infinity", "nan", "NaN", "-nan", "infin", "1.2.3", "1e5.0", " 1",
            "1 ", "0x10", "1_000", "1e400", "1e-400", "2.2250738585072014e-308", "2.2250738585072011e-308",
            "4.9406564584124654e-324", "2.4703282292062327e-324", "2.4703282292062328e-324",
            "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308", "9007199254740993",
            "9007199254740992.5", "0.1", "0.30000000000000004", "123456789012345678901234567890", "1e23", "8.5e-323",
            "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497791.9999999999999999999999999999999999999999999999999999999999999999999999",
            "0.00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000024703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125",
        ] {
            same(s);
        }
    }

    proptest! {
        #[test]
        fn agrees_with_core_on_any_double(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            same(&x.to_string());
            same(&format!("{x:e}"));
            same(&format!("{x:.3e}"));
            same(&format!("{x:.25e}"));
        }

        #[test]
        fn agrees_with_core_on_any_decimal(m in "[0-9]{1,30}", f in "[0-9]{0,30}", e in -400i32..400) {
            same(&format!("{m}.{f}e{e}"));
            same(&format!("{m}e{e}"));
            same(&format!("-{m}.{f}"));
        }
    }
}
