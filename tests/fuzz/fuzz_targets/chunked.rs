//! The chunked decoder (`usherd::http1::chunked`) on any bytes, fed whole
//! and in pieces cut where the input says: never a panic, the same outcome
//! however the bytes arrive, nothing read past the body's end, and the same
//! data and end as a plain reference decoder written from RFC 9112 §7.1.
//! A decoded body encodes back (`size_line`, `LAST_CHUNK`) and decodes to
//! the same data.
//!
//! Input: one byte, the seed of the piece sizes, then the chunked bytes.
//!
//! Documented difference from the reference: the decoder caps a size line
//! at 4096 bytes and the trailers at 16 KiB; inputs past either are not
//! compared.

#![no_main]

use libfuzzer_sys::fuzz_target;
use usherd::http1::chunked::{size_line, LAST_CHUNK};
use usherd::http1::ChunkedDecoder;

/// Where a decode stopped: the data, the bytes the body took when it ended,
/// or that it failed.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done(Vec<u8>, usize),
    Partial(Vec<u8>),
    Failed,
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, &[input.len().max(1)]);
    let sizes: Vec<usize> = (0..8)
        .map(|i| usize::from(seed.rotate_left(i) % 7) + 1)
        .collect();
    assert_eq!(decode(input, &sizes), whole, "fed in pieces of {sizes:?}");
    if let Outcome::Done(ref body, end) = whole {
        assert!(end <= input.len());
        let mut longer = input[..end].to_vec();
        longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            decode(&longer, &[longer.len()]),
            whole,
            "bytes after the body"
        );
        let mut encoded = Vec::new();
        if !body.is_empty() {
            size_line(body.len(), &mut encoded);
            encoded.extend_from_slice(body);
            encoded.extend_from_slice(b"\r\n");
        }
        encoded.extend_from_slice(LAST_CHUNK);
        let again = decode(&encoded, &[encoded.len()]);
        assert_eq!(again, Outcome::Done(body.clone(), encoded.len()));
    }
    if input.len() <= 4096 {
        assert_eq!(reference(input), whole, "the reference decoder");
    }
});

/// Decodes `input`, handed over in pieces of the `sizes` in turn (as a
/// connection would), as the proxy's relay does: what a step leaves stays
/// for the next.
fn decode(input: &[u8], sizes: &[usize]) -> Outcome {
    let mut decoder = ChunkedDecoder::default();
    let mut data = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut used = 0;
    for size in sizes.iter().cycle() {
        let more = (*size).min(input.len() - fed);
        pending.extend_from_slice(&input[fed..fed + more]);
        fed += more;
        loop {
            let Ok(step) = decoder.step(&pending) else {
                return Outcome::Failed;
            };
            assert!(step.consumed <= pending.len());
            if let Some((start, end)) = step.data {
                assert!(start <= end && end <= step.consumed);
                data.extend_from_slice(&pending[start..end]);
            }
            pending.drain(..step.consumed);
            used += step.consumed;
            if decoder.is_done() {
                return Outcome::Done(data, used);
            }
            if step.consumed == 0 || pending.is_empty() {
                break;
            }
        }
        if fed == input.len() {
            return Outcome::Partial(data);
        }
    }
    unreachable!()
}

/// A whole-buffer decoder from RFC 9112 §7.1's grammar, with the proxy's
/// strictness: 1-16 hex digits, optional whitespace, then `;` and an
/// extension without control bytes, or the line's end; CRLF everywhere.
fn reference(input: &[u8]) -> Outcome {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let Some(line) = line_at(input, at) else {
            return match partial_or_failed(input, at, data) {
                Outcome::Partial(_) if !size_line_prefix(&input[at..]) => Outcome::Failed,
                outcome => outcome,
            };
        };
        let Some(size) = chunk_size(&input[at..line]) else {
            return Outcome::Failed;
        };
        at = line + 2;
        if size == 0 {
            break;
        }
        let Some(end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
            data.extend_from_slice(&input[at..]);
            return Outcome::Partial(data);
        };
        if end > input.len() {
            data.extend_from_slice(&input[at..]);
            return Outcome::Partial(data);
        }
        data.extend_from_slice(&input[at..end]);
        at = end;
        match input.get(at..at + 2) {
            Some(b"\r\n") => at += 2,
            Some(_) => return Outcome::Failed,
            None if input[at..].iter().all(|&b| b == b'\r') => return Outcome::Partial(data),
            None => return Outcome::Failed,
        }
    }
    loop {
        let Some(line) = line_at(input, at) else {
            return partial_or_failed(input, at, data);
        };
        if line == at {
            return Outcome::Done(data, line + 2);
        }
        if input[at..line].iter().any(|&b| b == b'\r' || b == b'\n') {
            return Outcome::Failed;
        }
        at = line + 2;
    }
}

/// The CRLF ending the line at `at`; `None` if it has not come.
fn line_at(input: &[u8], at: usize) -> Option<usize> {
    input[at..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| at + p)
}

/// A line with no CRLF yet: an error if it already has a bare CR or LF.
fn partial_or_failed(input: &[u8], at: usize, data: Vec<u8>) -> Outcome {
    let rest = &input[at..];
    let body = rest.strip_suffix(b"\r").unwrap_or(rest);
    if body.iter().any(|&b| b == b'\r' || b == b'\n') {
        Outcome::Failed
    } else {
        Outcome::Partial(data)
    }
}

/// Whether a size line that has not ended yet can still become a valid one.
fn size_line_prefix(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.is_empty() || chunk_size(line).is_some()
}

/// The size of a chunk-size line (without its CRLF), if it is valid.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?;
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    match rest.split_first() {
        None => Some(size),
        Some((b';', extension)) => extension
            .iter()
            .all(|&b| b >= b' ' && b != 0x7f || b == b'\t')
            .then_some(size),
        Some(_) => None,
    }
}
