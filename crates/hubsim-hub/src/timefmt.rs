//! Wall-clock helpers: Unix time and ISO 8601 as IoT Hub writes it (`2020-07-25T14:14:25.1720000Z`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.fffffffZ` (7 fractional digits, as IoT Hub's `$.exp`).
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let frac = (ms % 1000) * 10_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:07}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_iot_hub() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(super::iso8601(1_595_686_465_172), "2020-07-25T14:14:25.1720000Z");
        assert_eq!(super::iso8601(951_782_400_000), "2000-02-29T00:00:00.0000000Z");
    }
}
