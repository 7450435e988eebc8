//! Device interop through a real broker: tests/devices/test_paho.py implements the device
//! side from docs/device-protocol.md alone (its own Ed25519 key, canonical JSON, paho-mqtt)
//! and talks to the server through Mosquitto; its readings must come back as FHIR
//! Observations. `scripts/test` starts the broker and the Python environment; without them
//! the test is skipped with a notice, except under `CI=true`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::sync::Arc;

use telesafe_core::devices::{DeviceModel, DeviceRepository, Enrollment, ModelPolicy};
use telesafe_core::identity::PatientRepository;
use telesafe_crypto::OpaqueToken;
use telesafe_testkit::{DbBackend, both_backends};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

async fn a_device_built_from_the_protocol_document_reports_through_mosquitto(backend: DbBackend) {
    let (Ok(python), Ok(broker)) =
        (std::env::var("TELESAFE_PYTHON"), std::env::var("TELESAFE_TEST_MQTT"))
    else {
        assert!(
            !telesafe_store::testing::postgres_required(),
            "TELESAFE_PYTHON and TELESAFE_TEST_MQTT must be set: run the suite through scripts/test"
        );
        eprintln!("SKIPPED: TELESAFE_PYTHON or TELESAFE_TEST_MQTT is not set");
        return;
    };
    let client_id = format!("telesafe-interop-{}", &OpaqueToken::generate().unwrap().reveal()[..8]);
    let clock: Arc<dyn telesafe_core::Clock> = Arc::new(telesafe_core::SystemClock);
    let Some(s) = telesafe_testkit::start_with(backend, clock, |cfg| {
        cfg.mqtt.broker = Some(broker.clone());
        cfg.mqtt.client_id = client_id.clone();
        cfg.mqtt.topic_root = client_id.clone();
    })
    .await
    else {
        return;
    };
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let now = s.state.clock.now();
    let walter_user = s
        .clinic
        .users
        .iter()
        .find(|u| u.email.as_str() == "walter.brown@demo.telesafe.test")
        .unwrap()
        .id;
    let patient = store.patient_by_user(tenant, walter_user).await.unwrap().unwrap().id;
    let model = DeviceModel {
        id: "pulse-py".into(),
        tenant,
        manufacturer: "Interop".into(),
        model: "Pulse".into(),
        policy: ModelPolicy {
            measures: vec![("8867-4".into(), "/min".into())],
            min_firmware: "2.0".into(),
            vulnerable: vec![],
        },
        created_at: now,
    };
    store.create_model(&model).await.unwrap();
    let code = OpaqueToken::generate().unwrap();
    store
        .create_enrollment(&Enrollment {
            code_hash: code.hash(),
            tenant,
            patient,
            model_id: model.id.clone(),
            created_at: now,
            expires_at: now.plus(telesafe_core::devices::ENROLLMENT_LIFETIME),
        })
        .await
        .unwrap();
    let token = client_token(&s, "system/Observation.read").await;
    let ca = s.data_dir().join("device-interop-ca.pem");
    std::fs::write(&ca, s.cert_pem()).unwrap();
    // Let the server's bridge connect and subscribe.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/devices/test_paho.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("TELESAFE_BASE", &s.base)
        .env("TELESAFE_CA", &ca)
        .env("TELESAFE_MQTT", &broker)
        .env("TELESAFE_ORG", "demo")
        .env("TELESAFE_MQTT_ROOT", &client_id)
        .env("TELESAFE_CODE", code.reveal())
        .env("TELESAFE_PATIENT_ID", patient.to_string())
        .env("TELESAFE_FHIR_TOKEN", &token)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "device interop failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("paho device interop ok"), "{stdout}");
    eprintln!("{backend:?}: {}", stdout.trim());
}

both_backends!(a_device_built_from_the_protocol_document_reports_through_mosquitto,);
