//! The shim's half of task logs: it cuts what the task prints into lines
//! and writes each one to the log as `<time> <line>\n`, the time being when
//! the shim read it, as Docker stamps lines (RFC 3339, nine fractional
//! digits, UTC: `2006-01-02T15:04:05.000000000Z`).
//!
//! Everything here runs in the forked shim of a multi-threaded daemon: no
//! allocation, no locks, no formatting machinery, no reachable panic; only
//! integer arithmetic on buffers made before the fork.

/// Bytes in a stamp: `2006-01-02T15:04:05.000000000Z`.
pub(super) const STAMP_LEN: usize = 30;

/// The longest line kept whole (Docker's json-file splits at 16 KiB too);
/// a longer one becomes several lines of at most this many bytes.
pub(super) const LINE_MAX: usize = 16 * 1024;

/// The last second a four-digit year holds: 9999-12-31T23:59:59Z.
const LAST_SECOND: i64 = 253_402_300_799;

/// `secs` and `nanos` since the Unix epoch as a stamp. Times before the
/// epoch or after year 9999 are clamped: a stamp always has its shape.
pub(super) fn format_stamp(secs: i64, nanos: u32) -> [u8; STAMP_LEN] {
    let secs = secs.clamp(0, LAST_SECOND);
    let nanos = if secs == 0 || secs == LAST_SECOND {
        nanos.min(999_999_999)
    } else {
        nanos % 1_000_000_000
    };
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut stamp = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut stamp, 0, 4, year as u64);
    put_digits(&mut stamp, 5, 2, month as u64);
    put_digits(&mut stamp, 8, 2, day as u64);
    put_digits(&mut stamp, 11, 2, (of_day / 3600) as u64);
    put_digits(&mut stamp, 14, 2, (of_day / 60 % 60) as u64);
    put_digits(&mut stamp, 17, 2, (of_day % 60) as u64);
    put_digits(&mut stamp, 20, 9, u64::from(nanos));
    stamp
}

/// The proleptic Gregorian date of day `days` since 1970-01-01 (days ≥ 0),
/// after Howard Hinnant's `civil_from_days`: eras of 400 years starting on
/// March 1st, so the leap day ends a year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes the last `width` decimal digits of `value` at `at`.
fn put_digits(out: &mut [u8; STAMP_LEN], at: usize, width: usize, mut value: u64) {
    let mut index = at + width;
    while index > at {
        index -= 1;
        if let Some(digit) = out.get_mut(index) {
            *digit = b'0' + (value % 10) as u8;
        }
        value /= 10;
    }
}

/// Cuts a byte stream into lines in a buffer made before the fork. A line
/// that fills the buffer without a newline is handed out as it is (cut
/// before a split UTF-8 character), and the rest makes the next line.
pub(super) struct LineSplitter<'a> {
    buffer: &'a mut [u8],
    filled: usize,
}

impl<'a> LineSplitter<'a> {
    pub(super) fn new(buffer: &'a mut [u8]) -> Self {
        Self { buffer, filled: 0 }
    }

    /// Where the next read goes; never empty.
    pub(super) fn spare(&mut self) -> &mut [u8] {
        let filled = self.filled;
        self.buffer.get_mut(filled..).unwrap_or_default()
    }

    /// Takes `count` more bytes read into [`Self::spare`] and hands each
    /// whole line, without its newline, to `line`.
    pub(super) fn take(&mut self, count: usize, mut line: impl FnMut(&[u8])) {
        let start = self.filled;
        self.filled = (self.filled + count).min(self.buffer.len());
        let mut line_start = 0;
        let mut at = start;
        while at < self.filled {
            if self.buffer.get(at) == Some(&b'\n') {
                line(self.buffer.get(line_start..at).unwrap_or_default());
                line_start = at + 1;
            }
            at += 1;
        }
        if line_start == 0 && self.filled == self.buffer.len() {
            // A full buffer and no newline: out it goes, as one line.
            let cut = utf8_boundary(self.buffer.get(..self.filled).unwrap_or_default());
            line(self.buffer.get(..cut).unwrap_or_default());
            line_start = cut;
        }
        self.buffer.copy_within(line_start..self.filled, 0);
        self.filled -= line_start;
    }

    /// At the end of the stream: the last line, if it had no newline.
    pub(super) fn finish(&mut self, mut line: impl FnMut(&[u8])) {
        if self.filled > 0 {
            line(self.buffer.get(..self.filled).unwrap_or_default());
            self.filled = 0;
        }
    }
}

/// Where to cut `bytes` so that no UTF-8 character is split: before a
/// character whose bytes run past the end (all of it when there is none,
/// or when the bytes are not UTF-8 anyway).
fn utf8_boundary(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // A character is at most four bytes: its lead is among the last four.
    for back in 1..=len.min(4) {
        let byte = bytes.get(len - back).copied().unwrap_or(0);
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte
        }
        let needed = match byte {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return len,
        };
        return if needed > back && back < len {
            len - back
        } else {
            len
        };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(secs: i64, nanos: u32) -> String {
        String::from_utf8(format_stamp(secs, nanos).to_vec()).unwrap()
    }

    #[test]
    fn stamps_known_times() {
        assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(stamp(1, 5), "1970-01-01T00:00:01.000000005Z");
        // 2000: a leap year though a century (divisible by 400).
        assert_eq!(stamp(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(stamp(951_868_799, 1), "2000-02-29T23:59:59.000000001Z");
        assert_eq!(
            stamp(1_709_164_800, 123_456_789),
            "2024-02-29T00:00:00.123456789Z"
        );
        assert_eq!(stamp(1_709_251_200, 0), "2024-03-01T00:00:00.000000000Z");
        // 2100: not a leap year (a century not divisible by 400).
        assert_eq!(stamp(4_107_456_000, 0), "2100-02-28T00:00:00.000000000Z");
        assert_eq!(stamp(4_107_542_400, 0), "2100-03-01T00:00:00.000000000Z");
        assert_eq!(
            stamp(1_735_689_599, 999_999_999),
            "2024-12-31T23:59:59.999999999Z"
        );
        assert_eq!(stamp(1_735_689_600, 0), "2025-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn stamps_clamp_to_four_digit_years() {
        assert_eq!(stamp(-5, 7), "1970-01-01T00:00:00.000000007Z");
        assert_eq!(stamp(i64::MAX, 0), "9999-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn stamps_agree_with_the_time_crate() {
        // Every ~13 days and some seconds, from 1970 to past 2400.
        let mut secs = 0i64;
        while secs < 13_600_000_000 {
            let nanos = (secs % 1_000_000_000) as u32;
            let time = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let (year, month, day) = time.to_calendar_date();
            let (hour, minute, second) = time.to_hms();
            let expected = format!(
                "{year:04}-{:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z",
                month as u8
            );
            assert_eq!(stamp(secs, nanos), expected, "at {secs}");
            secs += 1_123_457;
        }
    }

    /// Feeds `chunks` through a splitter of `size` bytes; the lines out.
    fn split(size: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut buffer = vec![0u8; size];
        let mut splitter = LineSplitter::new(&mut buffer);
        let mut lines = Vec::new();
        let mut keep = |line: &[u8]| lines.push(String::from_utf8_lossy(line).into_owned());
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let spare = splitter.spare();
                let count = spare.len().min(rest.len());
                spare[..count].copy_from_slice(&rest[..count]);
                rest = &rest[count..];
                splitter.take(count, &mut keep);
            }
        }
        splitter.finish(&mut keep);
        lines
    }

    #[test]
    fn lines_are_cut_at_newlines_across_reads() {
        assert_eq!(
            split(16, &[b"one\ntw", b"o\n\nthree"]),
            ["one", "two", "", "three"]
        );
        assert_eq!(split(16, &[b"a\n"]), ["a"]);
        assert!(split(16, &[b""]).is_empty());
    }

    #[test]
    fn long_lines_are_split_at_the_buffer_size() {
        let long = [b'x'; 40];
        let mut input = long.to_vec();
        input.extend_from_slice(b"\nend\n");
        assert_eq!(
            split(16, &[&input]),
            ["x".repeat(16), "x".repeat(16), "x".repeat(8), "end".into()]
        );
    }

    #[test]
    fn long_lines_split_between_utf8_characters() {
        // 15 ASCII bytes then "é" (two bytes): the cut comes before "é".
        let mut input = b"aaaaaaaaaaaaaaa".to_vec();
        input.extend_from_slice("éz\n".as_bytes());
        assert_eq!(split(16, &[&input]), ["a".repeat(15), "éz".into()]);
    }

    #[test]
    fn utf8_boundaries() {
        assert_eq!(utf8_boundary(b"abc"), 3);
        assert_eq!(utf8_boundary("aé".as_bytes()), 3);
        assert_eq!(utf8_boundary(&"aé".as_bytes()[..2]), 1);
        assert_eq!(utf8_boundary(&"a€".as_bytes()[..3]), 1);
        assert_eq!(utf8_boundary(&[0xFF, 0xFF]), 2);
        assert_eq!(utf8_boundary(&[0xC3]), 1);
    }
}
