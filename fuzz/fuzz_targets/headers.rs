//! Fuzz the hand-written header parsers: `Link` (`wharf::link`), `Host` / `:authority`
//! (`wharf::server::normalize_host`) and Basic credentials (`wharf::api::auth`).
//!
//! Input: byte 0 picks the parser, the rest is the header value (several values for `Host`,
//! split at `\n`). Oracles: nothing panics; a `next` link is a non-empty substring of the
//! value; an accepted Host leaves exactly one `Host` header that is a valid authority without
//! user info, and normalizing it again changes nothing.
//!
//! Run from this directory: `cargo fuzz run headers` (nightly, or `RUSTC_BOOTSTRAP=1`).

#![no_main]

use http::{HeaderMap, HeaderValue, Version, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 3 {
        0 => {
            if let Some(next) = wharf::link::next(&text) {
                assert!(!next.is_empty());
                assert!(text.contains(next.as_str()), "{text:?} -> {next:?}");
            }
        }
        1 => {
            let mut h = HeaderMap::new();
            let mut lines = text.split('\n');
            let uri = lines.next().unwrap_or_default();
            for line in lines.take(3) {
                if let Ok(v) = HeaderValue::from_str(line) {
                    h.append(header::HOST, v);
                }
            }
            let Ok(uri) = uri.parse::<http::Uri>() else {
                return;
            };
            for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
                let mut h = h.clone();
                if wharf::server::normalize_host(&mut h, &uri, version, || "fallback:1".to_owned())
                    .is_ok()
                {
                    let all: Vec<_> = h.get_all(header::HOST).iter().collect();
                    assert_eq!(all.len(), 1);
                    let host = all[0].to_str().expect("ASCII");
                    assert!(!host.contains('@'));
                    let a: http::uri::Authority = host.parse().expect("an authority");
                    assert!(!a.host().is_empty());
                    let before = h.clone();
                    let plain: http::Uri = "/".parse().expect("a path");
                    wharf::server::normalize_host(&mut h, &plain, version, || {
                        "fallback:1".to_owned()
                    })
                    .expect("normalized twice");
                    assert_eq!(before, h);
                }
            }
        }
        _ => {
            let Ok(v) = HeaderValue::from_bytes(rest) else {
                return;
            };
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v);
            if let Some((user, _)) = wharf::api::auth::basic_credentials(&h) {
                assert!(!user.contains(':'));
            }
        }
    }
});
