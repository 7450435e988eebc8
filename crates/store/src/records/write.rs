//! Writing a resource version inside a caller's transaction: the row, the previous one
//! retired and its index replaced.

use telesafe_core::RepoError;
use telesafe_core::records::{IndexEntry, StoredResource};

use crate::tx::{Tx, on_tx, repo_err};

/// Stores one version inside `tx` (a write transaction scoped to `r.tenant`): the row,
/// the previous version no longer current, and the resource's index entries replaced.
/// `Conflict` when `r.version` is not the next.
pub(crate) async fn put_version_tx(
    tx: &mut Tx,
    r: &StoredResource,
    index: &[IndexEntry],
    sort_date: Option<i64>,
) -> Result<(), RepoError> {
    let (t, id) = (r.tenant.to_string(), r.id.clone());
    let patient = r.patient.map(|p| p.to_string());
    // Creating a Patient creates the patient it describes (same id), in this transaction.
    if r.resource_type == "Patient" && r.version == 1 {
        on_tx!(tx, c => sqlx::query(
            "INSERT INTO patients (id, tenant_id, user_id, created_at) VALUES ($1, $2, NULL, $3) \
             ON CONFLICT (id) DO NOTHING")
            .bind(&id).bind(&t).bind(r.last_updated.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
    }
    let latest: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT MAX(version) FROM fhir_resources \
         WHERE tenant_id = $1 AND resource_type = $2 AND id = $3")
        .bind(&t).bind(&r.resource_type).bind(&id)
        .fetch_one(&mut **c).await)
    .map_err(repo_err)?;
    // A device reading's Observation has its version 1 in its batch: a new version
    // follows it (and the reading's row gives way), and nothing may create its id anew.
    let reading = telesafe_core::devices::readings::parse_reading_id(&id)
        .filter(|_| r.resource_type == "Observation");
    let mut latest = latest.unwrap_or(0);
    if let Some(reading) = &reading {
        if latest == 0 && super::readings::exists(tx, r.tenant, reading).await? {
            latest = 1;
        }
        if r.version == 1 {
            return Err(RepoError::Conflict);
        }
    }
    if latest != i64::from(r.version) - 1 {
        return Err(RepoError::Conflict);
    }
    if let Some(reading) = &reading
        && r.version == 2
    {
        super::readings::supersede(tx, r.tenant, reading).await?;
    }
    on_tx!(tx, c => {
        sqlx::query(
            "UPDATE fhir_resources SET is_current = 0 \
             WHERE tenant_id = $1 AND resource_type = $2 AND id = $3 AND is_current = 1")
            .bind(&t).bind(&r.resource_type).bind(&id)
            .execute(&mut **c).await.map_err(repo_err)?;
        sqlx::query(
            "INSERT INTO fhir_resources (tenant_id, resource_type, id, version, patient_id, \
                last_updated, deleted, is_current, category, restricted, sort_date, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11)")
            .bind(&t).bind(&r.resource_type).bind(&id).bind(i64::from(r.version))
            .bind(&patient).bind(r.last_updated.unix_millis()).bind(i64::from(r.deleted))
            .bind(&r.category).bind(i64::from(r.restricted)).bind(sort_date).bind(&r.body)
            .execute(&mut **c).await.map_err(repo_err)?;
        sqlx::query(
            "DELETE FROM fhir_index WHERE tenant_id = $1 AND resource_type = $2 AND resource_id = $3")
            .bind(&t).bind(&r.resource_type).bind(&id)
            .execute(&mut **c).await.map_err(repo_err)?;
        for e in index {
            let (param, value, low, high) = match e {
                IndexEntry::Token { param, hash } => (param, Some(hash.as_str()), None, None),
                IndexEntry::Date { param, low, high } => (param, None, Some(*low), Some(*high)),
            };
            sqlx::query(
                "INSERT INTO fhir_index (tenant_id, resource_type, resource_id, param, value, low, high) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&t).bind(&r.resource_type).bind(&id).bind(param)
                .bind(value).bind(low).bind(high)
                .execute(&mut **c).await.map_err(repo_err)?;
        }
        Ok::<(), RepoError>(())
    })?;
    Ok(())
}
