//! Telesafe's HTTPS server: the axum router with its security middleware (request ids,
//! security headers, CSRF defence, body limits, route-template tracing, metrics), the
//! server-rendered pages and static assets, TLS termination with rustls, and graceful
//! shutdown.
//!
//! Handlers are thin: extract, resolve the verified identity, make one domain call, map the
//! error. This crate must never hold business rules (they live in `telesafe-core`), write
//! SQL (that is `telesafe-store`), or put a raw URI, query string, body or name in a log.

pub mod api;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod config;
pub mod demo;
pub mod devices;
pub mod error;
pub mod fhir;
pub mod http;
pub mod keys;
pub mod mail;
pub mod mqtt;
pub mod native;
pub mod oauth;
pub mod pages;
pub mod passkeys;
pub mod policy;
pub mod serve;
pub mod state;
pub mod tls;
pub mod visits;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use telesafe_core::Clock;
use telesafe_core::identity::PasswordChecker;
use telesafe_store::Store;
use tower_http::timeout::TimeoutLayer;

use crate::config::{Config, Problem};
use crate::error::AppError;
use crate::serve::Server;
use crate::state::{AppState, Posture};

/// Every route: the path and what answers it. The router is built from this list, and the
/// access-matrix test reads the same list, so a route added here without an expectation
/// there fails the test.
pub fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/", get(pages::root)),
        ("/signin", get(pages::show_signin).post(pages::signin)),
        ("/signout", post(pages::signout)),
        ("/portal", get(pages::portal)),
        ("/console", get(pages::console)),
        ("/console/patients/{id}", get(pages::show_chart)),
        ("/console/patients/{id}/records", post(pages::add_record)),
        ("/console/patients/{id}/demographics", post(pages::save_demographics)),
        ("/console/patients/{id}/thresholds", post(pages::set_threshold)),
        ("/console/alerts/{id}/acknowledge", post(pages::acknowledge_alert)),
        ("/portal/record", get(pages::my_record)),
        ("/console/break-glass", get(pages::show_break_glass).post(pages::break_glass)),
        ("/console/visits", get(visits::day).post(visits::schedule)),
        ("/console/visits/status", get(visits::status)),
        ("/join/{token}", get(visits::show_join).post(visits::join)),
        ("/visits/{id}", get(visits::page)),
        ("/visits/{id}/check", get(visits::check)),
        ("/visits/{id}/socket", get(visits::socket)),
        ("/visits/{id}/notes", get(visits::notes).post(visits::save_notes)),
        ("/admin", get(pages::admin)),
        ("/admin/people", post(pages::add_person)),
        ("/admin/session-limits", post(pages::set_session_limits)),
        ("/admin/policies", post(pages::set_policies)),
        ("/admin/devices", get(pages::device_admin)),
        ("/admin/devices/models", post(pages::add_device_model)),
        ("/admin/devices/models/{id}", post(pages::update_device_model)),
        ("/admin/devices/enrollments", post(pages::create_device_enrollment)),
        ("/admin/devices/{id}/revoke", post(pages::revoke_device)),
        ("/admin/devices/{id}/release", post(pages::release_device)),
        ("/mfa/step-up", get(pages::show_step_up).post(pages::step_up)),
        ("/security", get(pages::security)),
        ("/security/audit", get(pages::audit_search)),
        ("/portal/access", get(pages::access_log)),
        ("/platform", get(pages::platform)),
        ("/platform/organisations", post(pages::create_organisation)),
        ("/account", get(pages::account)),
        ("/mfa", get(pages::show_mfa_challenge).post(pages::mfa_challenge)),
        ("/activate/{token}", get(pages::show_activate).post(pages::activate)),
        ("/setup", get(pages::show_setup).post(pages::setup)),
        ("/mfa/enroll", get(pages::show_enroll).post(pages::enroll)),
        ("/signin/passkey/options", post(passkeys::sign_in_options)),
        ("/signin/passkey", post(passkeys::sign_in)),
        ("/mfa/passkey/options", post(passkeys::second_factor_options)),
        ("/mfa/passkey", post(passkeys::second_factor)),
        ("/account/passkeys/options", post(passkeys::register_options)),
        ("/account/passkeys", post(passkeys::register)),
        ("/account/passkeys/{id}/rename", post(pages::rename_passkey)),
        ("/account/passkeys/{id}/delete", post(pages::delete_passkey)),
        ("/account/password", post(pages::change_password)),
        ("/account/sessions/revoke", post(pages::revoke_session)),
        ("/account/sessions/revoke-others", post(pages::revoke_other_sessions)),
        ("/static/{name}", get(assets::serve)),
        ("/healthz", get(api::healthz)),
        ("/readyz", get(api::readyz)),
        ("/metrics", get(api::metrics)),
        ("/api/v1/me", get(api::me)),
        ("/api/v1/audit/head", get(audit::latest_head)),
        ("/api/v1/audit/proof/inclusion", get(audit::inclusion)),
        ("/api/v1/audit/proof/consistency", get(audit::consistency)),
        ("/api/v1/sessions", post(native::create_session)),
        ("/api/v1/sessions/mfa", post(native::complete_mfa)),
        ("/api/v1/sessions/current", axum::routing::delete(native::delete_session)),
        ("/fhir/metadata", get(fhir::metadata)),
        ("/fhir/{type}", get(fhir::search_get).post(fhir::create)),
        (
            "/fhir/{type}/{id}",
            get(fhir::read).put(fhir::update).delete(fhir::delete).post(fhir::search_post),
        ),
        ("/fhir/{type}/{id}/{op}", get(fhir::instance_operation)),
        ("/fhir/{type}/{id}/{op}/{vid}", get(fhir::vread)),
        ("/fhir", any(fhir::unknown)),
        ("/api/v1/devices/enroll", post(devices::enroll)),
        ("/api/v1/devices/telemetry", post(devices::telemetry)),
        ("/api/v1/devices/rotate-key", post(devices::rotate_key)),
        ("/api/v1/devices/{id}/release", post(devices::release)),
        ("/oauth2/token", post(oauth::token)),
        ("/oauth2/introspect", post(oauth::introspect)),
        ("/oauth2/revoke", post(oauth::revoke)),
    ]
}

/// The paths of [`routes`], for tests.
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(p, _)| p).collect()
}

/// The router with every route and middleware, for tests (`oneshot`) and for [`Server`].
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.server.body_limit_bytes;
    let timeout = Duration::from_secs(state.config.server.request_timeout_secs);
    let metrics = state.metrics.clone();
    routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handler)| r.route(path, handler))
        .fallback(pages::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Layers run bottom-up on the way in: request id first, then headers, tracing,
        // metrics, CSRF, size limits, timeout.
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            limit_declared_body(body_limit, req, next)
        }))
        .layer(middleware::from_fn(http::csrf::layer))
        .layer(middleware::from_fn_with_state(metrics, http::metrics::layer))
        .layer(middleware::from_fn(http::trace::layer))
        .layer(middleware::from_fn(http::headers::layer))
        .layer(middleware::from_fn(http::request_id::layer))
}

async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/fhir") {
        return fhir::FhirError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "this interaction is not supported here (see /fhir/metadata)",
        )
        .into_response();
    }
    AppError::MethodNotAllowed.into_response()
}

/// Refuses a body whose declared length is over the limit before reading any of it, with
/// the JSON error body (`DefaultBodyLimit` still guards chunked bodies).
async fn limit_declared_body(limit: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        if req.uri().path().starts_with("/fhir") {
            return fhir::FhirError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                format!("a request body may be at most {limit} bytes"),
            )
            .into_response();
        }
        return AppError::PayloadTooLarge.into_response();
    }
    next.run(req).await
}

/// Why the server would not start. Each problem names the key or file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the configuration is not safe to run:\n{}", list(.0))]
    Config(Vec<Problem>),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Store(#[from] telesafe_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot set up password hashing: {0}")]
    Passwords(String),
    #[error("{0}")]
    Keys(#[from] keys::KeyLoadError),
    #[error("server.public_url cannot serve passkeys: {0}")]
    Passkeys(String),
    #[error("{0}")]
    Mail(#[from] mail::MailSetupError),
    #[error("the audit log cannot be opened: {0}")]
    Audit(String),
}

fn list(p: &[Problem]) -> String {
    p.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

/// A server ready to run, and what an operator should be told about it.
#[derive(Debug)]
pub struct Prepared {
    pub state: AppState,
    pub server: Server,
    pub local_addr: SocketAddr,
    /// SHA-256 of the served certificate, when TLS is on.
    pub fingerprint: Option<String>,
    /// Whether a self-signed certificate was generated on this start.
    pub generated_certificate: bool,
}

fn certificate_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty()
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            names.push(host.to_owned());
        }
    }
    names
}

/// Validates the configuration and the files it names, prepares TLS, opens and migrates
/// the database, and binds the listener. Refuses to go on at the first unsafe finding.
pub async fn prepare(mut config: Config, clock: Arc<dyn Clock>) -> Result<Prepared, StartError> {
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(StartError::Config(problems));
    }
    tls::create_private_dir(&config.data_dir)?;
    let problems = config.check_files();
    if !problems.is_empty() {
        return Err(StartError::Config(problems));
    }

    let (tls_config, fingerprint, generated) = if config.tls.enabled {
        let (cert, key) = config.tls_paths();
        let generated = config.self_signed()
            && tls::ensure_self_signed(
                &cert,
                &key,
                &certificate_names(config.server.listen),
                clock.now(),
            )?;
        (Some(tls::server_config(&cert, &key)?), Some(tls::fingerprint(&cert)?), generated)
    } else {
        tracing::warn!(
            "PLAIN HTTP: TLS is off because server.behind_tls_proxy is set. Only run this way \
             behind a reverse proxy that terminates TLS, on a network nobody else can reach."
        );
        (None, None, false)
    };

    let (root_key, _) = keys::load_root_key(&config)?;
    let store = Store::open(&config.database_url(), config.database.max_connections).await?;
    if let Some(path) = store.sqlite_path() {
        restrict_sqlite_files(path);
    }
    let rls = match store.backend() {
        telesafe_store::Backend::Postgres => {
            let bypass = store.bypasses_row_level_security().await.unwrap_or(true);
            if bypass {
                tracing::warn!(
                    "the PostgreSQL role Telesafe connects as is a superuser or has BYPASSRLS: \
                     row-level security, the second tenant wall, does not apply. Connect as an \
                     ordinary role that owns the schema."
                );
            }
            Some(!bypass)
        }
        telesafe_store::Backend::Sqlite => None,
    };

    // Argon2id may use at most half the cores, so a sign-in storm queues behind itself
    // while other requests keep the rest (measured in BENCHMARKS.md).
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let passwords = PasswordChecker::new((cores / 2).max(1))
        .await
        .map_err(|e| StartError::Passwords(e.to_string()))?;
    let posture = Posture {
        transport: match (&tls_config, config.self_signed()) {
            (None, _) => "plain HTTP behind a TLS-terminating proxy".to_owned(),
            (Some(_), true) => {
                "TLS 1.3 / 1.2 (ECDHE, AEAD) with a self-signed certificate".to_owned()
            }
            (Some(_), false) => {
                "TLS 1.3 / 1.2 (ECDHE, AEAD) with the configured certificate".to_owned()
            }
        },
        certificate_fingerprint: fingerprint.clone(),
        database: store.backend().as_str().to_owned(),
        row_level_security: rls,
    };
    let listen = config.server.listen;
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    // Bind before building the state: with port 0 the real port is known only now, and the
    // public URL (links, the passkey origin) must carry it.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind { addr: listen, source })?;
    let local_addr =
        listener.local_addr().map_err(|source| StartError::Bind { addr: listen, source })?;
    if config.server.public_url.is_none() {
        config.server.public_url = Some(format!("https://localhost:{}", local_addr.port()));
    }
    let webauthn = passkeys::relying_party(&config).map_err(StartError::Passkeys)?;
    let mail = mail::Transport::from_config(&config)?;
    let signer = keys::audit_signer(&root_key).map_err(|e| StartError::Audit(e.to_string()))?;
    let sink = config.audit.witness_file.clone().map(audit::witness_sink);
    let audit_log =
        telesafe_core::audit::AuditLog::open(store.clone(), signer, clock.clone(), sink)
            .await
            .map_err(|e| StartError::Audit(e.to_string()))?;
    let keys = keys::key_ring(keys::RootKeys::load(&config, &root_key)?);
    let device_writer = devices::DeviceWriter::spawn(store.clone());
    let state = AppState {
        device_writer,
        device_caches: devices::DeviceCaches::default(),
        visits: visits::Hub::start(store.clone(), clock.clone(), keys::relay_key(&root_key)),
        store,
        config: Arc::new(config),
        clock,
        assets: Arc::default(),
        metrics: Arc::default(),
        passwords,
        addresses: Arc::default(),
        mfa_keys: keys::mfa_keys(&root_key),
        mail: Arc::new(mail),
        audit: audit_log,
        policy: Arc::new(
            telesafe_core::access::PolicyEngine::new()
                .map_err(|e| StartError::Audit(e.to_string()))?,
        ),
        outbox_key: keys::outbox_key(&root_key),
        ceremony_key: keys::ceremony_key(&root_key),
        webauthn: Arc::new(webauthn),
        posture: Arc::new(posture),
        keys,
        policy_cache: moka::sync::Cache::new(10_000),
        device_previous: moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_idle(Duration::from_secs(24 * 3600))
            .build(),
        device_signer: Arc::new(
            keys::device_ack_signer(&root_key).map_err(|e| StartError::Audit(e.to_string()))?,
        ),
    };
    let server = Server::from_listener(listener, tls_config, app(state.clone()), grace);
    Ok(Prepared { state, server, local_addr, fingerprint, generated_certificate: generated })
}

/// SQLite creates its files with the process umask; make sure they are private anyway.
fn restrict_sqlite_files(db: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

/// The URL a browser on this machine should open.
pub fn local_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_loopback() => "localhost".to_owned(),
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_loopback() => "localhost".to_owned(),
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("{scheme}://{host}:{}/", addr.port())
}
