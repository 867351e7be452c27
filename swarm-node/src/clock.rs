//! Wall-clock time as the store records it: seconds or milliseconds since
//! the Unix epoch (0 for a clock set before it).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `secs` since the epoch as Docker's JSON writes times (RFC 3339).
pub fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `millis` since the epoch with nine fractional digits, as Docker stamps
/// log lines and events (`2006-01-02T15:04:05.000000000Z`).
pub fn rfc3339_nanos(millis: u64) -> String {
    let secs = millis / 1000;
    let nanos = (millis % 1000) * 1_000_000;
    let whole = rfc3339(secs);
    match whole.strip_suffix('Z') {
        Some(base) => format!("{base}.{nanos:09}Z"),
        None => whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_stamps_have_nine_digits() {
        assert_eq!(rfc3339_nanos(1_500), "1970-01-01T00:00:01.500000000Z");
    }
}
