//! Fuzz the Bearer token readers (`wharf::events::operator`): who the operator of a request
//! is (the JWT's `sub`, or a Basic user name) and the token signature check (RS256/ES256
//! against a certificate, with the ES256 r||s → DER conversion).
//!
//! Input: the bytes of an `Authorization` header value (after `Bearer `, when byte 0 is even;
//! else the raw value). Oracles: nothing panics; no random token verifies; a token that does
//! not verify never names an operator when a verifier is configured.
//!
//! Run from this directory: `cargo fuzz run jwt` (nightly, or `RUSTC_BOOTSTRAP=1`).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wharf::events::operator::{ANONYMOUS, TokenVerifier, from_headers};

fn verifier() -> &'static TokenVerifier {
    static V: OnceLock<TokenVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/token-cert.pem");
        TokenVerifier::from_pem_file(std::path::Path::new(fixture))
            .unwrap_or_else(|e| panic!("fixture certificate: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let value = if mode % 2 == 0 {
        format!("Bearer {text}")
    } else {
        text.into_owned()
    };
    let Ok(v) = http::HeaderValue::from_str(&value) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, v);
    let unverified = from_headers(&headers, None);
    assert!(!unverified.is_empty());
    let token = value
        .split_once(' ')
        .map(|(_, t)| t.trim())
        .unwrap_or_default();
    let verified = verifier().verify(token);
    assert!(!verified, "a fuzzed token verified: {token:?}");
    if value
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("bearer "))
    {
        assert_eq!(from_headers(&headers, Some(verifier())), ANONYMOUS);
    }
});
