//! Fuzz `wharf::route::classify_request`: any method, path and query must classify without a
//! panic, the same input must always classify the same way, and — the oracle of the
//! percent-encoding finding — the path wharf forwards decodes to exactly the bytes the raw path
//! decodes to (what the registry acts on), and classifying that forwarded path gives the same
//! route again.
//!
//! Input layout: byte 0 picks the method (a standard one, or an extension method made of the
//! following bytes); the rest is split at the first `?` into path and query. Paths are prefixed
//! with `/v2/`, `/chartrepo/`, `/api/chartrepo/` or nothing, by byte 1, so the interesting
//! parsers are reached quickly.
//!
//! Run from this directory: `cargo fuzz run classify` (nightly, or `RUSTC_BOOTSTRAP=1`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::route::{Route, canonical_path, classify, classify_request};

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
    let classified = classify_request(&method, &path, query);
    let route = classified.route.clone();
    assert_eq!(route, classify(&method, &path, query));
    if matches!(route, Route::Registry(_) | Route::Chart(_)) {
        let forwarded = classified
            .canonical_path
            .clone()
            .unwrap_or_else(|| path.clone());
        let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
        assert_eq!(
            decode(&forwarded),
            decode(&path),
            "{path:?} -> {forwarded:?}"
        );
        assert_eq!(
            canonical_path(&forwarded),
            canonical_path(&path),
            "{path:?}"
        );
        let again = classify_request(&method, &forwarded, query);
        assert_eq!(again.route, route, "{path:?} -> {forwarded:?}");
        // the forwarded path is its own canonical form: nothing left to decode differently
        if let Some(c) = again.canonical_path {
            assert_eq!(c, forwarded, "{path:?}");
        }
    }
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
