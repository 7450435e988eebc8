//! Writing resource versions inside a caller's transaction: one version (with the
//! previous one retired and its index replaced), or many new ones in multi-row statements.

use sqlx::AssertSqlSafe;
use telesafe_core::RepoError;
use telesafe_core::records::{IndexEntry, PreparedVersion, StoredResource};

use crate::tx::{Tx, on_tx, placeholders, repo_err};

/// Inserts brand-new resources (version 1, ids never used before) and their index entries
/// with multi-row statements: the path for device readings, which arrive by the thousand
/// (one statement per resource and per index entry costs a round trip each, which on
/// SQLite's worker thread dominates everything else).
pub(crate) async fn insert_new_tx(tx: &mut Tx, rows: &[&PreparedVersion]) -> Result<(), RepoError> {
    // 11 bound columns per resource (is_current is the constant 1), 7 per index entry; well
    // under SQLite's 32,766 host parameters per statement.
    for chunk in rows.chunks(400) {
        if chunk.iter().any(|p| p.row.version != 1) {
            return Err(RepoError::Backend("insert_new_tx takes new resources only".into()));
        }
        let sql = format!(
            "INSERT INTO fhir_resources (tenant_id, resource_type, id, version, patient_id, \
             last_updated, deleted, is_current, category, restricted, sort_date, body) VALUES {}",
            placeholders(tx, chunk.len(), 11, Some((7, "1")))
        );
        on_tx!(tx, c => {
            let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
            for p in chunk {
                let r = &p.row;
                q = q.bind(r.tenant.to_string()).bind(&r.resource_type).bind(&r.id)
                    .bind(i64::from(r.version)).bind(r.patient.map(|p| p.to_string()))
                    .bind(r.last_updated.unix_millis()).bind(i64::from(r.deleted))
                    .bind(&r.category).bind(i64::from(r.restricted)).bind(p.sort_date)
                    .bind(&r.body);
            }
            q.execute(&mut **c).await.map(|_| ())
        })
        .map_err(repo_err)?;
    }
    let entries: Vec<(&StoredResource, &IndexEntry)> =
        rows.iter().flat_map(|p| p.index.iter().map(move |e| (&p.row, e))).collect();
    for chunk in entries.chunks(800) {
        let sql = format!(
            "INSERT INTO fhir_index (tenant_id, resource_type, resource_id, param, value, low, high) \
             VALUES {}",
            placeholders(tx, chunk.len(), 7, None)
        );
        on_tx!(tx, c => {
            let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
            for (r, e) in chunk {
                let (param, value, low, high) = match e {
                    IndexEntry::Token { param, hash } => (param, Some(hash.as_str()), None, None),
                    IndexEntry::Date { param, low, high } => (param, None, Some(*low), Some(*high)),
                };
                q = q.bind(r.tenant.to_string()).bind(&r.resource_type).bind(&r.id)
                    .bind(param).bind(value).bind(low).bind(high);
            }
            q.execute(&mut **c).await.map(|_| ())
        })
        .map_err(repo_err)?;
    }
    Ok(())
}

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
    if latest.unwrap_or(0) != i64::from(r.version) - 1 {
        return Err(RepoError::Conflict);
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
