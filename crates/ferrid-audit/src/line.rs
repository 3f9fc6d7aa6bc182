//! The two kinds of lines in the log, their exact byte layout, and the hash chain.
//!
//! ```text
//! {"seq":<n>,"hash":"<64 lowercase hex>","record":<record JSON>}
//! {"sig":"<base64 ECDSA P-256 signature>","checkpoint":<checkpoint JSON>}
//! ```
//!
//! The layout is fixed (the writer produces exactly this, and the parser accepts
//! nothing else), so the record's bytes that the hash covers and the checkpoint's bytes
//! that the signature covers are the bytes in the file, with no canonicalization step
//! in between.
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AuditRecord;

/// The longest line (record or checkpoint, newline included) written or read.
pub const MAX_LINE: usize = 64 * 1024;

const RECORD_PREFIX: &[u8] = b"{\"seq\":";
const HASH_FIELD: &[u8] = b",\"hash\":\"";
const RECORD_FIELD: &[u8] = b"\",\"record\":";
const SIG_PREFIX: &[u8] = b"{\"sig\":\"";
const CHECKPOINT_FIELD: &[u8] = b"\",\"checkpoint\":";

/// Domain separation for the signature over a checkpoint.
const SIG_CONTEXT: &[u8] = b"ferrid-audit-checkpoint-v1\n";

/// The chain hash before the first record.
pub fn genesis() -> [u8; 32] {
    Sha256::digest(b"ferrid-audit-v1 genesis").into()
}

/// The chain link of record `seq` with `body` (the record's JSON as written) after
/// `prev`.
pub fn chain(prev: &[u8; 32], seq: u64, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// What a checkpoint signs: the log's first `size` records end in chain hash `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// How many records the log holds up to here (the last record's `seq`).
    pub size: u64,
    /// The chain hash after record `size` (lowercase hex).
    pub head: String,
    /// When it was signed, Unix seconds.
    pub time: i64,
    /// The signing key's ID (see [`crate::key_id_of`]).
    pub key_id: String,
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn signed_bytes(body: &[u8]) -> Vec<u8> {
        [SIG_CONTEXT, body].concat()
    }
}

/// A checkpoint with its signature and the exact bytes it was signed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The checkpoint's JSON as written.
    pub body: Vec<u8>,
    /// The ECDSA P-256 signature (fixed-length r || s).
    pub sig: Vec<u8>,
}

impl SignedCheckpoint {
    /// The checkpoint line (without the newline); also the head file's content.
    pub fn to_line(&self) -> Vec<u8> {
        encode_checkpoint(&self.sig, &self.body)
    }
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// A record line.
    Record {
        /// Its sequence number.
        seq: u64,
        /// The stored chain hash.
        hash: [u8; 32],
        /// The record's JSON as written.
        body: &'a [u8],
    },
    /// A checkpoint line.
    Checkpoint {
        /// The decoded signature.
        sig: Vec<u8>,
        /// The checkpoint's JSON as written.
        body: &'a [u8],
    },
}

/// Encodes a record line (without the newline).
pub fn encode_record(seq: u64, hash: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 100);
    out.extend_from_slice(RECORD_PREFIX);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(HASH_FIELD);
    out.extend_from_slice(hex::encode(hash).as_bytes());
    out.extend_from_slice(RECORD_FIELD);
    out.extend_from_slice(body);
    out.push(b'}');
    out
}

/// Encodes a checkpoint line (without the newline).
pub fn encode_checkpoint(sig: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 120);
    out.extend_from_slice(SIG_PREFIX);
    out.extend_from_slice(STANDARD.encode(sig).as_bytes());
    out.extend_from_slice(CHECKPOINT_FIELD);
    out.extend_from_slice(body);
    out.push(b'}');
    out
}

/// Serializes a record the way the writer does (its `seq` set).
pub fn record_body(record: &AuditRecord) -> Result<Vec<u8>, String> {
    serde_json::to_vec(record).map_err(|e| format!("encoding an audit record: {e}"))
}

fn json_object(body: &[u8], what: &str) -> Result<(), String> {
    if body.first() != Some(&b'{') || body.last() != Some(&b'}') {
        return Err(format!("the {what} is not a JSON object"));
    }
    Ok(())
}

/// Parses one line (without its newline). Only the exact layout the writer produces
/// is accepted; the record or checkpoint JSON is checked to be an object here and
/// decoded by [`parse_record`] / [`parse_checkpoint`].
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, String> {
    if line.len() >= MAX_LINE {
        return Err(format!("line of {} bytes exceeds the limit of {MAX_LINE} bytes", line.len()));
    }
    if let Some(rest) = line.strip_prefix(RECORD_PREFIX) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
            return Err("malformed record line: bad seq".into());
        }
        let seq: u64 = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed record line: seq out of range")?;
        let rest = rest[digits..].strip_prefix(HASH_FIELD).ok_or("malformed record line: no hash")?;
        if rest.len() < 64 {
            return Err("malformed record line: short hash".into());
        }
        let (hex_hash, rest) = rest.split_at(64);
        if hex_hash.iter().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("malformed record line: hash is not lowercase hex".into());
        }
        let mut hash = [0u8; 32];
        hex::decode_to_slice(hex_hash, &mut hash).map_err(|e| format!("malformed record line: hash: {e}"))?;
        let rest = rest.strip_prefix(RECORD_FIELD).ok_or("malformed record line: no record")?;
        let body = rest.strip_suffix(b"}").ok_or("malformed record line: not closed")?;
        json_object(body, "record")?;
        Ok(Line::Record { seq, hash, body })
    } else if let Some(rest) = line.strip_prefix(SIG_PREFIX) {
        let end =
            rest.iter().position(|b| *b == b'"').ok_or("malformed checkpoint line: unterminated sig")?;
        let sig = STANDARD
            .decode(&rest[..end])
            .map_err(|e| format!("malformed checkpoint line: signature is not base64: {e}"))?;
        let rest =
            rest[end..].strip_prefix(CHECKPOINT_FIELD).ok_or("malformed checkpoint line: no checkpoint")?;
        let body = rest.strip_suffix(b"}").ok_or("malformed checkpoint line: not closed")?;
        json_object(body, "checkpoint")?;
        Ok(Line::Checkpoint { sig, body })
    } else {
        Err("neither a record nor a checkpoint line".into())
    }
}

/// Decodes a record body.
pub fn parse_record(body: &[u8]) -> Result<AuditRecord, String> {
    serde_json::from_slice(body).map_err(|e| format!("record is not valid: {e}"))
}

/// Decodes a checkpoint body.
pub fn parse_checkpoint(body: &[u8]) -> Result<Checkpoint, String> {
    let c: Checkpoint = serde_json::from_slice(body).map_err(|e| format!("checkpoint is not valid: {e}"))?;
    let mut h = [0u8; 32];
    hex::decode_to_slice(&c.head, &mut h)
        .map_err(|_| "checkpoint head is not a SHA-256 in hex".to_owned())?;
    Ok(c)
}

/// Parses a head file or witness checkpoint (one checkpoint line, optional newline).
pub fn parse_signed_checkpoint(text: &[u8]) -> Result<SignedCheckpoint, String> {
    let line = text.strip_suffix(b"\n").unwrap_or(text);
    match parse_line(line)? {
        Line::Checkpoint { sig, body } => {
            Ok(SignedCheckpoint { checkpoint: parse_checkpoint(body)?, body: body.to_vec(), sig })
        }
        Line::Record { .. } => Err("a record line, not a checkpoint".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines_round_trip() {
        let body = br#"{"seq":3,"time":1}"#;
        let h = chain(&genesis(), 3, body);
        let line = encode_record(3, &h, body);
        assert_eq!(parse_line(&line).unwrap(), Line::Record { seq: 3, hash: h, body });
    }

    #[test]
    fn checkpoint_lines_round_trip() {
        let body = br#"{"size":1,"head":"00","time":2,"key_id":"k"}"#;
        let line = encode_checkpoint(&[1, 2, 3], body);
        assert_eq!(parse_line(&line).unwrap(), Line::Checkpoint { sig: vec![1, 2, 3], body });
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b""[..],
            b"{}",
            b"{\"seq\":01,\"hash\":\"",
            b"{\"seq\":1,\"hash\":\"00\",\"record\":{}}",
            b"{\"sig\":\"***\",\"checkpoint\":{}}",
            b"{\"seq\":99999999999999999999999,\"hash\":\"",
        ] {
            assert!(parse_line(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = vec![b'x'; MAX_LINE];
        assert!(parse_line(&long).unwrap_err().contains("exceeds"));
    }
}
