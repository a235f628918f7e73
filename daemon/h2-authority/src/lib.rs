//! Makes gRPC clients that send a socket path as `:authority` work over a Unix socket.
//! grpc-core (Python `grpcio`, so tritonclient) sends the percent-encoded socket path for
//! `unix://` targets (`tmp%2Fkiln.sock`), which the HTTP/2 server (h2) rejects as a malformed
//! authority with RST_STREAM(PROTOCOL_ERROR). This reader sits between the socket and the
//! HTTP/2 server and looks at the client's first header block only:
//! - its `:authority` is a valid host (every Rust and Go client): from then on the
//!   connection's bytes pass through untouched, read straight into the caller's buffer;
//! - it is not: this connection keeps the rewrite. Every client header block is decoded
//!   (tracking the client's HPACK dynamic table), a bad authority replaced with `localhost`,
//!   and the block re-encoded as literals without indexing, so the server's decoder table is
//!   never used. Other frames and the write direction pass through untouched.
//!
//! Undecodable input is passed through for the server to judge. Input that would make this
//! reader hold more than a bounded amount closes the connection (a read error): a frame
//! above [`MAX_FRAME`], a header block above [`MAX_BLOCK`] (an endless CONTINUATION run), a
//! decoded header list above [`MAX_HEADER_LIST`]; the HPACK table stays at 4096 bytes. It can
//! go once h2 can be told to accept such authorities (hyperium/h2#487). Touches one
//! connection and nothing else.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which the server keeps: no client may send more.
pub const MAX_FRAME: usize = 16_384;
/// The largest header block (HEADERS with its CONTINUATIONs) read.
pub const MAX_BLOCK: usize = 64 * 1024;
/// The largest decoded header list (RFC 7541 size: name + value + 32 per field).
pub const MAX_HEADER_LIST: usize = 16 * 1024;
/// SETTINGS_HEADER_TABLE_SIZE as the server advertises it (the default).
const HPACK_TABLE: usize = 4096;
/// How much is read from the socket at a time while frames are parsed.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting for the client preface.
    Preface,
    /// Frames pass until the first header block, which decides.
    FirstBlock,
    /// Every header block is rewritten.
    Rewrite,
    /// Bytes go through untouched.
    Passthrough,
}

/// A connection whose client header blocks are normalised where they need it.
pub struct AuthorityFix<S> {
    inner: S,
    raw: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    mode: Mode,
    decoder: loona_hpack::Decoder<'static>,
    /// A header block waiting for CONTINUATION frames: (stream id, flags, block, its frames
    /// as received).
    pending: Option<(u32, u8, Vec<u8>, Vec<u8>)>,
    eof: bool,
    /// A limit was passed: the connection ends with this error.
    refused: Option<String>,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE);
        AuthorityFix {
            inner,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            mode: Mode::Preface,
            decoder,
            pending: None,
            eof: false,
            refused: None,
        }
    }

    /// True once the connection passes through untouched.
    pub fn passes_through(&self) -> bool {
        self.mode == Mode::Passthrough
    }

    /// Move every complete unit of `raw` to `out`, rewriting header blocks where needed.
    fn process(&mut self) {
        if self.mode == Mode::Preface {
            if self.raw.len() < PREFACE.len() {
                return;
            }
            if !self.raw.starts_with(PREFACE) {
                self.mode = Mode::Passthrough;
            } else {
                self.out.extend(self.raw.drain(..PREFACE.len()));
                self.mode = Mode::FirstBlock;
            }
        }
        if self.mode == Mode::Passthrough {
            self.out.append(&mut self.raw);
            return;
        }
        let mut pos = 0;
        while self.raw.len() - pos >= 9 && self.mode != Mode::Passthrough {
            let h = &self.raw[pos..pos + 9];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            if len > MAX_FRAME {
                self.refuse(format!(
                    "HTTP/2 frame of {len} bytes is above the {MAX_FRAME}-byte maximum frame size"
                ));
                return;
            }
            if self.raw.len() - pos < 9 + len {
                break;
            }
            let (ty, flags) = (h[3], h[4]);
            let ends_block = flags & END_HEADERS != 0;
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload_start = pos + 9;
            let frame_end = payload_start + len;
            let frame = pos..frame_end;
            pos = frame_end;
            // The block's stream and HEADERS flags, its fragments and its frames as received.
            let (stream, flags, block, frames) = match ty {
                HEADERS => {
                    let payload = &self.raw[payload_start..frame_end];
                    let Some(block) = header_fragment(payload, flags) else {
                        self.give_up(frame.start);
                        return;
                    };
                    (stream, flags, block.to_vec(), self.raw[frame].to_vec())
                }
                CONTINUATION if self.pending.is_some() => {
                    let (s, f, mut block, mut frames) = self.pending.take().expect("checked above");
                    block.extend_from_slice(&self.raw[payload_start..frame_end]);
                    frames.extend_from_slice(&self.raw[frame]);
                    (s, f, block, frames)
                }
                _ => {
                    self.out.extend_from_slice(&self.raw[frame]);
                    continue;
                }
            };
            if block.len() > MAX_BLOCK {
                self.refuse(format!(
                    "HTTP/2 header block above {MAX_BLOCK} bytes (CONTINUATION frames without end)"
                ));
                return;
            }
            if !ends_block {
                self.pending = Some((stream, flags, block, frames));
            } else if !self.emit_block(stream, flags, &block, &frames) {
                if self.refused.is_some() {
                    return;
                }
                self.out.extend_from_slice(&frames);
                self.give_up(pos);
                return;
            }
        }
        self.raw.drain(..pos);
        if self.mode == Mode::Passthrough {
            self.out.append(&mut self.raw);
        }
    }

    /// End the connection: nothing more is read or passed on.
    fn refuse(&mut self, why: String) {
        tracing::warn!("closing an HTTP/2 connection: {why}");
        self.refused = Some(why);
        self.raw = Vec::new();
        self.pending = None;
    }

    /// Pass everything from `raw[pos..]` on through, untouched.
    fn give_up(&mut self, pos: usize) {
        tracing::debug!("HTTP/2 header rewrite: undecodable input, passing the connection through");
        self.mode = Mode::Passthrough;
        self.out.extend(self.raw.drain(pos..));
        self.raw.clear();
    }

    /// Decode a complete block. The first one decides the connection's mode; in rewrite mode,
    /// fix the authority and re-encode as HEADERS (+ CONTINUATION) frames. False when the
    /// block does not decode.
    fn emit_block(&mut self, stream: u32, flags: u8, block: &[u8], frames: &[u8]) -> bool {
        let Ok(headers) = self.decoder.decode(block) else {
            return false;
        };
        let size: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        if size > MAX_HEADER_LIST {
            self.refuse(format!(
                "HTTP/2 header list of {size} bytes is above the {MAX_HEADER_LIST}-byte limit"
            ));
            return false;
        }
        let bad = |name: &[u8], value: &[u8]| name == b":authority" && !valid_authority(value);
        if self.mode == Mode::FirstBlock {
            if !headers.iter().any(|(n, v)| bad(n, v)) {
                // The server decodes this block itself, so its table matches the client's.
                self.out.extend_from_slice(frames);
                self.mode = Mode::Passthrough;
                return true;
            }
            self.mode = Mode::Rewrite;
        }
        let mut enc = Vec::with_capacity(block.len() + 64);
        for (name, value) in &headers {
            let value: &[u8] = if bad(name, value) {
                b"localhost"
            } else {
                value
            };
            // Literal header field without indexing, new name (RFC 7541 6.2.2).
            enc.push(0x00);
            string(&mut enc, name);
            string(&mut enc, value);
        }
        let chunks: Vec<&[u8]> = if enc.is_empty() {
            vec![&[]]
        } else {
            enc.chunks(MAX_FRAME).collect()
        };
        let last = chunks.len() - 1;
        for (i, c) in chunks.iter().enumerate() {
            let (ty, mut f) = if i == 0 {
                (HEADERS, flags & END_STREAM)
            } else {
                (CONTINUATION, 0)
            };
            if i == last {
                f |= END_HEADERS;
            }
            let n = c.len();
            self.out
                .extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, f]);
            self.out.extend_from_slice(&stream.to_be_bytes());
            self.out.extend_from_slice(c);
        }
        true
    }
}

/// The header block fragment of a HEADERS payload (without padding and priority).
fn header_fragment(payload: &[u8], flags: u8) -> Option<&[u8]> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start += 1;
        end = end.checked_sub(pad)?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    (start <= end).then(|| &payload[start..end])
}

/// host[:port] with reg-name/IPv4 characters, or a bracketed IPv6 literal.
fn valid_authority(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter().all(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b':' | b'[' | b']' | b'~')
        })
}

/// An HPACK string literal without Huffman coding.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1).
fn integer(out: &mut Vec<u8>, first: u8, n: u32, v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = v - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out = Vec::new();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            // Past a limit: what was accepted before has gone out; every read now fails.
            if let Some(why) = &this.refused {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why.clone())));
            }
            if this.mode == Mode::Passthrough && this.raw.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                // Anything left unparsed goes out as is; then end of stream.
                if !this.raw.is_empty() {
                    this.out.append(&mut this.raw);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            // Read into the spare capacity of `raw`, no zeroed scratch buffer.
            this.raw.reserve(READ_CHUNK);
            let had = this.raw.len();
            let mut rb = ReadBuf::uninit(this.raw.spare_capacity_mut());
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let got = rb.filled().len();
                    if got == 0 {
                        this.eof = true;
                    } else {
                        // SAFETY: `ReadBuf` initialised the `got` bytes after `had`.
                        unsafe { this.raw.set_len(had + got) };
                        this.process();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn block(headers: &[(&[u8], &[u8])], indexed: bool) -> Vec<u8> {
        // Literal with incremental indexing (0x40) or without (0x00), new names.
        let mut b = Vec::new();
        for (n, v) in headers {
            b.push(if indexed { 0x40 } else { 0x00 });
            string(&mut b, n);
            string(&mut b, v);
        }
        b
    }

    fn run(input: &[u8]) -> Vec<u8> {
        let mut f = AuthorityFix::new(());
        // Feed byte by byte: frames split across reads must work.
        for b in input {
            f.raw.push(*b);
            f.process();
        }
        f.out
    }

    fn decode_all(out: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut d = loona_hpack::Decoder::new();
        let mut pos = PREFACE.len();
        let mut res = Vec::new();
        let mut acc = Vec::new();
        while pos < out.len() {
            let len = (usize::from(out[pos]) << 16)
                | (usize::from(out[pos + 1]) << 8)
                | usize::from(out[pos + 2]);
            let (ty, flags) = (out[pos + 3], out[pos + 4]);
            let p = &out[pos + 9..pos + 9 + len];
            if ty == HEADERS || ty == CONTINUATION {
                acc.extend_from_slice(p);
                if flags & END_HEADERS != 0 {
                    res.push(d.decode(&acc).unwrap());
                    acc.clear();
                }
            }
            pos += 9 + len;
        }
        res
    }

    #[test]
    fn a_valid_first_authority_passes_the_connection_through_byte_for_byte() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let h1 = block(&[(b":authority", b"localhost"), (b":path", b"/x")], true);
        input.extend(frame(HEADERS, 0, 1, &h1[..5]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &h1[5..]));
        input.extend(frame(0x0, END_STREAM, 1, b"data"));
        // Later blocks, even a bad authority or bytes that do not decode, are not looked at.
        let h3 = block(&[(b":authority", b"tmp%2Fkiln.sock")], false);
        input.extend(frame(HEADERS, END_HEADERS, 3, &h3));
        input.extend(frame(HEADERS, END_HEADERS, 5, &[0xff; 6]));
        let mut f = AuthorityFix::new(());
        for b in &input {
            f.raw.push(*b);
            f.process();
        }
        assert!(f.passes_through());
        assert_eq!(f.out, input);
    }

    /// Feeds `input` until the reader refuses; returns why and how much it held.
    fn refused(input: &[u8]) -> (String, usize) {
        let mut f = AuthorityFix::new(());
        for chunk in input.chunks(4096) {
            f.raw.extend_from_slice(chunk);
            f.process();
            if let Some(why) = f.refused.take() {
                return (why, f.raw.capacity() + f.out.len());
            }
        }
        panic!("not refused");
    }

    #[test]
    fn input_past_a_limit_closes_the_connection_with_little_held() {
        // A frame declaring 16 MiB: refused at its 9-byte header, nothing buffered.
        let mut big = PREFACE.to_vec();
        big.extend_from_slice(&[0xff, 0xff, 0xff, HEADERS, 0, 0, 0, 0, 1]);
        big.extend(vec![0u8; 8192]);
        let (why, held) = refused(&big);
        assert!(why.contains("maximum frame size"), "{why}");
        assert!(held < 64 * 1024, "{held}");
        // An endless CONTINUATION run: refused past MAX_BLOCK.
        let mut flood = PREFACE.to_vec();
        let h = block(&[(b":authority", b"x%2Fy")], false);
        flood.extend(frame(HEADERS, 0, 1, &h));
        for _ in 0..100 {
            flood.extend(frame(CONTINUATION, 0, 1, &[0x00; 16_000]));
        }
        let (why, held) = refused(&flood);
        assert!(why.contains("CONTINUATION"), "{why}");
        assert!(held < 2 * MAX_BLOCK + MAX_FRAME, "{held}");
        // A header list that decodes past 16 KiB (in one frame, 16,360-byte value).
        let mut wide = PREFACE.to_vec();
        let value = vec![b'a'; 16_360];
        let b = block(&[(b"x-big", &value)], false);
        assert!(b.len() <= MAX_FRAME);
        wide.extend(frame(HEADERS, END_HEADERS, 1, &b));
        let (why, _) = refused(&wide);
        assert!(why.contains("header list"), "{why}");
    }

    #[test]
    fn percent_encoded_authority_becomes_localhost_and_indexing_stays_consistent() {
        let mut input = PREFACE.to_vec();
        let h1 = block(
            &[(b":authority", b"tmp%2Fkiln.sock"), (b":path", b"/x")],
            true,
        );
        input.extend(frame(HEADERS, END_HEADERS, 1, &h1));
        input.extend(frame(0x0, END_STREAM, 1, b"data"));
        // Second request refers to the dynamic table: index 62 = last added (:path), 63 = :authority.
        let h2 = [0x80 | 63, 0x80 | 62];
        input.extend(frame(HEADERS, 0, 3, &h2[..1]));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, &h2[1..]));
        let out = run(&input);
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            assert_eq!(b[0], (b":authority".to_vec(), b"localhost".to_vec()));
            assert_eq!(b[1], (b":path".to_vec(), b"/x".to_vec()));
        }
        // The DATA frame is untouched.
        let data = frame(0x0, END_STREAM, 1, b"data");
        assert!(out.windows(data.len()).any(|w| w == data.as_slice()));
    }

    #[test]
    fn valid_authority_is_kept_and_garbage_passes_through() {
        let mut input = PREFACE.to_vec();
        let h = block(&[(b":authority", b"kilnd.invalid:80")], false);
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &h));
        let out = run(&input);
        assert_eq!(decode_all(&out)[0][0].1, b"kilnd.invalid:80");
        let garbage = b"GET / HTTP/1.1\r\n\r\nmore bytes here".to_vec();
        assert_eq!(run(&garbage), garbage);
        let mut bad = PREFACE.to_vec();
        bad.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        assert_eq!(run(&bad), bad);
    }

    #[test]
    fn a_header_table_larger_than_advertised_is_not_kept() {
        // A dynamic table size update to 65536 (above the 4096 advertised) does not decode
        // here: the block passes for the server to refuse, and no such table is kept.
        let mut input = PREFACE.to_vec();
        let mut b = vec![0x3f, 0xe1, 0xff, 0x03];
        b.extend(block(&[(b":authority", b"x%2Fy")], true));
        input.extend(frame(HEADERS, END_HEADERS, 1, &b));
        assert_eq!(run(&input), input);
    }
}
