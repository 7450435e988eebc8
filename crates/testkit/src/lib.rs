//! Boots the real Telesafe server for tests: port 0 on loopback, real TLS with a freshly
//! generated certificate that the handed-out client trusts (and nothing else), a temporary
//! data directory, and a fresh SQLite or PostgreSQL database seeded with the demo clinic.
//!
//! This crate is for tests only and must never be a dependency of a shipped crate. It
//! mocks nothing: what a test talks to is the same router, TLS stack and database the
//! `telesafe` binary runs.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test-support crate: a fixture that cannot be set up must fail the test loudly"
)]

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::redirect::Policy;
use secrecy::{ExposeSecret, SecretString};
use telesafe_core::Clock;
use telesafe_server::config::Config;
use telesafe_server::demo::{self, DemoClinic};
use telesafe_server::serve::Drained;
use telesafe_server::state::AppState;
use telesafe_store::Backend;
use telesafe_store::testing::{TestDatabase, TestDbError, fresh, postgres_required};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use telesafe_store::Backend as DbBackend;

/// A running server and what a test needs to talk to it.
#[derive(Debug)]
pub struct TestServer {
    /// `https://localhost:<port>`, no trailing slash.
    pub base: String,
    pub addr: SocketAddr,
    pub state: AppState,
    pub clinic: DemoClinic,
    /// The demo accounts' password.
    pub password: SecretString,
    cert_pem: Vec<u8>,
    /// TOTP secrets (base32) of the demo accounts that enrolled, and the last step used.
    totp: std::sync::Mutex<std::collections::HashMap<String, (String, i64)>>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Drained>>,
    _data: tempfile::TempDir,
    _db: TestDatabase,
}

/// Starts a server on `backend`, or returns `None` (with a notice) when PostgreSQL is not
/// configured and not required. In CI a missing backend is a failure.
pub async fn start(backend: Backend, clock: Arc<dyn Clock>) -> Option<TestServer> {
    start_with(backend, clock, |_| {}).await
}

/// Like [`start`], with a chance to adjust the configuration first.
pub async fn start_with(
    backend: Backend,
    clock: Arc<dyn Clock>,
    adjust: impl FnOnce(&mut Config),
) -> Option<TestServer> {
    telesafe_server::tls::install_default_provider();
    let db = match fresh(backend).await {
        Ok(db) => db,
        Err(TestDbError::NoPostgres) if !postgres_required() => {
            eprintln!("SKIPPED on postgres: TELESAFE_TEST_PG_URL is not set");
            return None;
        }
        Err(e) => panic!("{} test database: {e}", backend.as_str()),
    };
    let data = tempfile::tempdir().expect("temp dir");
    let mut cfg = Config { data_dir: data.path().join("data"), ..Config::default() };
    cfg.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.database.url = Some(db.url.clone());
    cfg.server.shutdown_grace_secs = 5;
    adjust(&mut cfg);
    let (cert_path, _) = cfg.tls_paths();
    let prepared = telesafe_server::prepare(cfg, clock.clone()).await.expect("server starts");
    let password = demo::generate_password().expect("random");
    let clinic =
        demo::seed(&prepared.state.store, &prepared.state.passwords, clock.as_ref(), &password)
            .await
            .expect("demo clinic seeds");
    demo::seed_records(&prepared.state, &clinic).await.expect("demo records seed");
    telesafe_server::mqtt::spawn(prepared.state.clone());
    let cert_pem = std::fs::read(&cert_path).unwrap_or_default();
    let addr = prepared.local_addr;
    let state = prepared.state.clone();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(prepared.server.run(async move {
        let _ = rx.await;
    }));
    Some(TestServer {
        base: format!("https://localhost:{}", addr.port()),
        addr,
        state,
        clinic,
        password,
        cert_pem,
        totp: Default::default(),
        stop: Some(tx),
        handle: Some(handle),
        _data: data,
        _db: db,
    })
}

impl TestServer {
    /// The database URL the server uses (for running the CLI against the same data).
    /// The server's certificate (PEM), for clients that must trust it.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    pub fn database_url(&self) -> &str {
        &self._db.url
    }

    /// The test database (for tampering as a database administrator would).
    pub fn database(&self) -> &TestDatabase {
        &self._db
    }

    /// The server's data directory (root key, certificates).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._data.path().join("data")
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client that trusts only this server's certificate, keeps cookies, and does not
    /// follow redirects (so tests see them).
    pub fn client(&self) -> reqwest::Client {
        https_client(&self.cert_pem, self.addr)
    }

    /// TLS settings trusting only this server, for raw connections.
    pub fn tls_client_config(&self) -> Arc<rustls::ClientConfig> {
        tls_client_config(&self.cert_pem)
    }

    /// Writes `request` on a fresh TLS connection and returns everything the server sends
    /// back until it closes the connection or goes quiet for two seconds. For what an HTTP
    /// client library will not do, such as declaring a body and never sending it.
    pub async fn raw_exchange(&self, request: &[u8]) -> String {
        raw_exchange(self.addr, self.tls_client_config(), request).await
    }

    /// Signs in as the demo account with `email` through the real forms, completing the
    /// second factor as a person would: staff enrol an authenticator on first sign-in
    /// (reading the key off the page), and enrolled accounts answer the TOTP challenge.
    /// Returns the client holding the fully signed-in session cookie.
    pub async fn signed_in(&self, email: &str) -> reqwest::Client {
        self.signed_in_at(demo::DEMO_SLUG, email).await
    }

    /// Like [`TestServer::signed_in`], for an account of the organisation `organisation`
    /// (the demo's platform operator signs in at `platform`).
    pub async fn signed_in_at(&self, organisation: &str, email: &str) -> reqwest::Client {
        let c = self.client();
        let resp = c
            .post(self.url("/signin"))
            .header("origin", &self.base)
            .form(&[
                ("organisation", organisation),
                ("email", email),
                ("password", self.password.expose_secret()),
            ])
            .send()
            .await
            .expect("sign-in request");
        assert_eq!(resp.status(), 303, "sign-in as {email} failed");
        let next = resp.headers()["location"].to_str().expect("location").to_owned();
        match next.as_str() {
            "/mfa/enroll" => {
                let secret = self.enroll_totp(&c).await;
                self.totp
                    .lock()
                    .expect("lock")
                    .insert(email.to_owned(), (secret, self.current_step()));
            }
            "/mfa" => {
                let (secret, last) = self
                    .totp
                    .lock()
                    .expect("lock")
                    .get(email)
                    .cloned()
                    .expect("an enrolled secret");
                // One code per time step: if this step was used, the next step's code is
                // accepted too (RFC 6238 drift window).
                let step = self.current_step().max(last + 1);
                let code = totp_code(&secret, step);
                let csrf = self.page_csrf(&c, "/mfa").await;
                let r = c
                    .post(self.url("/mfa"))
                    .header("origin", &self.base)
                    .form(&[("csrf", csrf.as_str()), ("code", code.as_str())])
                    .send()
                    .await
                    .expect("mfa request");
                assert_eq!(r.status(), 303, "TOTP challenge for {email} failed");
                self.totp.lock().expect("lock").insert(email.to_owned(), (secret, step));
            }
            _ => {}
        }
        c
    }

    /// A TOTP code for an enrolled demo account that has not been used yet (the current
    /// step, or the next one if the current was used), and records it as used.
    pub fn next_totp_code(&self, email: &str) -> String {
        let mut map = self.totp.lock().expect("lock");
        let (secret, last) = map.get(email).cloned().expect("an enrolled secret");
        let step = self.current_step().max(last + 1);
        map.insert(email.to_owned(), (secret.clone(), step));
        totp_code(&secret, step)
    }

    /// The current RFC 6238 time step by the server's clock.
    pub fn current_step(&self) -> i64 {
        self.state.clock.now().unix_millis().div_euclid(30_000)
    }

    /// Completes enrolment on a session at `/mfa/enroll`; returns the base32 secret.
    pub async fn enroll_totp(&self, c: &reqwest::Client) -> String {
        let page = c
            .get(self.url("/mfa/enroll"))
            .send()
            .await
            .expect("enrol page")
            .text()
            .await
            .expect("body");
        let secret = secret_on_page(&page);
        let csrf = field_value(&page, "csrf");
        let code = totp_code(&secret, self.current_step());
        let r = c
            .post(self.url("/mfa/enroll"))
            .header("origin", &self.base)
            .form(&[("csrf", csrf.as_str()), ("code", code.as_str())])
            .send()
            .await
            .expect("enrol request");
        assert_eq!(r.status(), 200, "enrolment failed");
        secret
    }

    /// The CSRF token embedded in the page at `path`.
    pub async fn page_csrf(&self, client: &reqwest::Client, path: &str) -> String {
        let html =
            client.get(self.url(path)).send().await.expect("page").text().await.expect("body");
        field_value(&html, "csrf")
    }

    /// The session's CSRF token, as the account page embeds it in its forms.
    pub async fn csrf(&self, client: &reqwest::Client) -> String {
        self.page_csrf(client, "/account").await
    }

    /// Like [`TestServer::client`], but connecting from `local` (any 127.0.0.0/8 address
    /// works on Linux loopback), to appear as a different network source.
    pub fn client_from(&self, local: std::net::IpAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls((*self.tls_client_config()).clone())
            .resolve("localhost", self.addr)
            .local_address(local)
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .expect("client builds")
    }

    /// Stops accepting, drains, and reports how.
    pub async fn stop(mut self) -> Drained {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.unwrap_or(Drained::TimedOut),
            None => Drained::Clean,
        }
    }
}

/// The value of the first form field named `name` on a page.
pub fn field_value(html: &str, name: &str) -> String {
    html.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no {name} field on the page"))
        .to_owned()
}

/// The TOTP key an enrolment page shows for manual entry (spaces removed).
pub fn secret_on_page(html: &str) -> String {
    html.split("id=\"totp-secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the enrolment page shows the key")
        .split_whitespace()
        .collect()
}

/// The 6-digit RFC 6238 code for `secret` (base32) at time step `step`.
pub fn totp_code(secret: &str, step: i64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned()).to_bytes().expect("base32 secret");
    let totp = totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes, None, "t".into())
        .expect("valid TOTP parameters");
    totp.generate(u64::try_from(step * 30).expect("positive time"))
}

/// Client TLS settings that trust exactly the certificates in `cert_pem`.
pub fn tls_client_config(cert_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(cert_pem) {
        roots.add(cert).expect("test certificate is valid");
    }
    let cfg =
        rustls::ClientConfig::builder_with_provider(Arc::new(telesafe_server::tls::provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    Arc::new(cfg)
}

/// A client for a server at `addr` that trusts only the certificate `cert_pem` (as
/// `localhost`), keeps cookies, and does not follow redirects: for a `telesafe` process a
/// test started itself.
pub fn https_client(cert_pem: &[u8], addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls_client_config(cert_pem)).clone())
        .resolve("localhost", addr)
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .expect("client builds")
}

/// Opens a TLS connection to `addr` (as `localhost`), writes `request`, and reads until the
/// server closes or is quiet for two seconds.
pub async fn raw_exchange(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tls_connect(addr, tls).await;
    stream.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A TLS stream to `addr`, verified as `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.expect("TLS handshake")
}

fn pem_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

/// Defines `sqlite::$name` and `postgres::$name` tokio tests from one async fn that takes
/// a [`Backend`], so every end-to-end case runs on both databases.
#[macro_export]
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::DbBackend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::DbBackend::Postgres).await })*
        }
    };
}
