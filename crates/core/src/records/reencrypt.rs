//! Re-encrypting a tenant's record under fresh patient data keys (a data-key rotation).
//!
//! For each patient: a new data key version, every stored version of every resource
//! re-sealed under it (opened with the key its header names), then the superseded keys
//! destroyed. It runs beside live servers: they read any version through the header's key
//! version, and writers always seal under the newest key. It resumes: the rotation's start
//! time is stored, and a patient whose only data key was made after it is done.

use std::collections::BTreeMap;

use telesafe_crypto::keys::sealed_key_version;

use super::keys::{KeyRepository, KeyRing, KeyRingError};
use super::{ResourceRepository, open_resource, seal_resource};
use crate::clock::Timestamp;
use crate::ids::{PatientId, TenantId};

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reencrypted {
    pub patients: usize,
    pub resources: usize,
    /// Whether this run continued one that had been interrupted.
    pub resumed: bool,
}

/// Rotates every patient data key of `tenant`, reporting `(done, total)` patients.
pub async fn reencrypt_tenant<R: KeyRepository + ResourceRepository>(
    ring: &KeyRing,
    repo: &R,
    tenant: TenantId,
    now: Timestamp,
    mut progress: impl FnMut(usize, usize),
) -> Result<Reencrypted, KeyRingError> {
    let started = repo.open_data_key_rotation(tenant, now).await?;
    let mut by_patient: BTreeMap<PatientId, Vec<(u32, Timestamp)>> = BTreeMap::new();
    for k in repo.patient_keys_of(tenant).await? {
        by_patient.entry(k.patient).or_default().push((k.version, k.created_at));
    }
    let total = by_patient.len();
    let mut out = Reencrypted { resumed: started < now, ..Default::default() };
    for (i, (patient, versions)) in by_patient.into_iter().enumerate() {
        let newest = versions.iter().map(|v| v.0).max().unwrap_or(1);
        let made_now = versions.iter().any(|(v, at)| *v == newest && *at >= started);
        let target = if made_now {
            // Made by this rotation (this run or an interrupted one): finish with it.
            ring.patient_at(repo, tenant, patient, newest, now).await?
        } else {
            ring.new_data_key(repo, tenant, patient, now).await?
        };
        // Writers seal under the newest key; a second pass catches any that raced us.
        for _ in 0..3 {
            let mut moved = 0;
            for mut row in repo.patient_versions(tenant, patient).await? {
                let Some(v) = sealed_key_version(&row.body) else { continue };
                if v == target.version() {
                    continue;
                }
                let old = ring.patient_at(repo, tenant, patient, v, now).await?;
                let plain = open_resource(&old, &row)
                    .map_err(|_| KeyRingError::Corrupt("a stored resource did not open"))?;
                row.body = seal_resource(&target, &row, &plain)
                    .map_err(|_| KeyRingError::Corrupt("a resource could not be sealed"))?;
                repo.reseal(&row).await?;
                moved += 1;
            }
            out.resources += moved;
            if moved == 0 {
                break;
            }
        }
        let still_old = repo
            .patient_versions(tenant, patient)
            .await?
            .iter()
            .any(|r| sealed_key_version(&r.body).is_some_and(|v| v != target.version()));
        if !still_old {
            for (v, _) in versions.iter().filter(|(v, _)| *v != target.version()) {
                repo.delete_patient_key_version(tenant, patient, *v).await?;
                ring.forget_version(tenant, patient, *v);
            }
        }
        out.patients += 1;
        progress(i + 1, total);
    }
    repo.finish_data_key_rotation(tenant, started, now).await?;
    Ok(out)
}
