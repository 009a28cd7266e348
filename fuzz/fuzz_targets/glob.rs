//! Fuzz the glob pattern check (`wharf::glob::check`) against the matcher it guards
//! (`glob-match`): policy filters and pull filters are checked with it before they are stored.
//!
//! Input: a pattern and a subject separated by the first `\n`. Oracles: nothing panics; the
//! check is deterministic; a pattern it accepts can be matched against anything.
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
        let _ = glob_match::glob_match(pattern, subject);
    }
});
