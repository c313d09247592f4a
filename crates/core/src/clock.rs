//! Wall-clock helpers in UTC without a date library: the one clock (Unix seconds and
//! milliseconds), civil dates, RFC 3339, and the one `--since`/`--until` parser ([`TimeRange`]).
//! (Howard Hinnant's `days_from_civil` algorithm; exact for the proleptic Gregorian calendar.)

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    now_ms().div_euclid(1000)
}

/// A `--since` / `--until` range in Unix milliseconds, `until` exclusive; either end may be open.
/// Every command and admin endpoint that takes a range parses it here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// First millisecond included.
    pub since_ms: Option<i64>,
    /// First millisecond excluded.
    pub until_ms: Option<i64>,
}

impl TimeRange {
    /// Parses `--since` / `--until`: a UTC date `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ`; a
    /// date-only `until` includes that whole day. Without `since`, the range starts
    /// `default_days` days back (today counts as one), or is open.
    pub fn parse(since: Option<&str>, until: Option<&str>, default_days: Option<i64>) -> Result<TimeRange> {
        let parse = |what: &str, v: &str| {
            parse_date_or_time(v).ok_or_else(|| {
                Error::msg(format!(
                    "--{what} {v:?} is not a time; use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)"
                ))
            })
        };
        let since_ms = match since {
            Some(v) => Some(parse("since", v)? * 1000),
            None => default_days.map(|d| (now_unix().div_euclid(86_400) - d + 1) * 86_400_000),
        };
        let until_ms = match until {
            Some(v) if v.trim().len() == 10 => Some((parse("until", v)? + 86_400) * 1000),
            Some(v) => Some(parse("until", v)? * 1000),
            None => None,
        };
        if let (Some(a), Some(b)) = (since_ms, until_ms)
            && a >= b
        {
            return Err(Error::msg(format!(
                "--since {} is not before --until {}",
                since.unwrap_or("(default)"),
                until.unwrap_or("")
            )));
        }
        Ok(TimeRange { since_ms, until_ms })
    }

    /// Whether `ms` is inside the range.
    pub fn contains(&self, ms: i64) -> bool {
        self.since_ms.is_none_or(|s| ms >= s) && self.until_ms.is_none_or(|u| ms < u)
    }

    /// The first and last UTC day (YYYY-MM-DD) the range touches; an open end is the epoch or
    /// today.
    pub fn days(&self) -> (String, String) {
        let first = format_date(self.since_ms.unwrap_or(0).div_euclid(1000));
        let last = match self.until_ms {
            Some(u) => format_date((u - 1).div_euclid(1000)),
            None => format_date(now_unix()),
        };
        (first, last)
    }
}

/// Days since 1970-01-01 for a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date for days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// RFC 3339 UTC timestamp (`2026-11-27T04:05:06Z`).
pub fn format_rfc3339(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// The UTC day of a Unix time, `YYYY-MM-DD` (ledger keys, budget periods, reports).
pub fn format_date(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `YYYY-MM-DD` (start of that day, UTC) or `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_date_or_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').unwrap_or(t))),
        None => (s, None),
    };
    let mut parts = date.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(t) = time {
        let mut hms = t.splitn(3, ':');
        let h: i64 = hms.next()?.parse().ok()?;
        let mi: i64 = hms.next()?.parse().ok()?;
        let se: i64 = hms.next().unwrap_or("0").parse().ok()?;
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + se;
    }
    Some(secs)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_over_centuries() {
        for z in (-800_000..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_date_or_time("1970-01-02"), Some(86_400));
        assert_eq!(format_rfc3339(1_795_748_130), "2026-11-27T02:55:30Z");
        let t = parse_date_or_time("2026-11-27T02:55:30Z");
        assert_eq!(t, Some(1_795_748_130));
        assert_eq!(parse_date_or_time("2026-02-29"), None);
        assert_eq!(
            parse_date_or_time("2024-02-29").map(format_rfc3339).as_deref(),
            Some("2024-02-29T00:00:00Z")
        );
        assert_eq!(parse_date_or_time("tomorrow"), None);
        assert_eq!(format_date(1_795_748_130), "2026-11-27");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(parse_date_or_time("2026-13-01"), None);
    }

    #[test]
    fn ranges_include_a_date_only_until_and_refuse_reversed_ends() {
        let r = TimeRange::parse(Some("2026-11-01"), Some("2026-11-30"), None).unwrap();
        assert_eq!(r.days(), ("2026-11-01".into(), "2026-11-30".into()));
        let end_of_day = parse_date_or_time("2026-11-30T23:59:59Z").unwrap() * 1000;
        assert!(r.contains(end_of_day) && !r.contains(end_of_day + 1000));
        let one_day = TimeRange::parse(Some("2026-11-30"), Some("2026-11-30"), None).unwrap();
        assert_eq!(one_day.days(), ("2026-11-30".into(), "2026-11-30".into()));
        let timed = TimeRange::parse(Some("2026-11-30T10:00:00Z"), Some("2026-11-30T11:00:00Z"), None).unwrap();
        assert!(!timed.contains(parse_date_or_time("2026-11-30T11:00:00Z").unwrap() * 1000));
        let err = TimeRange::parse(Some("2026-12-02"), Some("2026-12-01"), None).unwrap_err();
        assert!(err.to_string().contains("not before --until 2026-12-01"), "{err}");
        let err = TimeRange::parse(Some("yesterday"), None, None).unwrap_err();
        assert!(err.to_string().contains("--since \"yesterday\""), "{err}");
        let default = TimeRange::parse(None, None, Some(30)).unwrap();
        let (first, last) = default.days();
        assert_eq!(last, format_date(now_unix()));
        assert_eq!(first, format_date(now_unix() - 29 * 86_400));
    }
}
