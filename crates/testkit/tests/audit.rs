//! The audit log end to end: patient data is shown only after its audit entries are
//! durable (fail closed), proofs served over HTTPS verify with an RFC 9162 verifier written
//! here independently of the server's. (`telesafe audit verify` is tested with the CLI.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

mod common;

use sha2::{Digest, Sha256};
use telesafe_core::audit::AuditRepository;
use telesafe_core::identity::PatientRepository;
use telesafe_testkit::{DbBackend, both_backends};

#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

type H = [u8; 32];

fn node(l: &H, r: &H) -> H {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// Largest power of two below n (n > 1).
fn k_of(n: u64) -> u64 {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// Independent RFC 9162 inclusion check: rebuilds the root recursively from the tree's
/// definition (PATH in §2.1.3.1 read backwards), consuming the proof from its end.
fn root_from_inclusion(leaf: &H, m: u64, n: u64, proof: &[H]) -> Option<H> {
    if n == 1 {
        return proof.is_empty().then_some(*leaf);
    }
    let (last, rest) = proof.split_last()?;
    let k = k_of(n);
    if m < k {
        Some(node(&root_from_inclusion(leaf, m, k, rest)?, last))
    } else {
        Some(node(last, &root_from_inclusion(leaf, m - k, n - k, rest)?))
    }
}

/// Independent RFC 9162 consistency check: recomputes (old root, new root) recursively
/// from SUBPROOF's definition (§2.1.4.1), consuming the proof from its end.
fn roots_from_consistency(
    m: u64,
    n: u64,
    complete: bool,
    old_root: &H,
    proof: &[H],
) -> Option<(H, H)> {
    if m == n {
        return if complete {
            proof.is_empty().then_some((*old_root, *old_root))
        } else {
            let (only, rest) = proof.split_last()?;
            rest.is_empty().then_some((*only, *only))
        };
    }
    let (last, rest) = proof.split_last()?;
    let k = k_of(n);
    if m <= k {
        let (o, nn) = roots_from_consistency(m, k, complete, old_root, rest)?;
        Some((o, node(&nn, last)))
    } else {
        let (o, nn) = roots_from_consistency(m - k, n - k, false, old_root, rest)?;
        Some((node(last, &o), node(last, &nn)))
    }
}

fn unhex(s: &str) -> H {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn hashes(v: &serde_json::Value) -> Vec<H> {
    v.as_array().unwrap().iter().map(|h| unhex(h.as_str().unwrap())).collect()
}

async fn get_json(c: &reqwest::Client, url: &str) -> serde_json::Value {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

async fn proofs_verify_independently_and_reads_fail_closed(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    // The demo's records were written, and logged, as the system.
    let seeded = s.state.store.audit_size().await.unwrap();
    let dr = s.signed_in(DR).await;
    // Each console view records a search and one entry per patient listed (3 in the demo).
    for _ in 0..3 {
        assert_eq!(dr.get(s.url("/console")).send().await.unwrap().status(), 200);
    }
    let first = s.state.audit.sign_now().await.unwrap();
    for _ in 0..4 {
        assert_eq!(dr.get(s.url("/console")).send().await.unwrap().status(), 200);
    }
    let second = s.state.audit.sign_now().await.unwrap();
    assert_eq!((first.size - seeded, second.size - seeded), (12, 28));

    // Only security officers and operators read the log's proofs.
    assert_eq!(dr.get(s.url("/api/v1/audit/head")).send().await.unwrap().status(), 403);
    let sec = s.signed_in(SECURITY).await;
    let head: serde_json::Value =
        sec.get(s.url("/api/v1/audit/head")).send().await.unwrap().json().await.unwrap();
    let (a, b) = (first.size, second.size);
    assert_eq!(head["size"], b);
    assert_eq!(head["root"], hex::encode(second.root));

    for seq in [0u64, 5, seeded, seeded + 11, b - 1] {
        let p =
            get_json(&sec, &s.url(&format!("/api/v1/audit/proof/inclusion?seq={seq}&size={b}")))
                .await;
        let proof = hashes(&p["proof"]);
        let leaf = unhex(p["leaf_hash"].as_str().unwrap());
        // The leaf is the hash of the stored entry's canonical bytes.
        let stored = &s.state.store.audit_entries(seq, 1).await.unwrap()[0];
        assert_eq!(stored.0.leaf_hash(), leaf);
        assert_eq!(root_from_inclusion(&leaf, seq, b, &proof), Some(second.root), "entry {seq}");
        let mut bad = proof.clone();
        bad[0][0] ^= 1;
        assert_ne!(root_from_inclusion(&leaf, seq, b, &bad), Some(second.root));
    }
    let c =
        get_json(&sec, &s.url(&format!("/api/v1/audit/proof/consistency?old={a}&new={b}"))).await;
    let proof = hashes(&c["proof"]);
    let got = roots_from_consistency(a, b, true, &first.root, &proof).unwrap();
    assert_eq!(got, (first.root, second.root), "the later head extends the earlier one");
    let r = sec
        .get(s.url(&format!("/api/v1/audit/proof/consistency?old={}&new={b}", b + 2)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Fail closed: when the log cannot take an entry, the patient list is not shown.
    let block = match backend {
        DbBackend::Sqlite => vec![
            "CREATE TRIGGER audit_block BEFORE INSERT ON audit_segments BEGIN SELECT RAISE(ABORT, 'blocked'); END".to_owned(),
        ],
        DbBackend::Postgres => vec![
            "CREATE FUNCTION audit_block() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'blocked'; END $$".to_owned(),
            "CREATE TRIGGER audit_block BEFORE INSERT ON audit_segments FOR EACH ROW EXECUTE FUNCTION audit_block()".to_owned(),
        ],
    };
    s.database().as_dba(&block).await.unwrap();
    let r = dr.get(s.url("/console")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("Ana López") && !body.contains("Walter Brown"),
        "no patient data without an audit entry"
    );
    let unblock = match backend {
        DbBackend::Sqlite => "DROP TRIGGER audit_block",
        DbBackend::Postgres => "DROP TRIGGER audit_block ON audit_segments",
    };
    s.database().as_dba(&[unblock.to_owned()]).await.unwrap();
    assert_eq!(dr.get(s.url("/console")).send().await.unwrap().status(), 200);
}

async fn patients_see_who_looked_and_security_officers_search(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let dr = s.signed_in(DR).await;
    assert_eq!(dr.get(s.url("/console")).send().await.unwrap().status(), 200);
    let ana = s.signed_in(PATIENT).await;
    let page = ana.get(s.url("/portal/access")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Dr. Sam Rivera") && page.contains("Clinician"), "{page}");
    assert!(
        page.contains("Saw your name and registration in a list") && page.contains("Your care")
    );
    // Looking at one's own log is recorded too, and shows as "You".
    let again = ana.get(s.url("/portal/access")).send().await.unwrap().text().await.unwrap();
    assert!(again.contains("You") && again.contains("Your own request"));
    // Staff cannot open a patient's page.
    assert_eq!(dr.get(s.url("/portal/access")).send().await.unwrap().status(), 403);

    let sec = s.signed_in(SECURITY).await;
    let r = sec.get(s.url(&format!("/security/audit?actor={DR}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("<svg") && page.contains("Audit entries per day"),
        "the activity is drawn"
    );
    assert!(page.contains("4 matching entries"), "a search and three listed patients: {page}");
    assert!(!page.contains("Ana López"), "no patient names for the security officer");
    let r = sec.get(s.url("/security/audit?from=25/11/2026")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("year-month-day"));
    assert_eq!(dr.get(s.url("/security/audit")).send().await.unwrap().status(), 403);
}

async fn the_console_shows_only_what_policy_allows(backend: DbBackend) {
    use telesafe_core::identity::{DisplayName, Email, Role, User, UserRepository, UserStatus};
    let Some(s) = server(backend).await else { return };
    let page = |c: reqwest::Client| {
        let url = s.url("/console");
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    // Front desk sees every patient's demographics.
    let fd = page(s.signed_in(FRONT_DESK).await).await;
    assert!(fd.contains("Ana López") && fd.contains("Walter Brown") && fd.contains("Maria Santos"));
    // The nurse is on the care team of the two patients with accounts only.
    let nurse = page(s.signed_in(NURSE).await).await;
    assert!(nurse.contains("Ana López") && nurse.contains("Walter Brown"));
    assert!(!nurse.contains("Maria Santos"), "a patient outside the team is hidden");
    // A clinician on no care team sees no one, and no count or id of anyone hidden.
    let hash = s.state.passwords.hash(s.password.clone()).await.unwrap();
    let newcomer = User::new(
        s.clinic.tenant.id,
        Email::parse("dr.new@demo.telesafe.test").unwrap(),
        DisplayName::parse("Dr. New").unwrap(),
        Role::Clinician,
        UserStatus::Active,
        Some(hash),
        s.state.clock.now(),
    );
    s.state.store.create_user(&newcomer).await.unwrap();
    let before = s.state.audit.size();
    let empty = page(s.signed_in("dr.new@demo.telesafe.test").await).await;
    for hidden in ["Ana López", "Walter Brown", "Maria Santos"] {
        assert!(!empty.contains(hidden), "{hidden} leaked to a clinician outside the team");
    }
    for p in s.state.store.list_patients(s.clinic.tenant.id).await.unwrap() {
        assert!(!empty.contains(&p.id.to_string()));
    }
    // Only the search itself was recorded: nobody was shown.
    assert_eq!(s.state.audit.size(), before + 1);
}

async fn break_glass_grants_an_hour_shows_the_patient_why_and_alerts(backend: DbBackend) {
    use std::sync::Arc;
    use std::time::Duration;
    use telesafe_core::identity::{DisplayName, Email, Role, User, UserRepository, UserStatus};
    use telesafe_core::{Clock, ManualClock, Timestamp};
    let clock = ManualClock::at(Timestamp::from_unix_millis(1_790_000_000_000));
    let Some(s) = telesafe_testkit::start(backend, Arc::new(clock.clone())).await else { return };
    let hash = s.state.passwords.hash(s.password.clone()).await.unwrap();
    let newcomer = User::new(
        s.clinic.tenant.id,
        Email::parse("dr.er@demo.telesafe.test").unwrap(),
        DisplayName::parse("Dr. Emergency").unwrap(),
        Role::Clinician,
        UserStatus::Active,
        Some(hash),
        clock.now(),
    );
    s.state.store.create_user(&newcomer).await.unwrap();
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = s
        .state
        .store
        .list_patients(s.clinic.tenant.id)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.user_id == Some(ana_user))
        .unwrap()
        .id
        .to_string();
    let er = s.signed_in("dr.er@demo.telesafe.test").await;
    let console =
        || async { er.get(s.url("/console")).send().await.unwrap().text().await.unwrap() };
    assert!(!console().await.contains("Ana López"));
    let csrf = s.page_csrf(&er, "/console/break-glass").await;
    let ask = |reason: &'static str| {
        let (er, csrf, ana) = (er.clone(), csrf.clone(), ana.clone());
        let s = &s;
        async move {
            post_form(
                s,
                &er,
                "/console/break-glass",
                &[
                    ("csrf", &csrf),
                    ("patient", &ana),
                    ("category", "emergency"),
                    ("reason", reason),
                ],
            )
            .await
        }
    };
    let r = ask("   ").await;
    assert_eq!(r.status(), 422, "a reason is required");
    assert!(r.text().await.unwrap().contains("Say why"));
    let r = ask("Unconscious in the emergency department").await;
    assert_eq!(r.status(), 303);
    let page = console().await;
    assert!(page.contains("Ana López") && page.contains("Emergency access until"), "{page}");

    // The patient sees who, and why.
    let patient = s.signed_in(PATIENT).await;
    let log = patient.get(s.url("/portal/access")).send().await.unwrap().text().await.unwrap();
    assert!(log.contains("Dr. Emergency"), "{log}");
    assert!(
        log.contains(
            "Emergency access (Medical emergency): Unconscious in the emergency department"
        ),
        "{log}"
    );
    // The security officer has an alert to review.
    let sec = s.signed_in(SECURITY).await;
    let page = sec.get(s.url("/security")).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Dr. Emergency") && page.contains("Unconscious in the emergency department")
    );
    // Nurses cannot break the glass.
    let nurse = s.signed_in(NURSE).await;
    assert_eq!(nurse.get(s.url("/console/break-glass")).send().await.unwrap().status(), 403);

    // The grant ends after an hour (the session stays alive with activity meanwhile).
    for _ in 0..2 {
        clock.advance(Duration::from_secs(25 * 60));
        assert!(console().await.contains("Ana López"));
    }
    clock.advance(Duration::from_secs(11 * 60));
    assert!(!console().await.contains("Ana López"), "the grant expired after 60 minutes");
    // A new request needs a fresh second factor.
    let r = er.get(s.url("/console/break-glass")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/mfa/step-up?return=/console/break-glass");
}

async fn an_organisation_adds_forbid_policies_checked_against_the_schema(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let admin = s.signed_in(ADMIN).await;
    let fd = s.signed_in(FRONT_DESK).await;
    let console =
        || async { fd.get(s.url("/console")).send().await.unwrap().text().await.unwrap() };
    assert!(console().await.contains("Ana López"));
    let csrf = s.page_csrf(&admin, "/admin").await;
    let save = |src: &'static str| {
        let (admin, csrf) = (admin.clone(), csrf.clone());
        let s = &s;
        async move { post_form(s, &admin, "/admin/policies", &[("csrf", &csrf), ("source", src)]).await }
    };
    let r = save("permit (principal, action, resource);").await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("only forbid"));
    let r = save(r#"forbid (principal, action, resource is Telesafe::Patient) when { principal.rol == "front-desk" };"#).await;
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("does not fit the schema") && body.contains("rol"),
        "the validator's message is shown"
    );
    assert!(console().await.contains("Ana López"), "a refused policy changes nothing");
    let r = save(r#"forbid (principal is Telesafe::User, action, resource is Telesafe::Patient) when { principal.role == "front-desk" };"#).await;
    assert_eq!(r.status(), 303);
    let page = console().await;
    assert!(
        !page.contains("Ana López") && !page.contains("Walter Brown"),
        "the forbid applies at once"
    );
    assert!(
        s.signed_in(DR)
            .await
            .get(s.url("/console"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("Ana López")
    );
    assert_eq!(save("").await.status(), 303);
    assert!(console().await.contains("Ana López"), "cleared");
}

async fn authentication_events_are_copied_into_the_audit_log(backend: DbBackend) {
    use std::sync::Arc;
    use std::time::Duration;
    use telesafe_core::audit::AuditRepository;
    use telesafe_core::{ManualClock, Timestamp};
    let clock = ManualClock::at(Timestamp::from_unix_millis(1_790_000_000_000));
    let Some(s) = telesafe_testkit::start(backend, Arc::new(clock.clone())).await else { return };
    // One sign-in that works, one with a wrong password.
    let _dr = s.signed_in(DR).await;
    let r = post_form(
        &s,
        &s.client(),
        "/signin",
        &[("organisation", "demo"), ("email", DR), ("password", "not the password at all")],
    )
    .await;
    assert_eq!(r.status(), 401);
    // Not yet: the copier stays a few seconds behind.
    assert_eq!(telesafe_server::audit::mirror_auth_events(&s.state).await.unwrap(), 0);
    clock.advance(Duration::from_secs(10));
    let copied = telesafe_server::audit::mirror_auth_events(&s.state).await.unwrap();
    assert!(copied >= 2, "{copied}");
    assert_eq!(telesafe_server::audit::mirror_auth_events(&s.state).await.unwrap(), 0, "once");
    s.state.audit.sign_now().await;
    let n = s.state.store.audit_size().await.unwrap();
    let entries = s.state.store.audit_entries(0, u32::try_from(n).unwrap()).await.unwrap();
    let dr = s.clinic.users.iter().find(|u| u.email.as_str() == DR).unwrap().id.to_string();
    let mine: Vec<_> = entries.iter().map(|(e, _)| e).filter(|e| e.actor_id == dr).collect();
    assert!(mine.iter().any(|e| e.action == "sign_in" && e.resource_type == "Account"), "{mine:?}");
    assert!(mine.iter().any(|e| e.action == "sign_in_failed"), "{mine:?}");
    // Ids only: no email, no password, no name.
    for e in &mine {
        let text = format!("{e:?}");
        assert!(!text.contains("rivera") && !text.contains("not the password"), "{text}");
    }
}

both_backends!(
    authentication_events_are_copied_into_the_audit_log,
    an_organisation_adds_forbid_policies_checked_against_the_schema,
    break_glass_grants_an_hour_shows_the_patient_why_and_alerts,
    the_console_shows_only_what_policy_allows,
    proofs_verify_independently_and_reads_fail_closed,
    patients_see_who_looked_and_security_officers_search,
);
