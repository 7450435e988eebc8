//! Benchmark of the audit log, each figure beside its baseline from the same run:
//!
//! 1. Durable appends per second through the group-commit appender with 1, 64 and 512
//!    concurrent writers, against one transaction per entry (1 writer waiting on each).
//!    SQLite (`synchronous=FULL`), and PostgreSQL when `TELESAFE_TEST_PG_URL` is set.
//! 2. Verification speed (`audit::verify`: every leaf recomputed, every head checked) over
//!    1M entries stored in SQLite, and over 1M and 10M entries served from memory (the
//!    hashing alone), against hashing the same bytes with no tree.
//! 3. Inclusion-proof time in a tree of 10M entries, against one SHA-256 of a node.
//!
//! Run: `cargo run --release -p telesafe-store --example audit_bench [-- SECONDS]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark harness")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use telesafe_core::audit::{
    self, ActorKind, AuditFilter, AuditLog, AuditRepository, Entry, Hash, HeadSigner, Purpose,
    Segment, SegmentBuilder, SignedTreeHead, Tree,
};
use telesafe_core::{RepoError, SystemClock, TenantId};
use telesafe_store::Backend;
use telesafe_store::testing::fresh;

// The allocator the `telesafe` binary runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn entry(i: u64, tenant: &str) -> Entry {
    Entry {
        seq: i,
        at: 1_790_000_000_000 + i as i64,
        tenant_id: tenant.to_owned(),
        actor_kind: ActorKind::User,
        actor_id: "0192f3a4-5b6c-7d8e-9f00-112233445566".into(),
        actor_role: "clinician".into(),
        action: "read".into(),
        resource_type: "Observation".into(),
        resource_id: format!("0192f3a4-0000-7000-8000-{i:012}"),
        patient_id: "0192f3a4-5b6c-7d8e-9f00-665544332211".into(),
        purpose: Purpose::Treatment,
        outcome: "success".into(),
        source: "192.0.2.10".into(),
        session: "3f2a9c1d8e7b6a54".into(),
        request_id: format!("0192f3a45b6c7d8e9f00{i:012}"),
    }
}

fn signer() -> HeadSigner {
    HeadSigner::from_seed(&[9u8; 32]).unwrap()
}

async fn appends(backend: Backend, secs: u64) {
    let Ok(db) = fresh(backend).await else {
        println!("{}: skipped (no database)", backend.as_str());
        return;
    };
    let log =
        AuditLog::open(db.store.clone(), signer(), Arc::new(SystemClock), None).await.unwrap();
    let tenant = TenantId::new_v7().to_string();
    let mut rows = Vec::new();
    for (writers, per_call) in [(1usize, 1usize), (64, 1), (512, 1), (512, 64)] {
        let baseline = rows.is_empty();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (log, tenant) = (log.clone(), tenant.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if per_call == 1 {
                        log.record(entry(w as u64, &tenant)).await.unwrap();
                    } else {
                        let batch =
                            (0..per_call).map(|k| entry((w * per_call + k) as u64, &tenant));
                        log.record_all(batch.collect()).await.unwrap();
                    }
                    n += per_call as u64;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        let label = if baseline {
            "1 writer: each entry its own transaction (baseline)".to_owned()
        } else if per_call == 1 {
            format!("{writers} writers, group commit")
        } else {
            format!("{writers} writers, {per_call} entries per call, group commit (batched)")
        };
        rows.push((label, total, rate));
    }
    // Storage bound: the appender's own work without its channels. Requests' entries are
    // built beforehand (as requests build them); timed is what the appender does with a
    // round of 4,096: number, encode once into a segment, hash, store durably. First naming
    // one patient and actor (one index key each per segment), then 1,000 patients and 50
    // actors (up to 1,050 keys per segment).
    let mut n = log.size();
    let mut direct = Vec::new();
    for spread in [false, true] {
        // Enough rounds for 800,000 entries a second (about 1 GB for 3 s).
        let mut rounds: Vec<Vec<Entry>> = (0..secs * 200)
            .map(|r| {
                (0..4096u64)
                    .map(|k| {
                        let i = r * 4096 + k;
                        let mut e = entry(i, &tenant);
                        if spread {
                            e.patient_id = format!("0192f3a4-5b6c-7d8e-9f00-{:012}", i % 1000);
                            e.actor_id = format!("0192f3a4-5b6c-7d8e-9f00-{:012}", 9000 + i % 50);
                        }
                        e
                    })
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let end = Instant::now() + Duration::from_secs(secs);
        let mut count = 0u64;
        for round in &mut rounds {
            if Instant::now() >= end {
                break;
            }
            let mut segment = SegmentBuilder::new(n, &tenant);
            segment.reserve(round.len(), round.iter().map(Entry::encoded_len).sum());
            for e in round.iter_mut() {
                e.seq = n;
                segment.append(e);
                n += 1;
            }
            db.store.append_segments(&[segment.finish()], None).await.unwrap();
            count += round.len() as u64;
        }
        direct.push((spread, count, count as f64 / started.elapsed().as_secs_f64()));
    }
    let base = rows[0].2;
    println!("\n## Durable appends per second, {} ({} s per row)\n", backend.as_str(), secs);
    println!("| writers | entries | entries/s | × baseline |\n|---|---|---|---|");
    for (label, total, rate) in &rows {
        println!("| {label} | {total} | {rate:.0} | {:.1} |", rate / base);
    }
    for (spread, count, rate) in direct {
        let keys = if spread { "1,000 patients, 50 actors" } else { "1 patient, 1 actor" };
        println!(
            "| 4,096-entry batches straight to the store, {keys} (storage bound) | {count} | {rate:.0} | {:.1} |",
            rate / base
        );
    }
}

/// Serves a generated log from memory, stored as the store stores it (segments of 4,096).
#[derive(Clone)]
struct MemLog {
    n: u64,
    segments: Arc<Vec<Segment>>,
    heads: Arc<Vec<SignedTreeHead>>,
}

impl AuditRepository for MemLog {
    async fn append_segments(
        &self,
        _: &[Segment],
        _: Option<&SignedTreeHead>,
    ) -> Result<bool, RepoError> {
        Err(RepoError::Backend("read-only".into()))
    }
    async fn audit_segments(&self, from: u64, span: u64) -> Result<Vec<Segment>, RepoError> {
        let start = self.segments.partition_point(|s| s.first_seq < from);
        Ok(self.segments[start..]
            .iter()
            .take_while(|s| s.first_seq < from + span)
            .cloned()
            .collect())
    }
    async fn audit_entries(&self, _: u64, _: u32) -> Result<Vec<(Entry, Hash)>, RepoError> {
        Ok(Vec::new())
    }
    async fn audit_size(&self) -> Result<u64, RepoError> {
        Ok(self.n)
    }
    async fn save_head(&self, _: &SignedTreeHead) -> Result<(), RepoError> {
        Ok(())
    }
    async fn heads(&self) -> Result<Vec<SignedTreeHead>, RepoError> {
        Ok(self.heads.to_vec())
    }
    async fn search_audit(
        &self,
        _: TenantId,
        _: &AuditFilter,
        _: u32,
    ) -> Result<Vec<Entry>, RepoError> {
        Ok(Vec::new())
    }
}

/// `n` entries in segments of 4,096, with the tree over them and one head at the end.
fn mem_log(n: u64) -> (MemLog, Tree) {
    let mut tree = Tree::new();
    let mut segments = Vec::new();
    let mut i = 0;
    while i < n {
        let rows: Vec<(Entry, Hash)> = (i..(i + 4096).min(n))
            .map(|k| {
                let e = entry(k, "t");
                let h = e.leaf_hash();
                tree.push(h);
                (e, h)
            })
            .collect();
        i += rows.len() as u64;
        segments.push(Segment::build(&rows));
    }
    let root = tree.root_at(n).unwrap();
    let head = signer().sign(0, n, 0, root);
    (MemLog { n, segments: Arc::new(segments), heads: Arc::new(vec![head]) }, tree)
}

async fn verification(sqlite_sizes: &[u64]) {
    println!("\n## Verification\n");
    println!("| what | entries | seconds | entries/s | × hashing alone |\n|---|---|---|---|---|");
    let key = signer().public_key().to_vec();
    let mut trees = Vec::new();
    for n in [1_000_000u64, 10_000_000] {
        let (mem, tree) = mem_log(n);
        // Baseline: the least any verifier does, one SHA-256 leaf hash of each stored entry,
        // on one core.
        let t = Instant::now();
        let mut x = 0u8;
        for s in mem.segments.iter() {
            for item in s.items().unwrap() {
                x ^= audit::leaf_hash(item)[0];
            }
        }
        std::hint::black_box(x);
        let hash_rate = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let v = audit::verify(&mem, &key, &[], |_, _| {}).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(v.entries, n);
        println!(
            "| hashing alone, one core (baseline) | {n} | {:.2} | {hash_rate:.0} | 1.00 |",
            n as f64 / hash_rate
        );
        println!(
            "| verify, segments from memory | {n} | {secs:.2} | {:.0} | {:.2} |",
            n as f64 / secs,
            (n as f64 / secs) / hash_rate
        );
        if sqlite_sizes.contains(&n) {
            // End to end from SQLite: the same entries stored, then verified.
            let db = fresh(Backend::Sqlite).await.unwrap();
            let mut i = 0;
            while i < n {
                let batch: Vec<(Entry, Hash)> = (i..(i + 4096).min(n))
                    .map(|k| {
                        let e = entry(k, "t");
                        let h = e.leaf_hash();
                        (e, h)
                    })
                    .collect();
                db.store.append_audit(&batch).await.unwrap();
                i += batch.len() as u64;
            }
            audit::sign_head_now(&db.store, &signer(), 0).await.unwrap();
            let t = Instant::now();
            let v = audit::verify(&db.store, &key, &[], |_, _| {}).await.unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(v.entries, n);
            println!(
                "| verify, segments read from SQLite | {n} | {secs:.2} | {:.0} | {:.2} |",
                n as f64 / secs,
                (n as f64 / secs) / hash_rate
            );
        }
        trees.push((n, tree));
    }

    println!("\n## Inclusion proofs in a tree of 10M entries\n");
    let (n, tree) = trees.pop().unwrap();
    let root = tree.root_at(n).unwrap();
    let t = Instant::now();
    let mut x = [0u8; 32];
    for k in 0..100_000u64 {
        x = audit::node_hash(&x, &root);
        std::hint::black_box(k);
    }
    let node_ns = t.elapsed().as_nanos() as f64 / 100_000.0;
    let mut idx = 0x2545_f491_4f6c_dd1du64;
    let t = Instant::now();
    let rounds = 100_000u64;
    let mut len = 0;
    for _ in 0..rounds {
        idx ^= idx << 13;
        idx ^= idx >> 7;
        idx ^= idx << 17;
        let p = tree.inclusion_proof(idx % n, n).unwrap();
        len += p.len();
    }
    let proof_us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    let i = 123_457;
    let p = tree.inclusion_proof(i, n).unwrap();
    assert!(audit::verify_inclusion(&tree.leaf(i).unwrap(), i, n, &p, &root));
    println!("| what | time | × one node hash |\n|---|---|---|");
    println!("| one node hash (baseline) | {node_ns:.0} ns | 1 |");
    println!(
        "| inclusion proof at 10M ({} hashes per proof) | {proof_us:.2} µs | {:.1} |",
        len as u64 / rounds,
        proof_us * 1000.0 / node_ns
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    appends(Backend::Sqlite, secs).await;
    if std::env::var("TELESAFE_TEST_PG_URL").is_ok() {
        appends(Backend::Postgres, secs).await;
    }
    match std::env::args().nth(2).as_deref() {
        Some("appends") => {}
        Some("verify-10m") => verification(&[1_000_000, 10_000_000]).await,
        _ => verification(&[1_000_000]).await,
    }
}
