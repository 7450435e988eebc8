//! Operational endpoints and the platform API's first routes.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::Caller;

use crate::error::AppError;
use crate::state::AppState;

#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
}

/// The process is up and answering.
pub async fn healthz() -> impl IntoResponse {
    Json(Status { status: "ok" })
}

#[derive(Debug, Serialize)]
pub struct Ready {
    status: &'static str,
    database: &'static str,
}

/// The database answers and its schema is current.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, AppError> {
    let r = state.store.readiness().await;
    if r.reachable && r.migrations_current {
        Ok(Json(Ready { status: "ready", database: state.store.backend().as_str() }))
    } else {
        Err(AppError::Unavailable)
    }
}

/// Prometheus text format. Not public by default: answered only to loopback peers unless
/// `metrics.public` is set; everyone else sees a 404, as if it were not there.
pub async fn metrics(
    State(state): State<AppState>,
    peer: Option<axum::extract::Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, AppError> {
    let m = &state.config.metrics;
    let loopback = peer.is_some_and(|p| p.0.0.ip().is_loopback());
    if !m.enabled || !(m.public || loopback) {
        return Err(AppError::NotFound);
    }
    // Read at each scrape, so an alert on its age needs nothing else.
    if let Some(at) = crate::audit::newest_backup_at(&state).await.map_err(AppError::from)? {
        state.metrics.newest_backup.set(at / 1000);
    }
    let body = state.metrics.encode().map_err(AppError::internal)?;
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(resp)
}

/// Who the caller is: ids, role or scopes only.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Me {
    User { id: String, tenant_id: String, role: &'static str },
    Client { client_id: String, tenant_id: String, scopes: Vec<String> },
}

pub async fn me(caller: Caller) -> Json<Me> {
    Json(match caller {
        Caller::User(me) => Me::User {
            id: me.user.id.to_string(),
            tenant_id: me.user.tenant_id.to_string(),
            role: me.role().as_str(),
        },
        Caller::Client(t) => Me::Client {
            client_id: t.client_id,
            tenant_id: t.tenant_id.to_string(),
            scopes: t.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        },
    })
}
