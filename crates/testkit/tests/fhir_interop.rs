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
    let token = client_token(&s, "system/Patient.* system/Observation.*").await;
    let ca = s.data_dir().join("interop-ca.pem");
    std::fs::write(&ca, s.cert_pem()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fhir/test_fhirpy.py");
    let out = tokio::process::Command::new(python)
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
