//! `telesafe device model-add | enroll | revoke` against a running server's data: the code
//! the CLI prints (and its QR) enrols a real device over HTTPS, and revocation stops it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use telesafe_core::identity::PatientRepository;
use telesafe_crypto::sign::{DeviceKey, encode_base64url};
use telesafe_testkit::TestServer;

async fn run(s: &TestServer, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_telesafe"))
        .args(args)
        .arg("--data-dir")
        .arg(s.data_dir())
        .env("TELESAFE_DATABASE__URL", s.database_url())
        .output()
        .await
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_models_enrols_and_revokes_devices() {
    for backend in [telesafe_testkit::DbBackend::Sqlite, telesafe_testkit::DbBackend::Postgres] {
        let Some(s) = telesafe_testkit::start(backend, Arc::new(telesafe_core::SystemClock)).await
        else {
            continue;
        };
        let tenant = s.clinic.tenant.id;
        let patient = s.state.store.list_patients(tenant).await.unwrap()[0].id.to_string();
        let (ok, out) = run(
            &s,
            &[
                "device",
                "model-add",
                "--tenant",
                "demo",
                "--id",
                "cuff-1",
                "--manufacturer",
                "Acme",
                "--model",
                "Cuff 1",
                "--measures",
                "8480-6=mm[Hg]",
                "--measures",
                "8462-4=mm[Hg]",
                "--min-firmware",
                "1.2.0",
                "--vulnerable",
                "1.3.0=ADV-1",
            ],
        )
        .await;
        assert!(ok, "{out}");
        let (ok, out) = run(
            &s,
            &[
                "device",
                "model-add",
                "--tenant",
                "demo",
                "--id",
                "bad id",
                "--manufacturer",
                "A",
                "--model",
                "B",
                "--measures",
                "x=y",
                "--min-firmware",
                "1",
            ],
        )
        .await;
        assert!(!ok && out.contains("model id may hold only"), "{out}");
        let qr = s.data_dir().join("enrol.svg");
        let (ok, out) = run(
            &s,
            &[
                "device",
                "enroll",
                "--tenant",
                "demo",
                "--patient",
                &patient,
                "--model",
                "cuff-1",
                "--qr",
                qr.to_str().unwrap(),
            ],
        )
        .await;
        assert!(ok, "{out}");
        assert!(std::fs::read_to_string(&qr).unwrap().contains("<svg"));
        assert_eq!(std::fs::metadata(&qr).unwrap().permissions().mode() & 0o777, 0o600);
        let code = out
            .lines()
            .find(|l| l.starts_with("enrolment code"))
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned();
        let key = DeviceKey::generate().unwrap();
        let r = s.client().post(s.url("/api/v1/devices/enroll"))
            .json(&serde_json::json!({"code": code, "public_key": encode_base64url(&key.public_key()), "serial": "C-1", "firmware": "1.2.0"}))
            .send().await.unwrap();
        assert_eq!(r.status(), 201);
        let device: serde_json::Value = r.json().await.unwrap();
        let id = device["device_id"].as_str().unwrap();
        let (ok, out) = run(&s, &["device", "revoke", "--tenant", "demo", "--device", id]).await;
        assert!(ok, "{out}");
        let (ok, out) = run(&s, &["device", "revoke", "--tenant", "demo", "--device", id]).await;
        assert!(!ok && out.contains("no active device"), "{out}");
        let (ok, out) = run(
            &s,
            &["device", "enroll", "--tenant", "demo", "--patient", &patient, "--model", "nope"],
        )
        .await;
        assert!(!ok && out.contains("model-add"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_delivers_realistic_fleets_with_a_summary() {
    use telesafe_core::devices::DeviceRepository;
    for backend in [telesafe_testkit::DbBackend::Sqlite, telesafe_testkit::DbBackend::Postgres] {
        let Some(s) = telesafe_testkit::start(backend, Arc::new(telesafe_core::SystemClock)).await
        else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, s.cert_pem()).unwrap();
        let (ok, out) = run(
            &s,
            &[
                "device",
                "simulate",
                "--tenant",
                "demo",
                "--devices",
                "7",
                "--readings",
                "20",
                "--url",
                &s.base,
                "--ca",
                ca.to_str().unwrap(),
            ],
        )
        .await;
        assert!(ok, "{out}");
        // Every batch stored once; the seventh device runs old firmware and is quarantined.
        assert!(out.contains("Simulated 7 devices, 140 batches"), "{out}");
        assert!(out.contains("stored:      140") && out.contains("duplicate:   0"), "{out}");
        assert!(out.contains("quarantined: 1 devices on firmware 1.9.0"), "{out}");
        assert!(!out.contains("refused"), "{out}");
        let devices = s.state.store.list_devices(s.clinic.tenant.id).await.unwrap();
        assert_eq!(devices.len(), 7);
        assert_eq!(devices.iter().filter(|d| d.quarantined == 20).count(), 1);
        assert!(devices.iter().all(|d| d.device.last_seq == 20));
        // Nonsense is refused with a readable message.
        let (ok, out) =
            run(&s, &["device", "simulate", "--tenant", "demo", "--devices", "0"]).await;
        assert!(!ok && out.contains("at least 1"), "{out}");
    }
}
