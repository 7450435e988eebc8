//! `telesafe keys rotate-tenant`, `telesafe keys rotate-root` and `telesafe patient erase`
//! against a running server's data, on both backends: the record stays readable through
//! every rotation (on the running server and with keys loaded afresh), the old keys stop
//! mattering, and an erased patient is gone for good.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use telesafe_core::identity::PatientRepository;
use telesafe_core::records::keys::{KeyRepository, KeyRing, KeyRingError};
use telesafe_core::records::{ResourceRepository, open_resource};
use telesafe_crypto::keys::{KeyProvider, LocalKeyProvider, SecretKey};
use telesafe_testkit::TestServer;
use tokio::process::Command;

fn telesafe(s: &TestServer, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_telesafe"));
    c.args(args)
        .arg("--data-dir")
        .arg(s.data_dir())
        .env("TELESAFE_DATABASE__URL", s.database_url())
        .env_remove("TELESAFE_ROOT_KEY");
    c
}

async fn run(s: &TestServer, args: &[&str]) -> String {
    let out = telesafe(s, args).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Opens the patient's current Patient resource with keys loaded afresh through `provider`.
async fn readable_with(
    s: &TestServer,
    provider: impl KeyProvider + 'static,
    patient: &str,
) -> bool {
    let ring = KeyRing::new(Arc::new(provider), 10);
    let tenant = s.clinic.tenant.id;
    let row = s.state.store.current(tenant, "Patient", patient).await.unwrap().unwrap();
    let now = s.state.clock.now();
    match ring.patient(&s.state.store, tenant, row.patient.unwrap(), now, false).await {
        Ok(key) => open_resource(&key, &row).is_ok(),
        Err(KeyRingError::Corrupt(_)) => false,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_keep_the_record_readable_and_erasure_is_final() {
    for backend in [telesafe_testkit::DbBackend::Sqlite, telesafe_testkit::DbBackend::Postgres] {
        let Some(s) = telesafe_testkit::start(backend, Arc::new(telesafe_core::SystemClock)).await
        else {
            continue;
        };
        let store = &s.state.store;
        let tenant = s.clinic.tenant.id;
        let patients = store.list_patients(tenant).await.unwrap();
        let ana = patients.iter().find(|p| p.user_id.is_some()).unwrap().id.to_string();
        let walter = patients.iter().rev().find(|p| p.user_id.is_some()).unwrap().id.to_string();
        assert_ne!(ana, walter);
        let root_file = s.data_dir().join("keys/root.key");
        let root = SecretKey::from_bytes(&std::fs::read(&root_file).unwrap()).unwrap();
        let dr = s.signed_in("dr.rivera@demo.telesafe.test").await;
        let read = |id: String| {
            let (dr, url) = (dr.clone(), s.url(&format!("/fhir/Patient/{id}")));
            async move { dr.get(url).send().await.unwrap().status().as_u16() }
        };

        // Tenant rotation: a second KEK, every patient key re-wrapped under it.
        let before: Vec<_> = store.patient_keys_of(tenant).await.unwrap();
        let out = run(&s, &["keys", "rotate-tenant", "--tenant", "demo"]).await;
        assert!(
            out.contains("3 patient key(s) now wrapped under the organisation's key version 2"),
            "{out}"
        );
        let after = store.patient_keys_of(tenant).await.unwrap();
        assert!(after.iter().all(|k| k.kek_version == 2));
        assert!(before.iter().zip(&after).all(|(a, b)| a.wrapped != b.wrapped));
        assert_eq!(read(ana.clone()).await, 200, "the running server reads on");
        assert!(readable_with(&s, LocalKeyProvider::new(&root, 1), &ana).await);
        // Run again with nothing pending: yet another version.
        let out = run(&s, &["keys", "rotate-tenant", "--tenant", "demo"]).await;
        assert!(out.contains("key version 3"), "{out}");

        // Root rotation: a new 0600 root file; tenant keys re-wrapped so that the new root
        // alone opens the record (the first stays for the purpose keys and old backups).
        let out = run(&s, &["keys", "rotate-root"]).await;
        assert!(out.contains("root key version 2"), "{out}");
        let v2_file = s.data_dir().join("keys/root-v2.key");
        assert_eq!(std::fs::metadata(&v2_file).unwrap().permissions().mode() & 0o777, 0o600);
        let v2 = SecretKey::from_bytes(&std::fs::read(&v2_file).unwrap()).unwrap();
        assert!(store.all_tenant_keys().await.unwrap().iter().all(|k| k.root_version == 2));
        assert!(readable_with(&s, LocalKeyProvider::new(&v2, 2), &ana).await);
        assert!(
            !readable_with(&s, LocalKeyProvider::new(&root, 1), &ana).await,
            "the old root no longer opens it"
        );
        assert_eq!(read(ana.clone()).await, 200);

        // Data keys: an interrupted rotation (one patient already has a new key) resumes;
        // afterwards every stored version of every patient is sealed under version 2, the
        // version-1 keys are gone, and the running server reads and writes on.
        let ring = telesafe_server::keys::key_ring(LocalKeyProvider::new(&v2, 2));
        let now = s.state.clock.now();
        store.open_data_key_rotation(tenant, now).await.unwrap();
        ring.new_data_key(store, tenant, ana.parse().unwrap(), now).await.unwrap();
        let out = run(&s, &["keys", "rotate-data", "--tenant", "demo"]).await;
        assert!(out.contains("resumed an interrupted rotation: 3 patient(s)"), "{out}");
        for p in store.patient_keys_of(tenant).await.unwrap() {
            assert_eq!(p.version, 2, "one key per patient, the new one");
        }
        for p in &patients {
            for row in store.patient_versions(tenant, p.id).await.unwrap() {
                assert_eq!(
                    telesafe_crypto::keys::sealed_key_version(&row.body),
                    Some(2),
                    "{row:?}"
                );
            }
        }
        assert_eq!(read(ana.clone()).await, 200, "the running server reads the re-sealed record");
        assert!(readable_with(&s, LocalKeyProvider::new(&v2, 2), &ana).await);
        let before = store.patient_versions(tenant, ana.parse().unwrap()).await.unwrap().len();
        let obs = serde_json::json!({"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
            "subject": {"reference": format!("Patient/{ana}")}});
        let r = dr
            .post(s.url("/fhir/Observation"))
            .header("origin", &s.base)
            .header("content-type", "application/fhir+json")
            .body(obs.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let rows = store.patient_versions(tenant, ana.parse().unwrap()).await.unwrap();
        assert_eq!(rows.len(), before + 1);
        assert!(
            rows.iter().all(|r| telesafe_crypto::keys::sealed_key_version(&r.body) == Some(2)),
            "new writes use the new key"
        );
        // A finished rotation leaves nothing to resume: the next run rotates again.
        let out = run(&s, &["keys", "rotate-data", "--tenant", "demo"]).await;
        assert!(!out.contains("resumed") && out.contains("3 patient(s)"), "{out}");

        // Erasure: refused without --yes; then the record is gone, everywhere, for good.
        let out = telesafe(&s, &["patient", "erase", "--tenant", "demo", "--patient", &walter])
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
        run(&s, &["patient", "erase", "--tenant", "demo", "--patient", &walter, "--yes"]).await;
        assert_eq!(read(walter.clone()).await, 410);
        let obs: serde_json::Value = dr
            .get(s.url(&format!("/fhir/Observation?patient={walter}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(obs["total"], 0);
        assert!(store.patient_key(tenant, walter.parse().unwrap()).await.unwrap().is_none());
        assert!(
            store.key_tombstones().await.unwrap().iter().any(|t| t.patient.to_string() == walter)
        );
        let dump = s.database().dump_text("fhir_resources", "body").await.unwrap();
        assert!(!dump.contains("Brown"));
        assert_eq!(read(ana.clone()).await, 200, "other patients are untouched");
        // Each step is on the audit log.
        use telesafe_core::audit::AuditRepository;
        let n = store.audit_size().await.unwrap();
        let entries = store.audit_entries(0, u32::try_from(n).unwrap()).await.unwrap();
        for action in ["rotate-tenant-key", "rotate-root-key", "rotate-data-keys", "erase"] {
            assert!(
                entries
                    .iter()
                    .any(|(e, _)| e.action == action && e.actor_kind.as_str() == "system"),
                "{action}"
            );
        }
    }
}
