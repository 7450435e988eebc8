//! The key hierarchy under every patient's data: root key (behind [`KeyProvider`]) →
//! per-tenant key-encryption key → per-patient data key, each stored wrapped by its parent.
//!
//! Unwrapped keys live only in [`KeyRing`]'s caches (bounded, evicted when idle), inside
//! `Zeroizing` buffers that are wiped when the last reference drops. Erasing a patient
//! (crypto-shredding) deletes their wrapped data key and records a tombstone; afterwards
//! nothing of theirs can be decrypted, and a restore applies the tombstones again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use telesafe_crypto::keys::{KeyProvider, SealingKey, SecretKey, unwrap_key, wrap_key};

use crate::clock::Timestamp;
use crate::ids::{PatientId, TenantId};
use crate::repo::RepoError;

/// A tenant's keys as stored: each wrapped under the root key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTenantKey {
    pub tenant: TenantId,
    /// The key-encryption key's version (1, then one more per tenant rotation).
    pub version: u32,
    /// The root key version that wrapped these.
    pub root_version: u32,
    pub wrapped_kek: Vec<u8>,
    /// The blind-index key (kept across KEK rotations, so indexes stay valid).
    pub wrapped_index: Vec<u8>,
    /// The key for the tenant's non-patient resources (Practitioner, Organization, ...).
    pub wrapped_directory: Vec<u8>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for StoredTenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTenantKey")
            .field("tenant", &self.tenant)
            .field("version", &self.version)
            .field("root_version", &self.root_version)
            .finish_non_exhaustive()
    }
}

/// A patient's data key as stored: wrapped under the tenant's KEK of `kek_version`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredPatientKey {
    pub tenant: TenantId,
    pub patient: PatientId,
    pub version: u32,
    pub kek_version: u32,
    pub wrapped: Vec<u8>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for StoredPatientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPatientKey")
            .field("tenant", &self.tenant)
            .field("patient", &self.patient)
            .field("version", &self.version)
            .field("kek_version", &self.kek_version)
            .finish_non_exhaustive()
    }
}

/// The record that a patient's data key was destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTombstone {
    pub tenant: TenantId,
    pub patient: PatientId,
    pub destroyed_at: Timestamp,
}

pub trait KeyRepository: Send + Sync {
    /// Every version of the tenant's keys, oldest first.
    fn tenant_keys(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<StoredTenantKey>, RepoError>> + Send;
    /// Stores a new version; `Conflict` if that version exists (another node made it).
    fn insert_tenant_key(
        &self,
        key: &StoredTenantKey,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// The patient's current data key, if one was made and not destroyed.
    fn patient_key(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> impl Future<Output = Result<Option<StoredPatientKey>, RepoError>> + Send;
    /// Stores a data key; `Conflict` if that version exists.
    fn insert_patient_key(
        &self,
        key: &StoredPatientKey,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// When the patient's key was destroyed, if it was.
    fn key_tombstone(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> impl Future<Output = Result<Option<Timestamp>, RepoError>> + Send;
    /// Destroys the patient's data keys, erases their search index entries and records
    /// the tombstone, in one transaction.
    fn shred_patient(
        &self,
        tenant: TenantId,
        patient: PatientId,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Every tombstone, for applying after a restore.
    fn key_tombstones(&self) -> impl Future<Output = Result<Vec<KeyTombstone>, RepoError>> + Send;
    /// Every tenant's key rows (for a root rotation).
    fn all_tenant_keys(
        &self,
    ) -> impl Future<Output = Result<Vec<StoredTenantKey>, RepoError>> + Send;
    /// Replaces a tenant key row's wrapped keys and root version (same tenant and version).
    fn rewrap_tenant_key(
        &self,
        key: &StoredTenantKey,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Every patient data key of the tenant (for a tenant rotation).
    fn patient_keys_of(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<StoredPatientKey>, RepoError>> + Send;
    /// Replaces a patient key's wrapping and KEK version (same tenant, patient, version).
    fn rewrap_patient_key(
        &self,
        key: &StoredPatientKey,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// One version of a patient's data key.
    fn patient_key_version(
        &self,
        tenant: TenantId,
        patient: PatientId,
        version: u32,
    ) -> impl Future<Output = Result<Option<StoredPatientKey>, RepoError>> + Send;
    /// Destroys one (superseded) version of a patient's data key.
    fn delete_patient_key_version(
        &self,
        tenant: TenantId,
        patient: PatientId,
        version: u32,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// The start of the tenant's unfinished data-key rotation, or a new one started `now`.
    fn open_data_key_rotation(
        &self,
        tenant: TenantId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Timestamp, RepoError>> + Send;
    /// Marks the rotation started at `started` finished.
    fn finish_data_key_rotation(
        &self,
        tenant: TenantId,
        started: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// The patient was erased: their data key no longer exists.
    #[error("the patient's data was erased")]
    Erased,
    /// A stored key did not unwrap (wrong root key, or the row was altered).
    #[error("a stored key could not be unwrapped: {0}")]
    Corrupt(&'static str),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Random(#[from] telesafe_crypto::RandomError),
}

/// A tenant's unwrapped keys.
pub struct TenantKeys {
    /// Key-encryption keys by version (index = version - 1 is not assumed; searched).
    keks: Vec<SealingKey>,
    index: SecretKey,
    directory: SealingKey,
    /// The directory key's material, for re-wrapping it in a rotation.
    directory_secret: SecretKey,
}

impl std::fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantKeys([redacted])")
    }
}

impl TenantKeys {
    fn kek(&self, version: u32) -> Option<&SealingKey> {
        self.keks.iter().find(|k| k.version() == version)
    }

    fn current_kek(&self) -> Option<&SealingKey> {
        self.keks.iter().max_by_key(|k| k.version())
    }

    /// The blind-index key (HMAC-SHA256) of this tenant.
    pub fn index_key(&self) -> &SecretKey {
        &self.index
    }

    /// The key sealing this tenant's resources that belong to no patient.
    pub fn directory_key(&self) -> &SealingKey {
        &self.directory
    }
}

fn tenant_aad(tenant: TenantId, version: u32, which: &str) -> Vec<u8> {
    format!("telesafe/tenant-key/{which}|{tenant}|{version}").into_bytes()
}

fn patient_aad(tenant: TenantId, patient: PatientId, version: u32) -> Vec<u8> {
    format!("telesafe/patient-dek|{tenant}|{patient}|{version}").into_bytes()
}

/// Unwrapped keys, fetched (or made) on first use and cached.
#[derive(Clone)]
pub struct KeyRing {
    provider: Arc<dyn KeyProvider>,
    tenants: moka::sync::Cache<TenantId, Arc<TenantKeys>>,
    patients: moka::sync::Cache<(TenantId, PatientId), Arc<SealingKey>>,
    /// Superseded data-key versions still needed to open older ciphertexts during a
    /// data-key rotation.
    older: moka::sync::Cache<(TenantId, PatientId, u32), Arc<SealingKey>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("provider", &self.provider)
            .field("cached_patient_keys", &self.patients.entry_count())
            .finish()
    }
}

/// How long an unwrapped key stays in memory without use, and at most in all (so that a
/// key erased on another node leaves this one within that time).
pub const KEY_IDLE: Duration = Duration::from_secs(5 * 60);
pub const KEY_LIFETIME: Duration = Duration::from_secs(15 * 60);

impl KeyRing {
    /// At most `capacity` patient keys are held unwrapped at once.
    pub fn new(provider: Arc<dyn KeyProvider>, capacity: u64) -> Self {
        Self::with_timeouts(provider, capacity, KEY_IDLE, KEY_LIFETIME)
    }

    pub fn with_timeouts(
        provider: Arc<dyn KeyProvider>,
        capacity: u64,
        idle: Duration,
        lifetime: Duration,
    ) -> Self {
        Self {
            provider,
            tenants: moka::sync::Cache::builder()
                .max_capacity(capacity.clamp(16, 10_000))
                .time_to_idle(idle)
                .time_to_live(lifetime)
                .build(),
            patients: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .time_to_live(lifetime)
                .build(),
            older: moka::sync::Cache::builder()
                .max_capacity(capacity.clamp(16, 10_000))
                .time_to_idle(idle)
                .time_to_live(lifetime)
                .build(),
        }
    }

    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    /// How many patient keys are held unwrapped now (for metrics and tests).
    pub fn cached_patient_keys(&self) -> u64 {
        self.patients.run_pending_tasks();
        self.patients.entry_count()
    }

    /// The tenant's keys, made on first use.
    pub async fn tenant<R: KeyRepository>(
        &self,
        repo: &R,
        tenant: TenantId,
        now: Timestamp,
    ) -> Result<Arc<TenantKeys>, KeyRingError> {
        if let Some(k) = self.tenants.get(&tenant) {
            return Ok(k);
        }
        let mut stored = repo.tenant_keys(tenant).await?;
        if stored.is_empty() {
            let fresh = self.make_tenant_key(tenant, now)?;
            match repo.insert_tenant_key(&fresh).await {
                Ok(()) | Err(RepoError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
            stored = repo.tenant_keys(tenant).await?;
        }
        let keys = Arc::new(self.unwrap_tenant(&stored)?);
        self.tenants.insert(tenant, keys.clone());
        Ok(keys)
    }

    fn make_tenant_key(
        &self,
        tenant: TenantId,
        now: Timestamp,
    ) -> Result<StoredTenantKey, KeyRingError> {
        let wrap = |key: &SecretKey, which: &str| {
            self.provider
                .wrap(key, &tenant_aad(tenant, 1, which))
                .map_err(|_| KeyRingError::Corrupt("the root key could not wrap"))
        };
        Ok(StoredTenantKey {
            tenant,
            version: 1,
            root_version: self.provider.current_version(),
            wrapped_kek: wrap(&SecretKey::generate()?, "kek")?,
            wrapped_index: wrap(&SecretKey::generate()?, "index")?,
            wrapped_directory: wrap(&SecretKey::generate()?, "directory")?,
            created_at: now,
        })
    }

    fn unwrap_tenant(&self, stored: &[StoredTenantKey]) -> Result<TenantKeys, KeyRingError> {
        let unwrap = |k: &StoredTenantKey, wrapped: &[u8], which: &str| {
            self.provider
                .unwrap(wrapped, &tenant_aad(k.tenant, k.version, which))
                .map_err(|_| KeyRingError::Corrupt("a tenant key did not unwrap"))
        };
        let first = stored.first().ok_or(KeyRingError::Corrupt("no tenant key"))?;
        let mut keks = Vec::with_capacity(stored.len());
        for k in stored {
            keks.push(SealingKey::new(unwrap(k, &k.wrapped_kek, "kek")?, k.version));
        }
        // The index and directory keys were made with version 1 and are re-wrapped, never
        // replaced, by rotations; the newest wrap is authoritative.
        let newest = stored.last().unwrap_or(first);
        let directory = unwrap(newest, &newest.wrapped_directory, "directory")?;
        Ok(TenantKeys {
            keks,
            index: unwrap(newest, &newest.wrapped_index, "index")?,
            directory: SealingKey::new(directory.clone(), 1),
            directory_secret: directory,
        })
    }

    /// The patient's data key. Made on first use when `create` is set; `Erased` once the
    /// patient was shredded.
    pub async fn patient<R: KeyRepository>(
        &self,
        repo: &R,
        tenant: TenantId,
        patient: PatientId,
        now: Timestamp,
        create: bool,
    ) -> Result<Arc<SealingKey>, KeyRingError> {
        if let Some(k) = self.patients.get(&(tenant, patient)) {
            // A writer always seals under the newest key in storage (a data-key rotation
            // may have made one since this node cached it); readers use the cache.
            if !create {
                return Ok(k);
            }
            match repo.patient_key(tenant, patient).await? {
                Some(s) if s.version == k.version() => return Ok(k),
                _ => self.patients.invalidate(&(tenant, patient)),
            }
        }
        let stored = match repo.patient_key(tenant, patient).await? {
            Some(s) => s,
            None => {
                if repo.key_tombstone(tenant, patient).await?.is_some() {
                    return Err(KeyRingError::Erased);
                }
                if !create {
                    return Err(KeyRingError::Repo(RepoError::NotFound));
                }
                // A new key is wrapped under the newest KEK in storage, not a cached one
                // that a rotation may have superseded.
                self.tenants.invalidate(&tenant);
                let tk = self.tenant(repo, tenant, now).await?;
                let kek = tk.current_kek().ok_or(KeyRingError::Corrupt("no tenant KEK"))?;
                let fresh = StoredPatientKey {
                    tenant,
                    patient,
                    version: 1,
                    kek_version: kek.version(),
                    wrapped: wrap_key(
                        kek,
                        &SecretKey::generate()?,
                        &patient_aad(tenant, patient, 1),
                    )
                    .map_err(|_| KeyRingError::Corrupt("the tenant KEK could not wrap"))?,
                    created_at: now,
                };
                match repo.insert_patient_key(&fresh).await {
                    Ok(()) | Err(RepoError::Conflict) => {}
                    Err(e) => return Err(e.into()),
                }
                repo.patient_key(tenant, patient).await?.ok_or(KeyRingError::Erased)?
            }
        };
        let key = self.unwrap_patient(repo, &stored, now).await?;
        self.patients.insert((tenant, patient), key.clone());
        Ok(key)
    }

    /// The patient's data key of `version` (from a ciphertext's header): the current one,
    /// or a superseded one still in storage during a data-key rotation.
    pub async fn patient_at<R: KeyRepository>(
        &self,
        repo: &R,
        tenant: TenantId,
        patient: PatientId,
        version: u32,
        now: Timestamp,
    ) -> Result<Arc<SealingKey>, KeyRingError> {
        let current = self.patient(repo, tenant, patient, now, false).await?;
        if current.version() == version {
            return Ok(current);
        }
        if let Some(k) = self.older.get(&(tenant, patient, version)) {
            return Ok(k);
        }
        let Some(stored) = repo.patient_key_version(tenant, patient, version).await? else {
            // Perhaps this node's current key is stale: look once more without the cache.
            self.patients.invalidate(&(tenant, patient));
            let fresh = self.patient(repo, tenant, patient, now, false).await?;
            return if fresh.version() == version {
                Ok(fresh)
            } else {
                Err(KeyRingError::Corrupt("the data key version of a ciphertext is gone"))
            };
        };
        let key = self.unwrap_patient(repo, &stored, now).await?;
        self.older.insert((tenant, patient, version), key.clone());
        Ok(key)
    }

    async fn unwrap_patient<R: KeyRepository>(
        &self,
        repo: &R,
        stored: &StoredPatientKey,
        now: Timestamp,
    ) -> Result<Arc<SealingKey>, KeyRingError> {
        let mut tk = self.tenant(repo, stored.tenant, now).await?;
        if tk.kek(stored.kek_version).is_none() {
            // Rotated since this node cached the tenant's keys.
            self.tenants.invalidate(&stored.tenant);
            tk = self.tenant(repo, stored.tenant, now).await?;
        }
        let kek = tk.kek(stored.kek_version).ok_or(KeyRingError::Corrupt("KEK version missing"))?;
        let aad = patient_aad(stored.tenant, stored.patient, stored.version);
        let key = unwrap_key(kek, &stored.wrapped, &aad)
            .map_err(|_| KeyRingError::Corrupt("a patient key did not unwrap"))?;
        Ok(Arc::new(SealingKey::new(key, stored.version)))
    }

    /// Makes a new data key version for the patient (wrapped under the newest KEK) and
    /// returns it; the older versions stay until their ciphertexts are re-sealed.
    pub async fn new_data_key<R: KeyRepository>(
        &self,
        repo: &R,
        tenant: TenantId,
        patient: PatientId,
        now: Timestamp,
    ) -> Result<Arc<SealingKey>, KeyRingError> {
        let current = repo.patient_key(tenant, patient).await?.ok_or(KeyRingError::Erased)?;
        self.tenants.invalidate(&tenant);
        let tk = self.tenant(repo, tenant, now).await?;
        let kek = tk.current_kek().ok_or(KeyRingError::Corrupt("no tenant KEK"))?;
        let version = current.version + 1;
        let fresh = StoredPatientKey {
            tenant,
            patient,
            version,
            kek_version: kek.version(),
            wrapped: wrap_key(kek, &SecretKey::generate()?, &patient_aad(tenant, patient, version))
                .map_err(|_| KeyRingError::Corrupt("the tenant KEK could not wrap"))?,
            created_at: now,
        };
        repo.insert_patient_key(&fresh).await?;
        self.patients.invalidate(&(tenant, patient));
        self.patient(repo, tenant, patient, now, false).await
    }

    /// Forgets a superseded key version (after it was destroyed in storage).
    pub fn forget_version(&self, tenant: TenantId, patient: PatientId, version: u32) {
        self.older.invalidate(&(tenant, patient, version));
    }

    /// Erases the patient: destroys their data key (here and in storage) and records the
    /// tombstone.
    pub async fn shred<R: KeyRepository>(
        &self,
        repo: &R,
        tenant: TenantId,
        patient: PatientId,
        now: Timestamp,
    ) -> Result<(), KeyRingError> {
        repo.shred_patient(tenant, patient, now).await?;
        self.patients.invalidate(&(tenant, patient));
        Ok(())
    }

    /// Re-wraps every tenant key row that is not yet under the provider's current root key
    /// version. Resumable: rows already done are skipped. Returns how many rows changed.
    pub async fn rewrap_under_current_root<R: KeyRepository>(
        &self,
        repo: &R,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<usize, KeyRingError> {
        let current = self.provider.current_version();
        let pending: Vec<StoredTenantKey> = repo
            .all_tenant_keys()
            .await?
            .into_iter()
            .filter(|k| k.root_version != current)
            .collect();
        let total = pending.len();
        for (i, k) in pending.into_iter().enumerate() {
            let rewrap = |wrapped: &[u8], which: &str| -> Result<Vec<u8>, KeyRingError> {
                let aad = tenant_aad(k.tenant, k.version, which);
                let key = self
                    .provider
                    .unwrap(wrapped, &aad)
                    .map_err(|_| KeyRingError::Corrupt("a tenant key did not unwrap"))?;
                self.provider
                    .wrap(&key, &aad)
                    .map_err(|_| KeyRingError::Corrupt("the root key could not wrap"))
            };
            let updated = StoredTenantKey {
                root_version: current,
                wrapped_kek: rewrap(&k.wrapped_kek, "kek")?,
                wrapped_index: rewrap(&k.wrapped_index, "index")?,
                wrapped_directory: rewrap(&k.wrapped_directory, "directory")?,
                ..k.clone()
            };
            repo.rewrap_tenant_key(&updated).await?;
            self.tenants.invalidate(&k.tenant);
            progress(i + 1, total);
        }
        Ok(total)
    }

    /// Rotates the tenant's key-encryption key: a new KEK version, then every patient data
    /// key re-wrapped under it. Resumable: when patient keys are still under an older
    /// version, it finishes those instead of making yet another KEK. Returns the KEK
    /// version in force and how many patient keys were re-wrapped.
    pub async fn rotate_tenant<R: KeyRepository>(
        &self,
        repo: &R,
        tenant: TenantId,
        now: Timestamp,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(u32, usize), KeyRingError> {
        self.tenants.invalidate(&tenant);
        let keys = self.tenant(repo, tenant, now).await?;
        let newest = keys.current_kek().map(SealingKey::version).unwrap_or(1);
        let unfinished =
            repo.patient_keys_of(tenant).await?.iter().any(|p| p.kek_version != newest);
        if !unfinished {
            let version = newest + 1;
            let wrap = |key: &SecretKey, which: &str| {
                self.provider
                    .wrap(key, &tenant_aad(tenant, version, which))
                    .map_err(|_| KeyRingError::Corrupt("the root key could not wrap"))
            };
            let fresh = StoredTenantKey {
                tenant,
                version,
                root_version: self.provider.current_version(),
                wrapped_kek: wrap(&SecretKey::generate()?, "kek")?,
                wrapped_index: wrap(&keys.index, "index")?,
                wrapped_directory: wrap(&keys.directory_secret, "directory")?,
                created_at: now,
            };
            repo.insert_tenant_key(&fresh).await?;
            self.tenants.invalidate(&tenant);
        }
        let keys = self.tenant(repo, tenant, now).await?;
        let target = keys.current_kek().ok_or(KeyRingError::Corrupt("no tenant KEK"))?;
        let pending: Vec<StoredPatientKey> = repo
            .patient_keys_of(tenant)
            .await?
            .into_iter()
            .filter(|p| p.kek_version != target.version())
            .collect();
        let total = pending.len();
        for (i, p) in pending.into_iter().enumerate() {
            let aad = patient_aad(tenant, p.patient, p.version);
            let old =
                keys.kek(p.kek_version).ok_or(KeyRingError::Corrupt("KEK version missing"))?;
            let key = unwrap_key(old, &p.wrapped, &aad)
                .map_err(|_| KeyRingError::Corrupt("a patient key did not unwrap"))?;
            let wrapped = wrap_key(target, &key, &aad)
                .map_err(|_| KeyRingError::Corrupt("the tenant KEK could not wrap"))?;
            repo.rewrap_patient_key(&StoredPatientKey {
                kek_version: target.version(),
                wrapped,
                ..p
            })
            .await?;
            progress(i + 1, total);
        }
        Ok((target.version(), total))
    }

    /// Keyed hash of a normalised search value: equal inputs give equal outputs under one
    /// tenant's index key, and nothing about the input can be read from it.
    pub fn blind(keys: &TenantKeys, param: &str, normalised: &str) -> String {
        let mut msg = Vec::with_capacity(param.len() + 1 + normalised.len());
        msg.extend_from_slice(param.as_bytes());
        msg.push(0);
        msg.extend_from_slice(normalised.as_bytes());
        // 128 bits is ample for exact matching and halves the index size.
        hex::encode(&keys.index.mac(&msg)[..16])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use telesafe_crypto::keys::LocalKeyProvider;

    #[test]
    fn no_key_material_in_debug_output() {
        let secret = SecretKey::from_bytes(&[0xAB; 32]).unwrap();
        let keys = TenantKeys {
            keks: vec![SealingKey::new(secret.clone(), 1)],
            index: secret.clone(),
            directory: SealingKey::new(secret.clone(), 1),
            directory_secret: secret.clone(),
        };
        let ring = KeyRing::new(Arc::new(LocalKeyProvider::new(&secret, 1)), 10);
        let tenant = TenantId::new_v7();
        let stored = StoredPatientKey {
            tenant,
            patient: PatientId::new_v7(),
            version: 1,
            kek_version: 1,
            wrapped: vec![0xCD; 60],
            created_at: Timestamp::from_unix_millis(0),
        };
        let tk = StoredTenantKey {
            tenant,
            version: 1,
            root_version: 1,
            wrapped_kek: vec![0xCD; 60],
            wrapped_index: vec![0xCD; 60],
            wrapped_directory: vec![0xCD; 60],
            created_at: Timestamp::from_unix_millis(0),
        };
        for shown in [
            format!("{keys:?}"),
            format!("{ring:?}"),
            format!("{stored:?}"),
            format!("{tk:?}"),
            format!("{secret:?}"),
        ] {
            // The bytes as `Debug` of a slice or as hex would print them.
            for needle in ["171, 171", "abab", "ABAB", "205, 205", "cdcd", "CDCD"] {
                assert!(!shown.contains(needle), "{shown}");
            }
        }
    }
}
