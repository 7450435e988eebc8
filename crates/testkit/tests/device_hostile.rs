//! 10,000 hostile batches against the telemetry endpoint, on both backends, mixed with 500
//! valid ones: malformed (many shapes), wrongly signed (another key, or altered after
//! signing), replayed, stale, from the future, oversized, from unknown devices, and with
//! readings the model does not measure. Every one is answered with the right reason code,
//! no valid batch is refused, and nothing is stored twice.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::collections::HashMap;

use serde_json::{Value, json};
use telesafe_core::Clock;
use telesafe_core::devices::{DeviceModel, DeviceRepository, Enrollment, ModelPolicy};
use telesafe_core::identity::PatientRepository;
use telesafe_crypto::OpaqueToken;
use telesafe_crypto::sign::{DeviceKey, encode_base64url};
use telesafe_proto::telemetry::{Batch, Reading, SignedBatch, signing_message};
use telesafe_testkit::{DbBackend, TestServer, both_backends};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

/// xorshift64: reproducible choices for the mutations (the seed is printed on failure).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn time(ms: i64) -> String {
    telesafe_core::Timestamp::from_unix_millis(ms - ms.rem_euclid(1000))
        .to_rfc3339()
        .replace(".000", "")
}

fn sign(key: &DeviceKey, batch: Batch) -> SignedBatch {
    let sig = encode_base64url(&key.sign(&signing_message(&batch)));
    SignedBatch { batch, sig }
}

/// What the server must answer for one item.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Stored,
    Duplicate,
    Refused(&'static str),
}

struct Fixture {
    device: String,
    key: DeviceKey,
    now: i64,
    next_seq: u64,
    /// Valid batches stored so far (for replays).
    stored: Vec<SignedBatch>,
}

impl Fixture {
    fn batch(&mut self, readings: Vec<Reading>) -> Batch {
        self.next_seq += 1;
        Batch {
            clock: time(self.now),
            device: self.device.clone(),
            firmware: "3.1.0".into(),
            readings,
            seq: self.next_seq,
        }
    }

    fn hr(&self, minutes_ago: i64, value: &str) -> Reading {
        Reading {
            at: time(self.now - minutes_ago * 60_000),
            code: "8867-4".into(),
            unit: "/min".into(),
            value: value.into(),
        }
    }

    fn valid(&mut self, rng: &mut Rng) -> (Value, Expect) {
        let value = (60 + rng.below(30)).to_string();
        let r = self.hr(30 + i64::try_from(rng.below(600)).unwrap(), &value);
        let b = self.batch(vec![r]);
        let s = sign(&self.key, b);
        self.stored.push(s.clone());
        (serde_json::to_value(s).unwrap(), Expect::Stored)
    }

    /// A hostile item of kind `k`, with the answer it must get.
    fn hostile(&mut self, k: u64, rng: &mut Rng, other: &DeviceKey) -> (Value, Expect) {
        let good = |f: &mut Self| {
            let r = f.hr(10, "72");
            let b = f.batch(vec![r]);
            sign(&f.key, b)
        };
        match k {
            0 => {
                let mut v = serde_json::to_value(good(self)).unwrap();
                match rng.below(10) {
                    0 => v = json!({"batch": 1, "sig": "x"}),
                    1 => v["batch"]["extra"] = json!(true),
                    2 => v["batch"]["readings"][0]["value"] = json!("7e2"),
                    3 => v["batch"]["readings"][0]["value"] = json!(72),
                    4 => v["batch"]["clock"] = json!("2026-11-25 10:00:00"),
                    5 => v["batch"]["seq"] = json!(0),
                    6 => v["sig"] = json!("AAAA"),
                    7 => v["batch"]["readings"] = json!([]),
                    8 => v["batch"]["device"] = json!("dev\u{7}ice"),
                    _ => v = json!([1, 2, 3]),
                }
                (v, Expect::Refused("malformed"))
            }
            1 => {
                let mut s = good(self);
                if rng.below(2) == 0 {
                    s.sig = encode_base64url(&other.sign(&signing_message(&s.batch)));
                } else {
                    s.batch.readings[0].value = "180".into();
                }
                (serde_json::to_value(s).unwrap(), Expect::Refused("bad_signature"))
            }
            2 => {
                let i = usize::try_from(rng.below(self.stored.len() as u64)).unwrap();
                (serde_json::to_value(&self.stored[i]).unwrap(), Expect::Duplicate)
            }
            3 => {
                let r = self.hr(8 * 24 * 60 + i64::try_from(rng.below(10_000)).unwrap(), "70");
                let b = self.batch(vec![r]);
                (serde_json::to_value(sign(&self.key, b)).unwrap(), Expect::Refused("stale"))
            }
            4 => {
                let r = self.hr(-(10 + i64::try_from(rng.below(100_000)).unwrap()), "70");
                let b = self.batch(vec![r]);
                (serde_json::to_value(sign(&self.key, b)).unwrap(), Expect::Refused("future"))
            }
            5 => {
                let n = 101 + rng.below(50);
                let readings = (0..n).map(|_| self.hr(5, "70")).collect();
                let b = self.batch(readings);
                (serde_json::to_value(sign(&self.key, b)).unwrap(), Expect::Refused("oversized"))
            }
            6 => {
                let mut b = good(self).batch;
                b.device = format!("not-enrolled-{}", rng.below(1000));
                (
                    serde_json::to_value(sign(&self.key, b)).unwrap(),
                    Expect::Refused("unknown_device"),
                )
            }
            _ => {
                let r = Reading {
                    at: time(self.now - 60_000),
                    code: "2339-0".into(),
                    unit: "mg/dL".into(),
                    value: "101".into(),
                };
                let b = self.batch(vec![r]);
                (
                    serde_json::to_value(sign(&self.key, b)).unwrap(),
                    Expect::Refused("unsupported_reading"),
                )
            }
        }
    }
}

fn answer(ack: &Value) -> Expect {
    match ack["status"].as_str() {
        Some("stored") => Expect::Stored,
        Some("duplicate") => Expect::Duplicate,
        _ => Expect::Refused(match ack["reason"].as_str().unwrap_or("") {
            "malformed" => "malformed",
            "bad_signature" => "bad_signature",
            "stale" => "stale",
            "future" => "future",
            "oversized" => "oversized",
            "unknown_device" => "unknown_device",
            "unsupported_reading" => "unsupported_reading",
            "revoked" => "revoked",
            _ => "other",
        }),
    }
}

async fn enrolled(s: &TestServer) -> (String, DeviceKey, String) {
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let now = s.state.clock.now();
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = store.patient_by_user(tenant, ana_user).await.unwrap().unwrap().id;
    store
        .create_model(&DeviceModel {
            id: "hostile-hr".into(),
            tenant,
            manufacturer: "Acme".into(),
            model: "HR".into(),
            policy: ModelPolicy {
                measures: vec![("8867-4".into(), "/min".into())],
                min_firmware: "3.0.0".into(),
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
            model_id: "hostile-hr".into(),
            created_at: now,
            expires_at: now.plus(telesafe_core::devices::ENROLLMENT_LIFETIME),
        })
        .await
        .unwrap();
    let key = DeviceKey::generate().unwrap();
    let r: Value = s
        .client()
        .post(s.url("/api/v1/devices/enroll"))
        .json(&json!({"code": code.reveal(), "public_key": encode_base64url(&key.public_key()), "serial": "H-1", "firmware": "3.1.0"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (r["device_id"].as_str().unwrap().to_owned(), key, ana.to_string())
}

/// Ana's heart-rate Observations of the last day.
async fn heart_rates(s: &TestServer, dr: &reqwest::Client, ana: &str, now: i64) -> u64 {
    let since = time(now - 24 * 3600 * 1000);
    let bundle: Value = dr
        .get(s.url(&format!("/fhir/Observation?patient={ana}&code=8867-4&date=ge{since}&_count=1")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    bundle["total"].as_u64().unwrap()
}

async fn ten_thousand_hostile_batches_are_each_answered_rightly(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let (device, key, ana) = enrolled(&s).await;
    let seed = telesafe_core::SystemClock.now().unix_millis().unsigned_abs() | 1;
    let mut rng = Rng(seed);
    let other = DeviceKey::generate().unwrap();
    let mut f = Fixture {
        device,
        key,
        now: s.state.clock.now().unix_millis(),
        next_seq: 0,
        stored: Vec::new(),
    };
    let dr = s.signed_in(DR).await;
    let before = heart_rates(&s, &dr, &ana, f.now).await;
    let mut items: Vec<(Value, Expect)> = (0..10).map(|_| f.valid(&mut rng)).collect();
    let (mut hostile, mut valid) = (0, 10);
    while hostile < 10_000 {
        if rng.below(20) == 0 {
            items.push(f.valid(&mut rng));
            valid += 1;
        } else {
            let k = rng.below(8);
            items.push(f.hostile(k, &mut rng, &other));
            hostile += 1;
        }
    }
    // Raw bodies that are not JSON at all, each on its own request.
    let mut wrong: HashMap<String, usize> = HashMap::new();
    for raw in ["{", "null\u{0}", "\u{feff}[]x", "{\"batch\":", ""] {
        let r = s.client().post(s.url("/api/v1/devices/telemetry")).body(raw).send().await.unwrap();
        let acks: Value = r.json().await.unwrap();
        if answer(&acks[0]) != Expect::Refused("malformed") {
            *wrong.entry(format!("raw {raw:?}: {acks}")).or_default() += 1;
        }
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for chunk in items.chunks(100) {
        let body: Vec<&Value> = chunk.iter().map(|(v, _)| v).collect();
        let r =
            s.client().post(s.url("/api/v1/devices/telemetry")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "seed {seed}");
        let acks: Vec<Value> = r.json().await.unwrap();
        assert_eq!(acks.len(), chunk.len());
        for ((v, want), ack) in chunk.iter().zip(&acks) {
            *counts.entry(format!("{want:?}")).or_default() += 1;
            if answer(ack) != *want {
                let what = format!(
                    "want {want:?}, got {ack} for {}",
                    &v.to_string()[..v.to_string().len().min(200)]
                );
                *wrong.entry(what).or_default() += 1;
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "seed {seed}: {} wrong answers: {wrong:#?}",
        wrong.values().sum::<usize>()
    );
    // Every category was exercised.
    for k in [
        "Stored",
        "Duplicate",
        "Refused(\"malformed\")",
        "Refused(\"bad_signature\")",
        "Refused(\"stale\")",
        "Refused(\"future\")",
        "Refused(\"oversized\")",
        "Refused(\"unknown_device\")",
        "Refused(\"unsupported_reading\")",
    ] {
        assert!(counts.get(k).copied().unwrap_or(0) > 100 || k == "Stored", "{k}: {counts:?}");
    }
    // Exactly the valid batches are stored, each once, each reading one Observation.
    let after = heart_rates(&s, &dr, &ana, f.now).await;
    assert_eq!(after - before, valid, "seed {seed}: every valid batch stored, once");
    let devices = s.state.store.list_devices(s.clinic.tenant.id).await.unwrap();
    let mine = devices.iter().find(|d| d.device.id == f.device).unwrap();
    assert_eq!(mine.quarantined, 0);
}

both_backends!(ten_thousand_hostile_batches_are_each_answered_rightly);
