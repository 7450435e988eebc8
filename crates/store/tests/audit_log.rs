//! The audit log on both backends: appends are durable and ordered under concurrency, the
//! application cannot change or remove entries, and every kind of tampering by someone
//! who can write to the database (but has no key) makes verification fail and name the
//! entry or head: changed bytes in any column, with or without a recomputed hash, deleted,
//! inserted and swapped entries, a cut-back tail, and a signed head replaced by an older
//! one. The witness catches a tail cut back together with its heads.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::sync::Arc;

use telesafe_core::audit::{
    self, ActorKind, AuditFilter, AuditLog, AuditRepository, Entry, HeadSigner, Purpose, Segment,
    SignedTreeHead, VerifyError,
};
use telesafe_core::{ManualClock, RepoError, TenantId, Timestamp};
use telesafe_store::Backend;
use telesafe_store::testing::{TestDatabase, TestDbError, fresh, fresh_at, postgres_required};

const T0: i64 = 1_790_000_000_000;

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

fn signer() -> HeadSigner {
    HeadSigner::from_seed(&[42u8; 32]).unwrap()
}

fn entry(i: u64, tenant: &TenantId) -> Entry {
    Entry {
        seq: 0,
        at: T0 + i as i64,
        tenant_id: tenant.to_string(),
        actor_kind: ActorKind::User,
        actor_id: format!("user-{}", i % 7),
        actor_role: "clinician".into(),
        action: if i.is_multiple_of(3) { "search" } else { "read" }.into(),
        resource_type: "Patient".into(),
        resource_id: format!("res-{i}"),
        patient_id: format!("patient-{}", i % 5),
        purpose: Purpose::Treatment,
        outcome: "success".into(),
        source: "127.0.0.1".into(),
        session: "abcd1234".into(),
        request_id: format!("req-{i}"),
    }
}

/// A log of `n` entries in segments of 1 to 6 entries (one append each), with a head
/// signed once every `every` entries have passed and one at the end.
async fn build(db: &TestDatabase, n: u64, every: u64) -> Vec<SignedTreeHead> {
    let s = &db.store;
    let tenant = TenantId::new_v7();
    let mut heads = Vec::new();
    let mut i = 0;
    while i < n {
        let run = (1 + (i * 7 + 3) % 6).min(n - i);
        let rows: Vec<_> = (i..i + run)
            .map(|k| {
                let mut e = entry(k, &tenant);
                e.seq = k;
                let h = e.leaf_hash();
                (e, h)
            })
            .collect();
        s.append_audit(&rows).await.unwrap();
        let crossed = (i + run) / every > i / every;
        i += run;
        if crossed || i == n {
            heads.push(audit::sign_head_now(s, &signer(), T0 + i as i64).await.unwrap());
        }
    }
    heads
}

/// A tenant's entries about `patient`, newest first.
async fn about(db: &TestDatabase, tenant: TenantId, patient: &str) -> Vec<Entry> {
    let filter = AuditFilter { patient_id: Some(patient.into()), ..Default::default() };
    db.store.search_audit(tenant, &filter, 100).await.unwrap()
}

/// The log as another process opens it.
async fn reopen(db: &TestDatabase) -> AuditLog {
    let clock = Arc::new(ManualClock::at(Timestamp::from_unix_millis(T0)));
    AuditLog::open(db.store.clone(), signer(), clock, None).await.unwrap()
}

async fn check(
    db: &TestDatabase,
    witness: &[SignedTreeHead],
) -> Result<audit::Verified, VerifyError> {
    audit::verify(&db.store, signer().public_key(), witness, |_, _| {}).await
}

/// A tiny deterministic generator (xorshift), so a failing case can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn blob(backend: Backend, b: &[u8]) -> String {
    match backend {
        Backend::Sqlite => format!("X'{}'", hex(b)),
        Backend::Postgres => format!("'\\x{}'::bytea", hex(b)),
    }
}

/// Statements that replace the whole stored log by `segments` and `heads`.
fn rewrite(backend: Backend, segments: &[Segment], heads: &[SignedTreeHead]) -> Vec<String> {
    let mut sql = vec![
        "DELETE FROM audit_segments".to_owned(),
        "DELETE FROM audit_keys".to_owned(),
        "DELETE FROM audit_heads".to_owned(),
    ];
    for s in segments {
        sql.push(format!(
            "INSERT INTO audit_segments (first_seq, count, tenant_id, min_at, max_at, body, leaves) \
             VALUES ({}, {}, '{}', {}, {}, {}, {})",
            s.first_seq,
            s.count,
            s.tenant_id,
            s.min_at,
            s.max_at,
            blob(backend, &s.body),
            blob(backend, &s.leaves)
        ));
        for k in &s.keys {
            sql.push(format!(
                "INSERT INTO audit_keys (key, first_seq) VALUES ({k}, {})",
                s.first_seq
            ));
        }
    }
    for h in heads {
        sql.push(format!(
            "INSERT INTO audit_heads (idx, tree_size, root, at, signature) VALUES ({}, {}, {}, {}, {})",
            h.index, h.size, blob(backend, &h.root), h.at, blob(backend, &h.signature)
        ));
    }
    sql
}

/// Entries regrouped into segments of the same sizes as `like`, renumbered from 0 and
/// re-hashed (a forger who rewrites everything but holds no key).
fn regroup(entries: &[Entry], like: &[Segment]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut rest: Vec<(Entry, [u8; 32])> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut e = e.clone();
            e.seq = i as u64;
            let h = e.leaf_hash();
            (e, h)
        })
        .collect();
    for s in like {
        if rest.is_empty() {
            break;
        }
        let tail = rest.split_off((s.count as usize).min(rest.len()));
        out.push(Segment::build(&rest));
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(Segment::build(&rest));
    }
    out
}

async fn every_kind_of_tampering_is_detected_and_named(backend: Backend) {
    let Some(db) = db(backend).await else { return };
    let n = 120;
    let heads = build(&db, n, 20).await;
    let ok = check(&db, &heads).await.unwrap();
    assert_eq!((ok.entries, ok.heads), (n, heads.len() as u64));
    let segments = db.store.audit_segments(0, 1000).await.unwrap();
    assert!(segments.len() > 20 && segments.iter().any(|s| s.count > 1));
    let entries: Vec<Entry> =
        segments.iter().flat_map(|s| s.entries().unwrap()).map(|(e, _)| e).collect();
    assert_eq!(entries.len() as u64, n);
    let holding =
        |k: u64| segments.iter().position(|s| s.first_seq + u64::from(s.count) > k).unwrap();
    let covered = heads.last().unwrap().size; // every entry is under a head
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n);
    let cases = if backend == Backend::Sqlite { 72 } else { 27 };
    for case in 0..cases {
        let kind = case % 9;
        let k = rng.below(covered);
        let si = holding(k);
        let seg = &segments[si];
        let pos = (k - seg.first_seq) as usize;
        let mut log = segments.clone();
        let mut stored_heads = heads.clone();
        let mut witness: Vec<SignedTreeHead> = Vec::new();
        let described;
        match kind {
            0 => {
                // One changed byte in entry k (its text, its hash, or its length prefix),
                // the other columns left as they were.
                let items = seg.items().unwrap();
                let start: usize = items[..pos].iter().map(|b| b.len() + 4).sum();
                let s = &mut log[si];
                match rng.below(3) {
                    0 => s.body[start + 4 + rng.below(items[pos].len() as u64) as usize] ^= 0x20,
                    1 => s.leaves[pos * 32 + rng.below(32) as usize] ^= 1,
                    _ => s.body[start + 3] ^= 1,
                }
                described = format!("entry {k}");
            }
            1 => {
                // A changed time, with the leaf hash and the segment's times recomputed.
                let mut run = seg.entries().unwrap();
                run[pos].0.at += 1 + rng.below(1000) as i64;
                run[pos].1 = run[pos].0.leaf_hash();
                log[si] = Segment::build(&run);
                described = "signed head".into();
            }
            2 => {
                // Entry k removed from its segment; later entries keep their numbers.
                let mut run = seg.entries().unwrap();
                run.remove(pos);
                if run.is_empty() {
                    log.remove(si);
                } else {
                    log[si] = Segment::build(&run);
                }
                // The last entry gone is a cut-back tail: the head over it names it.
                described =
                    if k + 1 == covered { "signed head".into() } else { format!("entry {k}") };
            }
            3 => {
                // An entry inserted at k, later ones renumbered, every hash recomputed.
                let mut forged = entries.clone();
                forged.insert(k as usize, entry(10_000, &TenantId::new_v7()));
                forged[k as usize].tenant_id = entries[0].tenant_id.clone();
                log = regroup(&forged, &segments);
                described = "signed head".into();
            }
            4 => {
                // Two entries swapped (contents and hashes recomputed for their new places).
                let j = (k + 1 + rng.below(covered - 1)) % covered;
                let mut swapped = entries.clone();
                swapped.swap(k as usize, j as usize);
                log = regroup(&swapped, &segments);
                described = "signed head".into();
            }
            5 => {
                // The tail cut back below the last head.
                log = regroup(&entries[..k as usize], &segments);
                described = "signed head".into();
            }
            6 => {
                // A signed head replaced by an older one (its row, renumbered).
                let i = 1 + rng.below(heads.len() as u64 - 1);
                let mut old = heads[(i - 1) as usize].clone();
                old.index = i;
                stored_heads[i as usize] = old;
                described = format!("signed head {i}");
            }
            7 => {
                // The tail and the heads that covered it removed together: consistent on its
                // own, caught by the witness that kept the heads.
                let end = heads.iter().filter(|h| h.size <= k).map(|h| h.size).max().unwrap_or(0);
                log = regroup(&entries[..end as usize], &segments);
                stored_heads.retain(|h| h.size <= k);
                witness = heads.clone();
                described = "witness head".into();
            }
            _ => {
                // The segment's search index or stored columns changed, so a patient's or an
                // officer's search would miss its entries (or find another tenant's).
                let s = &mut log[si];
                match rng.below(4) {
                    0 => drop(s.keys.pop()),
                    1 => s.keys[0] ^= 1,
                    2 => s.tenant_id = TenantId::new_v7().to_string(),
                    _ => s.max_at += 1,
                }
                described = format!("entry {}", seg.first_seq);
            }
        }
        db.as_dba(&rewrite(backend, &log, &stored_heads)).await.unwrap();
        let err = check(&db, &witness)
            .await
            .expect_err(&format!("case {case} (kind {kind}, k {k}) went unnoticed"));
        let msg = err.to_string();
        assert!(
            msg.contains(&described),
            "case {case} kind {kind}: expected the report to name {described}, got: {msg}"
        );
        if kind == 7 {
            assert!(
                check(&db, &[]).await.is_ok(),
                "without the witness the cut is self-consistent"
            );
        }
        db.as_dba(&rewrite(backend, &segments, &heads)).await.unwrap();
        check(&db, &heads).await.unwrap_or_else(|e| panic!("after restoring case {case}: {e}"));
    }
}

async fn the_application_cannot_change_the_log(backend: Backend) {
    let Some(db) = db(backend).await else { return };
    build(&db, 3, 3).await;
    // Through the application's own connection (its role, its triggers).
    for sql in [
        "UPDATE audit_segments SET tenant_id = 'nothing' WHERE first_seq = 0",
        "DELETE FROM audit_segments WHERE first_seq = 0",
        "UPDATE audit_keys SET key = 0",
        "DELETE FROM audit_keys",
        "UPDATE audit_heads SET tree_size = 1",
        "DELETE FROM audit_heads",
    ] {
        assert!(db.exec_as_app(sql).await.is_err(), "{sql} was allowed");
    }
    if backend == Backend::Postgres {
        assert!(db.exec_as_app("TRUNCATE audit_segments").await.is_err());
        assert!(db.exec_as_app("TRUNCATE audit_keys").await.is_err());
    }
    assert_eq!(db.store.audit_size().await.unwrap(), 3);
}

async fn concurrent_appends_are_group_committed_in_order(backend: Backend) {
    let Some(db) = db(backend).await else { return };
    let clock = Arc::new(ManualClock::at(Timestamp::from_unix_millis(T0)));
    let log = AuditLog::open(db.store.clone(), signer(), clock, None).await.unwrap();
    let tenant = TenantId::new_v7();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let log = log.clone();
        let e = entry(i, &tenant);
        tasks.push(tokio::spawn(async move { log.record(e).await }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "every append got its own place, no gaps");
    // A head is signed when 1,000 entries or 10 seconds have passed; sign one now. The
    // log's own appender may have signed one at this moment: same index, a conflict, and
    // either head is good.
    match audit::sign_head_now(&db.store, &signer(), T0).await {
        Ok(_) | Err(RepoError::Conflict) => {}
        Err(e) => panic!("signing a head: {e}"),
    }
    let v = check(&db, &[]).await.unwrap();
    assert_eq!(v.entries, 200);
    // Proofs from the served tree verify (the RFC 9162 checks are exercised end to end in
    // the server's suite with an independent verifier).
    let (root, proof) = log.inclusion(17, 200).unwrap();
    let leaf = db.store.audit_entries(17, 1).await.unwrap()[0].1;
    assert!(audit::verify_inclusion(&leaf, 17, 200, &proof, &root));
    assert_eq!(root, v.root);
    // A reopened log (another process) continues at the end.
    let again = reopen(&db).await;
    assert_eq!(again.record(entry(500, &tenant)).await.unwrap(), 200);
    // Search: per tenant, by patient, newest first.
    let found = about(&db, tenant, "patient-3").await;
    assert_eq!(found.len(), 40);
    assert!(found.windows(2).all(|w| w[0].seq > w[1].seq));
    assert!(
        db.store
            .search_audit(TenantId::new_v7(), &AuditFilter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Two appenders on one database (two server nodes): each takes the end in turn, a batch
/// whose place the other took moves to the new end, and nothing is lost or numbered twice.
async fn two_nodes_append_to_one_log(backend: Backend) {
    let Some(db) = db(backend).await else { return };
    let (a, b) = (reopen(&db).await, reopen(&db).await);
    let tenant = TenantId::new_v7();
    let mut tasks = Vec::new();
    for i in 0..120u64 {
        let log = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let batch = (0..1 + i % 3).map(|k| entry(i * 10 + k, &tenant)).collect();
            log.record_all(batch).await
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap().expect("every append lands, on either node"));
    }
    seqs.sort_unstable();
    let n = seqs.len() as u64;
    assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "no gaps, nothing numbered twice");
    audit::sign_head_now(&db.store, &signer(), T0).await.unwrap();
    assert_eq!(check(&db, &[]).await.unwrap().entries, n);
}

/// Heads signed while the log is busy ride in the commits of later batches, on two nodes
/// at once: every head is stored in order (no index twice, none skipped), each covers what
/// was committed when it was signed, and the log verifies against all of them.
async fn heads_ride_with_busy_appends_on_two_nodes(backend: Backend) {
    let Some(db) = db(backend).await else { return };
    let (a, b) = (reopen(&db).await, reopen(&db).await);
    let tenant = TenantId::new_v7();
    let mut tasks = Vec::new();
    // 32 writers, each waiting for its append before the next: many group commits.
    for i in 0..32u64 {
        let log = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            for r in 0..10 {
                let batch = (0..20).map(|k| entry(i * 1000 + r * 20 + k, &tenant)).collect();
                log.record_all(batch).await?;
            }
            Ok::<_, audit::AuditError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every append lands, on either node");
    }
    let n = 32 * 10 * 20;
    let during = db.store.heads().await.unwrap();
    assert!(
        during.len() >= 3,
        "a head every 1,000 entries while busy: {} heads over {n} entries",
        during.len()
    );
    // Each node signs one more over what it has seen; whichever loses the index race
    // catches up and signs after the other.
    a.sign_now().await;
    b.sign_now().await;
    let heads = db.store.heads().await.unwrap();
    assert_eq!(
        heads.iter().map(|h| h.index).collect::<Vec<_>>(),
        (0..heads.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(heads.iter().map(|h| h.size).max(), Some(n), "the last head covers the whole log");
    let v = check(&db, &heads).await.unwrap();
    assert_eq!((v.entries, v.heads), (n, heads.len() as u64));
}

/// A log written by a release that stored a row per entry (migration 21) is carried into
/// segments by the upgrade: every entry reads back the same, and the head signed before the
/// upgrade still verifies over the converted log.
async fn entries_stored_before_segments_survive_the_upgrade(backend: Backend) {
    let db = match fresh_at(backend, 21).await {
        Ok(db) => db,
        Err(TestDbError::NoPostgres) if !postgres_required() => return,
        Err(e) => panic!("{} test database: {e}", backend.as_str()),
    };
    let tenant = TenantId::new_v7();
    let mut tree = audit::Tree::new();
    let mut sql = Vec::new();
    let mut written = Vec::new();
    for i in 0..25u64 {
        let mut e = entry(i, &tenant);
        e.seq = i;
        if i == 4 {
            e.patient_id = String::new(); // an entry about no patient
            e.source = "2001:db8::ä".into(); // and a non-ASCII byte count
        }
        let h = e.leaf_hash();
        tree.push(h);
        sql.push(format!(
            "INSERT INTO audit_entries (seq, at, tenant_id, actor_kind, actor_id, actor_role, action, \
             resource_type, resource_id, patient_id, purpose, outcome, source, session, request_id, \
             leaf_hash) VALUES ({}, {}, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', \
             '{}', '{}', '{}', {})",
            e.seq, e.at, e.tenant_id, e.actor_kind.as_str(), e.actor_id, e.actor_role, e.action,
            e.resource_type, e.resource_id, e.patient_id, e.purpose.as_str(), e.outcome, e.source,
            e.session, e.request_id, blob(backend, &h)
        ));
        written.push((e, h));
    }
    let head = signer().sign(0, 25, T0, tree.root_at(25).unwrap());
    sql.push(format!(
        "INSERT INTO audit_heads (idx, tree_size, root, at, signature) VALUES (0, 25, {}, {}, {})",
        blob(backend, &head.root),
        head.at,
        blob(backend, &head.signature)
    ));
    db.as_dba(&sql).await.unwrap();
    db.store.migrate().await.unwrap();
    assert_eq!(db.store.audit_entries(0, 100).await.unwrap(), written);
    let v = check(&db, &[head]).await.unwrap();
    assert_eq!((v.entries, v.heads), (25, 1));
    let found = about(&db, tenant, "patient-2").await;
    assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), [22, 17, 12, 7, 2]);
    // The log goes on from there.
    let log = reopen(&db).await;
    assert_eq!(log.record(entry(99, &tenant)).await.unwrap(), 25);
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::Postgres).await })*
        }
    };
}

both!(
    every_kind_of_tampering_is_detected_and_named,
    the_application_cannot_change_the_log,
    concurrent_appends_are_group_committed_in_order,
    entries_stored_before_segments_survive_the_upgrade,
    two_nodes_append_to_one_log,
    heads_ride_with_busy_appends_on_two_nodes,
);
