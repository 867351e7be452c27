//! Times of log lines as Docker writes and reads them: the stamp `-t`
//! prints (RFC 3339, nine fractional digits, UTC), and the values
//! `--since` and `--until` take (a date, a Unix timestamp, or a duration
//! before now), all as nanoseconds since the Unix epoch.

use time::{
    Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset,
    format_description::well_known::Rfc3339,
};

/// What `-t` prints for a line without a time (written before swarm kept
/// times): Go's zero time, as Docker prints an unset one.
const NO_TIME: &str = "0001-01-01T00:00:00.000000000Z";

const NANOS_PER_SEC: i128 = 1_000_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    /// Docker's words.
    #[error("failed to parse value as time or duration: {0:?}")]
    NotATime(String),
    #[error("parsing time {0:?}: not a date and time Docker reads (such as 2013-01-02T13:23:37Z)")]
    BadDate(String),
}

/// `nanos` since the epoch as Docker stamps a log line:
/// `2006-01-02T15:04:05.000000000Z`.
pub fn stamp(nanos: Option<i64>) -> String {
    let Some(nanos) = nanos else {
        return NO_TIME.to_owned();
    };
    let Ok(time) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)) else {
        return NO_TIME.to_owned();
    };
    let (year, month, day) = time.to_calendar_date();
    let (hour, minute, second, nano) = time.to_hms_nano();
    format!(
        "{year:04}-{:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nano:09}Z",
        month as u8
    )
}

/// A stamp (any RFC 3339 time) as nanoseconds since the epoch.
pub fn parse_stamp(text: &str) -> Option<i64> {
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(time.unix_timestamp_nanos()).ok()
}

/// Docker's `--since`/`--until` value (its `GetTimestamp`): a Go duration
/// before `now_nanos` (`10m`, `1h30m`, to the second), an RFC 3339 date
/// and time, whole or cut short (`2013-01-02`, `2013-01-02T13:23`, local
/// time without a zone), or a Unix timestamp (`1357133017.5`).
pub fn parse_since(value: &str, now_nanos: i64) -> Result<i64, TimeError> {
    if value != "0"
        && let Some(duration) = parse_go_duration(value)
    {
        let then = i128::from(now_nanos) - duration;
        // Docker keeps whole seconds of a relative time.
        return Ok(clamp(then.div_euclid(NANOS_PER_SEC) * NANOS_PER_SEC));
    }
    match parse_date(value) {
        Some(nanos) => Ok(nanos),
        None if value.contains('-') => Err(TimeError::BadDate(value.to_owned())),
        None => parse_unix_timestamp(value).ok_or_else(|| TimeError::NotATime(value.to_owned())),
    }
}

/// A Unix timestamp as Docker's API carries `since` and `until`:
/// `<seconds>[.<fraction>]`.
pub fn parse_unix_timestamp(value: &str) -> Option<i64> {
    let (secs, fraction) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i128;
    if !fraction.is_empty() {
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = &fraction[..fraction.len().min(9)];
        nanos = digits.parse::<i128>().ok()? * 10i128.pow(9 - digits.len() as u32);
    }
    let sign = if value.starts_with('-') { -1 } else { 1 };
    Some(clamp(i128::from(secs) * NANOS_PER_SEC + sign * nanos))
}

fn clamp(nanos: i128) -> i64 {
    nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Go's `time.ParseDuration`: `[-+]` then numbers with units (`ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`), such as `1h30m` or `1.5s`; in nanoseconds.
fn parse_go_duration(value: &str) -> Option<i128> {
    let (negative, mut rest) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return None;
        }
        let number: f64 = number.parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * unit;
    }
    let nanos = total.round() as i128;
    Some(if negative { -nanos } else { nanos })
}

/// An RFC 3339 date and time, whole or cut short, as Docker reads them;
/// without a zone, in this machine's zone now.
fn parse_date(value: &str) -> Option<i64> {
    let (body, offset) = split_zone(value)?;
    let (date, time) = match body.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (body, None),
    };
    let date = parse_ymd(date)?;
    let time = match time {
        None => Time::MIDNIGHT,
        Some(time) => parse_hms(time)?,
    };
    let at = PrimitiveDateTime::new(date, time).assume_offset(offset);
    i64::try_from(at.unix_timestamp_nanos()).ok()
}

/// The date-and-time part and its zone: `Z`, `±hh:mm`, or none (local).
fn split_zone(value: &str) -> Option<(&str, UtcOffset)> {
    if let Some(body) = value.strip_suffix(['Z', 'z']) {
        return Some((body, UtcOffset::UTC));
    }
    // A sign after the date's `YYYY-MM-DD` starts an offset.
    match value.get(10..).and_then(|tail| tail.rfind(['+', '-'])) {
        Some(at) => {
            let at = at + 10;
            let sign = if value[at..].starts_with('-') { -1 } else { 1 };
            let (hours, minutes) = value[at + 1..].split_once(':')?;
            let (hours, minutes): (i8, i8) = (two_digits(hours)?, two_digits(minutes)?);
            let offset = UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?;
            Some((&value[..at], offset))
        }
        None => Some((value, local_offset())),
    }
}

fn two_digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    (text.len() == 2 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn parse_ymd(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let year = parts.next().filter(|y| y.len() == 4)?.parse().ok()?;
    let month: u8 = two_digits(parts.next()?)?;
    let day = two_digits(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Date::from_calendar_date(year, month.try_into().ok()?, day).ok()
}

/// `hh`, `hh:mm`, `hh:mm:ss` or `hh:mm:ss.fraction` (up to nine digits).
fn parse_hms(text: &str) -> Option<Time> {
    let (clock, fraction) = match text.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (text, None),
    };
    let mut parts = clock.split(':');
    let hour = two_digits(parts.next()?)?;
    let minute = parts.next().map_or(Some(0), two_digits)?;
    let second = parts.next().map_or(Some(0), two_digits)?;
    if parts.next().is_some() {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) if (1..=9).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
    };
    Time::from_hms_nano(hour, minute, second, nanos).ok()
}

/// This machine's offset from UTC now (UTC when the zone is unknown).
fn local_offset() -> UtcOffset {
    let now = libc::time_t::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    // SAFETY: localtime_r fills a tm on the stack and keeps no pointer.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return UtcOffset::UTC;
    }
    UtcOffset::from_whole_seconds(tm.tm_gmtoff as i32).unwrap_or(UtcOffset::UTC)
}

/// Nanoseconds since the epoch now.
pub fn now_nanos() -> i64 {
    clamp(OffsetDateTime::now_utc().unix_timestamp_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;
    /// 2013-01-02T13:23:37Z
    const DOCS_EXAMPLE: i64 = 1_357_133_017 * SEC;

    #[test]
    fn stamps_have_nine_digits_in_utc() {
        assert_eq!(stamp(Some(0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            stamp(Some(DOCS_EXAMPLE + 5)),
            "2013-01-02T13:23:37.000000005Z"
        );
        assert_eq!(stamp(None), NO_TIME);
        assert_eq!(
            parse_stamp("2013-01-02T13:23:37.000000005Z"),
            Some(DOCS_EXAMPLE + 5)
        );
        assert_eq!(parse_stamp("2013-01-02T14:23:37+01:00"), Some(DOCS_EXAMPLE));
        assert_eq!(parse_stamp("nope"), None);
    }

    #[test]
    fn since_takes_relative_durations_to_the_second() {
        let now = DOCS_EXAMPLE + 250_000_000;
        assert_eq!(parse_since("10m", now), Ok(DOCS_EXAMPLE - 600 * SEC));
        assert_eq!(parse_since("1h30m", now), Ok(DOCS_EXAMPLE - 5400 * SEC));
        assert_eq!(parse_since("1.5s", now), Ok(DOCS_EXAMPLE - 2 * SEC));
        assert_eq!(parse_since("300ms", now), Ok(DOCS_EXAMPLE - SEC));
        assert_eq!(parse_since("-1m", now), Ok(DOCS_EXAMPLE + 60 * SEC));
    }

    #[test]
    fn since_takes_rfc3339_dates_whole_or_short() {
        let now = 0;
        assert_eq!(parse_since("2013-01-02T13:23:37Z", now), Ok(DOCS_EXAMPLE));
        assert_eq!(
            parse_since("2013-01-02T13:23:37.5Z", now),
            Ok(DOCS_EXAMPLE + SEC / 2)
        );
        assert_eq!(
            parse_since("2013-01-02T14:23:37+01:00", now),
            Ok(DOCS_EXAMPLE)
        );
        assert_eq!(
            parse_since("2013-01-02T08:23:37-05:00", now),
            Ok(DOCS_EXAMPLE)
        );
        assert_eq!(
            parse_since("2013-01-02T13:23Z", now),
            Ok(DOCS_EXAMPLE - 37 * SEC)
        );
        assert_eq!(
            parse_since("2013-01-02T13Z", now),
            Ok(DOCS_EXAMPLE - 1417 * SEC)
        );
        assert_eq!(parse_since("2013-01-02Z", now), Ok(1_357_084_800 * SEC));
        // Without a zone: this machine's (UTC in tests unless TZ says otherwise).
        let local = i64::from(local_offset().whole_seconds()) * SEC;
        assert_eq!(
            parse_since("2013-01-02T13:23:37", now),
            Ok(DOCS_EXAMPLE - local)
        );
        assert_eq!(
            parse_since("2013-01-02", now),
            Ok(1_357_084_800 * SEC - local)
        );
    }

    #[test]
    fn since_takes_unix_timestamps() {
        assert_eq!(parse_since("1357133017", 0), Ok(DOCS_EXAMPLE));
        assert_eq!(parse_since("1357133017.25", 0), Ok(DOCS_EXAMPLE + SEC / 4));
        assert_eq!(parse_since("0", 5), Ok(0));
        assert_eq!(
            parse_unix_timestamp("1357133017.000000001"),
            Some(DOCS_EXAMPLE + 1)
        );
        assert_eq!(parse_unix_timestamp("x"), None);
    }

    #[test]
    fn since_refuses_what_docker_refuses() {
        assert_eq!(
            parse_since("yesterday", 0),
            Err(TimeError::NotATime("yesterday".into()))
        );
        assert_eq!(parse_since("10", 0), Ok(10 * SEC));
        assert_eq!(
            parse_since("10x", 0),
            Err(TimeError::NotATime("10x".into()))
        );
        assert_eq!(
            parse_since("2013-13-02", 0),
            Err(TimeError::BadDate("2013-13-02".into()))
        );
        assert_eq!(parse_since("", 0), Err(TimeError::NotATime(String::new())));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("42m"), Some(42 * 60 * 1_000_000_000));
        assert_eq!(parse_go_duration("2h45m"), Some(9_900_000_000_000));
        assert_eq!(parse_go_duration("1µs"), Some(1_000));
        assert_eq!(parse_go_duration("m"), None);
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
