//! The part of the DNS wire format (RFC 1035) the tasks' resolver needs: a
//! query's header and question, and answers with A records. Anything it
//! cannot parse is an error with a reason, never a panic.

use std::net::Ipv4Addr;

pub const TYPE_A: u16 = 1;
pub const CLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;
/// Names longer than this are malformed (RFC 1035 2.3.4).
const MAX_NAME_LEN: usize = 255;
/// How long answers may be cached: names follow scaling, so briefly.
const ANSWER_TTL: u32 = 1;

/// Response codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
}

/// Why a packet is not a query this resolver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("shorter than a DNS header")]
    Truncated,
    #[error("a response, not a query")]
    NotAQuery,
    #[error("not exactly one question")]
    QuestionCount,
    #[error("a malformed name")]
    BadName,
    #[error("an opcode other than QUERY")]
    Opcode,
}

/// A query's question, with what is needed to answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// The recursion-desired bit, echoed in the answer.
    pub recursion_desired: bool,
    /// Lower-case, without the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section as it came, copied into the answer.
    question: Vec<u8>,
}

/// The query id of a packet, if it has a header: enough to answer FORMERR.
pub fn query_id(packet: &[u8]) -> Option<u16> {
    (packet.len() >= HEADER_LEN).then(|| u16::from_be_bytes([packet[0], packet[1]]))
}

pub fn parse_query(packet: &[u8]) -> Result<Query, ParseError> {
    if packet.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        return Err(ParseError::NotAQuery);
    }
    if (flags >> 11) & 0xf != 0 {
        return Err(ParseError::Opcode);
    }
    let questions = u16::from_be_bytes([packet[4], packet[5]]);
    if questions != 1 {
        return Err(ParseError::QuestionCount);
    }
    let mut at = HEADER_LEN;
    let mut labels: Vec<String> = Vec::new();
    let mut name_len = 0;
    loop {
        let len = *packet.get(at).ok_or(ParseError::BadName)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // 0xc0: a compression pointer, never in a lone question; 0x40 and
        // 0x80 are reserved label types.
        if len & 0xc0 != 0 {
            return Err(ParseError::BadName);
        }
        let label = packet.get(at..at + len).ok_or(ParseError::BadName)?;
        name_len += len + 1;
        if name_len > MAX_NAME_LEN {
            return Err(ParseError::BadName);
        }
        let label = std::str::from_utf8(label).map_err(|_| ParseError::BadName)?;
        labels.push(label.to_ascii_lowercase());
        at += len;
    }
    let fixed = packet.get(at..at + 4).ok_or(ParseError::Truncated)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    Ok(Query {
        id: u16::from_be_bytes([packet[0], packet[1]]),
        recursion_desired: flags & 0x0100 != 0,
        name: labels.join("."),
        qtype,
        qclass,
        question: packet[HEADER_LEN..at + 4].to_vec(),
    })
}

impl Query {
    /// The answer: `rcode`, and an A record for each of `addresses`.
    pub fn answer(&self, rcode: Rcode, addresses: &[Ipv4Addr]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.question.len() + 16 * addresses.len());
        // QR, authoritative, RD echoed, RA: we recurse for other names.
        let mut flags: u16 = 0x8000 | 0x0400 | 0x0080 | rcode as u16;
        if self.recursion_desired {
            flags |= 0x0100;
        }
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&self.question);
        for address in addresses {
            // The name: a pointer to the question's, at offset 12.
            out.extend_from_slice(&0xc00cu16.to_be_bytes());
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&ANSWER_TTL.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&address.octets());
        }
        out
    }
}

/// A bare error answer for a packet that had a header but no usable
/// question.
pub fn error_answer(id: u16, rcode: Rcode) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(0x8080u16 | rcode as u16).to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as `dig` sends it.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.push(0);
        packet.extend_from_slice(&qtype.to_be_bytes());
        packet.extend_from_slice(&CLASS_IN.to_be_bytes());
        packet
    }

    #[test]
    fn a_query_parses_and_its_answer_carries_the_records() {
        let parsed = parse_query(&query("Tasks.Web", TYPE_A)).unwrap();
        assert_eq!(parsed.name, "tasks.web");
        assert_eq!(parsed.qtype, TYPE_A);
        assert!(parsed.recursion_desired);
        let answer = parsed.answer(
            Rcode::NoError,
            &[Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3)],
        );
        assert_eq!(&answer[..2], &[0x12, 0x34]);
        assert_eq!(answer[3] & 0xf, 0);
        assert_eq!(u16::from_be_bytes([answer[6], answer[7]]), 2);
        assert_eq!(&answer[answer.len() - 4..], &[10, 0, 1, 3]);
        let nx = parsed.answer(Rcode::NxDomain, &[]);
        assert_eq!(nx[3] & 0xf, 3);
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        let good = query("web", TYPE_A);
        assert_eq!(parse_query(&good[..5]), Err(ParseError::Truncated));
        assert_eq!(parse_query(&good[..14]), Err(ParseError::BadName));
        assert_eq!(
            parse_query(&good[..good.len() - 2]),
            Err(ParseError::Truncated)
        );
        let mut pointer = good.clone();
        pointer[12] = 0xc0;
        assert_eq!(parse_query(&pointer), Err(ParseError::BadName));
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), Err(ParseError::NotAQuery));
        let mut two = good.clone();
        two[5] = 2;
        assert_eq!(parse_query(&two), Err(ParseError::QuestionCount));
        let long = query(&vec!["a".repeat(63); 5].join("."), TYPE_A);
        assert_eq!(parse_query(&long), Err(ParseError::BadName));
    }

    /// Every prefix, and every single-byte change, of valid queries, and
    /// pseudo-random packets: parsing never panics, and what parses answers.
    #[test]
    fn fuzzed_packets_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for base in [query("web", TYPE_A), query("tasks.api.example", 28)] {
            for len in 0..=base.len() {
                let _ = parse_query(&base[..len]);
            }
            for at in 0..base.len() {
                for value in [0u8, 1, 0x3f, 0x40, 0x80, 0xc0, 0xff] {
                    let mut mutated = base.clone();
                    mutated[at] = value;
                    if let Ok(parsed) = parse_query(&mutated) {
                        let _ = parsed.answer(Rcode::NoError, &[Ipv4Addr::LOCALHOST]);
                    }
                }
            }
        }
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Ok(parsed) = parse_query(&packet) {
                let _ = parsed.answer(Rcode::NoError, &[]);
            }
            let _ = query_id(&packet);
        }
    }
}
