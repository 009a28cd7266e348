//! Who is calling the API: HTTP Basic, checked against `admin_password` (user `admin`).

use base64::Engine as _;
use http::HeaderMap;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::app::App;

/// The system administrator's user name.
pub const ADMIN: &str = "admin";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `admin`: everything.
    Admin,
}

/// User and password of a Basic `Authorization` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Authenticate the request: 401 without valid credentials.
pub fn authenticate(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let (user, pass) = basic_credentials(headers).ok_or_else(ApiError::unauthorized)?;
    let expected = app.config.admin_password.expose().as_bytes();
    if user == ADMIN && bool::from(pass.as_bytes().ct_eq(expected)) {
        return Ok(Caller::Admin);
    }
    Err(ApiError::unauthorized())
}

/// Only the system administrator.
pub fn require_admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    match authenticate(app, headers)? {
        Caller::Admin => Ok(()),
    }
}
