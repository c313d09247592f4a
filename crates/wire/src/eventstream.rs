//! The AWS event-stream framing (`application/vnd.amazon.eventstream`) that Bedrock streams in:
//! each message is `total length (u32) · headers length (u32) · prelude CRC32 · headers · payload ·
//! message CRC32`, big-endian, the CRCs over everything before them. Headers are typed; Bedrock uses
//! strings (`:event-type`, `:message-type`, `:content-type`, `:exception-type`).
//!
//! [`Decoder`] takes bytes as they arrive in any split and yields whole, CRC-checked messages; it
//! holds at most one message (Bedrock's limit is 16 MiB; larger is refused). [`encode`] writes one.

/// Largest message accepted (AWS's event-stream limit).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
const PRELUDE: usize = 12;
const HEADER_STRING: u8 = 7;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// String headers, in order (other header types are skipped).
    pub headers: Vec<(String, String)>,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl Message {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A prelude or message CRC did not match.
    Crc,
    /// A length field is impossible or over [`MAX_MESSAGE`].
    Length(usize),
    /// A header is cut or of an unknown type.
    Header,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Crc => f.write_str("event-stream CRC mismatch"),
            FrameError::Length(n) => write!(f, "event-stream message length {n} is out of range"),
            FrameError::Header => f.write_str("event-stream header is malformed"),
        }
    }
}

/// Encodes one message with string headers.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(HEADER_STRING);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Incremental decoder.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    failed: Option<FrameError>,
}

impl Decoder {
    /// Appends bytes and returns every message now complete. After an error, nothing more is
    /// decoded (a framing error cannot be resynchronised) and the error is returned again; the
    /// messages complete before it are dropped — [`Decoder::push_each`] hands them on.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Message>, FrameError> {
        let mut out = Vec::new();
        self.push_each(bytes, |m| out.push(m)).map(|()| out)
    }

    /// Appends bytes and calls `each` for every message now complete, in order — also for those
    /// complete before a framing error in the same bytes (a stream read at once and the same
    /// stream read in pieces then yield the same messages; found by fuzzing the usage tap). After
    /// an error, nothing more is decoded and the error is returned again.
    pub fn push_each(&mut self, bytes: &[u8], mut each: impl FnMut(Message)) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        // Usually a network frame holds whole messages: parse it in place and keep only a cut-off
        // tail, instead of copying every byte through the buffer.
        let mut pending = std::mem::take(&mut self.buf);
        let buffered = !pending.is_empty();
        if buffered {
            pending.extend_from_slice(bytes); // amortised: a large message arriving in pieces
        }
        let input = if buffered { &pending[..] } else { bytes };
        let mut at = 0;
        loop {
            match parse_one(&input[at..]) {
                Ok(Some((msg, used))) => {
                    each(msg);
                    at += used;
                }
                Ok(None) => break,
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
        self.buf = if buffered {
            pending.drain(..at);
            pending
        } else {
            bytes[at..].to_vec()
        };
        Ok(())
    }

    /// Bytes held for an incomplete message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn parse_one(b: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    if b.len() < PRELUDE {
        return Ok(None);
    }
    let total = be32(b) as usize;
    let headers_len = be32(&b[4..]) as usize;
    if crc32fast::hash(&b[..8]) != be32(&b[8..]) {
        return Err(FrameError::Crc);
    }
    if !(PRELUDE + 4..=MAX_MESSAGE).contains(&total) || headers_len > total - PRELUDE - 4 {
        return Err(FrameError::Length(total));
    }
    if b.len() < total {
        return Ok(None);
    }
    if crc32fast::hash(&b[..total - 4]) != be32(&b[total - 4..]) {
        return Err(FrameError::Crc);
    }
    let mut headers = Vec::new();
    let mut h = &b[PRELUDE..PRELUDE + headers_len];
    while !h.is_empty() {
        let name_len = h[0] as usize;
        let name = h.get(1..1 + name_len).ok_or(FrameError::Header)?;
        let kind = *h.get(1 + name_len).ok_or(FrameError::Header)?;
        let rest = &h[2 + name_len..];
        let (value, used) = match kind {
            0 | 1 => (None, 0),
            2 => (None, 1),
            3 => (None, 2),
            4 => (None, 4),
            5 | 8 => (None, 8),
            9 => (None, 16),
            6 | HEADER_STRING => {
                let len = rest
                    .get(..2)
                    .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
                    .ok_or(FrameError::Header)?;
                let v = rest.get(2..2 + len).ok_or(FrameError::Header)?;
                (
                    (kind == HEADER_STRING).then(|| String::from_utf8_lossy(v).into_owned()),
                    2 + len,
                )
            }
            _ => return Err(FrameError::Header),
        };
        if rest.len() < used {
            return Err(FrameError::Header);
        }
        if let Some(v) = value {
            headers.push((String::from_utf8_lossy(name).into_owned(), v));
        }
        h = &rest[used..];
    }
    let payload = b[PRELUDE + headers_len..total - 4].to_vec();
    Ok(Some((Message { headers, payload }, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut all = encode(
            &[
                (":event-type", "chunk"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            br#"{"bytes":"eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0="}"#,
        );
        all.extend(encode(&[(":message-type", "event")], b""));
        all
    }

    #[test]
    fn round_trips_in_any_split() {
        let all = sample();
        for step in [1, 2, 3, 7, 13, all.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for c in all.chunks(step) {
                got.extend(d.push(c).unwrap());
            }
            assert_eq!(got.len(), 2, "step {step}");
            assert_eq!(got[0].header(":event-type"), Some("chunk"));
            assert!(got[0].payload.starts_with(b"{\"bytes\""));
            assert!(got[1].payload.is_empty());
            assert_eq!(d.pending(), 0);
        }
    }

    /// Fuzzing (`fuzz/`, target `usage`) found a stream read at once losing the message before a
    /// damaged one, which the same stream read in pieces kept (and metered).
    #[test]
    fn messages_before_a_framing_error_are_handed_on_however_the_stream_is_cut() {
        let mut bad = sample();
        let n = bad.len();
        bad[n - 20] ^= 1; // the second message is damaged
        for step in [1, 5, bad.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            let mut failed = false;
            for c in bad.chunks(step) {
                if d.push_each(c, |m| got.push(m)).is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(failed, "step {step}");
            assert_eq!(got.len(), 1, "step {step}: the first message is handed on");
            assert_eq!(got[0].header(":event-type"), Some("chunk"));
        }
    }

    /// AWS's own test vector: an empty message is 00000010 00000000 05c248eb 7d98c8ff.
    #[test]
    fn matches_the_aws_vector() {
        assert_eq!(
            encode(&[], b""),
            [
                0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff
            ]
        );
    }

    #[test]
    fn corruption_is_detected_never_panics() {
        let all = sample();
        for i in 0..all.len() {
            let mut bad = all.clone();
            bad[i] ^= 0x40;
            let _ = Decoder::default().push(&bad); // no panic, whatever the byte
        }
        let mut bad = all.clone();
        let n = bad.len();
        bad[n - 20] ^= 1; // inside the second message's payload/CRC region
        let mut d = Decoder::default();
        assert!(d.push(&bad).is_err());
        assert!(d.push(b"").is_err(), "errors stick");
        let mut rng = conduit_core::testing::Rng(9);
        for _ in 0..2000 {
            let len = rng.below(64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            let _ = Decoder::default().push(&bytes);
        }
    }
}
