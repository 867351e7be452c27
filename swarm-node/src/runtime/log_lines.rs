//! Reading task output back as lines with their times: `<time> <line>`
//! as the native runtime's shim writes it and the Docker Engine returns it
//! with `timestamps`, or bare lines from logs written before swarm kept
//! times.

use crate::{api::assignments::LogLine, log_time};

/// A log of stamped lines. A last line without its newline is being
/// written (the shim ends every line it writes), so it waits for the next
/// read: a follower neither loses nor repeats it.
pub fn stamped(log: &[u8]) -> Vec<LogLine> {
    let whole = match log.iter().rposition(|&b| b == b'\n') {
        Some(end) => &log[..end],
        None => return Vec::new(),
    };
    whole.split(|&b| b == b'\n').map(stamped_line).collect()
}

/// One stamped line, with or without its newline. A line whose stamp does
/// not read keeps all its text and no time.
pub fn stamped_line(line: &[u8]) -> LogLine {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    if let Some((stamp, rest)) = text.split_once(' ')
        && let Some(at_nanos) = log_time::parse_stamp(stamp)
    {
        return LogLine {
            at_nanos: Some(at_nanos),
            text: rest.to_owned(),
        };
    }
    LogLine {
        at_nanos: None,
        text: text.into_owned(),
    }
}

/// A log without times, written before swarm stamped lines.
pub fn unstamped(log: &[u8]) -> Vec<LogLine> {
    String::from_utf8_lossy(log)
        .lines()
        .map(|text| LogLine {
            at_nanos: None,
            text: text.to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at_nanos: Option<i64>, text: &str) -> LogLine {
        LogLine {
            at_nanos,
            text: text.into(),
        }
    }

    #[test]
    fn stamped_lines_carry_their_times() {
        let log = b"1970-01-01T00:00:01.000000002Z hello world\n\
                    1970-01-01T00:00:03.000000000Z \n\
                    1970-01-01T00:00:04.000000000Z half";
        assert_eq!(
            stamped(log),
            [
                line(Some(1_000_000_002), "hello world"),
                line(Some(3_000_000_000), "")
            ]
        );
        assert!(stamped(b"1970-01-01T00:00:04.000000000Z half").is_empty());
        assert_eq!(
            stamped_line(b"no stamp here\n"),
            line(None, "no stamp here")
        );
    }

    #[test]
    fn unstamped_logs_are_bare_lines() {
        assert_eq!(unstamped(b"a\nb"), [line(None, "a"), line(None, "b")]);
        assert!(unstamped(b"").is_empty());
    }
}
