//! Fuzz the glob pattern check (`wharf::glob::check`) against the matcher it guards
//! (`wharf::glob::matches`, i.e. `fast-glob`): policy filters and pull filters are checked with
//! it before they are stored.
//!
//! Input: a pattern and a subject separated by the first `\n`. Oracles: nothing panics; the
//! check is deterministic; a pattern it accepts is one the matcher's own `validate` accepts, and
//! can be matched against anything in bounded time (the run's `-timeout`): glob-match 0.2.1,
//! the matcher before, looped forever on `{/**/,*}` against `//`, and fast-glob took seconds
//! (debug build) on patterns whose braces expand to thousands of alternatives, which `check`
//! now refuses (seeds `globstar-in-brace`, `many-alternatives`).
//!
//! Run from this directory: `cargo fuzz run glob` (nightly, or `RUSTC_BOOTSTRAP=1`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, subject) = text.split_once('\n').unwrap_or((&text, ""));
    let verdict = wharf::glob::check(pattern);
    assert_eq!(verdict, wharf::glob::check(pattern));
    if verdict.is_ok() {
        assert!(fast_glob::validate(pattern).is_ok(), "{pattern:?}");
        let _ = wharf::glob::matches(pattern, subject);
    }
});
