//! Device models, enrolments, devices and telemetry batches.

use telesafe_core::devices::{
    Device, DeviceModel, DeviceRepository, Enrollment, ModelPolicy, StoredBatch,
};
use telesafe_core::{RepoError, TenantId, Timestamp};
use telesafe_crypto::TokenHash;

use crate::Store;
use crate::tx::{Scope, on_tx, repo_err};

fn corrupt(what: &str) -> RepoError {
    RepoError::Backend(format!("stored {what} failed to parse"))
}

fn seq_u64(v: i64) -> Result<u64, RepoError> {
    u64::try_from(v).map_err(|_| corrupt("sequence number"))
}

fn seq_i64(v: u64) -> Result<i64, RepoError> {
    i64::try_from(v).map_err(|_| RepoError::Backend("sequence number out of range".into()))
}

#[derive(sqlx::FromRow)]
struct ModelRow {
    id: String,
    tenant_id: String,
    manufacturer: String,
    model: String,
    measures: String,
    min_firmware: String,
    vulnerable: String,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct EnrollmentRow {
    code_hash: String,
    tenant_id: String,
    patient_id: String,
    model_id: String,
    created_at: i64,
    expires_at: i64,
}

#[derive(sqlx::FromRow)]
struct DeviceRow {
    id: String,
    tenant_id: String,
    patient_id: String,
    model_id: String,
    public_key: Vec<u8>,
    serial: String,
    firmware: String,
    revoked_at: Option<i64>,
    last_seq: i64,
    enrolled_at: i64,
}

#[derive(sqlx::FromRow)]
struct BatchRow {
    seq: i64,
    received_at: i64,
    gap_from: Option<i64>,
    quarantine: Option<String>,
    body: Vec<u8>,
}

impl DeviceRepository for Store {
    async fn create_model(&self, m: &DeviceModel) -> Result<(), RepoError> {
        let measures =
            serde_json::to_string(&m.policy.measures).map_err(|_| corrupt("measures"))?;
        let vulnerable =
            serde_json::to_string(&m.policy.vulnerable).map_err(|_| corrupt("advisories"))?;
        let mut tx = self.begin_write(Scope::Tenant(m.tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO device_models (id, tenant_id, manufacturer, model, measures, min_firmware, \
                vulnerable, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&m.id).bind(m.tenant.to_string()).bind(&m.manufacturer).bind(&m.model)
            .bind(&measures).bind(&m.policy.min_firmware).bind(&vulnerable)
            .bind(m.created_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn model(&self, tenant: TenantId, id: &str) -> Result<Option<DeviceModel>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let row: Option<ModelRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, tenant_id, manufacturer, model, measures, min_firmware, vulnerable, created_at \
             FROM device_models WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string()).bind(id)
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(|r| {
            Ok(DeviceModel {
                id: r.id,
                tenant: r.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
                manufacturer: r.manufacturer,
                model: r.model,
                policy: ModelPolicy {
                    measures: serde_json::from_str(&r.measures).map_err(|_| corrupt("measures"))?,
                    min_firmware: r.min_firmware,
                    vulnerable: serde_json::from_str(&r.vulnerable)
                        .map_err(|_| corrupt("advisories"))?,
                },
                created_at: Timestamp::from_unix_millis(r.created_at),
            })
        })
        .transpose()
    }

    async fn create_enrollment(&self, e: &Enrollment) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(e.tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO device_enrollments (code_hash, tenant_id, patient_id, model_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(e.code_hash.as_str()).bind(e.tenant.to_string()).bind(e.patient.to_string())
            .bind(&e.model_id).bind(e.created_at.unix_millis()).bind(e.expires_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn redeem_enrollment(
        &self,
        code: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<Enrollment>, RepoError> {
        // The code is all a device has: looked up across tenants, then used up atomically.
        let mut tx = self.begin_write(Scope::Platform).await?;
        let used = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE device_enrollments SET used_at = $1 \
             WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1")
            .bind(now.unix_millis()).bind(code.as_str())
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        if used != 1 {
            tx.commit().await?;
            return Ok(None);
        }
        let row: EnrollmentRow = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT code_hash, tenant_id, patient_id, model_id, created_at, expires_at \
             FROM device_enrollments WHERE code_hash = $1")
            .bind(code.as_str())
            .fetch_one(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(Some(Enrollment {
            code_hash: TokenHash::from_stored(row.code_hash),
            tenant: row.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
            patient: row.patient_id.parse().map_err(|_| corrupt("patient id"))?,
            model_id: row.model_id,
            created_at: Timestamp::from_unix_millis(row.created_at),
            expires_at: Timestamp::from_unix_millis(row.expires_at),
        }))
    }

    async fn create_device(&self, d: &Device) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(d.tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO devices (id, tenant_id, patient_id, model_id, public_key, serial, firmware, \
                revoked_at, last_seq, enrolled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9)")
            .bind(&d.id).bind(d.tenant.to_string()).bind(d.patient.to_string()).bind(&d.model_id)
            .bind(&d.public_key).bind(&d.serial).bind(&d.firmware)
            .bind(seq_i64(d.last_seq)?).bind(d.enrolled_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn device(&self, id: &str) -> Result<Option<Device>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let row: Option<DeviceRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, tenant_id, patient_id, model_id, public_key, serial, firmware, revoked_at, \
                last_seq, enrolled_at FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(|r| {
            Ok(Device {
                id: r.id,
                tenant: r.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
                patient: r.patient_id.parse().map_err(|_| corrupt("patient id"))?,
                model_id: r.model_id,
                public_key: r.public_key,
                serial: r.serial,
                firmware: r.firmware,
                revoked: r.revoked_at.is_some(),
                last_seq: seq_u64(r.last_seq)?,
                enrolled_at: Timestamp::from_unix_millis(r.enrolled_at),
            })
        })
        .transpose()
    }

    async fn record_batch(&self, b: &StoredBatch) -> Result<(), RepoError> {
        let seq = seq_i64(b.seq)?;
        let mut tx = self.begin_write(Scope::Tenant(b.tenant)).await?;
        let raised = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE devices SET last_seq = $1 WHERE tenant_id = $2 AND id = $3 AND last_seq < $1")
            .bind(seq).bind(b.tenant.to_string()).bind(&b.device_id)
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        if raised != 1 {
            return Err(RepoError::Conflict);
        }
        let gap = b.gap_from.map(seq_i64).transpose()?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO device_batches (tenant_id, device_id, seq, received_at, gap_from, quarantine, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(b.tenant.to_string()).bind(&b.device_id).bind(seq).bind(b.received_at.unix_millis())
            .bind(gap).bind(&b.quarantine).bind(&b.body)
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn quarantined_batches(
        &self,
        tenant: TenantId,
        device: &str,
    ) -> Result<Vec<StoredBatch>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<BatchRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT seq, received_at, gap_from, quarantine, body FROM device_batches \
             WHERE tenant_id = $1 AND device_id = $2 AND quarantine IS NOT NULL AND released_at IS NULL \
             ORDER BY seq")
            .bind(tenant.to_string()).bind(device)
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredBatch {
                    tenant,
                    device_id: device.to_owned(),
                    seq: seq_u64(r.seq)?,
                    received_at: Timestamp::from_unix_millis(r.received_at),
                    gap_from: r.gap_from.map(seq_u64).transpose()?,
                    quarantine: r.quarantine,
                    body: r.body,
                })
            })
            .collect()
    }

    async fn release_batch(
        &self,
        tenant: TenantId,
        device: &str,
        seq: u64,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE device_batches SET released_at = $1 \
             WHERE tenant_id = $2 AND device_id = $3 AND seq = $4 AND released_at IS NULL")
            .bind(now.unix_millis()).bind(tenant.to_string()).bind(device).bind(seq_i64(seq)?)
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn revoke_device(
        &self,
        tenant: TenantId,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE devices SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(now.unix_millis()).bind(tenant.to_string()).bind(id)
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }
}
