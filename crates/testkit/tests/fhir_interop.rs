//! Interop with an independent FHIR stack: the unmodified `fhirpy` client creates, reads,
//! updates, searches and deletes Patients and Observations with a bearer token from client
//! credentials, and every resource the server returns must validate as R4 with
//! `fhir.resources` (tests/fhir/test_fhirpy.py). Both in Python, neither written by us.
//!
//! `scripts/test` makes the Python environment and sets `TELESAFE_PYTHON`; without it the
//! test is skipped with a notice, except under `CI=true`, where that is a failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use telesafe_testkit::{DbBackend, both_backends};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

async fn fhirpy_round_trips_and_every_answer_is_valid_r4(backend: DbBackend) {
    let Ok(python) = std::env::var("TELESAFE_PYTHON") else {
        assert!(
            !telesafe_store::testing::postgres_required(),
            "TELESAFE_PYTHON is not set: run the suite through scripts/test"
        );
        eprintln!("SKIPPED: TELESAFE_PYTHON is not set (scripts/test sets it)");
        return;
    };
    let Some(s) = server(backend).await else { return };
    let token = client_token(&s, "system/*.*").await;
    let ca = s.data_dir().join("interop-ca.pem");
    std::fs::write(&ca, s.cert_pem()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fhir/test_fhirpy.py");
    // A patient's own session (the native sign-in API) for reading her AuditEvents.
    use secrecy::ExposeSecret;
    let r = s
        .client()
        .post(s.url("/api/v1/sessions"))
        .json(&serde_json::json!({"organisation": "demo", "email": PATIENT, "password": s.password.expose_secret()}))
        .send()
        .await
        .unwrap();
    let session: serde_json::Value = r.json().await.unwrap();
    assert_eq!(session["stage"], "full", "{session}");
    let patient_token = session["session_token"].as_str().unwrap().to_owned();
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = {
        use telesafe_core::identity::PatientRepository;
        let patients = s.state.store.list_patients(s.clinic.tenant.id).await.unwrap();
        patients.into_iter().find(|p| p.user_id == Some(ana_user)).unwrap().id.to_string()
    };
    let out = tokio::process::Command::new(python)
        .env("TELESAFE_PATIENT_TOKEN", &patient_token)
        .env("TELESAFE_PATIENT_ID", &ana)
        .arg(script)
        .env("TELESAFE_FHIR_BASE", s.url("/fhir"))
        .env("TELESAFE_FHIR_TOKEN", &token)
        .env("TELESAFE_CA", &ca)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fhirpy interop failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("fhirpy interop ok"), "{stdout}");
    eprintln!("{backend:?}: {}", stdout.trim());
}

both_backends!(fhirpy_round_trips_and_every_answer_is_valid_r4,);
