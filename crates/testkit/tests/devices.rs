//! Remote monitoring over HTTPS, on both backends: a device enrols with a one-time code,
//! sends signed batches (made by the SDK), and its readings become Observations with
//! provenance; replays are acknowledged but stored once, gaps are recorded, forged,
//! future and unsupported batches are refused with their reason, old firmware is
//! quarantined, a revoked device is refused, and every answer is signed by the server;
//! a device enrolled before keys were checked, with a key anyone can sign for, is refused
//! and named on the security console.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use serde_json::{Value, json};
use telesafe_core::devices::{DeviceModel, DeviceRepository, Enrollment, ModelPolicy};
use telesafe_core::identity::PatientRepository;
use telesafe_crypto::OpaqueToken;
use telesafe_crypto::sign::{DeviceKey, decode_base64url, encode_base64url, verify_ed25519};
use telesafe_device::{DeviceIdentity, SequenceFile};
use telesafe_proto::telemetry::{
    Batch, Reading, Rotation, SignedBatch, SignedRotation, rotation_message, signing_message,
};
use telesafe_testkit::{DbBackend, TestServer, both_backends};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

async fn post(s: &TestServer, path: &str, body: &Value, server_key: Option<&[u8]>) -> (u16, Value) {
    let r = s.client().post(s.url(path)).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    let sig = r.headers().get("telesafe-signature").map(|v| v.to_str().unwrap().to_owned());
    let bytes = r.bytes().await.unwrap();
    if let (Some(key), Some(sig)) = (server_key, &sig) {
        let mut msg = b"telesafe-ack-v1\n".to_vec();
        msg.extend_from_slice(&bytes);
        assert!(verify_ed25519(key, &msg, &decode_base64url(sig).unwrap()), "the answer is signed");
    }
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The UTC date `days` ago, as YYYY-MM-DD: readings must be recent (the server refuses
/// ones over a week old as stale) and never in the future.
fn day(days: i64) -> String {
    let ms =
        telesafe_core::Clock::now(&telesafe_core::SystemClock).unix_millis() - days * 86_400_000;
    telesafe_core::Timestamp::from_unix_millis(ms).to_rfc3339()[..10].to_owned()
}

fn hr(at: &str, v: &str) -> Reading {
    Reading { at: at.into(), code: "8867-4".into(), unit: "/min".into(), value: v.into() }
}

/// Ana's patient id, and an Acme Medical model `id` (minimum firmware 2.0.0) registered
/// for the demo clinic.
async fn ana_and_model(
    s: &TestServer,
    id: &str,
    name: &str,
    measures: &[(&str, &str)],
    vulnerable: &[(&str, &str)],
) -> (telesafe_core::PatientId, DeviceModel) {
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = store.patient_by_user(tenant, ana_user).await.unwrap().unwrap().id;
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    };
    let model = DeviceModel {
        id: id.into(),
        tenant,
        manufacturer: "Acme Medical".into(),
        model: name.into(),
        policy: ModelPolicy {
            measures: pairs(measures),
            min_firmware: "2.0.0".into(),
            vulnerable: pairs(vulnerable),
        },
        created_at: s.state.clock.now(),
    };
    store.create_model(&model).await.unwrap();
    (ana, model)
}

async fn devices_enrol_and_deliver_signed_readings_exactly_once(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let now = s.state.clock.now();
    let (ana, model) = ana_and_model(
        &s,
        "oximeter-x",
        "PulseOx 2",
        &[("8867-4", "/min"), ("59408-5", "%")],
        &[("2.1.0", "ADV-2026-0042")],
    )
    .await;
    let enrol = |code: &OpaqueToken| Enrollment {
        code_hash: code.hash(),
        tenant,
        patient: ana,
        model_id: model.id.clone(),
        created_at: now,
        expires_at: now.plus(telesafe_core::devices::ENROLLMENT_LIFETIME),
    };
    let code = OpaqueToken::generate().unwrap();
    store.create_enrollment(&enrol(&code)).await.unwrap();

    // A key of small order (here the identity point) lets anyone forge its signatures:
    // refused with a clear error, and the code is not used up.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = json!({"code": code.reveal(), "public_key": encode_base64url(&identity), "serial": "SN-0042", "firmware": "2.3.1"});
    let (st, refused) = post(&s, "/api/v1/devices/enroll", &weak, None).await;
    assert_eq!((st, refused["code"].as_str()), (400, Some("bad_request")), "{refused}");
    assert!(refused.to_string().contains("not a usable Ed25519 key"), "{refused}");

    // Enrolment: the device keeps its private key; the code works once.
    let key = DeviceKey::generate().unwrap();
    let req = json!({"code": code.reveal(), "public_key": encode_base64url(&key.public_key()), "serial": "SN-0042", "firmware": "2.3.1"});
    let (st, enrolled) = post(&s, "/api/v1/devices/enroll", &req, None).await;
    assert_eq!(st, 201, "{enrolled}");
    let server_key = decode_base64url(enrolled["server_public_key"].as_str().unwrap()).unwrap();
    assert_eq!(server_key, s.state.device_signer.public_key());
    let device_id = enrolled["device_id"].as_str().unwrap().to_owned();
    assert_eq!(post(&s, "/api/v1/devices/enroll", &req, None).await.0, 401, "single use");

    let dir = tempfile::tempdir().unwrap();
    let mut counter = SequenceFile::open(&dir.path().join("seq")).unwrap();
    let id = DeviceIdentity { device_id: device_id.clone(), key, firmware: "2.3.1".into() };
    let (d0, d1) = (day(0), day(1));
    let clock = &format!("{d0}T00:00:00Z");
    let b1 = id
        .sign(
            &mut counter,
            clock,
            vec![hr(&format!("{d1}T23:59:00Z"), "71"), hr(&format!("{d1}T23:59:30Z"), "73")],
        )
        .unwrap();
    let (s, server_key) = (&s, &server_key);
    let send = |batches: Value| async move {
        post(s, "/api/v1/devices/telemetry", &batches, Some(server_key.as_slice())).await
    };
    let (st, acks) = send(serde_json::to_value(&b1).unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(acks[0]["status"], "stored", "{acks}");
    // The same batch again (a replay, or a resend after a lost answer): stored once.
    let (_, acks) = send(json!([b1.clone(), b1.clone()])).await;
    assert_eq!(
        (acks[0]["status"].as_str(), acks[1]["status"].as_str()),
        (Some("duplicate"), Some("duplicate"))
    );
    // A gap is stored and recorded.
    counter.reserve_next().unwrap();
    let b3 = id.sign(&mut counter, clock, vec![hr(&format!("{d0}T00:00:00Z"), "75")]).unwrap();
    let (_, acks) = send(serde_json::to_value(&b3).unwrap()).await;
    assert_eq!(
        (acks[0]["status"].as_str(), acks[0]["gap_from"].as_u64()),
        (Some("stored"), Some(2))
    );
    // Batches that follow one another in one request record no gap between them; a gap
    // inside a request is recorded where it is.
    let at = format!("{}T06:00:00Z", day(3));
    let next = |counter: &mut SequenceFile| id.sign(counter, clock, vec![hr(&at, "70")]).unwrap();
    let run = [next(&mut counter), next(&mut counter), next(&mut counter)];
    counter.reserve_next().unwrap();
    let after_gap = [next(&mut counter), next(&mut counter)];
    let (_, acks) = send(json!(run.iter().chain(&after_gap).collect::<Vec<_>>())).await;
    let gaps: Vec<_> = acks
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (a["status"].as_str().unwrap(), a["seq"].as_u64().unwrap(), a["gap_from"].as_u64())
        })
        .collect();
    assert_eq!(
        gaps,
        [
            ("stored", 4, None),
            ("stored", 5, None),
            ("stored", 6, None),
            ("stored", 8, Some(7)),
            ("stored", 9, None)
        ],
        "{acks}"
    );
    // Forged, future, unsupported, malformed: refused with their reason, nothing stored.
    let mut forged =
        id.sign(&mut counter, clock, vec![hr(&format!("{d0}T00:00:00Z"), "80")]).unwrap();
    forged.batch.readings[0].value = "180".into();
    let future = id
        .sign(&mut counter, "2099-01-01T00:00:00Z", vec![hr(&format!("{d0}T00:00:00Z"), "80")])
        .unwrap();
    let glucose = id
        .sign(
            &mut counter,
            clock,
            vec![Reading {
                at: format!("{d0}T00:00:00Z"),
                code: "2339-0".into(),
                unit: "mg/dL".into(),
                value: "99".into(),
            }],
        )
        .unwrap();
    let (_, acks) = send(json!([forged, future, glucose, {"batch": 1}])).await;
    let reasons: Vec<&str> =
        acks.as_array().unwrap().iter().map(|a| a["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["bad_signature", "future", "unsupported_reading", "malformed"]);

    // The readings are Observations in the patient's record, with provenance.
    let dr = s.signed_in(DR).await;
    let bundle: Value = dr
        .get(s.url(&format!("/fhir/Observation?patient={ana}&date=ge{d1}T00:00:00Z")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The demo clinic's own vitals for Ana may share those days: count this device's.
    let mine = from_device(&bundle, &device_id);
    assert_eq!(mine.len(), 3, "{bundle}");
    let o = mine[0];
    assert_eq!(o["device"]["reference"], format!("Device/{device_id}"));
    assert_eq!(o["meta"]["tag"][0]["code"], "device-signature-verified");
    let dev: Value = dr
        .get(s.url(&format!("/fhir/Device/{device_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dev["serialNumber"], "SN-0042");

    // Old or vulnerable firmware: kept, not clinical, and the device is told why.
    let code2 = OpaqueToken::generate().unwrap();
    store.create_enrollment(&enrol(&code2)).await.unwrap();
    let old_key = DeviceKey::generate().unwrap();
    let (_, old) = post(s, "/api/v1/devices/enroll", &json!({"code": code2.reveal(), "public_key": encode_base64url(&old_key.public_key()), "serial": "SN-7", "firmware": "2.1.0"}), None).await;
    let old_id = DeviceIdentity {
        device_id: old["device_id"].as_str().unwrap().to_owned(),
        key: old_key,
        firmware: "2.1.0".into(),
    };
    let mut c2 = SequenceFile::open(&dir.path().join("seq2")).unwrap();
    let q = old_id.sign(&mut c2, clock, vec![hr(&format!("{d1}T12:00:00Z"), "190")]).unwrap();
    let (_, acks) = send(serde_json::to_value(&q).unwrap()).await;
    assert_eq!(acks[0]["status"], "stored");
    assert!(acks[0]["quarantined"].as_str().unwrap().contains("ADV-2026-0042"));
    let bundle: Value = dr
        .get(s.url(&format!("/fhir/Observation?patient={ana}&date={d1}T12:00:00Z")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bundle["total"], 0, "quarantined readings are not clinical data");
    // An administrator who checked them releases them: filed once, then nothing left.
    let release = format!("/api/v1/devices/{}/release", old_id.device_id);
    let admin = s.signed_in(ADMIN).await;
    let r = dr.post(s.url(&release)).header("origin", &s.base).send().await.unwrap();
    assert_eq!(r.status(), 403, "only an administrator releases");
    let r: Value = admin
        .post(s.url(&release))
        .header("origin", &s.base)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["released"], 1);
    let r: Value = admin
        .post(s.url(&release))
        .header("origin", &s.base)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["released"], 0);
    let bundle: Value = dr
        .get(s.url(&format!("/fhir/Observation?patient={ana}&date={d1}T12:00:00Z")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bundle["total"], 1, "released readings are clinical data now");
    assert_eq!(bundle["entry"][0]["resource"]["valueQuantity"]["value"].as_f64(), Some(190.0));

    // Revoked: refused, and the refusal is on the audit log.
    assert!(store.revoke_device(tenant, &device_id, now).await.unwrap());
    let after = id.sign(&mut counter, clock, vec![hr(&format!("{d0}T00:00:00Z"), "70")]).unwrap();
    let (_, acks) = send(serde_json::to_value(&after).unwrap()).await;
    assert_eq!(acks[0]["reason"], "revoked");
    use telesafe_core::audit::AuditRepository;
    let n = store.audit_size().await.unwrap();
    let entries = store.audit_entries(0, u32::try_from(n).unwrap()).await.unwrap();
    assert!(entries.iter().any(|(e, _)| e.actor_kind.as_str() == "device"
        && e.outcome == "denied"
        && e.actor_id == device_id));
    // One entry per stored batch, naming it as its Observations' identifiers do.
    assert!(entries.iter().any(|(e, _)| e.actor_kind.as_str() == "device"
        && e.action == "telemetry"
        && e.resource_type == "DeviceBatch"
        && e.resource_id == format!("{device_id}/1")));
    // The signature covers the canonical batch: the SDK's and the protocol's agree.
    assert!(signing_message(&b1.batch).starts_with(b"telesafe-telemetry-v1\n{\"clock\":"));
}

/// The broker `scripts/test` starts (host:port), or `None` (skipped unless `CI=true`).
fn broker() -> Option<String> {
    let b = std::env::var("TELESAFE_TEST_MQTT").ok();
    assert!(
        b.is_some() || !telesafe_store::testing::postgres_required(),
        "TELESAFE_TEST_MQTT is not set: run the suite through scripts/test"
    );
    b
}

async fn batches_over_mqtt_are_filed_once_and_acknowledged_on_the_device_topic(backend: DbBackend) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let Some(broker) = broker() else {
        eprintln!("SKIPPED: TELESAFE_TEST_MQTT is not set");
        return;
    };
    let clock: std::sync::Arc<dyn telesafe_core::Clock> =
        std::sync::Arc::new(telesafe_core::SystemClock);
    let client_id = format!("telesafe-test-{}", uuid_like());
    let Some(s) = telesafe_testkit::start_with(backend, clock, |cfg| {
        cfg.mqtt.broker = Some(broker.clone());
        cfg.mqtt.client_id = client_id.clone();
        // A topic root of its own: tests share the broker.
        cfg.mqtt.topic_root = client_id.clone();
    })
    .await
    else {
        return;
    };
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let now = s.state.clock.now();
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = store.patient_by_user(tenant, ana_user).await.unwrap().unwrap().id;
    let model_id = format!("m-{}", uuid_like());
    store
        .create_model(&DeviceModel {
            id: model_id.clone(),
            tenant,
            manufacturer: "Acme".into(),
            model: model_id.clone(),
            policy: ModelPolicy {
                measures: vec![("8867-4".into(), "/min".into())],
                min_firmware: "1.0".into(),
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
            model_id,
            created_at: now,
            expires_at: now.plus(telesafe_core::devices::ENROLLMENT_LIFETIME),
        })
        .await
        .unwrap();
    let key = DeviceKey::generate().unwrap();
    let (_, enrolled) = post(&s, "/api/v1/devices/enroll", &json!({"code": code.reveal(), "public_key": encode_base64url(&key.public_key()), "serial": "M-1", "firmware": "1.0"}), None).await;
    let device_id = enrolled["device_id"].as_str().unwrap().to_owned();
    let server_key = decode_base64url(enrolled["server_public_key"].as_str().unwrap()).unwrap();

    // The device: its own MQTT client, listening on its acknowledgement topic.
    let (host, port) = broker.rsplit_once(':').unwrap();
    let mut opts = MqttOptions::new(format!("dev-{device_id}"), host, port.parse::<u16>().unwrap());
    opts.set_keep_alive(std::time::Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(opts, 16);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let _ = tx.send(p.payload.to_vec()).await;
            }
        }
    });
    let root = s.state.config.mqtt.topic_root.clone();
    let base = format!("{root}/demo/devices/{device_id}");
    // Its own acknowledgement topic, and (to see the refusal below) every device's.
    client.subscribe(format!("{root}/demo/devices/+/ack"), QoS::AtLeastOnce).await.unwrap();
    // Wait until the server's bridge is subscribed (it connects in the background).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut counter = SequenceFile::open(&dir.path().join("seq")).unwrap();
    let id = DeviceIdentity { device_id: device_id.clone(), key, firmware: "1.0".into() };
    let batch = id
        .sign(
            &mut counter,
            &format!("{}T00:00:00Z", day(0)),
            vec![hr(&format!("{}T08:00:00Z", day(2)), "66")],
        )
        .unwrap();
    let payload = serde_json::to_vec(&batch).unwrap();
    let mut send = async |payload: Vec<u8>, topic: String| -> Value {
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        let raw = tokio::time::timeout(std::time::Duration::from_secs(15), rx.recv())
            .await
            .expect("an acknowledgement")
            .unwrap();
        let (sig, body) = raw.split_at(raw.iter().position(|b| *b == b'\n').unwrap());
        let body = &body[1..];
        let mut msg = b"telesafe-ack-v1\n".to_vec();
        msg.extend_from_slice(body);
        assert!(verify_ed25519(
            &server_key,
            &msg,
            &decode_base64url(std::str::from_utf8(sig).unwrap()).unwrap()
        ));
        serde_json::from_slice(body).unwrap()
    };
    let first = send(payload.clone(), format!("{base}/telemetry")).await;
    assert_eq!(first[0]["status"], "stored", "{first}");
    let again = send(payload.clone(), format!("{base}/telemetry")).await;
    assert_eq!(again[0]["status"], "duplicate");
    // A batch on another device's topic is refused.
    let next = id
        .sign(
            &mut counter,
            &format!("{}T00:00:00Z", day(0)),
            vec![hr(&format!("{}T09:00:00Z", day(2)), "67")],
        )
        .unwrap();
    let wrong = send(
        serde_json::to_vec(&next).unwrap(),
        format!("{root}/demo/devices/someone-else/telemetry"),
    )
    .await;
    assert_eq!(wrong[0]["reason"], "unknown_device", "{wrong}");
    let dr = s.signed_in(DR).await;
    let bundle: Value = dr
        .get(s.url(&format!("/fhir/Observation?patient={ana}&date={}", day(2))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(from_device(&bundle, &device_id).len(), 1, "stored once: {bundle}");
    // Operators see how the bridge groups messages: three messages, filed in groups.
    let metrics = s.state.metrics.encode().unwrap();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let count = value("telesafe_mqtt_group_size_count ");
    assert!(count.is_some_and(|c| (1.0..=3.0).contains(&c)), "{metrics}");
    assert_eq!(value("telesafe_mqtt_group_size_sum "), Some(3.0), "{metrics}");
}

/// A device enrolled with a small-order key before enrolment checked keys, as an older
/// database may hold it: anyone can sign for it, so its batches (alone or checked together
/// with others) and its key rotations are refused as `bad_signature`, nothing is stored,
/// its held readings cannot be released, and the security console names it.
async fn a_device_whose_key_anyone_can_sign_for_is_refused_and_named(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let now = s.state.clock.now();
    let (ana, model) =
        ana_and_model(&s, "legacy-oximeter", "PulseOx 1", &[("8867-4", "/min")], &[]).await;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let device = stored_device(&s, ana, &model, &identity, "LEGACY-7").await;
    let server_key = s.state.device_signer.public_key();

    // R the identity point and s zero: a signature over anything, under this key.
    let mut forged = [0u8; 64];
    forged[0] = 1;
    let clock = now.to_rfc3339()[..19].to_owned() + "Z";
    let batch = |seq: u64| SignedBatch {
        batch: Batch {
            clock: clock.clone(),
            device: device.id.clone(),
            firmware: "2.3.1".into(),
            readings: vec![hr(&clock, "61")],
            seq,
        },
        sig: encode_base64url(&forged),
    };
    assert!(
        verify_ed25519(&identity, &signing_message(&batch(1).batch), &forged),
        "the forgery verifies under the key on its own"
    );
    let (st, acks) =
        post(&s, "/api/v1/devices/telemetry", &json!(batch(1)), Some(&server_key)).await;
    assert_eq!(st, 200);
    assert_eq!(acks, json!([{"status": "refused", "seq": 1, "reason": "bad_signature"}]));
    // Several to a request, where signatures are checked together.
    let (_, acks) =
        post(&s, "/api/v1/devices/telemetry", &json!([batch(2), batch(3)]), Some(&server_key))
            .await;
    assert_eq!(
        acks,
        json!([
            {"status": "refused", "seq": 2, "reason": "bad_signature"},
            {"status": "refused", "seq": 3, "reason": "bad_signature"}
        ])
    );
    for seq in 1..=3 {
        assert!(!store.batch_stored(tenant, &device.id, seq).await.unwrap());
    }

    // Nor can anyone move the device to a key of their own.
    let theirs = DeviceKey::generate().unwrap();
    let rotation = Rotation {
        at: clock.clone(),
        device: device.id.clone(),
        new_key: encode_base64url(&theirs.public_key()),
    };
    let msg = rotation_message(&rotation);
    let signed = SignedRotation {
        new_sig: encode_base64url(&theirs.sign(&msg)),
        rotation,
        sig: encode_base64url(&forged),
    };
    let (st, refused) =
        post(&s, "/api/v1/devices/rotate-key", &json!(signed), Some(&server_key)).await;
    assert_eq!((st, &refused["reason"]), (400, &json!("bad_signature")), "{refused}");
    assert_eq!(store.device(&device.id).await.unwrap().unwrap().public_key, identity.to_vec());

    // The security officer sees it and why; an administrator cannot release what it holds.
    let sec = s.signed_in(SECURITY).await;
    let html = sec.get(s.url("/security")).send().await.unwrap().text().await.unwrap();
    let section = html.split("Devices on unsafe firmware or keys").nth(1).unwrap();
    assert!(section.contains("LEGACY-7") && section.contains("anyone could sign for"), "{section}");
    let admin = s.signed_in(ADMIN).await;
    let csrf = s.page_csrf(&admin, "/admin/devices").await;
    let path = format!("/admin/devices/{}/release", device.id);
    let r = post_form(&s, &admin, &path, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("Nothing was released") && html.contains("anyone could sign for"));
    assert!(html.contains("Unsafe key"), "the devices page names its state");
}

/// Readings a device filed before enrolment checked keys, when its key is one anyone can
/// sign for: they stay in the record but are never shown as verified. Their Observations
/// (searched or read by id) carry `device-key-unsound` provenance and a note, an alert one
/// raised says so on the console, and the patient's chart draws them as suspicious;
/// another device's readings stay verified.
async fn readings_of_a_device_whose_key_anyone_can_sign_for_are_not_shown_as_verified(
    backend: DbBackend,
) {
    let Some(s) = server(backend).await else { return };
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let now = s.state.clock.now();
    let (ana, model) =
        ana_and_model(&s, "legacy-pulse", "PulseOx 0", &[("8867-4", "/min")], &[]).await;
    let clock = now.to_rfc3339()[..19].to_owned() + "Z";
    let mut devices = Vec::new();
    // The legacy device's reading is above Ana's heart-rate threshold (130): it raised an
    // alert when it was filed.
    for (serial, value) in [("SOUND-1", "61"), ("LEGACY-8", "142")] {
        let key = DeviceKey::generate().unwrap();
        let device = stored_device(&s, ana, &model, &key.public_key(), serial).await;
        let batch = Batch {
            clock: clock.clone(),
            device: device.id.clone(),
            firmware: "2.3.1".into(),
            readings: vec![hr(&clock, value)],
            seq: 1,
        };
        let sig = encode_base64url(&key.sign(&signing_message(&batch)));
        let (_, acks) =
            post(&s, "/api/v1/devices/telemetry", &json!(SignedBatch { batch, sig }), None).await;
        assert_eq!(acks[0]["status"], "stored", "{acks}");
        devices.push((device, key));
    }
    // The second device as an older database holds it: enrolled with a small-order key
    // (written straight to storage; the API refuses such keys now).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let legacy = &devices[1].0;
    let sound_key = devices[1].1.public_key().to_vec();
    assert!(store.rotate_device_key(tenant, &legacy.id, &sound_key, &identity, now).await.unwrap());

    let dr = s.signed_in(DR).await;
    let get = |path: String| {
        let dr = dr.clone();
        let url = s.url(&path);
        async move { dr.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let bundle = get(format!("/fhir/Observation?patient={ana}&code=8867-4")).await;
    let sound = from_device(&bundle, &devices[0].0.id);
    let unsound = from_device(&bundle, &legacy.id);
    assert_eq!((sound.len(), unsound.len()), (1, 1), "{bundle}");
    assert_eq!(sound[0]["meta"]["tag"][0]["code"], "device-signature-verified");
    assert!(sound[0]["note"].is_null(), "{}", sound[0]);
    for o in [
        unsound[0].clone(),
        get(format!("/fhir/Observation/{}", unsound[0]["id"].as_str().unwrap())).await,
    ] {
        assert_eq!(o["meta"]["tag"][0]["code"], "device-key-unsound", "{o}");
        assert!(o["note"][0]["text"].as_str().unwrap().contains("anyone can sign for"), "{o}");
        assert_eq!(o["valueQuantity"]["value"], json!(142.0), "the value is kept as filed");
    }
    // Its alert says so on the care team's console.
    let console = dr.get(s.url("/console")).send().await.unwrap().text().await.unwrap();
    let alert = console.split("<li").find(|li| li.contains("Heart rate 142")).unwrap_or_default();
    assert!(alert.contains("Unverifiable") && alert.contains("anyone can sign for"), "{console}");

    // Ana's chart draws it hollow, as a suspicious reading.
    let ana_session = s.signed_in(PATIENT).await;
    let html = ana_session.get(s.url("/portal/record?span=1d")).send().await.unwrap();
    let html = html.text().await.unwrap();
    let heart = html
        .split("<figure class=\"vital\">")
        .find(|figure| figure.contains("<strong>Heart rate</strong>"))
        .unwrap_or_default();
    assert!(heart.contains("1 flagged as suspicious"), "{heart}");
}

/// A device of `model` for `patient` (firmware 2.3.1) with `public_key`, written straight
/// to storage, as an older database may hold one: the API refuses unsound keys now.
async fn stored_device(
    s: &TestServer,
    patient: telesafe_core::PatientId,
    model: &DeviceModel,
    public_key: &[u8],
    serial: &str,
) -> telesafe_core::devices::Device {
    let hex = OpaqueToken::generate().unwrap().hash().as_str()[..32].to_owned();
    let device = telesafe_core::devices::Device {
        id: format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        ),
        tenant: s.clinic.tenant.id,
        patient,
        model_id: model.id.clone(),
        public_key: public_key.to_vec(),
        serial: serial.into(),
        firmware: "2.3.1".into(),
        revoked: false,
        last_seq: 0,
        enrolled_at: s.state.clock.now(),
    };
    s.state.store.create_device(&device).await.unwrap();
    device
}

/// The Observations in a search Bundle that came from `device`.
fn from_device<'b>(bundle: &'b Value, device: &str) -> Vec<&'b Value> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .filter(|r| r["device"]["reference"] == format!("Device/{device}"))
        .collect()
}

fn uuid_like() -> String {
    OpaqueToken::generate().unwrap().reveal()[..10].to_lowercase().replace(['-', '_'], "x")
}

both_backends!(
    devices_enrol_and_deliver_signed_readings_exactly_once,
    a_device_whose_key_anyone_can_sign_for_is_refused_and_named,
    readings_of_a_device_whose_key_anyone_can_sign_for_are_not_shown_as_verified,
    batches_over_mqtt_are_filed_once_and_acknowledged_on_the_device_topic,
);
