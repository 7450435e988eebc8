//! Device models, enrolments, devices and telemetry batches.

use telesafe_core::devices::{
    ClinicalAlert, Device, DeviceModel, DeviceRepository, DeviceSummary, Enrollment, FiledBatch,
    ModelPolicy, Release, StoredBatch,
};
use telesafe_core::{PatientId, RepoError, TenantId, Timestamp};
use telesafe_crypto::TokenHash;

use crate::Store;
use sqlx::AssertSqlSafe;

use crate::records::insert_readings_tx;
use crate::tx::placeholders;
use crate::tx::{Scope, on_tx, repo_err};

fn corrupt(what: &str) -> RepoError {
    RepoError::Backend(format!("stored {what} failed to parse"))
}

fn seq_u64(v: i64) -> Result<u64, RepoError> {
    u64::try_from(v).map_err(|_| corrupt("sequence number"))
}

pub(crate) fn seq_i64(v: u64) -> Result<i64, RepoError> {
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

impl ModelRow {
    fn into_model(self) -> Result<DeviceModel, RepoError> {
        Ok(DeviceModel {
            id: self.id,
            tenant: self.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
            manufacturer: self.manufacturer,
            model: self.model,
            policy: ModelPolicy {
                measures: serde_json::from_str(&self.measures).map_err(|_| corrupt("measures"))?,
                min_firmware: self.min_firmware,
                vulnerable: serde_json::from_str(&self.vulnerable)
                    .map_err(|_| corrupt("advisories"))?,
            },
            created_at: Timestamp::from_unix_millis(self.created_at),
        })
    }
}

impl DeviceRow {
    fn into_device(self) -> Result<Device, RepoError> {
        Ok(Device {
            id: self.id,
            tenant: self.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
            patient: self.patient_id.parse().map_err(|_| corrupt("patient id"))?,
            model_id: self.model_id,
            public_key: self.public_key,
            serial: self.serial,
            firmware: self.firmware,
            revoked: self.revoked_at.is_some(),
            last_seq: seq_u64(self.last_seq)?,
            enrolled_at: Timestamp::from_unix_millis(self.enrolled_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    device: DeviceRow,
    key_rotated_at: Option<i64>,
    quarantined: i64,
    quarantine_reason: Option<String>,
    last_received: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct AlertRow {
    id: String,
    patient_id: String,
    observation_id: String,
    created_at: i64,
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
        row.map(ModelRow::into_model).transpose()
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
        row.map(DeviceRow::into_device).transpose()
    }

    async fn record_batches(&self, batches: &[FiledBatch]) -> Result<Vec<bool>, RepoError> {
        let Some(first) = batches.first() else { return Ok(Vec::new()) };
        // Every batch of one call belongs to one tenant (the writer groups by tenant).
        let tenant = first.batch.tenant;
        if batches.iter().any(|f| f.batch.tenant != tenant) {
            return Err(RepoError::Backend("batches of several tenants in one write".into()));
        }
        let t = tenant.to_string();
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        // The primary key (device, seq) makes it exactly once: a batch whose number is
        // stored already (or earlier in this call) inserts nothing, and nothing else of it
        // is written. Multi-row statements: a call carries hundreds of batches.
        let mut inserted: std::collections::HashSet<(String, i64)> = Default::default();
        for chunk in batches.chunks(500) {
            let sql = format!(
                "INSERT INTO device_batches (tenant_id, device_id, seq, received_at, gap_from, \
                 quarantine, body) VALUES {} \
                 ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq",
                placeholders(&tx, chunk.len(), 7, None)
            );
            let mut binds = Vec::with_capacity(chunk.len());
            for f in chunk {
                binds.push((seq_i64(f.batch.seq)?, f.batch.gap_from.map(seq_i64).transpose()?));
            }
            let rows: Vec<(String, i64)> = on_tx!(&mut tx, c => {
                let mut q = sqlx::query_as(AssertSqlSafe(sql.clone()));
                for (f, (seq, gap)) in chunk.iter().zip(&binds) {
                    let b = &f.batch;
                    q = q.bind(&t).bind(&b.device_id).bind(*seq).bind(b.received_at.unix_millis())
                        .bind(*gap).bind(&b.quarantine).bind(&b.body);
                }
                q.fetch_all(&mut **c).await
            })
            .map_err(repo_err)?;
            inserted.extend(rows);
        }
        // Which items stored: the first of each inserted (device, seq), in order.
        let mut out = Vec::with_capacity(batches.len());
        let mut newest: std::collections::HashMap<&str, (i64, &str)> = Default::default();
        let mut readings = Vec::new();
        let mut kinds: Vec<&telesafe_core::devices::readings::KindEntry> = Vec::new();
        let mut alerts = Vec::new();
        for f in batches {
            let seq = seq_i64(f.batch.seq)?;
            let stored = inserted.remove(&(f.batch.device_id.clone(), seq));
            out.push(stored);
            if !stored {
                continue;
            }
            let e = newest.entry(f.batch.device_id.as_str()).or_insert((seq, f.firmware.as_str()));
            if seq > e.0 {
                *e = (seq, f.firmware.as_str());
            }
            let b = &f.batch;
            readings
                .extend(f.readings.iter().map(|r| (b.device_id.as_str(), b.seq, b.received_at, r)));
            for k in &f.kinds {
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
            alerts.extend(f.alerts.iter());
        }
        // Each device's newest batch, in one statement (VALUES names its columns column1
        // to column4 on both backends).
        let newest: Vec<_> = newest.into_iter().collect();
        for chunk in newest.chunks(200) {
            let sql = format!(
                "UPDATE devices SET last_seq = v.column2, firmware = v.column3 \
                 FROM (VALUES {}) AS v \
                 WHERE devices.id = v.column1 AND devices.tenant_id = v.column4 \
                   AND devices.last_seq < v.column2",
                placeholders(&tx, chunk.len(), 4, None)
            );
            on_tx!(&mut tx, c => {
                let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
                for (device, (seq, firmware)) in chunk {
                    q = q.bind(*device).bind(*seq).bind(*firmware).bind(&t);
                }
                q.execute(&mut **c).await.map(|_| ())
            })
            .map_err(repo_err)?;
        }
        insert_readings_tx(&mut tx, tenant, &readings, &kinds).await?;
        for a in alerts {
            on_tx!(&mut tx, c => sqlx::query(
                "INSERT INTO clinical_alerts (id, tenant_id, patient_id, observation_id, created_at, body) \
                 VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&a.id).bind(a.tenant.to_string()).bind(a.patient.to_string())
                .bind(&a.observation_id).bind(a.created_at.unix_millis()).bind(&a.body)
                .execute(&mut **c).await.map(|_| ()))
            .map_err(repo_err)?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn update_model_policy(
        &self,
        tenant: TenantId,
        id: &str,
        min_firmware: &str,
        vulnerable: &[(String, String)],
    ) -> Result<bool, RepoError> {
        let vulnerable =
            serde_json::to_string(vulnerable).map_err(|e| RepoError::Backend(e.to_string()))?;
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE device_models SET min_firmware = $1, vulnerable = $2 WHERE tenant_id = $3 AND id = $4")
            .bind(min_firmware).bind(&vulnerable).bind(tenant.to_string()).bind(id)
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn batch_stored(
        &self,
        tenant: TenantId,
        device: &str,
        seq: u64,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM device_batches WHERE tenant_id = $1 AND device_id = $2 AND seq = $3")
            .bind(tenant.to_string()).bind(device).bind(seq_i64(seq)?)
            .fetch_one(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn list_devices(&self, tenant: TenantId) -> Result<Vec<DeviceSummary>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<SummaryRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT d.id, d.tenant_id, d.patient_id, d.model_id, d.public_key, d.serial, d.firmware, \
                d.revoked_at, d.last_seq, d.enrolled_at, d.key_rotated_at, \
                (SELECT COUNT(*) FROM device_batches q WHERE q.device_id = d.id \
                    AND q.quarantine IS NOT NULL AND q.released_at IS NULL) AS quarantined, \
                (SELECT q.quarantine FROM device_batches q WHERE q.device_id = d.id \
                    AND q.quarantine IS NOT NULL AND q.released_at IS NULL \
                    ORDER BY q.seq DESC LIMIT 1) AS quarantine_reason, \
                (SELECT MAX(q.received_at) FROM device_batches q WHERE q.device_id = d.id) AS last_received \
             FROM devices d WHERE d.tenant_id = $1 ORDER BY d.enrolled_at DESC, d.id")
            .bind(tenant.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                Ok(DeviceSummary {
                    device: r.device.into_device()?,
                    key_rotated_at: r.key_rotated_at.map(Timestamp::from_unix_millis),
                    quarantined: seq_u64(r.quarantined)?,
                    quarantine_reason: r.quarantine_reason,
                    last_received: r.last_received.map(Timestamp::from_unix_millis),
                })
            })
            .collect()
    }

    async fn list_models(&self, tenant: TenantId) -> Result<Vec<DeviceModel>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<ModelRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, tenant_id, manufacturer, model, measures, min_firmware, vulnerable, created_at \
             FROM device_models WHERE tenant_id = $1 ORDER BY manufacturer, model")
            .bind(tenant.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(ModelRow::into_model).collect()
    }

    async fn rotate_device_key(
        &self,
        tenant: TenantId,
        id: &str,
        old: &[u8],
        new: &[u8],
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE devices SET public_key = $1, key_rotated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND public_key = $5 AND revoked_at IS NULL")
            .bind(new).bind(now.unix_millis()).bind(tenant.to_string()).bind(id).bind(old)
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn thresholds(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let body: Option<Vec<u8>> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT body FROM patient_thresholds WHERE tenant_id = $1 AND patient_id = $2")
            .bind(tenant.to_string()).bind(patient.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(body)
    }

    async fn set_thresholds(
        &self,
        tenant: TenantId,
        patient: PatientId,
        body: &[u8],
        by: &str,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO patient_thresholds (tenant_id, patient_id, body, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, patient_id) \
             DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at, \
                updated_by = excluded.updated_by")
            .bind(tenant.to_string()).bind(patient.to_string()).bind(body)
            .bind(now.unix_millis()).bind(by)
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn open_clinical_alerts(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<ClinicalAlert>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<AlertRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, patient_id, observation_id, created_at, body FROM clinical_alerts \
             WHERE tenant_id = $1 AND acknowledged_at IS NULL ORDER BY created_at DESC, id LIMIT 500")
            .bind(tenant.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                Ok(ClinicalAlert {
                    id: r.id,
                    tenant,
                    patient: r.patient_id.parse().map_err(|_| corrupt("patient id"))?,
                    observation_id: r.observation_id,
                    created_at: Timestamp::from_unix_millis(r.created_at),
                    body: r.body,
                })
            })
            .collect()
    }

    async fn acknowledge_clinical_alert(
        &self,
        tenant: TenantId,
        id: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE clinical_alerts SET acknowledged_at = $1, acknowledged_by = $2 \
             WHERE tenant_id = $3 AND id = $4 AND acknowledged_at IS NULL")
            .bind(now.unix_millis()).bind(by).bind(tenant.to_string()).bind(id)
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
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
        release: &Release,
    ) -> Result<bool, RepoError> {
        let (seq, now, body) = (release.seq, release.at, &release.body);
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE device_batches SET released_at = $1, body = $5 \
             WHERE tenant_id = $2 AND device_id = $3 AND seq = $4 AND released_at IS NULL")
            .bind(now.unix_millis()).bind(tenant.to_string()).bind(device).bind(seq_i64(seq)?)
            .bind(body)
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        if n != 1 {
            return Ok(false);
        }
        let rows: Vec<_> = release.readings.iter().map(|r| (device, seq, now, r)).collect();
        let kinds: Vec<_> = release.kinds.iter().collect();
        insert_readings_tx(&mut tx, tenant, &rows, &kinds).await?;
        tx.commit().await?;
        Ok(true)
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
