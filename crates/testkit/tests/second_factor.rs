//! Second factors: TOTP checked against an independent implementation, replay refusal, recovery codes, mandatory enrolment for staff, and step-up before sensitive administration.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::SET_COOKIE;
use telesafe_core::identity::{AuthEventKind, AuthEventRepository};
use telesafe_core::{Clock, ManualClock, Timestamp};
use telesafe_testkit::{DbBackend, both_backends, start};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

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
    // So do the sensitive device actions (codes, releases, revocations, firmware policy).
    let r = post_form(&s, &c, "/admin/devices/some-device/revoke", &[("csrf", &csrf)]).await;
    assert_eq!(r.headers()["location"], "/mfa/step-up?return=/admin/devices");
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
    let due = s.state.store.due_messages(10, s.state.clock.now()).await.unwrap();
    assert_eq!(due.len(), 2);
    let body = outbox::open_body(&s.state.outbox_key, &due[0]).unwrap();
    assert!(body.contains("/activate/"));
    assert!(!body.contains("Nell") && !body.contains("nell@"), "{body}");
    assert!(!String::from_utf8_lossy(&due[0].sealed_body).contains("/activate/"));
    let link = body.lines().find(|l| l.contains("/activate/")).unwrap().trim().to_owned();
    telesafe_server::mail::deliver_due(&s.state).await;
    assert!(s.state.store.due_messages(10, s.state.clock.now()).await.unwrap().is_empty());
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

both_backends!(
    totp_from_an_independent_implementation_is_accepted_once,
    staff_must_enrol_before_doing_anything_else,
    administrators_add_people_after_a_fresh_second_factor,
);
