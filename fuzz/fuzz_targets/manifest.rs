//! Fuzz manifest and index parsing (`wharf::observe::manifest`): the facts wharf takes from a
//! pushed or pulled manifest (kind, blobs and sizes, children and platforms, annotations) and
//! the chart facts of a Helm OCI artifact.
//!
//! Input: byte 0 picks the Content-Type (none, or one of the media types), the rest is the
//! body; the chart-config half reuses the body as the config blob. Oracles: nothing panics;
//! parsing is deterministic; an index has no blobs and an image no children; sizes add up
//! without overflow checks failing (a panic would be a finding).
//!
//! Run from this directory: `cargo fuzz run manifest` (nightly, or `RUSTC_BOOTSTRAP=1`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::observe::manifest::{Kind, chart_info, parse};

const TYPES: [Option<&str>; 6] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let ct = TYPES[which as usize % TYPES.len()];
    let facts = parse(body, ct);
    assert_eq!(
        format!("{facts:?}"),
        format!("{:?}", parse(body, ct)),
        "not deterministic"
    );
    if let Ok(f) = facts {
        let _ = f.platforms();
        let _ = f.child_digests();
        if f.kind == Kind::Index {
            assert!(f.blobs.is_empty());
        } else {
            assert!(f.children.is_empty());
        }
        let info = chart_info(Some(body), &f, Some("1.0.0"));
        let _ = chart_info(None, &f, None);
        let _ = info;
    }
});
