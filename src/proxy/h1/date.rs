//! The `Date` header value (RFC 9110 §6.6.1), formatted once a second per
//! thread rather than once per response, as hyper and nginx do.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT`: always 29 bytes.
const DATE_LEN: usize = 29;

thread_local! {
    static CACHED: RefCell<(u64, [u8; DATE_LEN])> = const { RefCell::new((0, [0; DATE_LEN])) };
}

/// Appends `date: <now>\r\n` to `out`.
pub fn write_date_header(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == DATE_LEN {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&cached.1);
        out.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_an_http_date_of_now() {
        let mut out = Vec::new();
        write_date_header(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        let value = text.strip_prefix("date: ").unwrap().trim_end();
        let parsed = httpdate::parse_http_date(value).unwrap();
        let skew = SystemTime::now().duration_since(parsed).unwrap();
        assert!(skew.as_secs() <= 1, "{text}");
    }
}
