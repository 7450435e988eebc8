//! The device SDK against a real server, on both backends:
//! - 24 hours of readings (one a minute, injected clock) taken while the server is down,
//!   across device restarts, are all delivered exactly once when it returns, and a resend
//!   after a lost acknowledgement stores nothing twice;
//! - the same SDK delivers over MQTT through Mosquitto, keeping a window of batches in
//!   flight, and gives up (keeping its batches) when no acknowledgement comes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use serde_json::Value;
use telesafe_core::Clock;
use telesafe_core::devices::{DeviceModel, DeviceRepository, Enrollment, ModelPolicy};
use telesafe_core::identity::PatientRepository;
use telesafe_crypto::OpaqueToken;
use telesafe_device::{Device, Https, Mqtt, TransportError};
use telesafe_proto::telemetry::Reading;
use telesafe_testkit::{DbBackend, TestServer, both_backends};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

fn rfc3339(ms: i64) -> String {
    telesafe_core::Timestamp::from_unix_millis(ms - ms.rem_euclid(1000))
        .to_rfc3339()
        .replace(".000", "")
}

/// A model measuring SpO2 and an enrolled SDK device for Ana, with its state in `dir`.
async fn enrolled(s: &TestServer, dir: &std::path::Path, model_id: &str) -> (Device, String) {
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let now = s.state.clock.now();
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = store.patient_by_user(tenant, ana_user).await.unwrap().unwrap().id;
    store
        .create_model(&DeviceModel {
            id: model_id.into(),
            tenant,
            manufacturer: "Acme".into(),
            model: model_id.into(),
            policy: ModelPolicy {
                measures: vec![("59408-5".into(), "%".into())],
                min_firmware: "2.0.0".into(),
                vulnerable: vec![],
            },
            created_at: now,
        })
        .await
        .unwrap();
    let code = OpaqueToken::generate().unwrap();
    store
        .create_enrollment(&Enrollment {
            code_hash: code.hash(),
            tenant,
            patient: ana,
            model_id: model_id.into(),
            created_at: now,
            expires_at: now.plus(telesafe_core::devices::ENROLLMENT_LIFETIME),
        })
        .await
        .unwrap();
    let device =
        Device::enroll(&s.client(), &s.base, code.reveal(), "SDK-1", "2.2.0", dir).await.unwrap();
    assert_eq!(device.server_key, s.state.device_signer.public_key());
    (device, ana.to_string())
}

async fn spo2_total(s: &TestServer, dr: &reqwest::Client, ana: &str, since: &str) -> u64 {
    let b: Value = dr
        .get(
            s.url(&format!("/fhir/Observation?patient={ana}&code=59408-5&date=ge{since}&_count=1")),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    b["total"].as_u64().unwrap()
}

async fn a_day_offline_is_delivered_exactly_once(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut device, ana) = enrolled(&s, dir.path(), "sdk-oximeter").await;
    let dr = s.signed_in(DR).await;
    let start = s.state.clock.now().unix_millis() - 24 * 3600 * 1000;
    let since = rfc3339(start)[..10].to_owned();
    let before = spo2_total(&s, &dr, &ana, &since).await;

    // The server is unreachable (nothing listens on port 1): every attempt fails, nothing
    // is lost, and the device restarts three times during the day.
    let mut down = Https::new(s.client(), "https://127.0.0.1:1", &device.server_key);
    for minute in 0..1440_i64 {
        let at = rfc3339(start + minute * 60_000);
        let value = format!("{}", 95 + minute % 4);
        let reading = Reading { at: at.clone(), code: "59408-5".into(), unit: "%".into(), value };
        device.record(&at, vec![reading]).unwrap();
        if minute % 360 == 359 {
            assert!(matches!(
                device.deliver(&mut down).await,
                Err(telesafe_device::DeviceError::Transport(TransportError::Unreachable(_)))
            ));
            drop(device);
            device = Device::open(dir.path()).unwrap();
        }
    }
    assert_eq!(device.waiting().unwrap(), 1440);
    // Keep a copy of one buffered batch, to replay the case of a lost acknowledgement.
    let outbox = dir.path().join("outbox");
    let kept = std::fs::read(outbox.join(format!("{:020}.json", 700))).unwrap();

    // The server is back.
    let mut up = Https::new(s.client(), &s.base, &device.server_key);
    let d = device.deliver(&mut up).await.unwrap();
    assert_eq!((d.stored, d.duplicate, d.refused.len(), d.remaining), (1440, 0, 0, 0), "{d:?}");
    assert_eq!(spo2_total(&s, &dr, &ana, &since).await - before, 1440, "every reading, once");
    // The acknowledgement of batch 700 "was lost": it is still in the buffer after a
    // restart and sent again unchanged; the server acknowledges it and stores nothing.
    std::fs::write(outbox.join(format!("{:020}.json", 700)), kept).unwrap();
    let mut device = Device::open(dir.path()).unwrap();
    let d = device.deliver(&mut up).await.unwrap();
    assert_eq!((d.stored, d.duplicate, d.remaining), (0, 1, 0));
    assert_eq!(spo2_total(&s, &dr, &ana, &since).await - before, 1440);
    // A new reading gets the next number, never a reused one.
    let at = rfc3339(s.state.clock.now().unix_millis());
    let r =
        Reading { at: at.clone(), code: "59408-5".into(), unit: "%".into(), value: "97".into() };
    assert_eq!(device.record(&at, vec![r]).unwrap(), 1441);
}

async fn the_sdk_delivers_over_mqtt(backend: DbBackend) {
    let Ok(broker) = std::env::var("TELESAFE_TEST_MQTT") else {
        assert!(!telesafe_store::testing::postgres_required(), "TELESAFE_TEST_MQTT is not set");
        eprintln!("SKIPPED: TELESAFE_TEST_MQTT is not set");
        return;
    };
    let root = format!("sdk{}", &OpaqueToken::generate().unwrap().hash().as_str()[..10]);
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(telesafe_core::SystemClock);
    let Some(s) = telesafe_testkit::start_with(backend, clock, |cfg| {
        cfg.mqtt.broker = Some(broker.clone());
        cfg.mqtt.client_id = root.clone();
        cfg.mqtt.topic_root = root.clone();
    })
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut device, ana) = enrolled(&s, dir.path(), "sdk-mqtt").await;
    let dr = s.signed_in(DR).await;
    let now = s.state.clock.now().unix_millis();
    let since = rfc3339(now - 3600 * 1000)[..10].to_owned();
    let before = spo2_total(&s, &dr, &ana, &since).await;
    // More batches than the window: each acknowledgement lets the next one go.
    for i in 0..40_i64 {
        let at = rfc3339(now - (50 - i) * 60_000);
        let r = Reading {
            at: at.clone(),
            code: "59408-5".into(),
            unit: "%".into(),
            value: "96".into(),
        };
        device.record(&at, vec![r]).unwrap();
    }
    // The bridge connects in the background.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut mqtt =
        Mqtt::connect(&broker, &root, "demo", &device.identity.device_id, &device.server_key)
            .await
            .unwrap();
    mqtt.window = 4;
    let d = device.deliver(&mut mqtt).await.unwrap();
    assert_eq!((d.stored, d.remaining), (40, 0), "{d:?}");
    assert_eq!(spo2_total(&s, &dr, &ana, &since).await - before, 40);

    // Nobody answers on another root: the send fails once the timeout passes with batches
    // in flight, rather than waiting for ever or claiming anything was stored.
    let mut unanswered = Mqtt::connect(
        &broker,
        &format!("{root}-none"),
        "demo",
        &device.identity.device_id,
        &device.server_key,
    )
    .await
    .unwrap();
    unanswered.timeout = std::time::Duration::from_millis(300);
    let batch = telesafe_proto::telemetry::SignedBatch {
        batch: telesafe_proto::telemetry::Batch {
            clock: rfc3339(now),
            device: device.identity.device_id.clone(),
            firmware: "2.4.0".into(),
            readings: Vec::new(),
            seq: 1,
        },
        sig: String::new(),
    };
    let started = std::time::Instant::now();
    let sent = telesafe_device::Transport::send(&mut unanswered, &[batch]).await;
    assert!(matches!(sent, Err(TransportError::Unreachable(_))), "{sent:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

both_backends!(a_day_offline_is_delivered_exactly_once, the_sdk_delivers_over_mqtt);
