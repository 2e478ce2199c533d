//! Numbers to and from decimal text as core does it (`str::parse::<f64>`, `{}`, `{:?}`, `{:.N}`), without
//! core's float code in the browser app.
//!
//! Why: core's parser (Eisel-Lemire) carries a 10 KB table of powers of five that gzip cannot shrink, and its
//! printers (Grisu with a Dragon fallback, shortest and exact) another 15 KB of code: together a tenth of the app's
//! budget. In wasm these functions use a small exact method instead: big integers of a few hundred bytes. Reading
//! takes the exact fast path when the digits and the power of ten both fit a double (nearly every number a person
//! or a device writes), and otherwise corrects an estimate by comparing the decimal value, exactly, with the
//! halfway points between doubles. Writing expands the double's exact decimal value and keeps the fewest digits
//! that read back as it (the nearer candidate, the upper at a tie, as core does). Slower than core's (micro-
//! seconds), so native builds, where size does not matter and the fleet renders many messages, call core. The
//! tests hold the small method to core's results on both targets.

// Native builds call core; the small method is compiled there for its tests.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::cmp::Ordering;

/// `s` as `str::parse::<f64>` reads it: an optional sign, then digits with an optional `.` (at least one digit)
/// and an optional exponent (`e`/`E`, optional sign, digits), or `inf`, `infinity`, `nan` in any case.
/// `None` where that parser fails. One difference, on purpose: core saturates the exponent of a number with more
/// than 65 536 digits (`"1"` × 10⁶ then `e-1000300` reads as infinity there); here the value is read exactly.
pub fn parse_f64(s: &str) -> Option<f64> {
    #[cfg(target_arch = "wasm32")]
    return parse(s);
    #[cfg(not(target_arch = "wasm32"))]
    return s.parse().ok();
}

/// `x` as `{}` (`Display`) writes it: the fewest digits that read back as `x`, never an exponent (`0.0001`,
/// `1000000000000000000000`, `-0`, `inf`, `NaN`).
pub fn display_f64(x: f64) -> String {
    #[cfg(target_arch = "wasm32")]
    return display(x);
    #[cfg(not(target_arch = "wasm32"))]
    return format!("{x}");
}

/// `x` as `{:?}` (`Debug`) writes it, which is how JSON numbers are written: like [`display_f64`] with at least
/// one decimal (`1.0`), and an exponent below 1e-4 and from 1e16 on (`1e16`, `2.5e-7`).
pub fn debug_f64(x: f64) -> String {
    #[cfg(target_arch = "wasm32")]
    return debug(x);
    #[cfg(not(target_arch = "wasm32"))]
    return format!("{x:?}");
}

/// `x` as `{:.N}` writes it: exactly `decimals` decimals, the exact binary value rounded half to even.
pub fn fixed_f64(x: f64, decimals: usize) -> String {
    #[cfg(target_arch = "wasm32")]
    return fixed(x, decimals);
    #[cfg(not(target_arch = "wasm32"))]
    return format!("{x:.decimals$}");
}

/// [`parse_f64`], small.
fn parse(s: &str) -> Option<f64> {
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

/// Significant digits kept when reading: the exact decimal value of a halfway point between two doubles has at
/// most 767, so the digits after these only tell whether the number is above the kept ones ([`decimal`]). Text
/// from a peer (a JSON body with a number of 60 000 digits) thus costs time linear in its length, not quadratic.
const MAX_DIGITS: usize = 800;

/// Unsigned decimal text: the value of its digits times a power of ten, correctly rounded.
fn decimal(b: &[u8]) -> Option<f64> {
    let mut digits: Vec<u8> = Vec::new();
    let mut exp: i64 = 0;
    let mut seen = false;
    // A nonzero digit beyond MAX_DIGITS: the value is above what the kept digits say.
    let mut sticky = false;
    let mut i = 0;
    let mut point = false;
    while i < b.len() {
        match b[i] {
            c @ b'0'..=b'9' => {
                seen = true;
                // Leading zeros carry no value; a zero after the point still moves it.
                if c == b'0' && digits.is_empty() {
                    if point {
                        exp -= 1;
                    }
                } else if digits.len() < MAX_DIGITS {
                    digits.push(c - b'0');
                    if point {
                        exp -= 1;
                    }
                } else {
                    // Dropped: only whether it is nonzero counts; before the point its place still scales the value.
                    sticky |= c != b'0';
                    if !point {
                        exp = exp.saturating_add(1);
                    }
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
    if sticky {
        // One more digit, nonzero: strictly between the kept digits and the next value they can spell, which is
        // all the rounding needs to know.
        digits.push(1);
        exp -= 1;
    }
    Some(from_digits(digits, exp))
}

/// `digits × 10^exp` (digits without leading zeros), correctly rounded.
fn from_digits(mut digits: Vec<u8>, mut exp: i64) -> f64 {
    // Trailing zeros only scale the power of ten.
    while digits.last() == Some(&0) {
        digits.pop();
        exp += 1;
    }
    if digits.is_empty() {
        return 0.0;
    }
    let n = digits.len() as i64;
    // The value is below 10^(n+exp) and at least 10^(n+exp-1).
    if n + exp > 310 {
        return f64::INFINITY;
    }
    if n + exp < -324 {
        return 0.0;
    }
    let head = digits.len().min(19);
    let w = digits[..head].iter().fold(0u64, |w, &d| w * 10 + u64::from(d));
    let e = exp + (digits.len() - head) as i64;
    if head == digits.len() && w <= 1 << 53 && (-22..=22).contains(&e) {
        // Both exact: one correctly rounded operation.
        let p = pow10(e.unsigned_abs() as u32);
        return if e < 0 { w as f64 / p } else { w as f64 * p };
    }
    correct(&digits, exp, estimate(w, e))
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

/// [`display_f64`], small.
fn display(x: f64) -> String {
    special(x, |a, out| {
        if a == 0.0 {
            return out.push('0');
        }
        let (d, point) = shortest(a);
        positional(out, &d, point, 0);
    })
}

/// [`debug_f64`], small.
fn debug(x: f64) -> String {
    special(x, |a, out| {
        if a != 0.0 && !(1e-4..1e16).contains(&a) {
            let (d, point) = shortest(a);
            out.push(char::from(b'0' + d[0]));
            if d.len() > 1 {
                out.push('.');
                out.extend(d[1..].iter().map(|&c| char::from(b'0' + c)));
            }
            out.push('e');
            out.push_str(&(point - 1).to_string());
        } else if a == 0.0 {
            out.push_str("0.0");
        } else {
            let (d, point) = shortest(a);
            positional(out, &d, point, 1);
        }
    })
}

/// [`fixed_f64`], small.
fn fixed(x: f64, decimals: usize) -> String {
    special(x, |a, out| {
        let (d, point) = if a == 0.0 { (Vec::new(), 0) } else { exact(a) };
        // Digits kept: those before the point and `decimals` after it.
        let keep = point + decimals as i64;
        let mut kept: Vec<u8> = (0..keep.max(0) as usize).map(|i| d.get(i).copied().unwrap_or(0)).collect();
        let rest = d.get(keep.max(0) as usize..).unwrap_or(&[]);
        let up = if keep < 0 {
            false
        } else {
            match rest.first() {
                Some(&r) if r > 5 => true,
                Some(5) => rest[1..].iter().any(|&r| r != 0) || kept.last().is_some_and(|l| l % 2 == 1),
                _ => false,
            }
        };
        let mut point = point;
        if up && !increment(&mut kept) {
            kept.insert(0, 1);
            point += 1;
        }
        if keep < 0 {
            point = -(decimals as i64);
        }
        // `kept` ends at the last decimal; pad it to reach the point.
        let int_len = point.max(0) as usize;
        let digits: Vec<u8> =
            if point < 0 { std::iter::repeat_n(0, (-point) as usize).chain(kept).collect() } else { kept };
        let (int, frac) = digits.split_at(int_len.min(digits.len()));
        if int.is_empty() {
            out.push('0');
        }
        out.extend(int.iter().map(|&c| char::from(b'0' + c)));
        if decimals > 0 {
            out.push('.');
            out.extend(frac.iter().map(|&c| char::from(b'0' + c)));
            out.extend(std::iter::repeat_n('0', decimals - frac.len()));
        }
    })
}

/// The sign, `NaN` and `inf`; `finite` writes the magnitude of anything else.
fn special(x: f64, finite: impl FnOnce(f64, &mut String)) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    let mut out = String::new();
    if x.is_sign_negative() {
        out.push('-');
    }
    if x.is_infinite() {
        out.push_str("inf");
    } else {
        finite(x.abs(), &mut out);
    }
    out
}

/// Digits `d` (value 0.d × 10^point) without an exponent, with at least `min_decimals` decimals.
fn positional(out: &mut String, d: &[u8], point: i64, min_decimals: usize) {
    let digit = |c: &u8| char::from(b'0' + c);
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.extend(d.iter().map(digit));
        return;
    }
    let p = point as usize;
    out.extend(d[..p.min(d.len())].iter().map(digit));
    out.extend(std::iter::repeat_n('0', p.saturating_sub(d.len())));
    if p < d.len() {
        out.push('.');
        out.extend(d[p..].iter().map(digit));
    } else if min_decimals > 0 {
        out.push('.');
        out.extend(std::iter::repeat_n('0', min_decimals));
    }
}

/// Adds one unit in the last digit; false if it carried out of the first (the digits are then all zeros).
fn increment(d: &mut [u8]) -> bool {
    for c in d.iter_mut().rev() {
        if *c < 9 {
            *c += 1;
            return true;
        }
        *c = 0;
    }
    false
}

/// All the decimal digits of a positive finite `a`: `(d, point)` with `a` = 0.d × 10^point, no zeros at the
/// ends of `d`.
fn exact(a: f64) -> (Vec<u8>, i64) {
    let bits = a.to_bits();
    let (biased, fraction) = ((bits >> 52) as i64, bits & ((1 << 52) - 1));
    let (mant, e2) = if biased == 0 { (fraction, -1074) } else { (fraction | 1 << 52, biased - 1075) };
    let mut n = Big::default();
    n.mul_add(1 << 31, (mant >> 31) as u32);
    n.mul_add(1 << 31, (mant & ((1 << 31) - 1)) as u32);
    // a = mant × 2^e2; below 1 that is mant × 5^-e2 / 10^-e2.
    let scale = if e2 >= 0 {
        n.shl(e2 as u32);
        0
    } else {
        for _ in 0..-e2 {
            n.mul_add(5, 0);
        }
        -e2
    };
    let mut d = n.decimal();
    let point = d.len() as i64 - scale;
    while d.last() == Some(&0) {
        d.pop();
    }
    (d, point)
}

/// The fewest digits that read back as the positive finite `a`, the nearest such if two: `(d, point)` as in
/// [`exact`].
///
/// If a candidate of `p` digits reads back, one of `p + 1` does too (the truncation and its increment there lie
/// between `a` and those of `p` digits), so the fewest is found by bisection over 1..=17 (17 digits always
/// read back): some five tries of two exact reads each, not up to seventeen. A double near 1e-180 cost 270 µs
/// natively before, a peer's JSON body of such numbers thus seconds of rendering.
fn shortest(a: f64) -> (Vec<u8>, i64) {
    let (d, point) = exact(a);
    // The candidate of `p` digits that reads back as `a`, if any.
    let digits = |p: usize| -> Option<(Vec<u8>, i64)> {
        if p >= d.len() {
            return Some((d.clone(), point));
        }
        let down = d[..p].to_vec();
        let mut up = down.clone();
        let up_point = if increment(&mut up) { point } else { point + 1 };
        if !up.is_empty() && up[0] == 0 {
            up[0] = 1;
        }
        let reads = |digits: &[u8], pt: i64| {
            #[cfg(test)]
            READS.with(|n| n.set(n.get() + 1));
            from_digits(digits.to_vec(), pt - digits.len() as i64) == a
        };
        let (down_ok, up_ok) = (reads(&down, point), reads(&up, up_point));
        if !(down_ok || up_ok) {
            return None;
        }
        // Both read back: the nearer one, the upper one at a tie (as core does).
        let nearer_up = d[p] >= 5;
        let (mut r, rp) = if up_ok && (!down_ok || nearer_up) { (up, up_point) } else { (down, point) };
        while r.last() == Some(&0) {
            r.pop();
        }
        Some((r, rp))
    };
    let (mut lo, mut hi) = (1, d.len().min(17));
    let mut best = None;
    while lo < hi {
        let mid = (lo + hi) / 2;
        match digits(mid) {
            Some(found) => {
                best = Some((mid, found));
                hi = mid;
            }
            None => lo = mid + 1,
        }
    }
    // `lo` is the fewest; its candidate is `best` when it was tried, else tried now (all digits if none reads back).
    match best {
        Some((p, found)) if p == lo => found,
        _ => digits(lo).unwrap_or((d.clone(), point)),
    }
}

// Exact reads made by `shortest` (its cost), for the tests.
#[cfg(test)]
thread_local! {
    static READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// `x` kept within `lo..=hi` as `f64::clamp` does, without its panic (and the float printing code its message
/// pulls in) when `lo > hi`: then `lo` wins below and `hi` above.
pub fn clamp_f64(x: f64, lo: f64, hi: f64) -> f64 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
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

    /// Divides by `d`, returning the remainder.
    fn div_rem(&mut self, d: u32) -> u32 {
        let mut rem = 0u64;
        for l in self.0.iter_mut().rev() {
            let t = (rem << 32) | u64::from(*l);
            *l = (t / u64::from(d)) as u32;
            rem = t % u64::from(d);
        }
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
        rem as u32
    }

    /// The decimal digits, most significant first (none for zero).
    fn decimal(mut self) -> Vec<u8> {
        let mut d = Vec::new();
        while !self.0.is_empty() {
            let mut chunk = self.div_rem(1_000_000_000);
            for _ in 0..9 {
                d.push((chunk % 10) as u8);
                chunk /= 10;
            }
        }
        while d.last() == Some(&0) {
            d.pop();
        }
        d.reverse();
        d
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
        let ours = parse(s);
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

    fn prints_like_core(x: f64) {
        assert_eq!(display(x), format!("{x}"), "{x:?}");
        assert_eq!(debug(x), format!("{x:?}"), "{x:?}");
        for n in [0, 1, 2, 3, 5, 9, 17, 20] {
            assert_eq!(fixed(x, n), format!("{x:.n$}"), "{x:?} .{n}");
        }
    }

    #[test]
    fn long_numbers_keep_their_rounding() {
        // Exactly halfway between two doubles, then a nonzero digit far beyond MAX_DIGITS: it rounds up.
        same(&format!("9007199254740993{}1", "0".repeat(900)));
        same(&format!("9007199254740993.{}1", "0".repeat(900)));
        same(&format!("9007199254740993{}", "0".repeat(900)));
        // Many digits scaled back down.
        same(&format!("1{}e-5000", "0".repeat(5000)));
        same(&format!("0.{}1e5001", "0".repeat(5000)));
        same(&format!("{}e-60000", "7".repeat(60_000)));
        same(&format!("2.4703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125{}1e-324", "0".repeat(300)));
    }

    #[test]
    fn clamps_like_core() {
        for x in [-1.0, 0.0, 0.5, 1.0, 2.0, f64::NEG_INFINITY, f64::INFINITY] {
            assert_eq!(clamp_f64(x, 0.0, 1.0), x.clamp(0.0, 1.0));
        }
        assert!(clamp_f64(f64::NAN, 0.0, 1.0).is_nan());
    }

    #[test]
    fn prints_edge_cases_like_core() {
        for x in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            7_538_314_949_062_075.0 / 4.0,
            6_357_798_075_163_093.0 / 4.0,
            0.25,
            1.5,
            2.5,
            0.125,
            0.05,
            0.15,
            9.5,
            99.5,
            0.95,
            0.995,
            1e-4,
            9.9e-5,
            1e16,
            9.999999999999998e15,
            1e21,
            1e22,
            1e23,
            0.1,
            0.3,
            1.0 / 3.0,
            123.456,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            2.5e-7,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            9007199254740993.0,
            4.35,
            0.045,
            1234.5,
        ] {
            prints_like_core(x);
        }
        // Powers of two, where the double below is nearer than the one above, and their neighbours.
        for k in (1..2046u64).step_by(7) {
            let bits = k << 52;
            for x in [bits - 1, bits, bits + 1].map(f64::from_bits) {
                assert_eq!(display(x), format!("{x}"));
                assert_eq!(debug(x), format!("{x:?}"));
            }
        }
    }

    #[test]
    fn the_shortest_digits_take_few_exact_reads() {
        // 17 digits, 16 and a few: the fewest are bisected, not searched one length at a time.
        for x in [0.1 + 0.2, 1.0 / 3.0, f64::from_bits(426 << 52 | 0x000f_ffff_ffff_fff3), 2.0f64.powi(-1000) * 3.0] {
            READS.with(|n| n.set(0));
            assert_eq!(display(x), format!("{x}"));
            let reads = READS.with(|n| n.get());
            assert!(reads <= 12, "{x:?}: {reads} exact reads");
        }
    }

    proptest! {
        #[test]
        fn long_digit_strings_read_like_core(
            head in "[1-9][0-9]{0,20}",
            middle in prop::sample::select(vec![0usize, 780, 799, 800, 801, 1500]),
            fill in prop::sample::select(vec!['0', '5', '9']),
            tail in "[0-9]{0,3}",
            e in -400i32..400,
        ) {
            same(&format!("{head}{}{tail}e{e}", fill.to_string().repeat(middle)));
            same(&format!("{head}.{}{tail}e{e}", fill.to_string().repeat(middle)));
        }

        #[test]
        fn prints_any_double_like_core(bits in any::<u64>()) {
            prints_like_core(f64::from_bits(bits));
        }

        #[test]
        fn prints_short_decimals_like_core(m in -100_000i64..100_000, e in -8i32..8) {
            prints_like_core(m as f64 * 10f64.powi(e));
        }

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
