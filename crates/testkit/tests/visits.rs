//! Video visits at the HTTP level, on SQLite and PostgreSQL, with an injected clock: the
//! booking page, the link's window, the date-of-birth check and its lockout, the visit
//! pass (one browser at a time), who may open a visit, and what the audit log keeps.
//! The call itself (signaling, media, reconnection, two nodes) is tested in Chromium
//! (tests/browser/visits*.test.mjs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use telesafe_core::audit::AuditRepository;
use telesafe_core::identity::PatientRepository;
use telesafe_core::{ManualClock, Timestamp};
use telesafe_testkit::{DbBackend, TestServer, both_backends};

#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

/// 2026-09-21 10:00 UTC.
const T0: i64 = 1_790_244_000_000;

fn no_redirects(s: &TestServer) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(s.cert_pem()).unwrap())
        .resolve("localhost", s.addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Books a visit for the patient without a portal account (Maria Santos, born
/// 1955-02-20), starting at `start` for 20 minutes, with Dr Rivera; returns the link's
/// path, read off the page (such a patient gets it by hand).
async fn book(s: &TestServer, dr: &reqwest::Client, start: Timestamp) -> String {
    let html = dr.get(s.url("/console/visits")).send().await.unwrap().text().await.unwrap();
    let maria = option_value(&html, "Maria Santos");
    let rivera = checkbox_value(&html, "Dr. Sam Rivera");
    let csrf = field_value(&html, "csrf");
    let at = start.to_rfc3339();
    let r = post_form(
        s,
        dr,
        "/console/visits",
        &[
            ("csrf", &csrf),
            ("patient", &maria),
            ("clinicians", &rivera),
            ("date", &at[..10]),
            ("time", &at[11..16]),
            ("length", "20"),
            ("reason", "Follow-up of blood pressure"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("The visit is booked"), "{html}");
    let link = html.split("data-testid=\"visit-link\">").nth(1).unwrap().split('<').next().unwrap();
    let path = link.split_once("://").unwrap().1.split_once('/').unwrap().1;
    format!("/{path}")
}

fn field_value(html: &str, name: &str) -> String {
    telesafe_testkit::field_value(html, name)
}

fn option_value(html: &str, label: &str) -> String {
    let before = html.split(&format!(">{label}</option>")).next().unwrap();
    before.rsplit("value=\"").next().unwrap().split('"').next().unwrap().to_owned()
}

fn checkbox_value(html: &str, label: &str) -> String {
    let before = html.split(&format!("> {label}</label>")).next().unwrap();
    before.rsplit("value=\"").next().unwrap().split('"').next().unwrap().to_owned()
}

async fn answer(
    s: &TestServer,
    c: &reqwest::Client,
    link: &str,
    (d, m, y): (&str, &str, &str),
) -> reqwest::Response {
    c.post(s.url(link))
        .header("origin", &s.base)
        .form(&[("day", d), ("month", m), ("year", y)])
        .send()
        .await
        .unwrap()
}

fn pass_cookie(r: &reqwest::Response) -> String {
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(set.starts_with("__Host-telesafe_visit="), "{set}");
    assert!(set.contains("Secure") && set.contains("HttpOnly") && set.contains("Path=/"), "{set}");
    set.split(';').next().unwrap().to_owned()
}

async fn the_link_the_date_of_birth_and_the_pass(backend: DbBackend) {
    let clock = ManualClock::at(Timestamp::from_unix_millis(T0));
    let Some(s) = telesafe_testkit::start(backend, Arc::new(clock.clone())).await else { return };
    let dr = s.signed_in(DR).await;
    // Booked for 11:00; the link opens at 10:30.
    let start = Timestamp::from_unix_millis(T0 + 3600 * 1000);
    let link = book(&s, &dr, start).await;
    let anon = no_redirects(&s);

    let r = anon.get(s.url(&link)).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("opens 30 minutes before"));
    clock.set(Timestamp::from_unix_millis(T0 + 40 * 60 * 1000)); // 10:40
    let r = anon.get(s.url(&link)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("Your date of birth"));
    assert!(!html.contains("Maria") && !html.contains("1955"), "the page names nobody");

    // Not a date, then four wrong dates: refused, counted; the fifth locks the link.
    let r = answer(&s, &anon, &link, ("31", "2", "1955")).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("as numbers"));
    for _ in 0..4 {
        let r = answer(&s, &anon, &link, ("21", "2", "1955")).await;
        assert_eq!(r.status(), 422);
        assert!(r.text().await.unwrap().contains("does not match our records"));
    }
    let r = answer(&s, &anon, &link, ("19", "2", "1955")).await;
    assert_eq!(r.status(), 429);
    // Locked: even the right answer is refused until the lock runs out.
    let r = answer(&s, &anon, &link, ("20", "2", "1955")).await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("locked for 15 minutes"));
    clock.advance(Duration::from_secs(15 * 60)); // 10:55

    let r = answer(&s, &anon, &link, ("20", "02", "1955")).await;
    assert_eq!(r.status(), 303);
    let first = pass_cookie(&r);
    let next = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(next.starts_with("/visits/") && next.ends_with("/check"), "{next}");
    let visit_path = next.trim_end_matches("/check").to_owned();
    let with =
        |cookie: &str, path: &str| anon.get(s.url(path)).header("cookie", cookie.to_owned()).send();
    let r = with(&first, &next).await.unwrap();
    assert_eq!(r.status(), 200);
    let pp = r.headers()["permissions-policy"].to_str().unwrap().to_owned();
    assert!(pp.contains("camera=(self)") && pp.contains("microphone=(self)"), "{pp}");
    let r = with(&first, &visit_path).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("You are in the waiting room"));

    // Another browser answers right: it gets its own pass and the first one stops working.
    let r = answer(&s, &anon, &link, ("20", "2", "1955")).await;
    assert_eq!(r.status(), 303);
    let second = pass_cookie(&r);
    assert_ne!(first, second);
    assert_eq!(with(&second, &visit_path).await.unwrap().status(), 200);
    let r = with(&first, &visit_path).await.unwrap();
    assert_eq!(r.status(), 303, "the replaced pass no longer opens the visit");
    // A pass opens only its own visit.
    let r = with(&second, "/visits/01a20000-0000-7000-8000-000000000000").await.unwrap();
    assert_eq!(r.status(), 303);

    // Who else may open it: its clinician yes; a nurse not on it and front desk no; the
    // socket refuses a foreign origin. (Signed in again: the clock moved past the idle
    // limit of the booking session.)
    let dr = s.signed_in(DR).await;
    assert_eq!(dr.get(s.url(&visit_path)).send().await.unwrap().status(), 200);
    let nurse = s.signed_in(NURSE).await;
    assert_eq!(nurse.get(s.url(&visit_path)).send().await.unwrap().status(), 404);
    let desk = s.signed_in(FRONT_DESK).await;
    assert_eq!(desk.get(s.url(&visit_path)).send().await.unwrap().status(), 403);
    let r = dr
        .get(s.url(&format!("{visit_path}/socket?peer=0b9d2c1e-6c7a-4a43-9a7e-3f1c2b4d5e6f")))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // After the window (12:20 and later) the link and the pass are over.
    clock.set(Timestamp::from_unix_millis(T0 + (2 * 3600 + 21 * 60) * 1000));
    let r = anon.get(s.url(&link)).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("expired"));
    assert_eq!(with(&second, &visit_path).await.unwrap().status(), 303);

    // The audit log has every answer, as the visit link, with ids only.
    let maria = s
        .state
        .store
        .list_patients(s.clinic.tenant.id)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.user_id.is_none())
        .unwrap();
    let all = s.state.store.audit_entries(0, 100_000).await.unwrap();
    let checks: Vec<_> =
        all.iter().map(|(e, _)| e).filter(|e| e.action == "verify-identity").collect();
    let denied = checks.iter().filter(|e| e.outcome == "denied").count();
    let ok = checks.iter().filter(|e| e.outcome == "success").count();
    assert_eq!((denied, ok), (5, 2), "four wrong dates, the locking fifth; two right ones");
    for e in &checks {
        assert_eq!(e.actor_kind.as_str(), "visit-link");
        assert_eq!(e.patient_id, maria.id.to_string());
        let text = format!("{e:?}");
        assert!(!text.contains("1955") && !text.contains("Maria"), "{text}");
    }
    let booked = all.iter().any(|(e, _)| e.action == "create" && e.resource_type == "Appointment");
    assert!(booked, "the Appointment write is audited");
}

both_backends!(the_link_the_date_of_birth_and_the_pass);
