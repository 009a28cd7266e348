//! Observe: forward each registry or chart request and watch what happened.

pub mod body;

use http::{Request, Response};

use crate::app::App;
use crate::forward::{Body, Upstream};
use crate::route::{ChartOp, RegistryOp};
use crate::server::RequestCtx;

/// Handle one `/v2` request.
pub async fn registry(
    app: &App,
    op: RegistryOp,
    req: Request<Body>,
    ctx: &RequestCtx,
) -> Response<Body> {
    let _ = op;
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    pass(&app.registry, req, &pq, ctx).await
}

/// Handle one chartrepo request.
pub async fn chart(app: &App, op: ChartOp, req: Request<Body>, ctx: &RequestCtx) -> Response<Body> {
    let _ = (op, req);
    let _ = app;
    crate::forward::oci_error(
        http::StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "chart repositories are not configured",
        serde_json::json!({"request_id": ctx.request_id_str()}),
    )
}

/// Forward as is and stream the answer back.
async fn pass(up: &Upstream, req: Request<Body>, pq: &str, ctx: &RequestCtx) -> Response<Body> {
    match up.forward(req, pq, &ctx.conn, &ctx.request_id).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => {
            tracing::warn!(request_id = ctx.request_id_str(), upstream = up.name(), error = %e, "forward failed");
            e.to_response(ctx.request_id_str())
        }
    }
}
