//! Device storage, on both backends: batches stored exactly once, and readings served as
//! Observations from their batch.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

#[macro_use]
mod common;

use common::{T0, tenant};
use telesafe_core::identity::*;
use telesafe_core::{PatientId, RepoError, Timestamp};
use telesafe_store::Backend;
use telesafe_store::testing::{TestDatabase, TestDbError, fresh_at, postgres_required};

/// Patient `n` of `t`, with a fixed id.
fn patient(t: &Tenant, n: u128) -> Patient {
    Patient {
        id: format!("0191c3f2-0000-7000-8000-{n:012}").parse().unwrap(),
        tenant_id: t.id,
        user_id: None,
        created_at: T0,
    }
}

/// Device `id` of model "ox", enrolled for `p`.
fn device(t: &Tenant, id: &str, p: &Patient) -> telesafe_core::devices::Device {
    telesafe_core::devices::Device {
        id: id.into(),
        tenant: t.id,
        patient: p.id,
        model_id: "ox".into(),
        public_key: vec![7; 32],
        serial: "S".into(),
        firmware: "2.0".into(),
        revoked: false,
        last_seq: 0,
        enrolled_at: T0,
    }
}

/// A clinic with patients 1 (Ana) and 2 (Bo) and a device model "ox" measuring `measures`.
async fn clinic(
    s: &telesafe_store::Store,
    measures: &[(&str, &str)],
) -> (Tenant, Patient, Patient) {
    use telesafe_core::devices::{DeviceModel, DeviceRepository};
    let t = tenant("clinic");
    s.create_tenant(&t).await.unwrap();
    let (ana, bo) = (patient(&t, 1), patient(&t, 2));
    s.create_patient(&ana).await.unwrap();
    s.create_patient(&bo).await.unwrap();
    let measures = measures.iter().map(|(c, u)| ((*c).into(), (*u).into())).collect();
    let m = DeviceModel::new(t.id, "ox", "Acme", "Ox", measures, "2.0", vec![], T0).unwrap();
    s.create_model(&m).await.unwrap();
    (t, ana, bo)
}

async fn device_batches_are_stored_exactly_once_in_any_order(db: TestDatabase) {
    use telesafe_core::devices::*;
    let s = &db.store;
    let t = tenant("clinic");
    s.create_tenant(&t).await.unwrap();
    let p = Patient { id: PatientId::new_v7(), tenant_id: t.id, user_id: None, created_at: T0 };
    s.create_patient(&p).await.unwrap();
    let m = DeviceModel::new(
        t.id,
        "ox",
        "Acme",
        "Ox",
        vec![("59408-5".into(), "%".into())],
        "2.0",
        vec![],
        T0,
    )
    .unwrap();
    s.create_model(&m).await.unwrap();
    s.create_device(&device(&t, "dev-1", &p)).await.unwrap();
    let batch = |seq: u64, firmware: &str| FiledBatch {
        batch: StoredBatch {
            tenant: t.id,
            device_id: "dev-1".into(),
            seq,
            received_at: T0,
            gap_from: None,
            quarantine: None,
            body: vec![seq as u8; 8],
        },
        firmware: firmware.into(),
        readings: vec![],
        kinds: vec![],
        alerts: vec![],
    };
    // Out of order, with a duplicate inside the group and one of an earlier group.
    assert_eq!(
        s.record_batches(&[batch(3, "2.1"), batch(1, "2.0")]).await.unwrap(),
        vec![true, true]
    );
    assert_eq!(
        s.record_batches(&[batch(2, "2.0"), batch(2, "2.0"), batch(3, "2.1")]).await.unwrap(),
        vec![true, false, false]
    );
    let dev = s.device("dev-1").await.unwrap().unwrap();
    assert_eq!((dev.last_seq, dev.firmware.as_str()), (3, "2.1"), "the newest batch's firmware");
    assert!(s.batch_stored(t.id, "dev-1", 2).await.unwrap());
    assert!(!s.batch_stored(t.id, "dev-1", 4).await.unwrap());
    // Another tenant sees nothing of it.
    let other = tenant("other");
    s.create_tenant(&other).await.unwrap();
    assert!(!s.batch_stored(other.id, "dev-1", 2).await.unwrap());
    assert!(s.list_devices(other.id).await.unwrap().is_empty());
    assert_eq!(s.list_devices(t.id).await.unwrap()[0].device.last_seq, 3);
}

/// Device readings are Observations without resource rows: found by patient, kind, date,
/// identifier and id; read, listed and re-sealed through their batch; an edit supersedes
/// the reading's row with stored versions; erasure takes rows and bodies.
async fn device_readings_are_observations_served_from_their_batch(db: TestDatabase) {
    use telesafe_core::devices::readings::{FiledReading, KindEntry, ReadingRef, reading_id};
    use telesafe_core::devices::*;
    use telesafe_core::records::keys::KeyRepository;
    use telesafe_core::records::search::parse_date_condition;
    use telesafe_core::records::{ResourceRepository, StoredResource, StoredSearch, TimeWindow};
    let s = &db.store;
    let (t, ana, bo) = clinic(s, &[("8867-4", "/min"), ("59408-5", "%")]).await;
    let device = |id: &str, p: &Patient| device(&t, id, p);
    let (da, db_) =
        ("0191c3f2-6a4b-7c3d-8e9f-00000000000a", "0191c3f2-6a4b-7c3d-8e9f-00000000000b");
    s.create_device(&device(da, &ana)).await.unwrap();
    s.create_device(&device(db_, &bo)).await.unwrap();
    let kind = |k: &str, code: &str| {
        vec![
            KindEntry { kind: k.into(), param: "code".into(), value: code.into() },
            KindEntry { kind: k.into(), param: "category".into(), value: "vital".into() },
        ]
    };
    let minute = 60_000;
    // Each batch: two readings of kinds "hr" (n 0) and "spo2" (n 1), a minute apart.
    let batch = |dev: &str, p: &Patient, seq: u64, body: u8| {
        let at = T0.unix_millis() + i64::try_from(seq).unwrap() * 10 * minute;
        FiledBatch {
            batch: StoredBatch {
                tenant: t.id,
                device_id: dev.into(),
                seq,
                received_at: T0,
                gap_from: None,
                quarantine: None,
                body: vec![body; 8],
            },
            firmware: "2.0".into(),
            readings: vec![
                FiledReading { patient: p.id, n: 0, kind: "hr".into(), low: at, high: at + 999 },
                FiledReading {
                    patient: p.id,
                    n: 1,
                    kind: "spo2".into(),
                    low: at + minute,
                    high: at + minute + 999,
                },
            ],
            kinds: [kind("hr", "h-hr"), kind("spo2", "h-spo2")].concat(),
            alerts: vec![],
        }
    };
    let stored = s
        .record_batches(&[batch(da, &ana, 1, 1), batch(da, &ana, 2, 2), batch(da, &ana, 2, 9)])
        .await
        .unwrap();
    assert_eq!(stored, vec![true, true, false]);
    // A duplicate in a later round files no second row either.
    assert_eq!(s.record_batches(&[batch(da, &ana, 1, 9)]).await.unwrap(), vec![false]);
    assert_eq!(s.record_batches(&[batch(db_, &bo, 1, 3)]).await.unwrap(), vec![true]);

    let search = |f: &dyn Fn(&mut StoredSearch)| {
        let mut q =
            StoredSearch { resource_type: "Observation".into(), limit: 100, ..Default::default() };
        f(&mut q);
        async move {
            let mut ids: Vec<String> =
                s.search(t.id, &q).await.unwrap().into_iter().map(|h| h.id).collect();
            ids.sort();
            ids
        }
    };
    let id = |dev: &str, seq, n| reading_id(dev, seq, n).unwrap();
    let mut all_ana = vec![id(da, 1, 0), id(da, 1, 1), id(da, 2, 0), id(da, 2, 1)];
    all_ana.sort();
    assert_eq!(search(&|q| q.patients = Some(vec![ana.id])).await, all_ana);
    assert_eq!(search(&|_| {}).await.len(), 6, "every reading of the tenant, once");
    let hr_of_ana = search(&|q| {
        q.patients = Some(vec![ana.id]);
        q.tokens = vec![("code".into(), vec!["h-hr".into(), "unknown".into()])];
    })
    .await;
    assert_eq!(hr_of_ana, vec![id(da, 1, 0), id(da, 2, 0)]);
    assert!(
        search(&|q| q.tokens = vec![("code".into(), vec!["vital".into()])]).await.is_empty(),
        "a value of another parameter does not match"
    );
    assert_eq!(
        search(&|q| q.tokens = vec![("category".into(), vec!["vital".into()])]).await.len(),
        6
    );
    assert!(
        search(&|q| q.tokens = vec![("gender".into(), vec!["h-hr".into()])]).await.is_empty(),
        "a parameter readings do not carry matches none"
    );
    let after = |ms: i64| {
        let at = Timestamp::from_unix_millis(ms).to_rfc3339();
        parse_date_condition(&format!("ge{at}")).unwrap()
    };
    let late = T0.unix_millis() + 20 * minute;
    assert_eq!(
        search(&|q| q.dates = vec![("date".into(), vec![after(late)])]).await,
        vec![id(da, 2, 0), id(da, 2, 1)]
    );
    assert_eq!(
        search(&|q| {
            q.tokens = vec![("identifier".into(), vec!["hash".into()])];
            q.identified_readings = vec![ReadingRef { device: da.into(), seq: 2, n: 1 }];
        })
        .await,
        vec![id(da, 2, 1)]
    );
    assert_eq!(
        search(&|q| q.ids = Some(vec![id(db_, 1, 1), "other".into()])).await,
        vec![id(db_, 1, 1)]
    );
    // Another tenant finds and reads none of it.
    let other = tenant("other");
    s.create_tenant(&other).await.unwrap();
    let q = StoredSearch { resource_type: "Observation".into(), limit: 100, ..Default::default() };
    assert!(s.search(other.id, &q).await.unwrap().is_empty());
    assert!(s.current(other.id, "Observation", &id(da, 1, 0)).await.unwrap().is_none());

    // Read: version 1, its batch's body, the reading's patient.
    let r = s.current(t.id, "Observation", &id(da, 2, 1)).await.unwrap().unwrap();
    assert_eq!((r.version, r.patient, r.body.clone()), (1, Some(ana.id), vec![2; 8]));
    assert!(s.current(t.id, "Observation", &id(da, 2, 5)).await.unwrap().is_none());
    assert!(s.current(t.id, "Condition", &id(da, 2, 1)).await.unwrap().is_none());
    let many = s
        .current_many(t.id, "Observation", &[id(da, 1, 0), id(db_, 1, 0), "none".into()])
        .await
        .unwrap();
    assert_eq!(many.len(), 2);
    // The compartment holds ordinary resources only; readings come by window, in batches.
    assert!(s.compartment(t.id, bo.id).await.unwrap().is_empty());
    let (of_bo, next) =
        s.patient_readings(t.id, bo.id, TimeWindow::default(), 100, None).await.unwrap();
    assert_eq!(next, None);
    let got: Vec<_> = of_bo.iter().map(|b| (b.batch.id.clone(), b.readings.clone())).collect();
    assert_eq!(got, vec![(id(db_, 1, 0), vec![0, 1])]);
    assert_eq!((of_bo[0].batch.body.clone(), of_bo[0].batch.patient), (vec![3; 8], Some(bo.id)));

    // An edit: version 2 is stored, the row gives way, version 1 stays readable.
    let edited = id(da, 1, 0);
    let v2 = StoredResource {
        tenant: t.id,
        resource_type: "Observation".into(),
        id: edited.clone(),
        version: 2,
        patient: Some(ana.id),
        last_updated: T0,
        deleted: false,
        category: "vitals".into(),
        restricted: false,
        body: vec![42; 4],
    };
    let mut v1 = v2.clone();
    v1.version = 1;
    assert!(matches!(s.put_version(&v1, &[], None).await, Err(RepoError::Conflict)), "no new v1");
    s.put_version(&v2, &[], None).await.unwrap();
    assert!(matches!(s.put_version(&v2, &[], None).await, Err(RepoError::Conflict)));
    assert_eq!(s.current(t.id, "Observation", &edited).await.unwrap().unwrap().body, vec![42; 4]);
    assert_eq!(s.version(t.id, "Observation", &edited, 1).await.unwrap().unwrap().body, vec![1; 8]);
    let versions: Vec<u32> =
        s.history(t.id, "Observation", &edited).await.unwrap().iter().map(|r| r.version).collect();
    assert_eq!(versions, vec![2, 1]);
    let of_ana = StoredSearch {
        resource_type: "Observation".into(),
        patients: Some(vec![ana.id]),
        limit: 100,
        ..Default::default()
    };
    let hits = s.search(t.id, &of_ana).await.unwrap();
    assert_eq!(hits.len(), 4, "the edited reading once, as its stored version");
    assert_eq!(hits.iter().find(|h| h.id == edited).unwrap().version, 2);
    assert_eq!(s.compartment(t.id, ana.id).await.unwrap().len(), 1, "the edited version");
    let page = |from: Option<i64>, to: Option<i64>, limit: u32, after: Option<ReadingRef>| {
        let w = TimeWindow { from, to };
        async move {
            let (batches, next) =
                s.patient_readings(t.id, ana.id, w, limit, after.as_ref()).await.unwrap();
            let got: Vec<_> = batches.into_iter().map(|b| (b.batch.id, b.readings)).collect();
            (got, next)
        }
    };
    let readings = |from, to, limit| page(from, to, limit, None);
    let at = |seq, n| Some(ReadingRef { device: da.into(), seq, n });
    // Newest first, each batch once with its current readings (not the edited one).
    assert_eq!(
        readings(None, None, 100).await,
        (vec![(id(da, 2, 0), vec![0, 1]), (id(da, 1, 0), vec![1])], None)
    );
    // A page ends at its last reading (2.0, measured before 2.1); the next carries on
    // after it, and ends the readings.
    assert_eq!(readings(None, None, 2).await, (vec![(id(da, 2, 0), vec![0, 1])], at(2, 0)));
    assert_eq!(page(None, None, 2, at(2, 0)).await, (vec![(id(da, 1, 0), vec![1])], None));
    assert_eq!(page(None, None, 1, at(2, 1)).await, (vec![(id(da, 2, 0), vec![0])], at(2, 0)));
    // A reading that is not the patient's (or none at all) starts no page.
    for after in [ReadingRef { device: db_.into(), seq: 1, n: 0 }, at(9, 0).unwrap()] {
        let w = TimeWindow::default();
        let r = s.patient_readings(t.id, ana.id, w, 2, Some(&after)).await;
        assert!(matches!(r, Err(RepoError::NotFound)), "{after:?}");
    }
    let t20 = T0.unix_millis() + 20 * minute;
    assert_eq!(readings(Some(t20 + 1), None, 100).await, (vec![(id(da, 2, 0), vec![1])], None));
    assert_eq!(readings(None, Some(t20), 100).await, (vec![(id(da, 1, 0), vec![1])], None));
    assert_eq!(readings(Some(t20), Some(t20 + 1), 100).await.0, vec![(id(da, 2, 0), vec![0])]);

    // Re-sealing sees each batch once and rewrites its body.
    let rows = s.patient_versions(t.id, ana.id).await.unwrap();
    let batches: Vec<_> = rows.iter().filter(|r| r.body.len() == 8).collect();
    assert_eq!(batches.len(), 2, "two batches, whatever their readings");
    let mut resealed = batches[1].clone();
    resealed.body = vec![5; 8];
    s.reseal(&resealed).await.unwrap();
    assert_eq!(
        s.current(t.id, "Observation", &id(da, 2, 0)).await.unwrap().unwrap().body,
        vec![5; 8]
    );

    // Erasure: the patient's readings are gone and their batches keep no body.
    s.shred_patient(t.id, ana.id, T0).await.unwrap();
    assert!(search(&|q| q.patients = Some(vec![ana.id])).await.is_empty());
    // A reading's id reads as deleted (410 once the policy allows the patient), not as
    // one that never existed; another patient's unknown reading still reads as nothing.
    let gone = s.current(t.id, "Observation", &id(da, 2, 0)).await.unwrap().unwrap();
    assert_eq!((gone.deleted, gone.patient, gone.body.len()), (true, Some(ana.id), 0));
    let v1 = s.version(t.id, "Observation", &id(da, 2, 0), 1).await.unwrap().unwrap();
    assert!(v1.deleted && v1.body.is_empty(), "vread answers as read does");
    assert!(s.current(t.id, "Observation", &id(db_, 1, 7)).await.unwrap().is_none());
    assert!(s.current(other.id, "Observation", &id(da, 2, 0)).await.unwrap().is_none());
    assert!(s.patient_versions(t.id, ana.id).await.unwrap().iter().all(|r| r.body.is_empty()));
    assert_eq!(search(&|q| q.patients = Some(vec![bo.id])).await.len(), 2, "others keep theirs");
}

conformance!(
    device_batches_are_stored_exactly_once_in_any_order,
    device_readings_are_observations_served_from_their_batch,
);

/// Readings filed by a release whose rows named device and patient by UUID (migration 23)
/// are carried into the numbered rows by the upgrade: found, read and listed as before;
/// a device enrolled afterwards takes a number of its own and files beside them.
async fn readings_filed_before_numbered_rows_survive_the_upgrade(backend: Backend) {
    use telesafe_core::devices::readings::{FiledReading, reading_id};
    use telesafe_core::devices::*;
    use telesafe_core::records::{ResourceRepository, StoredSearch, TimeWindow};
    let db = match fresh_at(backend, 23).await {
        Ok(db) => db,
        Err(TestDbError::NoPostgres) if !postgres_required() => return,
        Err(e) => panic!("{} test database: {e}", backend.as_str()),
    };
    let s = &db.store;
    let (t, ana, bo) = clinic(s, &[("8867-4", "/min")]).await;
    let device = |id: &str, p: &Patient| device(&t, id, p);
    let (da, db_, dc) = (
        "0191c3f2-6a4b-7c3d-8e9f-00000000000a",
        "0191c3f2-6a4b-7c3d-8e9f-00000000000b",
        "0191c3f2-6a4b-7c3d-8e9f-00000000000c",
    );
    s.create_device(&device(da, &ana)).await.unwrap();
    s.create_device(&device(db_, &bo)).await.unwrap();
    let minute = 60_000;
    let at = |seq: i64| T0.unix_millis() + seq * 10 * minute;
    let mut sql = Vec::new();
    for (dev, p, seqs) in [(da, &ana, 1..=3), (db_, &bo, 1..=1)] {
        for seq in seqs {
            let body = if backend == Backend::Sqlite {
                format!("X'{:02x}{:02x}'", seq, seq)
            } else {
                format!("'\\x{:02x}{:02x}'::bytea", seq, seq)
            };
            sql.push(format!(
                "INSERT INTO device_batches (tenant_id, device_id, seq, received_at, body) \
                 VALUES ('{}', '{dev}', {seq}, {}, {body})",
                t.id,
                T0.unix_millis()
            ));
            for n in 0..2 {
                sql.push(format!(
                    "INSERT INTO device_readings (tenant_id, patient_id, device_id, seq, n, kind, \
                     low, high, received_at, superseded) \
                     VALUES ('{}', '{}', '{dev}', {seq}, {n}, 'hr', {}, {}, {}, {})",
                    t.id,
                    p.id,
                    at(seq) + n * minute,
                    at(seq) + n * minute + 999,
                    T0.unix_millis(),
                    i32::from(dev == da && seq == 2 && n == 1)
                ));
            }
        }
    }
    db.as_dba(&sql).await.unwrap();
    db.store.migrate().await.unwrap();

    let id = |dev: &str, seq, n| reading_id(dev, seq, n).unwrap();
    let search = |p: &Patient| {
        let q = StoredSearch {
            resource_type: "Observation".into(),
            patients: Some(vec![p.id]),
            limit: 100,
            ..Default::default()
        };
        async move {
            let mut ids: Vec<String> =
                s.search(t.id, &q).await.unwrap().into_iter().map(|h| h.id).collect();
            ids.sort();
            ids
        }
    };
    let mut of_ana = vec![id(da, 1, 0), id(da, 1, 1), id(da, 2, 0), id(da, 3, 0), id(da, 3, 1)];
    of_ana.sort();
    assert_eq!(search(&ana).await, of_ana, "every current reading, the superseded one not");
    assert_eq!(search(&bo).await, vec![id(db_, 1, 0), id(db_, 1, 1)]);
    let r = s.current(t.id, "Observation", &id(da, 3, 1)).await.unwrap().unwrap();
    assert_eq!((r.patient, r.body), (Some(ana.id), vec![3, 3]));
    let (batches, next) =
        s.patient_readings(t.id, ana.id, TimeWindow::default(), 100, None).await.unwrap();
    let got: Vec<_> = batches.into_iter().map(|b| (b.batch.id, b.readings)).collect();
    assert_eq!(
        (got, next),
        (
            vec![(id(da, 3, 0), vec![0, 1]), (id(da, 2, 0), vec![0]), (id(da, 1, 0), vec![0, 1])],
            None
        )
    );

    // A device enrolled after the upgrade files under a number of its own.
    s.create_device(&device(dc, &bo)).await.unwrap();
    let filed = FiledBatch {
        batch: StoredBatch {
            tenant: t.id,
            device_id: dc.into(),
            seq: 1,
            received_at: T0,
            gap_from: None,
            quarantine: None,
            body: vec![9; 2],
        },
        firmware: "2.0".into(),
        readings: vec![FiledReading {
            patient: bo.id,
            n: 0,
            kind: "hr".into(),
            low: at(9),
            high: at(9),
        }],
        kinds: vec![],
        alerts: vec![],
    };
    assert_eq!(s.record_batches(std::slice::from_ref(&filed)).await.unwrap(), vec![true]);
    assert_eq!(search(&bo).await.len(), 3);
    assert_eq!(search(&ana).await, of_ana, "nothing of it under another device's patient");
    // A reading filed for another patient than its device's is refused whole.
    let mut wrong = filed;
    wrong.batch.seq = 2;
    wrong.readings[0].patient = ana.id;
    assert!(s.record_batches(&[wrong]).await.is_err());
    assert!(!s.batch_stored(t.id, dc, 2).await.unwrap(), "nothing of the refused round kept");
}

macro_rules! upgrade {
    ($($case:ident),* $(,)?) => {
        mod upgrade_sqlite {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::Sqlite).await })*
        }
        mod upgrade_postgres {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::Postgres).await })*
        }
    };
}

upgrade!(readings_filed_before_numbered_rows_survive_the_upgrade);
