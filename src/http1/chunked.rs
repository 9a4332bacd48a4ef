//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally from
//! whatever bytes have arrived, and encoded back.
//!
//! The decoder is strict where leniency lets one side read a different
//! message than the other (request smuggling): a chunk size is 1 to 16 hex
//! digits, followed by nothing but whitespace then an extension (`;`) or
//! the line's end (`5 junk` is refused), every line ends in CRLF (a bare LF or CR is an error, in
//! extensions too), and the CRLF after each chunk's data is required.
//! Extensions and trailer fields are read and dropped.

/// The longest chunk-size line accepted, extensions included.
const MAX_SIZE_LINE: usize = 4096;

/// The most trailer bytes accepted after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked encoding: {0}")]
pub struct ChunkError(&'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(u64),
    /// After a chunk's data: its CR.
    DataCr,
    /// After a chunk's data: its LF.
    DataLf,
    /// After the last chunk, at the start of a trailer line (or the end).
    TrailerLine,
    /// Inside a trailer line.
    InTrailer,
    /// The LF of the final empty line.
    EndLf,
    Done,
}

/// One step of decoding: how many input bytes it used and, when they were
/// chunk data, where that data lies in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub data: Option<(usize, usize)>,
}

/// Decodes one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size,
            trailer_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    /// True once the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`. A step that consumes nothing needs more input
    /// (the rest of a size line, which stays in `input`). Data comes in
    /// steps of its own; call again with the rest until `is_done` or the
    /// input is used up.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Size => {
                    let Some((used, size)) = parse_size_line(&input[at..])? else {
                        break;
                    };
                    at += used;
                    self.state = if size == 0 {
                        State::TrailerLine
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    // Data is returned alone, as soon as there is some.
                    if at > 0 {
                        break;
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    let rest = left - take as u64;
                    self.state = if rest == 0 {
                        State::DataCr
                    } else {
                        State::Data(rest)
                    };
                    return Ok(Step {
                        consumed: take,
                        data: Some((0, take)),
                    });
                }
                State::DataCr => {
                    expect(input[at], b'\r', "chunk data not followed by CRLF")?;
                    at += 1;
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    expect(input[at], b'\n', "chunk data not followed by CRLF")?;
                    at += 1;
                    self.state = State::Size;
                }
                State::TrailerLine => {
                    self.state = match input[at] {
                        b'\r' => State::EndLf,
                        b'\n' => return Err(ChunkError("bare LF in a trailer")),
                        _ => {
                            self.count_trailer()?;
                            State::InTrailer
                        }
                    };
                    at += 1;
                }
                State::InTrailer => {
                    let byte = input[at];
                    at += 1;
                    self.count_trailer()?;
                    match byte {
                        b'\r' => {
                            let next = input.get(at).copied();
                            match next {
                                Some(b'\n') => {
                                    at += 1;
                                    self.state = State::TrailerLine;
                                }
                                Some(_) => return Err(ChunkError("bare CR in a trailer")),
                                // The LF is still to come: read this CR again then.
                                None => {
                                    at -= 1;
                                    break;
                                }
                            }
                        }
                        b'\n' => return Err(ChunkError("bare LF in a trailer")),
                        _ => {}
                    }
                }
                State::EndLf => {
                    expect(input[at], b'\n', "the last chunk is not followed by CRLF")?;
                    at += 1;
                    self.state = State::Done;
                }
                State::Done => break,
            }
        }
        Ok(Step {
            consumed: at,
            data: None,
        })
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(ChunkError("trailers too large"));
        }
        Ok(())
    }
}

fn expect(byte: u8, wanted: u8, why: &'static str) -> Result<(), ChunkError> {
    if byte == wanted {
        Ok(())
    } else {
        Err(ChunkError(why))
    }
}

/// A whole chunk-size line at the start of `input`: its length and the
/// size; `None` when the line has not all arrived.
fn parse_size_line(input: &[u8]) -> Result<Option<(usize, u64)>, ChunkError> {
    let mut size: u64 = 0;
    let mut digits = 0;
    // After the digits: whitespace (BWS), then only `;` (an extension) or CRLF.
    let mut after_digits = false;
    let mut in_extension = false;
    for (index, &byte) in input.iter().enumerate() {
        match byte {
            b'\r' => {
                return match input.get(index + 1) {
                    Some(b'\n') if digits > 0 => Ok(Some((index + 2, size))),
                    Some(b'\n') => Err(ChunkError("a chunk size has no digits")),
                    Some(_) => Err(ChunkError("bare CR in a chunk-size line")),
                    None => Ok(None),
                };
            }
            b'\n' => return Err(ChunkError("bare LF in a chunk-size line")),
            _ if in_extension => {
                if byte < b' ' && byte != b'\t' || byte == 0x7f {
                    return Err(ChunkError("control character in a chunk extension"));
                }
            }
            b';' if digits > 0 => in_extension = true,
            b' ' | b'\t' if digits > 0 => after_digits = true,
            _ if after_digits => return Err(ChunkError("junk after a chunk size")),
            _ => {
                let Some(digit) = (byte as char).to_digit(16) else {
                    return Err(ChunkError("a chunk size is not hexadecimal"));
                };
                digits += 1;
                if digits > 16 {
                    return Err(ChunkError("a chunk size is too large"));
                }
                size = size << 4 | u64::from(digit);
            }
        }
        if index >= MAX_SIZE_LINE {
            return Err(ChunkError("a chunk-size line is too long"));
        }
    }
    if input.len() > MAX_SIZE_LINE {
        return Err(ChunkError("a chunk-size line is too long"));
    }
    Ok(None)
}

/// The line that starts a chunk of `len` bytes: `{len:x}\r\n`.
pub fn size_line(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = len;
    loop {
        at -= 1;
        digits[at] = HEX[rest & 0xf];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes, as a slow peer would
    /// send it; the data and whether the body ended.
    fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut data = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for part in input.chunks(piece) {
            pending.extend_from_slice(part);
            loop {
                let step = decoder.step(&pending)?;
                if let Some((start, end)) = step.data {
                    data.extend_from_slice(&pending[start..end]);
                }
                pending.drain(..step.consumed);
                if step.consumed == 0 || decoder.is_done() {
                    break;
                }
            }
            if decoder.is_done() {
                break;
            }
        }
        Ok((data, decoder.is_done()))
    }

    #[test]
    fn decodes_in_any_pieces() {
        let body = b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Sum: 1\r\n\r\n";
        for piece in [1, 2, 3, 7, body.len()] {
            let (data, done) = decode(body, piece).unwrap();
            assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.", "piece {piece}");
            assert!(done);
        }
        let (data, done) = decode(b"3 \t;a=b\r\nabc\r\n2 \r\nde\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(
            (&data[..], done),
            (&b"abcde"[..], true),
            "whitespace before `;`"
        );
        let (data, done) = decode(b"3\r\nabc\r\n0\r\n", 100).unwrap();
        assert_eq!(data, b"abc");
        assert!(!done, "the final CRLF has not come");
    }

    #[test]
    fn lenient_shapes_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n",
            b"3;a\nb\r\nabc\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"3\r\nabc\r\n0\r\nX: 1\nY: 2\r\n\r\n",
            b"0\r\n\rX",
            b"-1\r\n",
            b"5 junk\r\nhello\r\n0\r\n\r\n",
            b"5\tjunk;a=b\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode(bad, 100).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_SIZE_LINE));
        assert!(decode(long.as_bytes(), 100).is_err());
    }

    /// Found by fuzzing (tests/fuzz, target `chunked`): a bare LF opening a
    /// trailer line was taken as part of it, so `0\r\n\n` did not end the
    /// body and the request after it was read as a trailer.
    #[test]
    fn a_bare_lf_after_the_last_chunk_is_refused() {
        for bad in [
            &b"0\r\n\n"[..],
            b"0\r\n\nX: 1\r\n\r\n",
            b"3\r\nabc\r\n0\r\n\nGET /admin HTTP/1.1\r\n\r\n",
            b"0\r\nX: 1\r\n\nY: 2\r\n\r\n",
        ] {
            for piece in [1, 100] {
                assert!(
                    decode(bad, piece).is_err(),
                    "{}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }

    #[test]
    fn size_lines_are_lower_hex() {
        for (len, line) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (255, "ff\r\n"),
        ] {
            let mut out = Vec::new();
            size_line(len, &mut out);
            assert_eq!(out, line.as_bytes());
        }
    }

    /// Random bodies, chunked at random with random extensions and
    /// trailers, fed in random pieces: the same bytes come out.
    #[test]
    fn random_bodies_round_trip() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for _ in 0..500 {
            let body: Vec<u8> = (0..rng.usize(0..3000)).map(|_| rng.u8(..)).collect();
            let mut encoded = Vec::new();
            let mut rest = &body[..];
            while !rest.is_empty() {
                let take = rng.usize(1..=rest.len().min(700));
                size_line(take, &mut encoded);
                if rng.bool() {
                    encoded.truncate(encoded.len() - 2);
                    encoded.extend_from_slice(b";name=\"value\"\r\n");
                }
                encoded.extend_from_slice(&rest[..take]);
                encoded.extend_from_slice(b"\r\n");
                rest = &rest[take..];
            }
            encoded.extend_from_slice(b"0\r\n");
            if rng.bool() {
                encoded.extend_from_slice(b"X-Checksum: 1\r\n");
            }
            encoded.extend_from_slice(b"\r\n");
            let (data, done) = decode(&encoded, rng.usize(1..64)).unwrap();
            assert_eq!(data, body);
            assert!(done);
        }
    }

    /// Random bytes, biased towards the ones framing is made of: an error or
    /// a result, never a panic, and never more data than was fed.
    #[test]
    fn random_input_is_refused_or_decoded_safely() {
        let mut rng = fastrand::Rng::with_seed(0xbad);
        let alphabet = b"0123456789abcdefABCDEF;= \t\r\nxyz\x00\x7f";
        for _ in 0..5000 {
            let input: Vec<u8> = (0..rng.usize(0..200))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            if let Ok((data, _)) = decode(&input, rng.usize(1..16)) {
                assert!(data.len() <= input.len());
            }
        }
    }
}
