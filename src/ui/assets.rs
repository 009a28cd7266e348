//! The UI's static files, compiled into the binary (no CDN, no build step): hand-written CSS
//! and script, htmx 2.0.11 (0BSD, `static/htmx.LICENSE`), an icon.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// `(name, content type, bytes)` of every file under `/ui/static/`.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/ui.css"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/ui.js"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/htmx.min.js"),
    ),
    (
        "htmx.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../static/htmx.LICENSE"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../static/favicon.svg"),
    ),
];

/// `GET /ui/static/{file}`
pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, bytes)) => ([(http::header::CONTENT_TYPE, *ct)], *bytes).into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
