//! Shared fixtures for the end-to-end suites: the demo accounts and small request helpers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    reason = "shared by several test binaries; each uses a different subset"
)]

use std::sync::Arc;

use telesafe_core::{SystemClock, Timestamp};
use telesafe_testkit::{DbBackend, TestServer, start};

pub const DR: &str = "dr.rivera@demo.telesafe.test";
pub const PATIENT: &str = "ana.lopez@demo.telesafe.test";
pub const ADMIN: &str = "admin@demo.telesafe.test";
pub const SECURITY: &str = "security@demo.telesafe.test";
pub const FRONT_DESK: &str = "frontdesk@demo.telesafe.test";
pub const NURSE: &str = "nurse.kim@demo.telesafe.test";

pub async fn server(backend: DbBackend) -> Option<TestServer> {
    start(backend, Arc::new(SystemClock)).await
}

pub fn assert_security_headers(resp: &reqwest::Response, what: &str) {
    let h = resp.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(get("strict-transport-security"), "max-age=31536000; includeSubDomains", "{what}");
    let csp = get("content-security-policy");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert!(get("permissions-policy").contains("camera=()"), "{what}");
    assert!(!get("x-request-id").is_empty(), "{what}");
}

/// RFC 6238 code from oathtool (an independent implementation), at `at`.
pub fn oathtool(secret: &str, at: Timestamp) -> String {
    let out = std::process::Command::new("oathtool")
        .args(["--totp", "-b", secret, "--now", &format!("@{}", at.unix_millis() / 1000)])
        .output()
        .expect("oathtool is installed (scripts/test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub async fn password_sign_in(s: &TestServer, email: &str) -> (reqwest::Client, String) {
    use secrecy::ExposeSecret;
    let c = s.client();
    let r = c
        .post(s.url("/signin"))
        .header("origin", &s.base)
        .form(&[
            ("organisation", "demo"),
            ("email", email),
            ("password", s.password.expose_secret()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let next = r.headers()["location"].to_str().unwrap().to_owned();
    (c, next)
}

pub async fn post_form(
    s: &TestServer,
    c: &reqwest::Client,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    c.post(s.url(path)).header("origin", &s.base).form(fields).send().await.unwrap()
}

/// An OAuth client of the demo clinic with `scopes`, and a bearer token for it.
pub async fn client_token(s: &TestServer, scopes: &str) -> String {
    use telesafe_core::identity::clients::{self, Scope};
    let now = s.state.clock.now();
    let scopes = Scope::parse_list(scopes).unwrap();
    let reg =
        clients::register_client(&s.state.store, s.clinic.tenant.id, "Integration", scopes, now)
            .await
            .unwrap();
    let r = s
        .client()
        .post(s.url("/oauth2/token"))
        .basic_auth(&reg.client.client_id, Some(reg.secret.reveal()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}
