//! Sessions: idle and absolute limits (with an injected clock), the sessions page, password changes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::SET_COOKIE;
use telesafe_core::identity::AuthEventRepository;
use telesafe_core::{ManualClock, Timestamp};
use telesafe_testkit::{DbBackend, both_backends, start};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

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

async fn a_tenant_shortens_its_limits_but_cannot_lengthen_them(backend: DbBackend) {
    let clock = ManualClock::at(Timestamp::from_unix_millis(1_790_000_000_000));
    let Some(s) = start(backend, Arc::new(clock.clone())).await else {
        return;
    };
    // The administrator just signed in with a second factor, so no step-up is asked.
    let admin = s.signed_in(ADMIN).await;
    let nurse = s.signed_in(NURSE).await;
    let csrf = s.page_csrf(&admin, "/admin").await;
    let r = post_form(
        &s,
        &admin,
        "/admin/session-limits",
        &[("csrf", &csrf), ("idle_minutes", "45"), ("absolute_hours", "")],
    )
    .await;
    assert_eq!(r.status(), 422, "longer than 30 minutes is refused");
    assert!(r.text().await.unwrap().contains("from 1 to 30"));
    let r = post_form(
        &s,
        &admin,
        "/admin/session-limits",
        &[("csrf", &csrf), ("idle_minutes", "10"), ("absolute_hours", "2")],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/admin?done=limits");
    // The new idle limit applies at once to sessions that already exist.
    clock.advance(Duration::from_secs(9 * 60 + 59));
    assert_eq!(nurse.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);
    clock.advance(Duration::from_secs(10 * 60));
    assert_eq!(nurse.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
    // And the overall limit: two hours, however active.
    let dr = s.signed_in(DR).await;
    for _ in 0..11 {
        clock.advance(Duration::from_secs(9 * 60));
        assert_eq!(dr.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);
    }
    clock.advance(Duration::from_secs(21 * 60));
    assert_eq!(dr.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
    // The change is on record as a security event.
    let events = s.state.store.list_auth_events(s.clinic.tenant.id, None, 50).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == telesafe_core::identity::AuthEventKind::SessionLimitsChanged)
    );
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
    sessions_end_after_thirty_idle_minutes,
    administrators_idle_out_after_fifteen_minutes,
    a_tenant_shortens_its_limits_but_cannot_lengthen_them,
    absolute_limit_holds_despite_activity,
    my_sessions_can_be_listed_and_ended,
    changing_the_password_ends_every_other_session,
);
