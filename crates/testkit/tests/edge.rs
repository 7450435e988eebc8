//! The HTTP edge over real TLS: security headers, health and readiness, JSON errors, CSRF defences, and the attributes of every cookie.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use reqwest::header::{CACHE_CONTROL, SET_COOKIE};
use telesafe_proto::{ErrorBody, ErrorCode};
use telesafe_server::serve::Drained;
use telesafe_testkit::{DbBackend, both_backends};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

async fn every_response_carries_the_security_headers(backend: DbBackend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let c = s.client();
    let signin = c.get(s.url("/signin")).send().await.unwrap();
    assert_eq!(signin.status(), 200);
    // Find the hashed stylesheet URL in the page, then fetch it.
    let html = {
        assert_security_headers(&signin, "/signin");
        assert_eq!(signin.headers()[CACHE_CONTROL], "no-store");
        signin.text().await.unwrap()
    };
    let css = html.split("href=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(css.starts_with("/static/app."), "{css}");
    for path in ["/healthz", "/readyz", "/api/v1/me", "/nowhere", css.as_str()] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_security_headers(&r, path);
        let cache = r.headers()[CACHE_CONTROL].to_str().unwrap().to_owned();
        if path == css {
            assert_eq!(r.status(), 200);
            assert_eq!(cache, "public, max-age=31536000, immutable");
        } else {
            assert_eq!(cache, "no-store", "{path}");
        }
    }
    assert_eq!(s.stop().await, Drained::Clean);
}

async fn health_and_readiness_answer(backend: DbBackend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let c = s.client();
    let h = c.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["database"], backend.as_str());
    // Metrics answer loopback peers (this client) and count what happened.
    let m = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("route=\"/readyz\",status=\"200\""));
}

async fn api_errors_are_json_with_a_stable_code_and_the_request_id(backend: DbBackend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let c = s.client();
    let r = c.get(s.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: ErrorBody = r.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::Unauthenticated);
    assert_eq!(body.request_id, rid);

    let r = c.get(s.url("/api/v1/nothing-here")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<ErrorBody>().await.unwrap().code, ErrorCode::NotFound);

    let r = c.delete(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<ErrorBody>().await.unwrap().code, ErrorCode::MethodNotAllowed);

    // Pages answer unknown paths with a readable page, not JSON.
    let r = c.get(s.url("/no-such-page")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("<h1 id=\"error-title\">Page not found</h1>"));

    // A declared body over the limit is refused before a byte of it is read.
    let head = "POST /signin HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
                application/x-www-form-urlencoded\r\nContent-Length: 2097152\r\n\r\n";
    let raw = s.raw_exchange(head.as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("\"code\":\"payload_too_large\""), "{raw}");
}

async fn cross_site_posts_are_refused(backend: DbBackend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let c = s.signed_in(DR).await;
    let r =
        c.post(s.url("/signout")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<ErrorBody>().await.unwrap().code, ErrorCode::CsrfRejected);
    let r = c.post(s.url("/signout")).header("sec-fetch-site", "cross-site").send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Same origin, but without the session's synchronizer token, or with a wrong one.
    for token in ["", "not-the-token"] {
        let r = c
            .post(s.url("/signout"))
            .header("origin", &s.base)
            .form(&[("csrf", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "token {token:?}");
        assert_eq!(r.json::<ErrorBody>().await.unwrap().code, ErrorCode::CsrfRejected);
    }
    // A form post with no body at all is a clear JSON error, not a plain-text rejection.
    let r = c.post(s.url("/signout")).header("origin", &s.base).send().await.unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(r.json::<ErrorBody>().await.unwrap().code, ErrorCode::UnsupportedMediaType);
    // The session survived both attempts.
    assert_eq!(c.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);
}

/// Every response that sets a cookie, across every flow that can: the session cookie is
/// always `__Host-` prefixed, Secure, HttpOnly, SameSite=Strict, Path=/, without Domain.
async fn every_set_cookie_carries_the_required_attributes(backend: DbBackend) {
    use secrecy::ExposeSecret;
    let Some(s) = server(backend).await else { return };
    let mut seen = Vec::new();
    let c = s.client();
    // Pages and APIs that must not set cookies at all.
    for path in ["/", "/signin", "/healthz", "/readyz", "/api/v1/me", "/setup", "/nowhere"] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert!(r.headers().get(SET_COOKIE).is_none(), "{path} set a cookie");
    }
    // Sign-in (to enrolment), enrolment, sign-out, sign-in (to challenge), challenge.
    let signin = |c: &reqwest::Client| {
        c.post(s.url("/signin"))
            .header("origin", &s.base)
            .form(&[
                ("organisation", "demo"),
                ("email", ADMIN),
                ("password", s.password.expose_secret()),
            ])
            .send()
    };
    let r = signin(&c).await.unwrap();
    seen.extend(r.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()));
    let page = c.get(s.url("/mfa/enroll")).send().await.unwrap().text().await.unwrap();
    let secret = telesafe_testkit::secret_on_page(&page);
    let csrf = telesafe_testkit::field_value(&page, "csrf");
    let step = s.current_step();
    let r = post_form(
        &s,
        &c,
        "/mfa/enroll",
        &[("csrf", &csrf), ("code", &telesafe_testkit::totp_code(&secret, step))],
    )
    .await;
    seen.extend(r.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()));
    let csrf = s.csrf(&c).await;
    let r = post_form(&s, &c, "/signout", &[("csrf", &csrf)]).await;
    seen.extend(r.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()));
    let c2 = s.client();
    let r = signin(&c2).await.unwrap();
    seen.extend(r.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()));
    let csrf = s.page_csrf(&c2, "/mfa").await;
    let r = post_form(
        &s,
        &c2,
        "/mfa",
        &[("csrf", &csrf), ("code", &telesafe_testkit::totp_code(&secret, step + 1))],
    )
    .await;
    assert_eq!(r.status(), 303);
    seen.extend(r.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()));

    assert_eq!(seen.len(), 5, "{seen:#?}");
    for cookie in &seen {
        let mut parts = cookie.split("; ");
        let (name, _) = parts.next().unwrap().split_once('=').unwrap();
        assert_eq!(name, "__Host-telesafe_session", "{cookie}");
        let attrs: Vec<&str> = parts.collect();
        for required in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(attrs.contains(&required), "{cookie} lacks {required}");
        }
        assert!(attrs.iter().any(|a| a.starts_with("Max-Age=")), "{cookie}");
        assert!(!attrs.iter().any(|a| a.to_ascii_lowercase().starts_with("domain=")), "{cookie}");
    }
}

both_backends!(
    every_response_carries_the_security_headers,
    health_and_readiness_answer,
    api_errors_are_json_with_a_stable_code_and_the_request_id,
    cross_site_posts_are_refused,
    every_set_cookie_carries_the_required_attributes,
);
