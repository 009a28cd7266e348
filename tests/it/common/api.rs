//! One answer of wharf's JSON API (or of a registry path that answers OCI error JSON), read
//! whole, with the checks the API tests share.

use serde_json::Value;

/// Status, headers and body text of one response.
pub struct ApiResp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl ApiResp {
    /// Read the whole response.
    pub async fn read(r: reqwest::Response) -> ApiResp {
        ApiResp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap_or_default(),
        }
    }

    /// The body as JSON; panics (with status and body) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {} {}", self.status, self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `errors[0]`'s code and message of a Harbor / OCI error body.
    pub fn error(&self) -> (String, String) {
        let v = self.json();
        let e = &v["errors"][0];
        (
            e["code"].as_str().unwrap_or_default().to_string(),
            e["message"]
                .as_str()
                .unwrap_or_else(|| panic!("not an error body: {}", self.text))
                .to_string(),
        )
    }

    /// `errors[0].message` of a Harbor / OCI error body.
    pub fn error_message(&self) -> String {
        self.error().1
    }

    /// Panics unless the status is `status`.
    #[track_caller]
    pub fn expect(self, status: u16) -> ApiResp {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        self
    }
}

/// `GET {base}{path}` as the administrator (HTTP Basic), the whole answer.
pub async fn admin_get(base: &str, path: &str) -> ApiResp {
    let r = super::client()
        .get(format!("{base}{path}"))
        .basic_auth("admin", Some(super::wharf::ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    ApiResp::read(r).await
}
