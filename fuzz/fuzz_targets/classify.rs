//! Fuzz `wharf::route::classify`: any method, path and query must classify without a panic,
//! and the same input must always classify the same way.
//!
//! Input layout: byte 0 picks the method (a standard one, or an extension method made of the
//! following bytes); the rest is split at the first `?` into path and query. Paths are prefixed
//! with `/v2/`, `/chartrepo/`, `/api/chartrepo/` or nothing, by byte 1, so the interesting
//! parsers are reached quickly.
//!
//! Run from this directory: `cargo fuzz run classify` (nightly, or `RUSTC_BOOTSTRAP=1`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::route::{Route, classify};

const METHODS: [&str; 9] = [
    "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];
const PREFIXES: [&str; 5] = ["/v2/", "/chartrepo/", "/api/chartrepo/", "/", ""];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let method = match METHODS.get(data[0] as usize % 16) {
        Some(m) => http::Method::from_bytes(m.as_bytes()).unwrap(),
        None => match http::Method::from_bytes(b"X-FUZZ") {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    let prefix = PREFIXES[data[1] as usize % PREFIXES.len()];
    let rest = String::from_utf8_lossy(&data[2..]);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (format!("{prefix}{p}"), Some(q)),
        None => (format!("{prefix}{rest}"), None),
    };
    let route = classify(&method, &path, query);
    assert_eq!(route, classify(&method, &path, query));
    // The names used in metrics and logs never panic either.
    let _ = route.name();
    if let Route::Registry(op) = &route {
        let _ = op.name();
        if let Some(repo) = op.repository() {
            // A repository that classifies parses again to itself.
            let again = wharf::route::Repository::parse(repo.as_str());
            assert_eq!(again.as_ref(), Some(repo), "{path:?}");
            assert!(!repo.project().is_empty());
        }
    }
    if let Route::Chart(op) = &route {
        let _ = op.name();
    }
});
