//! Fuzz the chart upload reader (`wharf::observe::chart`): the multipart/form-data parser
//! (boundary, parts, `Content-Disposition` parameters), then gzip, tar and `Chart.yaml`.
//!
//! Input layout: the first line is the `Content-Type` (may be empty: no header), the rest is the
//! body. Oracles: nothing panics; a part that is found lies inside the body; the same input
//! reads the same way twice; an archive's size is the length of the part it came from.
//!
//! Run from this directory: `cargo fuzz run chart_upload` (nightly, or `RUSTC_BOOTSTRAP=1`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::observe::chart::{
    CHART_FIELD, disposition_param, multipart_boundary, multipart_field, read_upload,
};

fuzz_target!(|data: &[u8]| {
    let (ct, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    };
    let content_type = (!ct.is_empty()).then_some(ct.as_str());
    let first = read_upload(body, content_type);
    // (errors keep their source, which has no equality: compared as shown)
    let again = read_upload(body, content_type);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "not deterministic"
    );
    if let Some(boundary) = content_type.and_then(multipart_boundary) {
        assert!(!boundary.is_empty() && boundary.len() <= 200);
        if let Ok(part) = multipart_field(body, &boundary, CHART_FIELD) {
            let (start, end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
            let (b0, b1) = (body.as_ptr() as usize, body.as_ptr() as usize + body.len());
            assert!(b0 <= start && end <= b1, "part outside the body");
            if let Ok(u) = &first {
                assert_eq!(u.size, part.len() as u64);
            }
        }
    } else if let Ok(u) = &first {
        assert_eq!(u.size, body.len() as u64);
    }
    // the Content-Disposition parameter parser on its own
    let text = String::from_utf8_lossy(body);
    for p in ["name", "filename"] {
        let _ = disposition_param(&text, p);
    }
});
