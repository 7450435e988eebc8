//! Signing in: the form and the JSON API, where each role lands, throttling under a guessing storm, first-run setup and activation links.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::SET_COOKIE;
use telesafe_core::{ManualClock, Timestamp};
use telesafe_proto::{ErrorBody, ErrorCode};
use telesafe_testkit::{DbBackend, both_backends, start};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

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
    assert!(html.contains("Maria Santos"));
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
    // The security officer sees the storm, by account id, never by name.
    let officer = s.signed_in(SECURITY).await;
    let page = officer.get(s.url("/security")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("sign_in_throttled"), "throttling shows on the security console");
    assert!(!page.contains("Ana López") && !page.contains(PATIENT));
    let failed: usize = page
        .split("Failed or refused sign-ins in the last 24 hours: <strong>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(failed, 1000, "every refused guess is counted");
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

both_backends!(
    sign_in_sets_a_hardened_cookie_and_lands_on_the_role_home,
    the_console_lists_the_clinics_patients,
    each_role_reaches_only_its_own_console,
    a_thousand_guesses_from_fifty_connections_evaluate_at_most_a_hundred,
    native_apps_sign_in_with_json_under_the_same_rules,
    the_setup_token_creates_the_first_administrator_once,
    an_activation_link_sets_a_password_once,
);
