//! Group commit of device batches.

use std::collections::HashMap;

use telesafe_core::TenantId;
use telesafe_core::devices::{DeviceRepository, FiledBatch};
use telesafe_store::{Backend, Store};

use crate::error::AppError;

/// Writes device batches with group commit: batches of concurrent requests and MQTT
/// messages reach storage together, one transaction per tenant per round, as the audit
/// log's entries do.
///
/// On SQLite, whose one write lock takes one transaction at a time, a single task writes
/// every round. On PostgreSQL, which commits concurrent transactions side by side, the
/// devices are shared out among [`PG_SHARDS`] tasks by a hash of their id, each writing
/// its own rounds, so that one round's round trips and commit no longer hold up the next.
/// A device always lands on the same task: its batches are still written one round after
/// another, and no two concurrent rounds touch the same device's rows. A request whose
/// devices land on different tasks is written in as many transactions; if one fails the
/// request fails, and the batches the others stored are answered as duplicates when the
/// devices resend them (exactly once still holds, all-or-nothing per request does not).
#[derive(Clone)]
pub struct DeviceWriter {
    shards: Vec<tokio::sync::mpsc::Sender<WriteJob>>,
}

impl std::fmt::Debug for DeviceWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceWriter").field("shards", &self.shards.len()).finish()
    }
}

type Answer = Result<Vec<bool>, telesafe_core::RepoError>;

struct WriteJob {
    batches: Vec<FiledBatch>,
    done: tokio::sync::oneshot::Sender<Answer>,
}

/// The most batches one transaction takes.
const GROUP_MAX: usize = 400;
/// Writer tasks on PostgreSQL.
const PG_SHARDS: usize = 4;

impl DeviceWriter {
    pub fn spawn(store: Store) -> Self {
        let shards = match store.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => PG_SHARDS,
        };
        Self { shards: (0..shards).map(|_| spawn_shard(store.clone())).collect() }
    }

    /// Stores `batches` (each `true` if stored now, `false` if a duplicate).
    pub async fn write(&self, batches: Vec<FiledBatch>) -> Result<Vec<bool>, AppError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let stopped = || AppError::Internal("the device writer stopped".into());
        // Each task's share, with where each batch's answer goes.
        let mut shares: Vec<(Vec<usize>, Vec<FiledBatch>)> =
            (0..self.shards.len()).map(|_| Default::default()).collect();
        let total = batches.len();
        for (i, b) in batches.into_iter().enumerate() {
            let share = &mut shares[spread(&b.batch.device_id, self.shards.len())];
            share.0.push(i);
            share.1.push(b);
        }
        // Every share is handed over before any answer is awaited, so they are written
        // side by side.
        let mut pending = Vec::new();
        for (shard, (places, batches)) in self.shards.iter().zip(shares) {
            if batches.is_empty() {
                continue;
            }
            let (done, answer) = tokio::sync::oneshot::channel();
            shard.send(WriteJob { batches, done }).await.map_err(|_| stopped())?;
            pending.push((places, answer));
        }
        let mut out = vec![false; total];
        for (places, answer) in pending {
            let stored = answer.await.map_err(|_| stopped())??;
            for (place, stored) in places.into_iter().zip(stored) {
                out[place] = stored;
            }
        }
        Ok(out)
    }
}

/// Which of `n` workers `key` (a device id or topic) always goes to: the same for the
/// same key within a process, so one device's work stays in order.
pub(crate) fn spread(key: &str, n: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % n as u64) as usize
}

/// One writer task: takes whatever jobs are waiting (up to [`GROUP_MAX`] batches) and
/// writes them as one round, one transaction per tenant.
fn spawn_shard(store: Store) -> tokio::sync::mpsc::Sender<WriteJob> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<WriteJob>(1024);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            let mut n = jobs[0].batches.len();
            while n < GROUP_MAX {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.batches.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            write_round(&store, jobs).await;
        }
    });
    tx
}

/// Writes one round's jobs, one transaction per tenant, and answers each job.
async fn write_round(store: &Store, jobs: Vec<WriteJob>) {
    let mut tenants: Vec<TenantId> = Vec::new();
    for j in &jobs {
        for b in &j.batches {
            if !tenants.contains(&b.batch.tenant) {
                tenants.push(b.batch.tenant);
            }
        }
    }
    let mut results: HashMap<TenantId, Result<std::vec::IntoIter<bool>, _>> = HashMap::new();
    let mut jobs_left = Vec::with_capacity(jobs.len());
    let mut by_tenant: HashMap<TenantId, Vec<FiledBatch>> = HashMap::new();
    for j in jobs {
        let tenants_of: Vec<TenantId> = j.batches.iter().map(|b| b.batch.tenant).collect();
        for b in j.batches {
            by_tenant.entry(b.batch.tenant).or_default().push(b);
        }
        jobs_left.push((tenants_of, j.done));
    }
    for t in tenants {
        let batches = by_tenant.remove(&t).unwrap_or_default();
        results.insert(t, store.record_batches(&batches).await.map(Vec::into_iter));
    }
    for (tenants_of, done) in jobs_left {
        let mut answer: Answer = Ok(Vec::with_capacity(tenants_of.len()));
        for t in tenants_of {
            match (results.get_mut(&t), &mut answer) {
                (Some(Ok(it)), Ok(v)) => v.push(it.next().unwrap_or(false)),
                (Some(Err(e)), _) => answer = Err(e.clone()),
                _ => {}
            }
        }
        let _ = done.send(answer);
    }
}
