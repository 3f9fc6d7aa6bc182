//! Accepting gRPC clients that send a Unix socket path as the HTTP/2 `:authority`.
//!
//! gRPC's C core (and so grpcio for Python, Ruby, PHP and C++), grpc-java and
//! grpc-swift name a Unix-socket channel's `:authority` after the socket path — raw
//! (`/run/agent.sock`) or percent-encoded (`%2Frun%2Fagent.sock`). Neither is a valid
//! RFC 3986 authority, and the `h2` crate under tonic answers such a request with
//! `RST_STREAM(PROTOCOL_ERROR)`, so every py-spiffe call would fail. The `:authority`
//! of a Unix-socket request carries no meaning (there is no host to route to), so the
//! fix is to replace an invalid one with `localhost`, which is what grpc-go sends.
//!
//! [`AuthorityRewriter`] does that on the bytes a client sends, before `h2` parses
//! them, using only the HTTP/2 wire format (RFC 9113) and HPACK (RFC 7541). It decodes
//! the connection's first header block (HEADERS plus any CONTINUATION frames). If its
//! `:authority` is valid, that block and the rest of the connection are forwarded
//! untouched, so clients that need no repair (tonic, grpc-go) pay for one decode per
//! connection. Otherwise every header block from then on is decoded with the client's
//! compression context and re-encoded with literal representations that never touch
//! the dynamic table, so the server's decoder stays in step however the client indexes
//! its headers; all other frames pass through as they are. Because it
//! relies on no internals of `h2`, tonic or hyper, it keeps working across their
//! updates; and an authority that `http` already accepts is left exactly as sent.
use std::borrow::Cow;

use loona_hpack::Decoder;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload every HTTP/2 peer must accept (RFC 9113 §4.2).
const MIN_MAX_FRAME: usize = 16_384;
/// Largest compressed header block accepted from a client, across CONTINUATIONs.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Largest decoded header list (names + values + 32 bytes each, as RFC 9113 counts
/// it); a small block can expand a lot through the dynamic table.
pub const MAX_HEADER_LIST: usize = 256 * 1024;

/// What the rewriter refuses: the connection is closed with this as the I/O error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    /// The HPACK block did not decode.
    #[error("malformed HPACK header block: {0}")]
    Hpack(String),
    /// The header block or list exceeds the limits.
    #[error("header block too large ({0} bytes)")]
    TooLarge(usize),
    /// Frames arrived in an order HTTP/2 forbids around a header block.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

enum State {
    /// Bytes of the client preface still expected.
    Preface(usize),
    /// Between frames.
    Frames,
    /// Forwarding the payload of a frame that is not rewritten.
    Passthrough(usize),
    /// Not HTTP/2 with prior knowledge: forward everything unchanged.
    Opaque,
}

struct Pending {
    stream: [u8; 4],
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// The frames as received, forwarded unchanged when nothing needs fixing.
    raw: Vec<u8>,
}

/// Rewrites invalid `:authority` values to `localhost` in a client-to-server HTTP/2
/// byte stream. Feed it what the client sent, in order; it appends what the server
/// should see.
pub struct AuthorityRewriter {
    state: State,
    buf: Vec<u8>,
    decoder: Decoder<'static>,
    pending: Option<Pending>,
    rewritten: u64,
    /// Set once a block needed a fix: from then on every block is re-encoded, because
    /// the server's HPACK context follows the re-encoded stream, not the client's.
    rewriting: bool,
}

impl std::fmt::Debug for AuthorityRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityRewriter").field("rewritten", &self.rewritten).finish_non_exhaustive()
    }
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityRewriter {
    /// A rewriter for a new connection.
    pub fn new() -> Self {
        Self {
            state: State::Preface(PREFACE.len()),
            buf: Vec::new(),
            decoder: Decoder::new(),
            pending: None,
            rewritten: 0,
            rewriting: false,
        }
    }

    /// How many `:authority` values have been replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Consumes `input` and appends the bytes to forward to `out`. Bytes that do not
    /// yet complete a frame header or a header block are held until more arrive.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        while !input.is_empty() {
            match self.state {
                State::Opaque => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Preface(left) => {
                    let offset = PREFACE.len() - left;
                    let n = left.min(input.len());
                    if input[..n] != PREFACE[offset..offset + n] {
                        // Not a prior-knowledge HTTP/2 client; let the server reject it.
                        self.state = State::Opaque;
                        continue;
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == left { State::Frames } else { State::Preface(left - n) };
                }
                State::Passthrough(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == left { State::Frames } else { State::Passthrough(left - n) };
                }
                State::Frames => {
                    // Gather a frame header; header-block frames also need their payload.
                    let need_header = FRAME_HEADER.saturating_sub(self.buf.len());
                    if need_header > 0 {
                        let n = need_header.min(input.len());
                        self.buf.extend_from_slice(&input[..n]);
                        input = &input[n..];
                        if self.buf.len() < FRAME_HEADER {
                            continue;
                        }
                    }
                    let len = usize::from(self.buf[0]) << 16
                        | usize::from(self.buf[1]) << 8
                        | usize::from(self.buf[2]);
                    let kind = self.buf[3];
                    if kind != HEADERS && kind != CONTINUATION {
                        if self.pending.is_some() {
                            return Err(RewriteError::Protocol("header block interrupted by another frame"));
                        }
                        out.extend_from_slice(&self.buf);
                        self.buf.clear();
                        self.state = if len == 0 { State::Frames } else { State::Passthrough(len) };
                        continue;
                    }
                    let pending_len = self.pending.as_ref().map_or(0, |p| p.block.len());
                    if pending_len + len > MAX_HEADER_BLOCK + MIN_MAX_FRAME {
                        return Err(RewriteError::TooLarge(pending_len + len));
                    }
                    let need = FRAME_HEADER + len - self.buf.len();
                    let n = need.min(input.len());
                    self.buf.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if n == need {
                        let frame = std::mem::take(&mut self.buf);
                        self.frame(&frame, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Handles one complete HEADERS or CONTINUATION frame.
    fn frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream: [u8; 4] = frame[5..9].try_into().expect("frame header is 9 bytes");
        let mut payload = &frame[FRAME_HEADER..];
        if kind == HEADERS {
            if self.pending.is_some() {
                return Err(RewriteError::Protocol("HEADERS while a header block is open"));
            }
            if flags & PADDED != 0 {
                let (&pad, rest) =
                    payload.split_first().ok_or(RewriteError::Protocol("empty padded HEADERS"))?;
                let pad = usize::from(pad);
                if pad > rest.len() {
                    return Err(RewriteError::Protocol("HEADERS padding longer than the frame"));
                }
                payload = &rest[..rest.len() - pad];
            }
            let priority = if flags & PRIORITY != 0 {
                let p: [u8; 5] = payload
                    .get(..5)
                    .and_then(|p| p.try_into().ok())
                    .ok_or(RewriteError::Protocol("HEADERS too short for its priority"))?;
                payload = &payload[5..];
                Some(p)
            } else {
                None
            };
            self.pending =
                Some(Pending { stream, flags, priority, block: payload.to_vec(), raw: frame.to_vec() });
        } else {
            let p = self.pending.as_mut().ok_or(RewriteError::Protocol("CONTINUATION without HEADERS"))?;
            if p.stream != stream {
                return Err(RewriteError::Protocol("CONTINUATION on a different stream"));
            }
            p.block.extend_from_slice(payload);
            p.raw.extend_from_slice(frame);
        }
        let block_len = self.pending.as_ref().map_or(0, |p| p.block.len());
        if block_len > MAX_HEADER_BLOCK {
            return Err(RewriteError::TooLarge(block_len));
        }
        if flags & END_HEADERS != 0 {
            let p = self.pending.take().expect("a header block is open");
            let (block, fixed) = self.reencode(&p.block)?;
            if fixed > 0 || self.rewriting {
                self.rewriting = true;
                self.rewritten += fixed;
                write_header_frames(&p, &block, out);
            } else {
                // The first request of the connection was fine as sent: forward it as is
                // and everything after it untouched. A gRPC channel's authority is fixed,
                // so the client's later requests carry the same one.
                out.extend_from_slice(&p.raw);
                self.state = State::Opaque;
            }
        }
        Ok(())
    }

    /// Decodes a block in the client's compression context and re-encodes it without
    /// indexing, fixing `:authority` on the way; also says how many values it fixed.
    fn reencode(&mut self, block: &[u8]) -> Result<(Vec<u8>, u64), RewriteError> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut size = 0usize;
        let mut fixed = 0u64;
        self.decoder
            .decode_with_cb(block, |name: Cow<'_, [u8]>, value: Cow<'_, [u8]>| {
                size += name.len() + value.len() + 32;
                if size > MAX_HEADER_LIST {
                    return;
                }
                let value: &[u8] = if &*name == b":authority" && !valid_authority(&value) {
                    fixed += 1;
                    b"localhost"
                } else {
                    &value
                };
                encode_literal(&name, value, &mut out);
            })
            .map_err(|e| RewriteError::Hpack(format!("{e:?}")))?;
        if size > MAX_HEADER_LIST {
            return Err(RewriteError::TooLarge(size));
        }
        Ok((out, fixed))
    }
}

/// Whether `h2` would accept `value` as an `:authority` (it parses it with `http`).
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// A literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    encode_string(name, out);
    encode_string(value, out);
}

fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    // H = 0, length with a 7-bit prefix (RFC 7541 §5.1, §5.2).
    encode_int(s.len(), 7, out);
    out.extend_from_slice(s);
}

fn encode_int(mut value: usize, prefix_bits: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(value as u8);
        return;
    }
    out.push(max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Writes `block` as a HEADERS frame (keeping END_STREAM and the priority fields,
/// dropping padding) followed by CONTINUATION frames, each within the minimum frame
/// size every peer accepts.
fn write_header_frames(p: &Pending, block: &[u8], out: &mut Vec<u8>) {
    let prio_len = if p.priority.is_some() { 5 } else { 0 };
    let first_len = block.len().min(MIN_MAX_FRAME - prio_len);
    let (first, mut rest) = block.split_at(first_len);
    let mut flags = p.flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(first.len() + prio_len, HEADERS, flags, p.stream, out);
    if let Some(prio) = p.priority {
        out.extend_from_slice(&prio);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let n = rest.len().min(MIN_MAX_FRAME);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        frame_header(n, CONTINUATION, if rest.is_empty() { END_HEADERS } else { 0 }, p.stream, out);
        out.extend_from_slice(chunk);
    }
}

fn frame_header(len: usize, kind: u8, flags: u8, stream: [u8; 4], out: &mut Vec<u8>) {
    let len = u32::try_from(len).expect("frame length fits 24 bits");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::Encoder;

    fn headers_frame(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        frame_header(block.len(), HEADERS, flags, stream.to_be_bytes(), &mut f);
        f.extend_from_slice(block);
        f
    }

    /// Splits a forwarded byte stream into (type, flags, stream, payload) frames.
    fn frames(mut b: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(b.starts_with(PREFACE));
        b = &b[PREFACE.len()..];
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
            let stream = u32::from_be_bytes(b[5..9].try_into().unwrap());
            out.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        out
    }

    /// Decodes the forwarded header blocks as the server would, with a fresh decoder
    /// that must never see a dynamic-table entry.
    fn server_view(forwarded: &[u8]) -> Vec<Vec<(String, String)>> {
        let mut dec = Decoder::new();
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        for (kind, flags, _, payload) in frames(forwarded) {
            match kind {
                HEADERS => {
                    let skip = if flags & PRIORITY != 0 { 5 } else { 0 };
                    block.extend_from_slice(&payload[skip..]);
                }
                CONTINUATION => block.extend_from_slice(&payload),
                _ => continue,
            }
            if flags & END_HEADERS != 0 {
                let h = dec.decode(&block).unwrap();
                blocks.push(
                    h.into_iter()
                        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                        .collect(),
                );
                block.clear();
            }
        }
        blocks
    }

    fn grpc_request(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
            (":authority", authority),
            ("workload.spiffe.io", "true"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .into_iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    fn run(input: &[u8], chunk: usize) -> Result<Vec<u8>, RewriteError> {
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            rw.feed(c, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn percent_encoded_socket_path_becomes_localhost_across_indexed_requests() {
        // The client's encoder indexes headers, so the second request refers to the
        // first one's entries through the dynamic table.
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        for stream in [1u32, 3] {
            let h = grpc_request("%2Ftmp%2Fferrid%2Fagent%2Fapi.sock");
            let block = enc.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
            input.extend(headers_frame(stream, END_HEADERS, &block));
            // A DATA frame in between passes through untouched.
            input.extend_from_slice(&[0, 0, 5, 0, 1, 0, 0, 0, stream as u8, 0, 0, 0, 0, 0]);
        }
        for chunk in [1, 7, 4096] {
            let out = run(&input, chunk).unwrap();
            let blocks = server_view(&out);
            assert_eq!(blocks.len(), 2);
            for b in &blocks {
                assert!(b.contains(&(":authority".into(), "localhost".into())), "{b:?}");
                assert!(b.contains(&(":path".into(), "/SpiffeWorkloadAPI/FetchX509SVID".into())));
                assert!(b.contains(&("workload.spiffe.io".into(), "true".into())));
                assert_eq!(b[0].0, ":method", "pseudo-headers keep their order");
            }
            let data: Vec<_> = frames(&out).into_iter().filter(|f| f.0 == 0).collect();
            assert_eq!(data.len(), 2);
            assert_eq!(data[0].3, vec![0; 5]);
        }
    }

    #[test]
    fn raw_socket_path_is_replaced_and_valid_authorities_are_kept() {
        for (sent, seen) in [
            ("/var/run/agent.sock", "localhost"),
            ("localhost", "localhost"),
            ("agent.local:8080", "agent.local:8080"),
        ] {
            let h = grpc_request(sent);
            let block = Encoder::new().encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
            let mut input = PREFACE.to_vec();
            input.extend(headers_frame(1, END_HEADERS | END_STREAM, &block));
            let out = run(&input, 3).unwrap();
            assert!(server_view(&out)[0].contains(&(":authority".into(), seen.into())), "{sent}");
            assert_eq!(frames(&out)[0].1 & END_STREAM, END_STREAM, "END_STREAM kept");
        }
    }

    #[test]
    fn padding_priority_and_continuation_are_handled() {
        let h = grpc_request("%2Fs.sock");
        let block = Encoder::new().encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
        let (a, b) = block.split_at(10);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 0, 7]); // priority: exclusive, dep 0, weight 7
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        frame_header(payload.len(), HEADERS, PADDED | PRIORITY, 1u32.to_be_bytes(), &mut input);
        input.extend_from_slice(&payload);
        frame_header(b.len(), CONTINUATION, END_HEADERS, 1u32.to_be_bytes(), &mut input);
        input.extend_from_slice(b);
        let out = run(&input, 2).unwrap();
        let f = frames(&out);
        assert_eq!(f.len(), 1, "re-encoded into one HEADERS frame");
        assert_eq!(f[0].1 & PADDED, 0);
        assert_eq!(&f[0].3[..5], &[0x80, 0, 0, 0, 7], "priority kept");
        assert!(server_view(&out)[0].contains(&(":authority".into(), "localhost".into())));
    }

    #[test]
    fn large_blocks_are_split_into_continuations() {
        let mut h = grpc_request("%2Fs.sock");
        h.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let block = Encoder::new().encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut input = PREFACE.to_vec();
        let (a, b) = block.split_at(block.len() / 2);
        input.extend(headers_frame(1, 0, a));
        frame_header(b.len(), CONTINUATION, END_HEADERS, 1u32.to_be_bytes(), &mut input);
        input.extend_from_slice(b);
        let out = run(&input, 1000).unwrap();
        let f = frames(&out);
        assert!(f.len() >= 3 && f.iter().all(|f| f.3.len() <= MIN_MAX_FRAME));
        assert_eq!(f.last().unwrap().1 & END_HEADERS, END_HEADERS);
        assert_eq!(server_view(&out)[0].last().unwrap().1.len(), 40_000);
    }

    #[test]
    fn hostile_input_is_refused() {
        // Garbage HPACK: an index far past both tables.
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, END_HEADERS, &[0xff, 0xff, 0xff, 0x7f]));
        assert!(matches!(run(&input, 64), Err(RewriteError::Hpack(_))));

        // A header block that never ends grows past the limit.
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, 0, &[0u8; 16_000]));
        for _ in 0..5 {
            frame_header(16_000, CONTINUATION, 0, 1u32.to_be_bytes(), &mut input);
            input.extend_from_slice(&[0u8; 16_000]);
        }
        assert!(matches!(run(&input, 4096), Err(RewriteError::TooLarge(_))));

        // Amplification through the dynamic table: one big entry referenced many times.
        let mut enc = Encoder::new();
        let first = enc.encode([(&b"x-a"[..], &[b'a'; 3000][..])]);
        let mut block = first.clone();
        block.extend(std::iter::repeat_n(0xbe, 200)); // index 62: the entry just added
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, END_HEADERS, &block));
        assert!(matches!(run(&input, 4096), Err(RewriteError::TooLarge(_))));

        // Another frame inside an open header block.
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, 0, &[0x82]));
        input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(run(&input, 64), Err(RewriteError::Protocol("header block interrupted by another frame")));

        // CONTINUATION out of nowhere, and on another stream.
        let mut input = PREFACE.to_vec();
        frame_header(1, CONTINUATION, END_HEADERS, 1u32.to_be_bytes(), &mut input);
        input.push(0x82);
        assert_eq!(run(&input, 64), Err(RewriteError::Protocol("CONTINUATION without HEADERS")));
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, 0, &[0x82]));
        frame_header(1, CONTINUATION, END_HEADERS, 3u32.to_be_bytes(), &mut input);
        input.push(0x84);
        assert_eq!(run(&input, 64), Err(RewriteError::Protocol("CONTINUATION on a different stream")));

        // Padding longer than the frame.
        let mut input = PREFACE.to_vec();
        frame_header(2, HEADERS, PADDED | END_HEADERS, 1u32.to_be_bytes(), &mut input);
        input.extend_from_slice(&[9, 0x82]);
        assert_eq!(run(&input, 64), Err(RewriteError::Protocol("HEADERS padding longer than the frame")));
    }

    #[test]
    fn a_connection_that_needs_no_fix_is_forwarded_byte_for_byte() {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        for stream in [1u32, 3, 5] {
            let h = grpc_request("localhost");
            let block = enc.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
            input.extend(headers_frame(stream, END_HEADERS, &block));
            input.extend_from_slice(&[0, 0, 2, 0, 1, 0, 0, 0, stream as u8, 7, 7]);
        }
        for chunk in [1, 5, 100] {
            assert_eq!(run(&input, chunk).unwrap(), input, "chunk {chunk}");
        }
    }

    #[test]
    fn once_fixing_every_later_block_is_reencoded() {
        // First request needs the fix, the second carries a valid authority: the
        // second must still be re-encoded (the client indexed it against a context the
        // server never saw), and its valid authority is kept.
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        for (stream, authority) in [(1u32, "%2Fa.sock"), (3, "svc.local")] {
            let h = grpc_request(authority);
            let block = enc.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
            input.extend(headers_frame(stream, END_HEADERS, &block));
        }
        let out = run(&input, 3).unwrap();
        let blocks = server_view(&out);
        assert!(blocks[0].contains(&(":authority".into(), "localhost".into())));
        assert!(blocks[1].contains(&(":authority".into(), "svc.local".into())));
        assert!(blocks[1].contains(&(":path".into(), "/SpiffeWorkloadAPI/FetchX509SVID".into())));
    }

    #[test]
    fn non_http2_bytes_pass_through() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(run(input, 5).unwrap(), input.to_vec());
    }

    #[test]
    fn integers_round_trip_through_the_hpack_decoder() {
        for n in [0usize, 126, 127, 128, 300, 16_384, 70_000] {
            let mut out = Vec::new();
            encode_literal(b"x", &vec![b'v'; n], &mut out);
            let h = Decoder::new().decode(&out).unwrap();
            assert_eq!(h[0].1.len(), n);
        }
    }
}
