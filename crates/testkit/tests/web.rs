//! End-to-end behaviour of the HTTP edge over real TLS, on SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, SET_COOKIE};
use telesafe_core::identity::{AuthEventKind, AuthEventRepository};
use telesafe_core::{Clock, ManualClock, SystemClock, Timestamp};
use telesafe_proto::{ErrorBody, ErrorCode};
use telesafe_server::serve::Drained;
use telesafe_testkit::{DbBackend, TestServer, both_backends, start};

const DR: &str = "dr.rivera@demo.telesafe.test";
const PATIENT: &str = "ana.lopez@demo.telesafe.test";
const ADMIN: &str = "admin@demo.telesafe.test";
const SECURITY: &str = "security@demo.telesafe.test";
const FRONT_DESK: &str = "frontdesk@demo.telesafe.test";
const NURSE: &str = "nurse.kim@demo.telesafe.test";

async fn server(backend: DbBackend) -> Option<TestServer> {
    start(backend, Arc::new(SystemClock)).await
}

fn assert_security_headers(resp: &reqwest::Response, what: &str) {
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

async fn sign_in_sets_a_hardened_cookie_and_lands_on_the_role_home(backend: DbBackend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let c = s.client();
    let r = c
        .post(s.url("/signin"))
        .header("origin", &s.base)
        .form(&[
            ("organisation", "demo"),
            ("email", PATIENT),
            ("password", "not the password at all"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(r.text().await.unwrap().contains("role=\"alert\""));

    use secrecy::ExposeSecret;
    let r = c
        .post(s.url("/signin"))
        .header("origin", &s.base)
        .form(&[
            ("organisation", "demo"),
            ("email", PATIENT),
            ("password", s.password.expose_secret()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/portal");
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-telesafe_session="), "{cookie}");
    for attr in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Strict", "; Max-Age=43200"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Domain="), "{cookie}");

    let page = c.get(s.url("/portal")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Welcome, Ana López"), "the portal greets its patient");

    // Sign out ends the session on the server, not just in the browser.
    let csrf = s.csrf(&c).await;
    let r = c
        .post(s.url("/signout"))
        .header("origin", &s.base)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    let me = s
        .client()
        .get(s.url("/api/v1/me"))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
}

async fn the_console_lists_the_clinics_patients(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let c = s.signed_in(DR).await;
    let html = c.get(s.url("/console")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("Ana López") && html.contains("Walter Brown"), "console lists patients");
    assert!(html.contains("Patient without a portal account"));
}

async fn each_role_reaches_only_its_own_console(backend: DbBackend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let homes = ["/portal", "/console", "/admin", "/security"];
    for (email, home) in [
        (PATIENT, "/portal"),
        (DR, "/console"),
        (NURSE, "/console"),
        (FRONT_DESK, "/console"),
        (ADMIN, "/admin"),
        (SECURITY, "/security"),
    ] {
        let c = s.signed_in(email).await;
        for page in homes {
            let r = c.get(s.url(page)).send().await.unwrap();
            let expected = if page == home { 200 } else { 403 };
            assert_eq!(r.status(), expected, "{email} on {page}");
        }
        let r = c.get(s.url("/")).send().await.unwrap();
        assert_eq!(r.headers()["location"], home);
    }
    // Anonymous visitors are sent to sign in.
    for page in homes {
        let r = s.client().get(s.url(page)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{page}");
        assert_eq!(r.headers()["location"], "/signin");
    }
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

async fn sessions_end_after_thirty_idle_minutes(backend: DbBackend) {
    let t0 = Timestamp::from_unix_millis(1_790_000_000_000);
    let clock = ManualClock::at(t0);
    let Some(s) = start(backend, Arc::new(clock.clone())).await else {
        return;
    };
    let c = s.signed_in(NURSE).await;
    clock.advance(Duration::from_secs(29 * 60 + 59));
    assert_eq!(c.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);
    // That request counted as activity; 30:00 of silence from it ends the session.
    clock.advance(Duration::from_secs(30 * 60));
    assert_eq!(c.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
}

async fn administrators_idle_out_after_fifteen_minutes(backend: DbBackend) {
    let clock = ManualClock::at(Timestamp::from_unix_millis(1_790_000_000_000));
    let Some(s) = start(backend, Arc::new(clock.clone())).await else {
        return;
    };
    let admin = s.signed_in(ADMIN).await;
    let security = s.signed_in(SECURITY).await;
    let nurse = s.signed_in(NURSE).await;
    clock.advance(Duration::from_secs(14 * 60 + 59));
    for c in [&admin, &security, &nurse] {
        assert_eq!(c.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);
    }
    clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(admin.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
    assert_eq!(security.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
    assert_eq!(nurse.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);
}

async fn absolute_limit_holds_despite_activity(backend: DbBackend) {
    let clock = ManualClock::at(Timestamp::from_unix_millis(1_790_000_000_000));
    let Some(s) = start(backend, Arc::new(clock.clone())).await else {
        return;
    };
    let c = s.signed_in(DR).await;
    // Active every 20 minutes for 12 hours: the session still ends at 12:00.
    for _ in 0..(12 * 3) - 1 {
        clock.advance(Duration::from_secs(20 * 60));
        assert_eq!(c.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);
    }
    clock.advance(Duration::from_secs(20 * 60));
    assert_eq!(c.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
}

async fn my_sessions_can_be_listed_and_ended(backend: DbBackend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let laptop = s.signed_in(PATIENT).await;
    let phone = s.signed_in(PATIENT).await;
    let tablet = s.signed_in(PATIENT).await;
    let page = laptop.get(s.url("/account")).send().await.unwrap().text().await.unwrap();
    assert_eq!(page.matches("name=\"session\"").count(), 2, "two other sessions can be ended");
    assert!(page.contains("(this device)"));
    // End the first other session listed.
    let label = page
        .split("name=\"session\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let csrf = s.csrf(&laptop).await;
    let r = laptop
        .post(s.url("/account/sessions/revoke"))
        .header("origin", &s.base)
        .form(&[("csrf", csrf.as_str()), ("session", label.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let statuses = [
        phone.get(s.url("/api/v1/me")).send().await.unwrap().status().as_u16(),
        tablet.get(s.url("/api/v1/me")).send().await.unwrap().status().as_u16(),
    ];
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 1, "{statuses:?}");
    // Sign out everywhere else.
    let r = laptop
        .post(s.url("/account/sessions/revoke-others"))
        .header("origin", &s.base)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    for c in [&phone, &tablet] {
        assert_eq!(c.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
    }
    assert_eq!(laptop.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);
    let page = laptop.get(s.url("/account")).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Signed out everywhere else")
            && page.contains("Ended a sign-in on another device")
    );
}

async fn a_thousand_guesses_from_fifty_connections_evaluate_at_most_a_hundred(backend: DbBackend) {
    let clock = ManualClock::at(Timestamp::from_unix_millis(1_790_000_000_000));
    let Some(s) = start(backend, Arc::new(clock.clone())).await else {
        return;
    };
    let before = s.state.passwords.evaluated();
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let c = s.client_from(std::net::IpAddr::from([127, 0, 0, 2 + i]));
        let (url, origin) = (s.url("/signin"), s.base.clone());
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            for n in 0..20 {
                let r = c
                    .post(&url)
                    .header("origin", &origin)
                    .form(&[
                        ("organisation", "demo"),
                        ("email", PATIENT),
                        ("password", &format!("guess number {i} {n} abcdef")),
                    ])
                    .send()
                    .await
                    .unwrap();
                assert!(r.status() == 401 || r.status() == 429, "{}", r.status());
                refused += 1;
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    assert_eq!(refused, 1000);
    let evaluated = s.state.passwords.evaluated() - before;
    assert!((1..=100).contains(&evaluated), "{evaluated} passwords were evaluated");
    // The owner, once the back-off has passed, signs in as usual.
    clock.advance(Duration::from_secs(31));
    s.signed_in(PATIENT).await;
}

/// RFC 6238 code from oathtool (an independent implementation), at `at`.
fn oathtool(secret: &str, at: Timestamp) -> String {
    let out = std::process::Command::new("oathtool")
        .args(["--totp", "-b", secret, "--now", &format!("@{}", at.unix_millis() / 1000)])
        .output()
        .expect("oathtool is installed (scripts/test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn password_sign_in(s: &TestServer, email: &str) -> (reqwest::Client, String) {
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

async fn post_form(
    s: &TestServer,
    c: &reqwest::Client,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    c.post(s.url(path)).header("origin", &s.base).form(fields).send().await.unwrap()
}

async fn totp_from_an_independent_implementation_is_accepted_once(backend: DbBackend) {
    let t0 = Timestamp::from_unix_millis(1_790_000_000_000);
    let clock = ManualClock::at(t0);
    let Some(s) = start(backend, Arc::new(clock.clone())).await else { return };
    // A patient opts in from their account page.
    let c = s.signed_in(PATIENT).await;
    let page = c.get(s.url("/mfa/enroll")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<svg"), "the QR code is inline SVG");
    let secret = telesafe_testkit::secret_on_page(&page);
    let csrf = telesafe_testkit::field_value(&page, "csrf");
    let wrong = post_form(&s, &c, "/mfa/enroll", &[("csrf", &csrf), ("code", "000000")]).await;
    assert_eq!(wrong.status(), 422);
    let done =
        post_form(&s, &c, "/mfa/enroll", &[("csrf", &csrf), ("code", &oathtool(&secret, t0))])
            .await;
    assert_eq!(done.status(), 200);
    assert!(
        done.headers()[SET_COOKIE].to_str().unwrap().starts_with("__Host-telesafe_session="),
        "a new session id"
    );
    let codes_page = done.text().await.unwrap();
    let recovery: Vec<String> = codes_page
        .split("<li><code>")
        .skip(1)
        .map(|x| x.split('<').next().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);

    // Next sign-in asks for the code; oathtool's code for the current step works.
    clock.advance(Duration::from_secs(30));
    let (c2, next) = password_sign_in(&s, PATIENT).await;
    assert_eq!(next, "/mfa");
    // Until the second step is done, nothing else is reachable.
    assert_eq!(c2.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
    assert_eq!(c2.get(s.url("/portal")).send().await.unwrap().headers()["location"], "/mfa");
    let code = oathtool(&secret, clock.now());
    let csrf2 = s.page_csrf(&c2, "/mfa").await;
    let ok = post_form(&s, &c2, "/mfa", &[("csrf", &csrf2), ("code", &code)]).await;
    assert_eq!(ok.status(), 303);
    assert_eq!(c2.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);

    // The same code a second time is refused, and recorded.
    let (c3, _) = password_sign_in(&s, PATIENT).await;
    let csrf3 = s.page_csrf(&c3, "/mfa").await;
    let replay = post_form(&s, &c3, "/mfa", &[("csrf", &csrf3), ("code", &code)]).await;
    assert_eq!(replay.status(), 401);
    assert!(replay.text().await.unwrap().contains("already been used"));
    let tenant = s.clinic.tenant.id;
    let events = s.state.store.list_auth_events(tenant, None, 50).await.unwrap();
    assert!(events.iter().any(|e| e.kind == AuthEventKind::MfaReplayed));

    // A recovery code works once.
    let used = post_form(
        &s,
        &c3,
        "/mfa",
        &[("csrf", &csrf3), ("recovery_code", &recovery[0].to_lowercase())],
    )
    .await;
    assert_eq!(used.status(), 303);
    let (c4, _) = password_sign_in(&s, PATIENT).await;
    let csrf4 = s.page_csrf(&c4, "/mfa").await;
    let again =
        post_form(&s, &c4, "/mfa", &[("csrf", &csrf4), ("recovery_code", &recovery[0])]).await;
    assert_eq!(again.status(), 401);
}

async fn staff_must_enrol_before_doing_anything_else(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let (c, next) = password_sign_in(&s, FRONT_DESK).await;
    assert_eq!(next, "/mfa/enroll");
    for page in ["/console", "/account", "/portal", "/mfa"] {
        let r = c.get(s.url(page)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{page}");
        assert_eq!(r.headers()["location"], "/mfa/enroll", "{page}");
    }
    assert_eq!(c.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
    let page = c.get(s.url("/mfa/enroll")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Staff accounts protect patient information"));
    s.enroll_totp(&c).await;
    assert_eq!(c.get(s.url("/console")).send().await.unwrap().status(), 200);
}

async fn oauth_client_credentials_reach_the_api_until_expired_or_revoked(backend: DbBackend) {
    use telesafe_core::identity::clients::{self, ClientRepository, Scope};
    let t0 = Timestamp::from_unix_millis(1_790_000_000_000);
    let clock = ManualClock::at(t0);
    let Some(s) = start(backend, Arc::new(clock.clone())).await else { return };
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let scopes = Scope::parse_list("system/Patient.read system/Observation.read").unwrap();
    let reg = clients::register_client(store, tenant, "Lab integration", scopes, t0).await.unwrap();
    let (id, secret) = (reg.client.client_id.clone(), reg.secret.reveal().to_owned());
    let c = s.client();
    let token_req = |scope: Option<&'static str>, secret: String| {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(sc) = scope {
            form.push(("scope", sc));
        }
        c.post(s.url("/oauth2/token")).basic_auth(&id, Some(secret)).form(&form).send()
    };

    let r = token_req(None, secret.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "system/Observation.read system/Patient.read");
    let token = body["access_token"].as_str().unwrap().to_owned();

    let me = c.get(s.url("/api/v1/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["kind"], "client");
    assert_eq!(me["client_id"], id.as_str());

    // Wrong secret, unknown grant, a scope beyond the grant.
    let r = token_req(None, "x".repeat(43)).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_client");
    let r = c
        .post(s.url("/oauth2/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "unsupported_grant_type");
    let r = token_req(Some("system/*.write"), secret.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_scope");
    let narrow: serde_json::Value =
        token_req(Some("system/Patient.read"), secret.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(narrow["scope"], "system/Patient.read");

    // Introspection by the client itself; another tenant's client learns nothing.
    let intro = |who: &str, pw: &str, t: &str| {
        c.post(s.url("/oauth2/introspect")).basic_auth(who, Some(pw)).form(&[("token", t)]).send()
    };
    let v: serde_json::Value = intro(&id, &secret, &token).await.unwrap().json().await.unwrap();
    assert_eq!(v["active"], true);
    assert_eq!(v["client_id"], id.as_str());
    let other = telesafe_core::identity::Tenant {
        id: telesafe_core::TenantId::new_v7(),
        slug: telesafe_core::identity::TenantSlug::parse("other-clinic").unwrap(),
        name: telesafe_core::identity::DisplayName::parse("Other").unwrap(),
        created_at: t0,
    };
    telesafe_core::identity::TenantRepository::create_tenant(store, &other).await.unwrap();
    let foreign = clients::register_client(store, other.id, "Other", vec![], t0).await.unwrap();
    let v: serde_json::Value = intro(&foreign.client.client_id, foreign.secret.reveal(), &token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!({"active": false}));

    // Expiry: 15 minutes.
    clock.advance(Duration::from_secs(15 * 60));
    let r = c.get(s.url("/api/v1/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));
    assert_eq!(r.json::<ErrorBody>().await.unwrap().code, ErrorCode::InvalidToken);

    // Revocation of a token (RFC 7009), then of the whole client.
    let fresh: serde_json::Value =
        token_req(None, secret.clone()).await.unwrap().json().await.unwrap();
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    let r = c
        .post(s.url("/oauth2/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", fresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.get(s.url("/api/v1/me")).bearer_auth(&fresh).send().await.unwrap().status(), 401);
    let v: serde_json::Value = intro(&id, &secret, &fresh).await.unwrap().json().await.unwrap();
    assert_eq!(v["active"], false);
    let third: serde_json::Value =
        token_req(None, secret.clone()).await.unwrap().json().await.unwrap();
    let third = third["access_token"].as_str().unwrap().to_owned();
    assert!(store.revoke_client(tenant, &id, clock.now()).await.unwrap());
    assert_eq!(c.get(s.url("/api/v1/me")).bearer_auth(&third).send().await.unwrap().status(), 401);
    assert_eq!(token_req(None, secret.clone()).await.unwrap().status(), 401);
    // A malformed Authorization header is refused, not ignored.
    let r = c.get(s.url("/api/v1/me")).header("authorization", "Token abc").send().await.unwrap();
    assert_eq!(r.status(), 401);
}

async fn an_activation_link_sets_a_password_once(backend: DbBackend) {
    use telesafe_core::identity::{
        DisplayName, Email, User, UserRepository, UserStatus, activation,
    };
    let Some(s) = server(backend).await else { return };
    let now = s.state.clock.now();
    let tenant = s.clinic.tenant.id;
    let user = User::new(
        tenant,
        Email::parse("new.patient@demo.telesafe.test").unwrap(),
        DisplayName::parse("Nora Newman").unwrap(),
        telesafe_core::identity::Role::Patient,
        UserStatus::Pending,
        None,
        now,
    );
    s.state.store.create_user(&user).await.unwrap();
    let token = activation::issue(&s.state.store, &user, now).await.unwrap();
    let path = format!("/activate/{}", token.reveal());
    let c = s.client();
    let page = c.get(s.url(&path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("at least 15 characters"));
    for (pw, confirm, says) in [
        ("short one", "short one", "at least 15 characters"),
        ("correct horse battery staple", "correct horse battery stapler", "not the same"),
        (
            "nora newman forever and ever",
            "nora newman forever and ever",
            "must not contain your email address or name",
        ),
        ("1qaz2wsx3edc4rfv", "1qaz2wsx3edc4rfv", "too common"),
    ] {
        let r = c
            .post(s.url(&path))
            .header("origin", &s.base)
            .form(&[("password", pw), ("confirm", confirm)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{pw}");
        assert!(r.text().await.unwrap().contains(says), "{pw}: expected {says}");
    }
    let good = "plum kettle orbit seventeen";
    let r = c
        .post(s.url(&path))
        .header("origin", &s.base)
        .form(&[("password", good), ("confirm", good)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Your account is ready"));
    // The link works once.
    assert_eq!(c.get(s.url(&path)).send().await.unwrap().status(), 404);
    let r = c
        .post(s.url(&path))
        .header("origin", &s.base)
        .form(&[("password", good), ("confirm", good)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // And the new password signs in.
    let r = c
        .post(s.url("/signin"))
        .header("origin", &s.base)
        .form(&[
            ("organisation", "demo"),
            ("email", "new.patient@demo.telesafe.test"),
            ("password", good),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        s.state.store.user_by_id(tenant, user.id).await.unwrap().unwrap().status,
        UserStatus::Active
    );
    assert_eq!(c.get(s.url("/activate/not-a-real-token")).send().await.unwrap().status(), 404);
}

async fn the_setup_token_creates_the_first_administrator_once(backend: DbBackend) {
    use telesafe_core::identity::{SetupToken, SetupTokenRepository};
    let Some(s) = server(backend).await else { return };
    let now = s.state.clock.now();
    let token = telesafe_crypto::OpaqueToken::generate().unwrap();
    s.state
        .store
        .create_setup_token(&SetupToken {
            hash: token.hash(),
            created_at: now,
            expires_at: now.plus(Duration::from_secs(3600)),
        })
        .await
        .unwrap();
    let c = s.client();
    assert_eq!(c.get(s.url("/setup")).send().await.unwrap().status(), 200);
    let form = |tok: &str, code: &str| {
        vec![
            ("token", tok.to_owned()),
            ("organisation_code", code.to_owned()),
            ("organisation_name", "Hilltop Health".to_owned()),
            ("name", "Harriet Admin".to_owned()),
            ("email", "harriet@hilltop.example".to_owned()),
            ("password", "granite lantern meadow".to_owned()),
        ]
    };
    let post = |f: Vec<(&'static str, String)>| {
        c.post(s.url("/setup")).header("origin", &s.base).form(&f).send()
    };
    let r = post(form(&"x".repeat(43), "hilltop")).await.unwrap();
    assert_eq!(r.status(), 403);
    let r = post(form(token.reveal(), "Not A Code!")).await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("organisation code is 2 to 40"));
    let r = post(form(token.reveal(), "demo")).await.unwrap();
    assert_eq!(r.status(), 422, "an existing code is refused and the token survives");
    let r = post(form(token.reveal(), "hilltop")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Your organisation is ready"));
    let r = post(form(token.reveal(), "hilltop-two")).await.unwrap();
    assert_eq!(r.status(), 403, "the token works once");
    let r = c
        .post(s.url("/signin"))
        .header("origin", &s.base)
        .form(&[
            ("organisation", "hilltop"),
            ("email", "harriet@hilltop.example"),
            ("password", "granite lantern meadow"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/mfa/enroll",
        "the new administrator must enrol a second factor"
    );
}

async fn native_apps_sign_in_with_json_under_the_same_rules(backend: DbBackend) {
    use secrecy::ExposeSecret;
    use serde_json::json;
    let Some(s) = server(backend).await else { return };
    let c = s.client();
    let pw = s.password.expose_secret().to_owned();
    let signin = |email: &str, password: &str| {
        c.post(s.url("/api/v1/sessions"))
            .json(&json!({"organisation": "demo", "email": email, "password": password}))
            .send()
    };
    let r = signin(PATIENT, &pw).await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get(SET_COOKIE).is_none(), "native sessions use no cookie");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["stage"], "full");
    let token = body["session_token"].as_str().unwrap().to_owned();
    let me: serde_json::Value =
        c.get(s.url("/api/v1/me")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["kind"], "user");
    assert_eq!(me["role"], "patient");

    let r = signin(PATIENT, "a wrong but long passphrase").await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<ErrorBody>().await.unwrap().code, ErrorCode::InvalidCredentials);
    let r = c.post(s.url("/api/v1/sessions")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 415);
    let r = c
        .post(s.url("/api/v1/sessions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<ErrorBody>().await.unwrap().code, ErrorCode::BadRequest);

    // Staff with an authenticator: the session owes its second factor first.
    s.signed_in(NURSE).await; // enrols on the web
    let body: serde_json::Value = signin(NURSE, &pw).await.unwrap().json().await.unwrap();
    assert_eq!(body["stage"], "mfa_pending");
    let pending = body["session_token"].as_str().unwrap().to_owned();
    let r = c.get(s.url("/api/v1/me")).bearer_auth(&pending).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let wrong = c
        .post(s.url("/api/v1/sessions/mfa"))
        .bearer_auth(&pending)
        .json(&json!({"code": "000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let code = s.next_totp_code(NURSE);
    let ok = c
        .post(s.url("/api/v1/sessions/mfa"))
        .bearer_auth(&pending)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let full: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(full["stage"], "full");
    let full = full["session_token"].as_str().unwrap().to_owned();
    assert_ne!(full, pending, "a new session id after the second factor");
    assert_eq!(
        c.get(s.url("/api/v1/me")).bearer_auth(&pending).send().await.unwrap().status(),
        401
    );
    assert_eq!(c.get(s.url("/api/v1/me")).bearer_auth(&full).send().await.unwrap().status(), 200);
    let r = c.delete(s.url("/api/v1/sessions/current")).bearer_auth(&full).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(c.get(s.url("/api/v1/me")).bearer_auth(&full).send().await.unwrap().status(), 401);

    // Staff without one are told to enrol (on the web).
    let body: serde_json::Value = signin(FRONT_DESK, &pw).await.unwrap().json().await.unwrap();
    assert_eq!(body["stage"], "enroll_required");
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

async fn administrators_add_people_after_a_fresh_second_factor(backend: DbBackend) {
    use telesafe_core::identity::outbox::{self, OutboxRepository};
    let t0 = Timestamp::from_unix_millis(1_790_000_000_000);
    let clock = ManualClock::at(t0);
    let Some(s) = start(backend, Arc::new(clock.clone())).await else { return };
    let c = s.signed_in(ADMIN).await;
    // Enrolment just verified a second factor, so adding someone now needs no step-up.
    let csrf = s.page_csrf(&c, "/admin").await;
    let add = |csrf: String, email: &'static str| {
        let c = c.clone();
        let url = s.url("/admin/people");
        let origin = s.base.clone();
        async move {
            c.post(url)
                .header("origin", origin)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("role", "nurse"),
                    ("name", "Nell Newhire"),
                    ("email", email),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let r = add(csrf, "nell@demo.telesafe.test").await;
    assert_eq!(r.headers()["location"], "/admin?done=added");

    // Six minutes later it does: the form sends the administrator to confirm it is them.
    clock.advance(Duration::from_secs(6 * 60));
    let csrf = s.page_csrf(&c, "/admin").await;
    let r = add(csrf.clone(), "otto@demo.telesafe.test").await;
    assert_eq!(r.headers()["location"], "/mfa/step-up?return=/admin");
    assert_eq!(
        c.get(s.url("/mfa/step-up?return=https://evil.example")).send().await.unwrap().status(),
        200
    );
    let code = s.next_totp_code(ADMIN);
    let r = post_form(
        &s,
        &c,
        "/mfa/step-up",
        &[("csrf", &csrf), ("code", &code), ("return", "https://evil.example/")],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/account", "an unknown return address is never followed");
    let csrf = s.page_csrf(&c, "/admin").await;
    let r = add(csrf, "otto@demo.telesafe.test").await;
    assert_eq!(r.headers()["location"], "/admin?done=added");

    // The queued messages carry only a greeting and a link, sealed at rest.
    let due = s.state.store.due_messages(10).await.unwrap();
    assert_eq!(due.len(), 2);
    let body = outbox::open_body(&s.state.outbox_key, &due[0]).unwrap();
    assert!(body.contains("/activate/"));
    assert!(!body.contains("Nell") && !body.contains("nell@"), "{body}");
    assert!(!String::from_utf8_lossy(&due[0].sealed_body).contains("/activate/"));
    let link = body.lines().find(|l| l.contains("/activate/")).unwrap().trim().to_owned();
    telesafe_server::mail::deliver_due(&s.state, telesafe_server::mail::Transport::Log).await;
    assert!(s.state.store.due_messages(10).await.unwrap().is_empty());
    // The link works for the new person.
    let path = link.split_once("/activate/").map(|(_, t)| format!("/activate/{t}")).unwrap();
    assert_eq!(s.client().get(s.url(&path)).send().await.unwrap().status(), 200);
    let page = c.get(s.url("/admin")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("nell@demo.telesafe.test") && page.contains("pending"));
    // Nobody but an administrator can add people.
    let nurse = s.signed_in(NURSE).await;
    let csrf = s.csrf(&nurse).await;
    let r = nurse
        .post(s.url("/admin/people"))
        .header("origin", &s.base)
        .form(&[
            ("csrf", csrf.as_str()),
            ("role", "tenant-admin"),
            ("name", "Mallory"),
            ("email", "m@x.example"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

async fn changing_the_password_ends_every_other_session(backend: DbBackend) {
    use secrecy::ExposeSecret;
    let Some(s) = server(backend).await else { return };
    let laptop = s.signed_in(PATIENT).await;
    let phone = s.signed_in(PATIENT).await;
    let old = s.password.expose_secret().to_owned();
    let csrf = s.csrf(&laptop).await;
    let change = |current: &str, new: &str, confirm: &str| {
        let form = [
            ("csrf", csrf.clone()),
            ("current", current.to_owned()),
            ("new", new.to_owned()),
            ("confirm", confirm.to_owned()),
        ];
        laptop.post(s.url("/account/password")).header("origin", &s.base).form(&form).send()
    };
    let fresh = "walnut harbour violin sunrise";
    for (cur, new, conf, says) in [
        ("not my password at all", fresh, fresh, "current password is not right"),
        (old.as_str(), fresh, "something else entirely", "not the same"),
        (old.as_str(), "too short pw", "too short pw", "at least 15 characters"),
    ] {
        let r = change(cur, new, conf).await.unwrap();
        assert_eq!(r.status(), 422, "{says}");
        assert!(r.text().await.unwrap().contains(says), "{says}");
    }
    assert_eq!(
        phone.get(s.url("/api/v1/me")).send().await.unwrap().status(),
        200,
        "refusals change nothing"
    );
    let r = change(&old, fresh, fresh).await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()[SET_COOKIE].to_str().unwrap().starts_with("__Host-telesafe_session="));
    assert_eq!(laptop.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);
    assert_eq!(phone.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
    let (_, next) = {
        let c = s.client();
        let r = c
            .post(s.url("/signin"))
            .header("origin", &s.base)
            .form(&[("organisation", "demo"), ("email", PATIENT), ("password", fresh)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        (c, r.headers()["location"].to_str().unwrap().to_owned())
    };
    assert_eq!(next, "/portal");
    let r = s
        .client()
        .post(s.url("/signin"))
        .header("origin", &s.base)
        .form(&[("organisation", "demo"), ("email", PATIENT), ("password", old.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

both_backends!(
    changing_the_password_ends_every_other_session,
    administrators_add_people_after_a_fresh_second_factor,
    native_apps_sign_in_with_json_under_the_same_rules,
    every_set_cookie_carries_the_required_attributes,
    the_setup_token_creates_the_first_administrator_once,
    an_activation_link_sets_a_password_once,
    oauth_client_credentials_reach_the_api_until_expired_or_revoked,
    the_console_lists_the_clinics_patients,
    totp_from_an_independent_implementation_is_accepted_once,
    staff_must_enrol_before_doing_anything_else,
    administrators_idle_out_after_fifteen_minutes,
    absolute_limit_holds_despite_activity,
    my_sessions_can_be_listed_and_ended,
    a_thousand_guesses_from_fifty_connections_evaluate_at_most_a_hundred,
    every_response_carries_the_security_headers,
    health_and_readiness_answer,
    api_errors_are_json_with_a_stable_code_and_the_request_id,
    sign_in_sets_a_hardened_cookie_and_lands_on_the_role_home,
    each_role_reaches_only_its_own_console,
    cross_site_posts_are_refused,
    sessions_end_after_thirty_idle_minutes,
);
