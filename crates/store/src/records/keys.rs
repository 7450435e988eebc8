//! The key hierarchy's storage: tenant and patient keys (wrapped), data-key rotations,
//! crypto-shredding and its tombstones.

use telesafe_core::records::keys::{
    KeyRepository, KeyTombstone, StoredPatientKey, StoredTenantKey,
};
use telesafe_core::{PatientId, RepoError, TenantId, Timestamp};

use super::{corrupt, readings, version_u32};
use crate::Store;
use crate::tx::{Scope, on_tx, repo_err};

#[derive(sqlx::FromRow)]
struct TenantKeyRow {
    tenant_id: String,
    version: i64,
    root_version: i64,
    wrapped_kek: Vec<u8>,
    wrapped_index: Vec<u8>,
    wrapped_directory: Vec<u8>,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct PatientKeyRow {
    tenant_id: String,
    patient_id: String,
    version: i64,
    kek_version: i64,
    wrapped: Vec<u8>,
    created_at: i64,
}

impl KeyRepository for Store {
    async fn tenant_keys(&self, tenant: TenantId) -> Result<Vec<StoredTenantKey>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<TenantKeyRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT tenant_id, version, root_version, wrapped_kek, wrapped_index, \
                    wrapped_directory, created_at \
             FROM tenant_keys WHERE tenant_id = $1 ORDER BY version")
            .bind(tenant.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredTenantKey {
                    tenant: r.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
                    version: version_u32(r.version)?,
                    root_version: version_u32(r.root_version)?,
                    wrapped_kek: r.wrapped_kek,
                    wrapped_index: r.wrapped_index,
                    wrapped_directory: r.wrapped_directory,
                    created_at: Timestamp::from_unix_millis(r.created_at),
                })
            })
            .collect()
    }

    async fn insert_tenant_key(&self, k: &StoredTenantKey) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(k.tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO tenant_keys (tenant_id, version, root_version, wrapped_kek, \
                wrapped_index, wrapped_directory, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(k.tenant.to_string())
            .bind(i64::from(k.version))
            .bind(i64::from(k.root_version))
            .bind(&k.wrapped_kek)
            .bind(&k.wrapped_index)
            .bind(&k.wrapped_directory)
            .bind(k.created_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn patient_key(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> Result<Option<StoredPatientKey>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let row: Option<PatientKeyRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT tenant_id, patient_id, version, kek_version, wrapped, created_at \
             FROM patient_keys WHERE tenant_id = $1 AND patient_id = $2 \
             ORDER BY version DESC LIMIT 1")
            .bind(tenant.to_string())
            .bind(patient.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(|r| {
            Ok(StoredPatientKey {
                tenant: r.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
                patient: r.patient_id.parse().map_err(|_| corrupt("patient id"))?,
                version: version_u32(r.version)?,
                kek_version: version_u32(r.kek_version)?,
                wrapped: r.wrapped,
                created_at: Timestamp::from_unix_millis(r.created_at),
            })
        })
        .transpose()
    }

    async fn insert_patient_key(&self, k: &StoredPatientKey) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(k.tenant)).await?;
        // A tombstone wins over a late insert: an erased patient never gets a key again.
        let erased: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT destroyed_at FROM key_tombstones WHERE tenant_id = $1 AND patient_id = $2")
            .bind(k.tenant.to_string())
            .bind(k.patient.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        if erased.is_some() {
            return Err(RepoError::NotFound);
        }
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO patient_keys (tenant_id, patient_id, version, kek_version, wrapped, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(k.tenant.to_string())
            .bind(k.patient.to_string())
            .bind(i64::from(k.version))
            .bind(i64::from(k.kek_version))
            .bind(&k.wrapped)
            .bind(k.created_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn key_tombstone(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> Result<Option<Timestamp>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let at: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT destroyed_at FROM key_tombstones WHERE tenant_id = $1 AND patient_id = $2")
            .bind(tenant.to_string())
            .bind(patient.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(at.map(Timestamp::from_unix_millis))
    }

    async fn shred_patient(
        &self,
        tenant: TenantId,
        patient: PatientId,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        let (t, p) = (tenant.to_string(), patient.to_string());
        on_tx!(&mut tx, c => {
            sqlx::query("DELETE FROM patient_keys WHERE tenant_id = $1 AND patient_id = $2")
                .bind(&t).bind(&p).execute(&mut **c).await.map_err(repo_err)?;
            sqlx::query(
                "DELETE FROM fhir_index WHERE tenant_id = $1 AND resource_id IN \
                 (SELECT id FROM fhir_resources WHERE tenant_id = $1 AND patient_id = $2)")
                .bind(&t).bind(&p).execute(&mut **c).await.map_err(repo_err)?;
            // The ciphertexts cannot be opened any more; they go too, and every version
            // reads as deleted (410), so nothing of the patient is served or searched.
            sqlx::query(
                "UPDATE fhir_resources SET body = $3, deleted = 1 WHERE tenant_id = $1 AND patient_id = $2")
                .bind(&t).bind(&p).bind(Vec::<u8>::new()).execute(&mut **c).await.map_err(repo_err)?;
            sqlx::query(
                "INSERT INTO key_tombstones (tenant_id, patient_id, destroyed_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, patient_id) DO NOTHING")
                .bind(&t).bind(&p).bind(now.unix_millis()).execute(&mut **c).await.map(|_| ())
        })
        .map_err(repo_err)?;
        readings::erase_tx(&mut tx, tenant, patient).await?;
        tx.commit().await
    }

    async fn key_tombstones(&self) -> Result<Vec<KeyTombstone>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let rows: Vec<(String, String, i64)> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT tenant_id, patient_id, destroyed_at FROM key_tombstones ORDER BY destroyed_at")
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter()
            .map(|(t, p, at)| {
                Ok(KeyTombstone {
                    tenant: t.parse().map_err(|_| corrupt("tenant id"))?,
                    patient: p.parse().map_err(|_| corrupt("patient id"))?,
                    destroyed_at: Timestamp::from_unix_millis(at),
                })
            })
            .collect()
    }

    async fn all_tenant_keys(&self) -> Result<Vec<StoredTenantKey>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let rows: Vec<TenantKeyRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT tenant_id, version, root_version, wrapped_kek, wrapped_index, \
                    wrapped_directory, created_at \
             FROM tenant_keys ORDER BY tenant_id, version")
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(tenant_key_from).collect()
    }

    async fn rewrap_tenant_key(&self, k: &StoredTenantKey) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(k.tenant)).await?;
        let done = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE tenant_keys SET root_version = $1, wrapped_kek = $2, wrapped_index = $3, \
                wrapped_directory = $4 WHERE tenant_id = $5 AND version = $6")
            .bind(i64::from(k.root_version))
            .bind(&k.wrapped_kek)
            .bind(&k.wrapped_index)
            .bind(&k.wrapped_directory)
            .bind(k.tenant.to_string())
            .bind(i64::from(k.version))
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        if done != 1 {
            return Err(RepoError::NotFound);
        }
        tx.commit().await
    }

    async fn patient_keys_of(&self, tenant: TenantId) -> Result<Vec<StoredPatientKey>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<PatientKeyRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT tenant_id, patient_id, version, kek_version, wrapped, created_at \
             FROM patient_keys WHERE tenant_id = $1 ORDER BY patient_id, version")
            .bind(tenant.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(patient_key_from).collect()
    }

    async fn patient_key_version(
        &self,
        tenant: TenantId,
        patient: PatientId,
        version: u32,
    ) -> Result<Option<StoredPatientKey>, RepoError> {
        self.patient_key_row(tenant, patient, version).await
    }

    async fn delete_patient_key_version(
        &self,
        tenant: TenantId,
        patient: PatientId,
        version: u32,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM patient_keys WHERE tenant_id = $1 AND patient_id = $2 AND version = $3")
            .bind(tenant.to_string())
            .bind(patient.to_string())
            .bind(i64::from(version))
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn open_data_key_rotation(
        &self,
        tenant: TenantId,
        now: Timestamp,
    ) -> Result<Timestamp, RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        let open: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT started_at FROM data_key_rotations \
             WHERE tenant_id = $1 AND finished_at IS NULL ORDER BY started_at LIMIT 1")
            .bind(tenant.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        let started = match open {
            Some(at) => at,
            None => {
                on_tx!(&mut tx, c => sqlx::query(
                    "INSERT INTO data_key_rotations (tenant_id, started_at) VALUES ($1, $2)")
                    .bind(tenant.to_string())
                    .bind(now.unix_millis())
                    .execute(&mut **c).await.map(|_| ()))
                .map_err(repo_err)?;
                now.unix_millis()
            }
        };
        tx.commit().await?;
        Ok(Timestamp::from_unix_millis(started))
    }

    async fn finish_data_key_rotation(
        &self,
        tenant: TenantId,
        started: Timestamp,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE data_key_rotations SET finished_at = $1 WHERE tenant_id = $2 AND started_at = $3")
            .bind(now.unix_millis())
            .bind(tenant.to_string())
            .bind(started.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn rewrap_patient_key(&self, k: &StoredPatientKey) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(k.tenant)).await?;
        let done = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE patient_keys SET kek_version = $1, wrapped = $2 \
             WHERE tenant_id = $3 AND patient_id = $4 AND version = $5")
            .bind(i64::from(k.kek_version))
            .bind(&k.wrapped)
            .bind(k.tenant.to_string())
            .bind(k.patient.to_string())
            .bind(i64::from(k.version))
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        if done != 1 {
            return Err(RepoError::NotFound);
        }
        tx.commit().await
    }
}

impl Store {
    async fn patient_key_row(
        &self,
        tenant: TenantId,
        patient: PatientId,
        version: u32,
    ) -> Result<Option<StoredPatientKey>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let row: Option<PatientKeyRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT tenant_id, patient_id, version, kek_version, wrapped, created_at \
             FROM patient_keys WHERE tenant_id = $1 AND patient_id = $2 AND version = $3")
            .bind(tenant.to_string())
            .bind(patient.to_string())
            .bind(i64::from(version))
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(patient_key_from).transpose()
    }
}

fn tenant_key_from(r: TenantKeyRow) -> Result<StoredTenantKey, RepoError> {
    Ok(StoredTenantKey {
        tenant: r.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
        version: version_u32(r.version)?,
        root_version: version_u32(r.root_version)?,
        wrapped_kek: r.wrapped_kek,
        wrapped_index: r.wrapped_index,
        wrapped_directory: r.wrapped_directory,
        created_at: Timestamp::from_unix_millis(r.created_at),
    })
}

fn patient_key_from(r: PatientKeyRow) -> Result<StoredPatientKey, RepoError> {
    Ok(StoredPatientKey {
        tenant: r.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
        patient: r.patient_id.parse().map_err(|_| corrupt("patient id"))?,
        version: version_u32(r.version)?,
        kek_version: version_u32(r.kek_version)?,
        wrapped: r.wrapped,
        created_at: Timestamp::from_unix_millis(r.created_at),
    })
}
