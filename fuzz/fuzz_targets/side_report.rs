//! Fuzz the side endpoint's scan-report reader (`wharf::events::scan::summarize`): Trivy JSON
//! reports and scanner-adapter reports, summarized into severity counts and a capped list of
//! vulnerabilities.
//!
//! Input: byte 0 is the list cap, the rest a JSON document. Oracles: nothing panics; the list
//! holds at most the cap, is marked truncated exactly when the counts exceed it, and the counts
//! add up to the total.
//!
//! Run from this directory: `cargo fuzz run side_report` (nightly, or `RUSTC_BOOTSTRAP=1`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cap, body)) = data.split_first() else {
        return;
    };
    let Ok(report) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let max = usize::from(cap % 8);
    if let Ok(info) = wharf::events::scan::summarize(&report, max) {
        assert!(info.vulnerabilities.len() <= max);
        let c = &info.counts;
        let listed = info.vulnerabilities.len() as u64;
        assert!(listed <= c.total);
        assert_eq!(info.vulnerabilities_truncated, c.total > listed);
        // serializable as the event stores it
        serde_json::to_string(&info).expect("serializable");
    }
});
