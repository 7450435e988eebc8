//! Conformance of the encrypted record on both backends: the key hierarchy, versioned
//! resources, the blind search index, and crypto-shredding.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::sync::Arc;

use serde_json::{Value, json};
use telesafe_core::identity::*;
use telesafe_core::records::keys::{KeyRepository, KeyRing, KeyRingError};
use telesafe_core::records::search::{Kind, index_entries, parse_date_condition, query_value};
use telesafe_core::records::{
    ResourceRepository, StoredResource, StoredSearch, open_resource, seal_resource,
};
use telesafe_core::{PatientId, RepoError, TenantId, Timestamp};
use telesafe_crypto::keys::{KeyProvider, LocalKeyProvider, SecretKey};
use telesafe_store::testing::{TestDatabase, TestDbError, fresh, postgres_required};
use telesafe_store::{Backend, Store};

const T0: Timestamp = Timestamp::from_unix_millis(1_790_000_000_000);

async fn db(backend: Backend) -> Option<TestDatabase> {
    match fresh(backend).await {
        Ok(db) => Some(db),
        Err(TestDbError::NoPostgres) if !postgres_required() => {
            eprintln!("SKIPPED on {}: TELESAFE_TEST_PG_URL is not set", backend.as_str());
            None
        }
        Err(e) => panic!("{} test database: {e}", backend.as_str()),
    }
}

async fn clinic(s: &Store, slug: &str) -> TenantId {
    let t = Tenant {
        id: TenantId::new_v7(),
        slug: TenantSlug::parse(slug).unwrap(),
        name: DisplayName::parse("Clinic").unwrap(),
        created_at: T0,
    };
    s.create_tenant(&t).await.unwrap();
    t.id
}

fn ring(root: &SecretKey) -> KeyRing {
    KeyRing::new(Arc::new(LocalKeyProvider::new(root, 1)) as Arc<dyn KeyProvider>, 1000)
}

/// Stores `json` as `version` of a resource, sealed and indexed as the server does.
async fn put(
    s: &Store,
    ring: &KeyRing,
    tenant: TenantId,
    patient: PatientId,
    version: u32,
    json: &Value,
) -> Result<StoredResource, RepoError> {
    let rt = json["resourceType"].as_str().unwrap().to_owned();
    let id = json["id"].as_str().unwrap().to_owned();
    let tk = ring.tenant(s, tenant, T0).await.unwrap();
    let mut r = StoredResource {
        tenant,
        resource_type: rt.clone(),
        id,
        version,
        patient: Some(patient),
        last_updated: Timestamp::from_unix_millis(T0.unix_millis() + i64::from(version)),
        deleted: false,
        category: "clinical".into(),
        restricted: false,
        body: Vec::new(),
    };
    if rt == "Patient" && version == 1 {
        // The patient row comes with the first version; the key needs it.
        s.put_version(&r, &[], None).await?;
        r.version = 2;
        r.last_updated = Timestamp::from_unix_millis(r.last_updated.unix_millis() + 1);
    }
    let key = ring.patient(s, tenant, patient, T0, true).await.unwrap();
    r.body = seal_resource(&key, &r, json.to_string().as_bytes()).unwrap();
    let (index, sort) = index_entries(&rt, json, |p, v| KeyRing::blind(&tk, p, v));
    s.put_version(&r, &index, sort).await?;
    Ok(r)
}

async fn keys_unwrap_through_the_hierarchy_and_shredding_is_final(db: TestDatabase) {
    let s = &db.store;
    let tenant = clinic(s, "alpha").await;
    let root = SecretKey::generate().unwrap();
    let patient: PatientId = PatientId::new_v7();
    let p = json!({"resourceType": "Patient", "id": patient.to_string(), "name": [{"family": "Chalmers"}]});
    let first = ring(&root);
    let stored = put(s, &first, tenant, patient, 1, &p).await.unwrap();

    // Another node (a fresh ring, same root) unwraps the same keys from storage.
    let second = ring(&root);
    let key = second.patient(s, tenant, patient, T0, false).await.unwrap();
    assert_eq!(&open_resource(&key, &stored).unwrap()[..], p.to_string().as_bytes());
    // One tenant key set, one patient key.
    assert_eq!(s.tenant_keys(tenant).await.unwrap().len(), 1);
    assert_eq!(s.patient_key(tenant, patient).await.unwrap().unwrap().version, 1);

    // The wrong root key unwraps nothing.
    let stranger = ring(&SecretKey::generate().unwrap());
    assert!(matches!(
        stranger.patient(s, tenant, patient, T0, false).await,
        Err(KeyRingError::Corrupt(_))
    ));

    // A ciphertext moved to another row (another id or version) does not open.
    let mut moved = stored.clone();
    moved.id = "someone-else".into();
    assert!(open_resource(&key, &moved).is_err());
    let mut moved = stored.clone();
    moved.version += 1;
    assert!(open_resource(&key, &moved).is_err());

    // Shredding: the key is gone everywhere, for good, and the tombstone is listed.
    first.shred(s, tenant, patient, T0).await.unwrap();
    assert!(s.patient_key(tenant, patient).await.unwrap().is_none());
    for r in [&first, &ring(&root)] {
        assert!(matches!(r.patient(s, tenant, patient, T0, true).await, Err(KeyRingError::Erased)));
    }
    let tombstones = s.key_tombstones().await.unwrap();
    assert_eq!(tombstones.len(), 1);
    assert_eq!((tombstones[0].tenant, tombstones[0].patient), (tenant, patient));
    // Its search entries went with it.
    let tk = first.tenant(s, tenant, T0).await.unwrap();
    let q = StoredSearch {
        resource_type: "Patient".into(),
        tokens: vec![("family".into(), vec![KeyRing::blind(&tk, "family", "chalmers")])],
        limit: 10,
        ..Default::default()
    };
    assert!(s.search(tenant, &q).await.unwrap().is_empty());
}

async fn versions_are_kept_and_writers_cannot_both_win(db: TestDatabase) {
    let s = &db.store;
    let tenant = clinic(s, "alpha").await;
    let ring = ring(&SecretKey::generate().unwrap());
    let patient = PatientId::new_v7();
    put(
        s,
        &ring,
        tenant,
        patient,
        1,
        &json!({"resourceType": "Patient", "id": patient.to_string()}),
    )
    .await
    .unwrap();
    let obs = |v: &str| {
        json!({"resourceType": "Observation", "id": "o1", "status": v,
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
               "effectiveDateTime": "2024-05-01T10:00:00Z"})
    };
    put(s, &ring, tenant, patient, 1, &obs("preliminary")).await.unwrap();
    put(s, &ring, tenant, patient, 2, &obs("final")).await.unwrap();
    // A writer that read version 1 and writes version 2 again loses.
    assert!(matches!(
        put(s, &ring, tenant, patient, 2, &obs("amended")).await,
        Err(RepoError::Conflict)
    ));
    // Skipping a version is refused too.
    assert!(matches!(
        put(s, &ring, tenant, patient, 4, &obs("amended")).await,
        Err(RepoError::Conflict)
    ));

    let history = s.history(tenant, "Observation", "o1").await.unwrap();
    assert_eq!(history.iter().map(|r| r.version).collect::<Vec<_>>(), vec![2, 1]);
    let current = s.current(tenant, "Observation", "o1").await.unwrap().unwrap();
    assert_eq!(current.version, 2);
    let key = ring.patient(s, tenant, patient, T0, false).await.unwrap();
    let v1 = s.version(tenant, "Observation", "o1", 1).await.unwrap().unwrap();
    let v1: Value = serde_json::from_slice(&open_resource(&key, &v1).unwrap()).unwrap();
    assert_eq!(v1["status"], "preliminary");
    assert!(s.version(tenant, "Observation", "o1", 3).await.unwrap().is_none());

    // Another tenant sees nothing of it.
    let other = clinic(s, "beta").await;
    assert!(s.current(other, "Observation", "o1").await.unwrap().is_none());
    assert!(s.history(other, "Observation", "o1").await.unwrap().is_empty());
    // And on PostgreSQL a query that forgets its tenant sees nothing either.
    let unscoped = db.count_unscoped("fhir_resources").await.unwrap();
    match s.backend() {
        Backend::Postgres => assert_eq!(unscoped, 0),
        Backend::Sqlite => assert!(unscoped > 0),
    }
}

async fn search_matches_blind_tokens_and_date_ranges_only(db: TestDatabase) {
    let s = &db.store;
    let tenant = clinic(s, "alpha").await;
    let ring = ring(&SecretKey::generate().unwrap());
    let tk = ring.tenant(s, tenant, T0).await.unwrap();
    let mut patients = Vec::new();
    for (family, born) in
        [("López", "1950-03-02"), ("Brown", "1961-07-14"), ("Lopez", "1990-01-01")]
    {
        let id = PatientId::new_v7();
        let p = json!({"resourceType": "Patient", "id": id.to_string(),
                       "name": [{"family": family, "given": ["Ana"]}], "birthDate": born});
        put(s, &ring, tenant, id, 1, &p).await.unwrap();
        patients.push(id);
    }
    let token = |param: &str, kind: Kind, raw: &str| {
        (param.to_owned(), vec![KeyRing::blind(&tk, param, &query_value(kind, raw))])
    };
    let ids = |q: StoredSearch| async move {
        let mut v: Vec<String> =
            s.search(tenant, &q).await.unwrap().into_iter().map(|h| h.id).collect();
        v.sort();
        v
    };
    let base = StoredSearch { resource_type: "Patient".into(), limit: 100, ..Default::default() };
    let mut both = vec![patients[0].to_string(), patients[2].to_string()];
    both.sort();
    // Accents and case are folded; a different name does not match.
    assert_eq!(
        ids(StoredSearch { tokens: vec![token("family", Kind::Name, "LOPEZ")], ..base.clone() })
            .await,
        both
    );
    assert!(
        ids(StoredSearch { tokens: vec![token("family", Kind::Name, "Lop")], ..base.clone() })
            .await
            .is_empty()
    );
    // Dates: born before 1970, both conditions ANDed with the name.
    let born_before = |d: &str| ("birthdate".to_owned(), vec![parse_date_condition(d).unwrap()]);
    assert_eq!(
        ids(StoredSearch {
            tokens: vec![token("family", Kind::Name, "lopez")],
            dates: vec![born_before("lt1970")],
            ..base.clone()
        })
        .await,
        vec![patients[0].to_string()]
    );
    assert_eq!(
        ids(StoredSearch { dates: vec![born_before("1961")], ..base.clone() }).await,
        vec![patients[1].to_string()]
    );
    // _id and the limit.
    assert_eq!(
        ids(StoredSearch { ids: Some(vec![patients[1].to_string()]), ..base.clone() }).await,
        vec![patients[1].to_string()]
    );
    assert_eq!(
        s.search(tenant, &StoredSearch { limit: 2, ..base.clone() }).await.unwrap().len(),
        2
    );

    // Nothing readable at rest: no name, no birth date, in any column of any record table.
    for (table, cols) in [("fhir_resources", "body"), ("fhir_index", "value")] {
        let dump = db.dump_text(table, cols).await.unwrap();
        for needle in ["López", "Lopez", "lopez", "Brown", "brown", "1950-03-02", "Ana"] {
            assert!(!dump.contains(needle), "{table}.{cols} holds '{needle}' in clear");
        }
    }
}

async fn concurrent_writers_all_succeed(db: TestDatabase) {
    let s = &db.store;
    let tenant = clinic(s, "alpha").await;
    let ring = ring(&SecretKey::generate().unwrap());
    let patient = PatientId::new_v7();
    put(
        s,
        &ring,
        tenant,
        patient,
        1,
        &json!({"resourceType": "Patient", "id": patient.to_string()}),
    )
    .await
    .unwrap();
    // Sixteen writers at once, each creating its own resource: on SQLite each transaction
    // takes the write lock up front and waits its turn rather than failing.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (s, ring) = (s.clone(), ring.clone());
        tasks.push(tokio::spawn(async move {
            let obs = json!({"resourceType": "Observation", "id": format!("o{i}"), "status": "final",
                             "code": {"text": "pulse"}, "effectiveDateTime": "2024-05-01T08:00:00Z"});
            put(&s, &ring, tenant, patient, 1, &obs).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let q = StoredSearch { resource_type: "Observation".into(), limit: 100, ..Default::default() };
    assert_eq!(s.search(tenant, &q).await.unwrap().len(), 16);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() {
                if let Some(db) = super::db(super::Backend::Sqlite).await { super::$case(db).await }
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() {
                if let Some(db) = super::db(super::Backend::Postgres).await { super::$case(db).await }
            })*
        }
    };
}

conformance!(
    keys_unwrap_through_the_hierarchy_and_shredding_is_final,
    versions_are_kept_and_writers_cannot_both_win,
    search_matches_blind_tokens_and_date_ranges_only,
    concurrent_writers_all_succeed,
);
