//! The tasks' resolver's messages, parsed and encoded by hickory-proto: a
//! query's question and EDNS options, and answers (A and PTR records) with
//! the client's EDNS echoed and, over UDP, cut to the size the client
//! takes with the TC bit set, as Docker's resolver does. Anything that is
//! not a query this resolver answers is an error with a reason, never a
//! panic.

use std::net::Ipv4Addr;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query as Question, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, PTR},
    },
};

const HEADER_LEN: usize = 12;
/// How long answers may be cached: names follow scaling, so briefly.
const ANSWER_TTL: u32 = 1;
/// A UDP answer to a client without EDNS is at most this (RFC 1035 4.2.1).
pub const MIN_UDP: usize = 512;
/// What the resolver offers in its own OPT record: the largest UDP
/// message it reads.
pub const MAX_UDP: u16 = 4096;

/// Response codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
}

impl From<Rcode> for ResponseCode {
    fn from(rcode: Rcode) -> Self {
        match rcode {
            Rcode::NoError => ResponseCode::NoError,
            Rcode::FormErr => ResponseCode::FormErr,
            Rcode::ServFail => ResponseCode::ServFail,
            Rcode::NxDomain => ResponseCode::NXDomain,
        }
    }
}

/// How an answer goes back: over UDP it must fit the client's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Why a packet is not a query this resolver answers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a DNS message: {0}")]
    Wire(String),
    #[error("a response, not a query")]
    NotAQuery,
    #[error("not exactly one question")]
    QuestionCount,
    #[error("an opcode other than QUERY")]
    Opcode,
}

/// A query's question, with what is needed to answer it.
#[derive(Clone, Debug)]
pub struct Query {
    pub id: u16,
    /// Lower-case, without the trailing dot.
    pub name: String,
    pub qtype: RecordType,
    recursion_desired: bool,
    question: Question,
    /// The client's OPT record, if it sent one.
    edns: Option<Edns>,
}

/// The query id of a packet, if it has a header: enough to answer FORMERR.
pub fn query_id(packet: &[u8]) -> Option<u16> {
    (packet.len() >= HEADER_LEN).then(|| u16::from_be_bytes([packet[0], packet[1]]))
}

pub fn parse_query(packet: &[u8]) -> Result<Query, ParseError> {
    let message = Message::from_vec(packet).map_err(|e| ParseError::Wire(e.to_string()))?;
    if message.message_type() != MessageType::Query {
        return Err(ParseError::NotAQuery);
    }
    if message.op_code() != OpCode::Query {
        return Err(ParseError::Opcode);
    }
    let [question] = message.queries() else {
        return Err(ParseError::QuestionCount);
    };
    let name = question.name().to_lowercase().to_ascii();
    Ok(Query {
        id: message.id(),
        name: name.strip_suffix('.').unwrap_or(&name).to_owned(),
        qtype: question.query_type(),
        recursion_desired: message.recursion_desired(),
        question: question.clone(),
        edns: message.extensions().clone(),
    })
}

impl Query {
    /// The address a PTR query under in-addr.arpa asks about.
    pub fn reverse_address(&self) -> Option<Ipv4Addr> {
        if self.qtype != RecordType::PTR {
            return None;
        }
        let net = self.question.name().parse_arpa_name().ok()?;
        match (net.addr(), net.prefix_len()) {
            (std::net::IpAddr::V4(ip), 32) => Some(ip),
            _ => None,
        }
    }

    /// The largest answer the client takes over `transport`: over UDP
    /// 512 bytes, or the size its OPT record gives (never less than 512,
    /// RFC 6891 6.2.5); over TCP what a length prefix can say.
    pub fn max_answer_len(&self, transport: Transport) -> usize {
        match (transport, &self.edns) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, None) => MIN_UDP,
            (Transport::Udp, Some(edns)) => usize::from(edns.max_payload()).max(MIN_UDP),
        }
    }

    /// The answer: `rcode` and `answers` (records for the question's
    /// name). When they do not fit what the client takes over `transport`,
    /// the records that fit, with the TC bit set so it asks again over
    /// TCP.
    pub fn answer(&self, rcode: Rcode, answers: &[RData], transport: Transport) -> Vec<u8> {
        let limit = self.max_answer_len(transport);
        let encode = |count: usize, truncated: bool| {
            let mut message = Message::new();
            message
                .set_id(self.id)
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                // Authoritative for the swarm's names; recursion available:
                // other names are forwarded.
                .set_authoritative(true)
                .set_recursion_desired(self.recursion_desired)
                .set_recursion_available(true)
                .set_truncated(truncated)
                .set_response_code(rcode.into())
                .add_query(self.question.clone());
            for rdata in &answers[..count] {
                message.add_answer(Record::from_rdata(
                    self.question.name().clone(),
                    ANSWER_TTL,
                    rdata.clone(),
                ));
            }
            if self.edns.is_some() {
                // The client's OPT record is echoed with the size this
                // resolver takes (RFC 6891 7).
                let mut edns = Edns::new();
                edns.set_max_payload(MAX_UDP).set_version(0);
                message.set_edns(edns);
            }
            message.to_vec().unwrap_or_default()
        };
        let full = encode(answers.len(), false);
        if full.len() <= limit {
            return full;
        }
        // The most records that fit: each is at least 11 bytes, so the
        // search is short.
        let (mut fits, mut too_many) = (0, answers.len());
        while too_many - fits > 1 {
            let middle = (fits + too_many) / 2;
            if encode(middle, true).len() <= limit {
                fits = middle;
            } else {
                too_many = middle;
            }
        }
        encode(fits, true)
    }
}

/// An A record's data.
pub fn a_record(address: Ipv4Addr) -> RData {
    RData::A(A(address))
}

/// A PTR record's data pointing at `name` (without the trailing dot);
/// `None` when it is not a valid domain name.
pub fn ptr_record(name: &str) -> Option<RData> {
    let name = Name::from_ascii(format!("{name}.")).ok()?;
    Some(RData::PTR(PTR(name)))
}

/// A bare error answer for a packet that had a header but no usable
/// question.
pub fn error_answer(id: u16, rcode: Rcode) -> Vec<u8> {
    let mut message = Message::error_msg(id, OpCode::Query, rcode.into());
    message.set_recursion_available(true);
    message.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as `dig` sends it, with EDNS when `bufsize` is given.
    fn query(name: &str, qtype: RecordType, bufsize: Option<u16>) -> Vec<u8> {
        let mut message = Message::new();
        message
            .set_id(0x1234)
            .set_recursion_desired(true)
            .add_query(Question::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(size) = bufsize {
            let mut edns = Edns::new();
            edns.set_max_payload(size);
            message.set_edns(edns);
        }
        message.to_vec().unwrap()
    }

    fn addresses(count: u8) -> Vec<RData> {
        (1..=count)
            .map(|last| a_record(Ipv4Addr::new(10, 0, 1, last)))
            .collect()
    }

    #[test]
    fn a_query_parses_and_its_answer_carries_the_records() {
        let parsed = parse_query(&query("Tasks.Web.", RecordType::A, None)).unwrap();
        assert_eq!(parsed.name, "tasks.web");
        assert_eq!(parsed.qtype, RecordType::A);
        let answer = parsed.answer(Rcode::NoError, &addresses(2), Transport::Udp);
        let answer = Message::from_vec(&answer).unwrap();
        assert_eq!(answer.id(), 0x1234);
        assert_eq!(answer.response_code(), ResponseCode::NoError);
        assert!(answer.recursion_desired() && answer.recursion_available());
        assert_eq!(answer.answers().len(), 2);
        assert_eq!(
            answer.answers()[1].data(),
            &a_record(Ipv4Addr::new(10, 0, 1, 2))
        );
        assert!(answer.extensions().is_none());
        let nx = parsed.answer(Rcode::NxDomain, &[], Transport::Udp);
        assert_eq!(
            Message::from_vec(&nx).unwrap().response_code(),
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn edns_is_echoed_and_its_size_honoured() {
        let plain = parse_query(&query("tasks.web.", RecordType::A, None)).unwrap();
        let big = parse_query(&query("tasks.web.", RecordType::A, Some(1232))).unwrap();
        let tiny = parse_query(&query("tasks.web.", RecordType::A, Some(100))).unwrap();
        assert_eq!(plain.max_answer_len(Transport::Udp), 512);
        assert_eq!(big.max_answer_len(Transport::Udp), 1232);
        assert_eq!(tiny.max_answer_len(Transport::Udp), 512);
        let answer =
            Message::from_vec(&big.answer(Rcode::NoError, &addresses(3), Transport::Udp)).unwrap();
        let edns = answer.extensions().as_ref().expect("OPT echoed");
        assert_eq!(edns.max_payload(), MAX_UDP);
        assert_eq!(edns.version(), 0);
    }

    #[test]
    fn an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp() {
        let many = addresses(100);
        for (bufsize, limit) in [(None, 512), (Some(1232), 1232)] {
            let parsed = parse_query(&query("tasks.web.", RecordType::A, bufsize)).unwrap();
            let udp = parsed.answer(Rcode::NoError, &many, Transport::Udp);
            assert!(udp.len() <= limit, "{} > {limit}", udp.len());
            let udp = Message::from_vec(&udp).unwrap();
            assert!(udp.truncated());
            let kept = udp.answers().len();
            assert!(kept > 0 && kept < 100, "{kept}");
            // One more would not have fitted.
            let one_more = parsed.answer(Rcode::NoError, &many[..kept + 1], Transport::Udp);
            assert!(Message::from_vec(&one_more).unwrap().truncated());
            let tcp = parsed.answer(Rcode::NoError, &many, Transport::Tcp);
            let tcp = Message::from_vec(&tcp).unwrap();
            assert!(!tcp.truncated());
            assert_eq!(tcp.answers().len(), 100);
        }
    }

    #[test]
    fn a_reverse_query_names_its_address() {
        let parsed = parse_query(&query("5.1.0.10.in-addr.arpa.", RecordType::PTR, None)).unwrap();
        assert_eq!(parsed.reverse_address(), Some(Ipv4Addr::new(10, 0, 1, 5)));
        let answer = parsed.answer(
            Rcode::NoError,
            &[ptr_record("web.1.abc.back").unwrap()],
            Transport::Udp,
        );
        let answer = Message::from_vec(&answer).unwrap();
        assert_eq!(
            answer.answers()[0].data(),
            &RData::PTR(PTR(Name::from_ascii("web.1.abc.back.").unwrap()))
        );
        let partial = parse_query(&query("1.0.10.in-addr.arpa.", RecordType::PTR, None)).unwrap();
        assert_eq!(partial.reverse_address(), None);
        let not_ptr = parse_query(&query("5.1.0.10.in-addr.arpa.", RecordType::A, None)).unwrap();
        assert_eq!(not_ptr.reverse_address(), None);
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        let good = query("web.", RecordType::A, None);
        assert!(matches!(parse_query(&good[..5]), Err(ParseError::Wire(_))));
        assert!(matches!(parse_query(&good[..14]), Err(ParseError::Wire(_))));
        let mut pointer = good.clone();
        pointer[12] = 0xc0;
        assert!(matches!(parse_query(&pointer), Err(ParseError::Wire(_))));
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(parse_query(&response).unwrap_err(), ParseError::NotAQuery);
        let mut opcode = good.clone();
        opcode[2] |= 0x10;
        assert_eq!(parse_query(&opcode).unwrap_err(), ParseError::Opcode);
        let mut none = good[..HEADER_LEN].to_vec();
        none[5] = 0;
        assert_eq!(parse_query(&none).unwrap_err(), ParseError::QuestionCount);
        let error = Message::from_vec(&error_answer(7, Rcode::FormErr)).unwrap();
        assert_eq!(error.id(), 7);
        assert_eq!(error.response_code(), ResponseCode::FormErr);
    }

    /// Every prefix, and every single-byte change, of valid queries, and
    /// pseudo-random packets: parsing never panics, and what parses
    /// answers within the client's size.
    #[test]
    fn fuzzed_packets_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let check = |packet: &[u8]| {
            if let Ok(parsed) = parse_query(packet) {
                let _ = parsed.reverse_address();
                let answer = parsed.answer(Rcode::NoError, &addresses(60), Transport::Udp);
                assert!(answer.len() <= parsed.max_answer_len(Transport::Udp));
            }
            let _ = query_id(packet);
        };
        for base in [
            query("web.", RecordType::A, None),
            query("tasks.api.example.", RecordType::AAAA, Some(1232)),
            query("5.1.0.10.in-addr.arpa.", RecordType::PTR, Some(4096)),
        ] {
            for len in 0..=base.len() {
                check(&base[..len]);
            }
            for at in 0..base.len() {
                for value in [0u8, 1, 0x3f, 0x40, 0x80, 0xc0, 0xff] {
                    let mut mutated = base.clone();
                    mutated[at] = value;
                    check(&mutated);
                }
            }
        }
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            check(&packet);
        }
    }
}
