//! Group commit of device batches.

use std::collections::HashMap;

use telesafe_core::TenantId;
use telesafe_core::devices::{DeviceRepository, FiledBatch};

use crate::error::AppError;

/// Writes device batches with group commit: batches of concurrent requests and MQTT
/// messages reach storage together, one transaction per tenant per round, as the audit
/// log's entries do.
#[derive(Clone)]
pub struct DeviceWriter {
    tx: tokio::sync::mpsc::Sender<WriteJob>,
}

impl std::fmt::Debug for DeviceWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceWriter").finish_non_exhaustive()
    }
}

struct WriteJob {
    batches: Vec<FiledBatch>,
    done: tokio::sync::oneshot::Sender<Result<Vec<bool>, telesafe_core::RepoError>>,
}

/// The most batches one transaction takes.
const GROUP_MAX: usize = 400;

impl DeviceWriter {
    pub fn spawn(store: telesafe_store::Store) -> Self {
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
                // One transaction per tenant in this round.
                let mut tenants: Vec<TenantId> = Vec::new();
                for j in &jobs {
                    for b in &j.batches {
                        if !tenants.contains(&b.batch.tenant) {
                            tenants.push(b.batch.tenant);
                        }
                    }
                }
                let mut results: HashMap<
                    TenantId,
                    Result<std::vec::IntoIter<bool>, telesafe_core::RepoError>,
                > = HashMap::new();
                let mut jobs_left = Vec::with_capacity(jobs.len());
                let mut by_tenant: HashMap<TenantId, Vec<FiledBatch>> = HashMap::new();
                for j in jobs {
                    let tenants_of: Vec<TenantId> =
                        j.batches.iter().map(|b| b.batch.tenant).collect();
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
                    let mut answer = Ok(Vec::with_capacity(tenants_of.len()));
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
        });
        Self { tx }
    }

    /// Stores `batches` (each `true` if stored now, `false` if a duplicate).
    pub async fn write(&self, batches: Vec<FiledBatch>) -> Result<Vec<bool>, AppError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(WriteJob { batches, done })
            .await
            .map_err(|_| AppError::Internal("the device writer stopped".into()))?;
        let result =
            answer.await.map_err(|_| AppError::Internal("the device writer stopped".into()))?;
        Ok(result?)
    }
}
