//! Who made a request, from its `Authorization` header: the Basic user, the `sub` claim of a
//! Bearer JWT (verified when a certificate bundle is configured), or `anonymous`.

use base64::Engine as _;
use http::HeaderMap;

/// The name used when nobody is identified.
pub const ANONYMOUS: &str = "anonymous";

/// Verifies Bearer tokens against certificates (like distribution's `rootcertbundle`).
pub struct TokenVerifier {
    certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// Why `events.token_cert_bundle` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenCertError {
    #[error(transparent)]
    Pem(#[from] crate::pem::PemError),
    #[error("{KEY}: {}: unusable certificate: {source}", path.display())]
    Unusable {
        path: std::path::PathBuf,
        #[source]
        source: webpki::Error,
    },
}

const KEY: &str = "events.token_cert_bundle";

impl TokenVerifier {
    /// Load the PEM certificates of `events.token_cert_bundle`, at `path`.
    pub fn from_pem_file(path: &std::path::Path) -> Result<TokenVerifier, TokenCertError> {
        let certs = crate::pem::certs(KEY, path)?;
        for c in &certs {
            webpki::EndEntityCert::try_from(c).map_err(|source| TokenCertError::Unusable {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(TokenVerifier { certs })
    }

    /// Does one of the certificates verify `token`'s signature (RS256 or ES256), and is it
    /// not expired?
    pub fn verify(&self, token: &str) -> bool {
        let mut parts = token.rsplitn(2, '.');
        let (Some(sig_b64), Some(signed)) = (parts.next(), parts.next()) else {
            return false;
        };
        let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig_b64) else {
            return false;
        };
        let Some(header) = signed.split('.').next().and_then(decode_json) else {
            return false;
        };
        let (alg, sig): (
            &dyn rustls_pki_types::SignatureVerificationAlgorithm,
            Vec<u8>,
        ) = match header.get("alg").and_then(|a| a.as_str()) {
            Some("RS256") => (webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256, sig),
            Some("ES256") => match ecdsa_fixed_to_der(&sig) {
                Some(der) => (webpki::aws_lc_rs::ECDSA_P256_SHA256, der),
                None => return false,
            },
            _ => return false,
        };
        let signature_ok = self.certs.iter().any(|c| {
            webpki::EndEntityCert::try_from(c)
                .map(|ee| ee.verify_signature(alg, signed.as_bytes(), &sig).is_ok())
                .unwrap_or(false)
        });
        if !signature_ok {
            return false;
        }
        let claims = signed.split('.').nth(1).and_then(decode_json);
        let exp = claims
            .as_ref()
            .and_then(|c| c.get("exp"))
            .and_then(|e| e.as_i64());
        exp.is_none_or(|exp| exp >= chrono::Utc::now().timestamp())
    }
}

/// JWT ES256 signatures are r||s (64 bytes); webpki wants ASN.1 DER.
fn ecdsa_fixed_to_der(sig: &[u8]) -> Option<Vec<u8>> {
    if sig.len() != 64 {
        return None;
    }
    fn int(x: &[u8]) -> Vec<u8> {
        let x = match x.iter().position(|&b| b != 0) {
            Some(i) => &x[i..],
            None => &[0u8][..],
        };
        let mut out = vec![0x02];
        if x[0] & 0x80 != 0 {
            out.push((x.len() + 1) as u8);
            out.push(0);
        } else {
            out.push(x.len() as u8);
        }
        out.extend_from_slice(x);
        out
    }
    let (r, s) = (int(&sig[..32]), int(&sig[32..]));
    let mut der = vec![0x30, (r.len() + s.len()) as u8];
    der.extend(r);
    der.extend(s);
    Some(der)
}

fn decode_json(b64: &str) -> Option<serde_json::Value> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

/// The operator of a request.
pub fn from_headers(headers: &HeaderMap, verifier: Option<&TokenVerifier>) -> String {
    let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return ANONYMOUS.into();
    };
    let (scheme, value) = auth.trim().split_once(' ').unwrap_or((auth, ""));
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        return base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| s.split_once(':').map(|(u, _)| u.to_string()))
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| ANONYMOUS.into());
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        if let Some(v) = verifier
            && !v.verify(value)
        {
            return ANONYMOUS.into();
        }
        return value
            .split('.')
            .nth(1)
            .and_then(decode_json)
            .and_then(|c| c.get("sub").and_then(|s| s.as_str()).map(str::to_string))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ANONYMOUS.into());
    }
    ANONYMOUS.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(v).unwrap(),
        );
        m
    }

    #[test]
    fn basic_bearer_and_anonymous() {
        let b = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with:colons");
        assert_eq!(from_headers(&h(&format!("Basic {b}")), None), "alice");
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"bob","exp":1}"#);
        assert_eq!(
            from_headers(
                &h(&format!("Bearer eyJhbGciOiJSUzI1NiJ9.{payload}.sig")),
                None
            ),
            "bob"
        );
        assert_eq!(from_headers(&HeaderMap::new(), None), "anonymous");
        assert_eq!(from_headers(&h("Basic !!!"), None), "anonymous");
        assert_eq!(from_headers(&h("Bearer notajwt"), None), "anonymous");
        assert_eq!(from_headers(&h("Digest x"), None), "anonymous");
    }
}
