//! Time formats of the built-in variables, computed from a Unix time given by the caller (no clock).
//!
//! Iot-Telemetry-Simulator formats with .NET's round-trip specifier `"o"`: seven fractional digits,
//! `Z` for UTC (`2019-11-19T10:10:11.5091350Z`) and the offset for local time
//! (`2019-11-19T11:10:11.5091350+01:00`). Our clock input has millisecond resolution, so the last four
//! digits are always `0`. .NET ticks count 100 ns intervals since 0001-01-01T00:00:00.

/// .NET ticks at the Unix epoch (1970-01-01T00:00:00Z).
pub const UNIX_EPOCH_TICKS: i64 = 621_355_968_000_000_000;

/// (year, month 1-12, day 1-31) of a day number counted from 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn push_num(out: &mut String, n: i64, width: usize) {
    let s = n.unsigned_abs().to_string();
    if n < 0 {
        out.push('-');
    }
    for _ in s.len()..width {
        out.push('0');
    }
    out.push_str(&s);
}

/// `YYYY-MM-DDTHH:MM:SS` + `.fffffff` (7 digits, .NET) or `.fff` (3 digits) of a wall-clock time in ms.
fn push_datetime(out: &mut String, wall_ms: i64, seven_digits: bool) {
    let days = wall_ms.div_euclid(86_400_000);
    let ms_of_day = wall_ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    push_num(out, y, 4);
    out.push('-');
    push_num(out, mo.into(), 2);
    out.push('-');
    push_num(out, d.into(), 2);
    out.push('T');
    push_num(out, ms_of_day / 3_600_000, 2);
    out.push(':');
    push_num(out, ms_of_day / 60_000 % 60, 2);
    out.push(':');
    push_num(out, ms_of_day / 1000 % 60, 2);
    out.push('.');
    push_num(out, ms_of_day % 1000, 3);
    if seven_digits {
        out.push_str("0000");
    }
}

/// UTC in .NET `"o"` form: `2019-11-19T10:10:11.5090000Z`.
pub fn iso_utc(unix_ms: i64) -> String {
    let mut s = String::with_capacity(28);
    push_datetime(&mut s, unix_ms, true);
    s.push('Z');
    s
}

/// UTC with milliseconds: `2019-11-19T10:10:11.509Z` (the common JavaScript/ISO 8601 form).
pub fn iso_utc_ms(unix_ms: i64) -> String {
    let mut s = String::with_capacity(24);
    push_datetime(&mut s, unix_ms, false);
    s.push('Z');
    s
}

/// Local time in .NET `"o"` form with its offset: `2019-11-19T11:10:11.5090000+01:00`.
/// `offset_min` is minutes east of UTC (UTC+01:00 is `60`; JavaScript's `getTimezoneOffset()` is the negation).
pub fn iso_local(unix_ms: i64, offset_min: i32) -> String {
    let mut s = String::with_capacity(33);
    push_datetime(&mut s, unix_ms.saturating_add(i64::from(offset_min) * 60_000), true);
    s.push(if offset_min < 0 { '-' } else { '+' });
    let off = i64::from(offset_min.unsigned_abs());
    push_num(&mut s, off / 60, 2);
    s.push(':');
    push_num(&mut s, off % 60, 2);
    s
}

/// .NET ticks of a wall-clock time given as Unix ms plus an offset in minutes.
pub fn ticks(unix_ms: i64, offset_min: i32) -> i64 {
    unix_ms.saturating_add(i64::from(offset_min) * 60_000).saturating_mul(10_000).saturating_add(UNIX_EPOCH_TICKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2019-11-19T10:10:11.509Z, the first line of the ITS README example (which shows 637097550115091350 ticks).
    const T: i64 = 1_574_158_211_509;

    #[test]
    fn formats_match_dotnet_round_trip_specifier() {
        assert_eq!(iso_utc(T), "2019-11-19T10:10:11.5090000Z");
        assert_eq!(iso_utc_ms(T), "2019-11-19T10:10:11.509Z");
        assert_eq!(iso_local(T, 60), "2019-11-19T11:10:11.5090000+01:00");
        assert_eq!(iso_local(T, -330), "2019-11-19T04:40:11.5090000-05:30");
        assert_eq!(ticks(T, 0), 637_097_550_115_090_000);
        assert_eq!(ticks(T, 60), 637_097_550_115_090_000 + 36_000_000_000);
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        assert_eq!(ticks(i64::MAX, 60), i64::MAX);
        assert!(iso_local(i64::MAX, 60).ends_with("+01:00"));
        assert!(iso_utc(i64::MIN).ends_with('Z'));
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.9990000Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00.0000000Z");
        assert_eq!(iso_utc(4_107_542_399_000), "2100-02-28T23:59:59.0000000Z");
        assert_eq!(iso_utc(4_107_542_400_000), "2100-03-01T00:00:00.0000000Z");
        assert_eq!(ticks(0, 0), UNIX_EPOCH_TICKS);
    }
}
