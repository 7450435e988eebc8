//! Request spans: method, route template (`MatchedPath`, never the raw URI or query
//! string, which could carry identifiers) and request id; one line per response with
//! status and latency.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::request_id::RequestId;

/// The route template a request matched, or a fixed label for unmatched paths.
pub fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "<unmatched>".to_owned())
}

pub async fn layer(req: Request, next: Next) -> Response {
    let route = route_of(&req);
    let id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let span =
        tracing::info_span!("request", method = %req.method(), route = %route, request_id = %id);
    let start = Instant::now();
    async move {
        let resp = next.run(req).await;
        tracing::info!(
            status = resp.status().as_u16(),
            latency_ms = start.elapsed().as_secs_f64() * 1000.0,
            "response"
        );
        resp
    }
    .instrument(span)
    .await
}
