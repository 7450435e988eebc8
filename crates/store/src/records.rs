//! The encrypted record: wrapped keys, key tombstones, resource versions and the blind
//! search index. Nothing here can read a resource: bodies arrive sealed and leave sealed.

use sqlx::AssertSqlSafe;
use telesafe_core::records::search::{DateCondition, Prefix};
use telesafe_core::records::{
    IndexEntry, ReadingBatch, ResourceRepository, SearchHit, StoredResource, StoredSearch,
    TimeWindow,
};
use telesafe_core::{PatientId, RepoError, TenantId, Timestamp};

mod keys;
mod readings;
mod write;

pub(crate) use readings::insert_tx as insert_readings_tx;
use telesafe_core::devices::readings::{ReadingRef, is_reading, parse_reading_id};
pub(crate) use write::put_version_tx;

use crate::Store;
use crate::tx::{Scope, on_tx, repo_err};

fn corrupt(what: &str) -> RepoError {
    RepoError::Backend(format!("stored {what} failed to parse"))
}

fn version_u32(v: i64) -> Result<u32, RepoError> {
    u32::try_from(v).map_err(|_| corrupt("version"))
}

#[derive(sqlx::FromRow)]
struct ResourceRow {
    tenant_id: String,
    resource_type: String,
    id: String,
    version: i64,
    patient_id: Option<String>,
    last_updated: i64,
    deleted: i64,
    category: String,
    restricted: i64,
    body: Vec<u8>,
}

const RESOURCE_COLUMNS: &str = "tenant_id, resource_type, id, version, patient_id, last_updated, \
                                deleted, category, restricted, body";

impl TryFrom<ResourceRow> for StoredResource {
    type Error = RepoError;
    fn try_from(r: ResourceRow) -> Result<Self, RepoError> {
        Ok(StoredResource {
            tenant: r.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
            resource_type: r.resource_type,
            id: r.id,
            version: version_u32(r.version)?,
            patient: r
                .patient_id
                .map(|p| p.parse().map_err(|_| corrupt("patient id")))
                .transpose()?,
            last_updated: Timestamp::from_unix_millis(r.last_updated),
            deleted: r.deleted != 0,
            category: r.category,
            restricted: r.restricted != 0,
            body: r.body,
        })
    }
}

#[derive(sqlx::FromRow)]
struct HitRow {
    id: String,
    version: i64,
    patient_id: Option<String>,
    category: String,
    restricted: i64,
    last_updated: i64,
    sort_date: Option<i64>,
}

/// A value bound into a dynamically built search.
enum Bind {
    Text(String),
    Int(i64),
}

/// Binds `binds` to `query` in order (a macro: the query's type differs per backend).
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for b in $binds {
            query = match b {
                Bind::Text(s) => query.bind(s.clone()),
                Bind::Int(i) => query.bind(*i),
            };
        }
        query
    }};
}
use bind_all;

/// `(SQL condition, binds)` for a date prefix over index columns `low`/`high`, numbering
/// placeholders from `next`.
fn date_sql(cond: &DateCondition, low: &str, high: &str, binds: &mut Vec<Bind>) -> String {
    let mut ph = |v: i64| {
        binds.push(Bind::Int(v));
        format!("${}", binds.len())
    };
    let (sl, sh) = (cond.range.low, cond.range.high);
    let eq = |ph: &mut dyn FnMut(i64) -> String| {
        format!("({low} >= {} AND {high} <= {})", ph(sl), ph(sh))
    };
    match cond.prefix {
        Prefix::Eq => eq(&mut ph),
        Prefix::Ne => format!("NOT {}", eq(&mut ph)),
        Prefix::Gt => format!("{high} > {}", ph(sh)),
        Prefix::Lt => format!("{low} < {}", ph(sl)),
        Prefix::Ge => {
            let above = format!("{high} > {}", ph(sh));
            format!("({above} OR {})", eq(&mut ph))
        }
        Prefix::Le => {
            let below = format!("{low} < {}", ph(sl));
            format!("({below} OR {})", eq(&mut ph))
        }
        Prefix::Sa => format!("{low} > {}", ph(sh)),
        Prefix::Eb => format!("{high} < {}", ph(sl)),
    }
}

fn search_sql(tenant: TenantId, q: &StoredSearch) -> (String, Vec<Bind>) {
    let mut binds = vec![Bind::Text(tenant.to_string()), Bind::Text(q.resource_type.clone())];
    let mut sql = String::from(
        "SELECT r.id, r.version, r.patient_id, r.category, r.restricted, r.last_updated, r.sort_date \
         FROM fhir_resources r \
         WHERE r.tenant_id = $1 AND r.resource_type = $2 AND r.is_current = 1 AND r.deleted = 0",
    );
    let list = |values: Vec<Bind>, binds: &mut Vec<Bind>| {
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            binds.push(v);
            out.push(format!("${}", binds.len()));
        }
        out.join(", ")
    };
    if let Some(ids) = &q.ids {
        let l = list(ids.iter().cloned().map(Bind::Text).collect(), &mut binds);
        sql.push_str(&format!(" AND r.id IN ({l})"));
    }
    if let Some(patients) = &q.patients {
        let l = list(patients.iter().map(|p| Bind::Text(p.to_string())).collect(), &mut binds);
        sql.push_str(&format!(" AND r.patient_id IN ({l})"));
    }
    for (param, hashes) in &q.tokens {
        binds.push(Bind::Text(param.clone()));
        let pp = binds.len();
        let l = list(hashes.iter().cloned().map(Bind::Text).collect(), &mut binds);
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM fhir_index i WHERE i.tenant_id = r.tenant_id \
               AND i.resource_type = r.resource_type AND i.resource_id = r.id \
               AND i.param = ${pp} AND i.value IN ({l}))"
        ));
    }
    for (param, conds) in &q.dates {
        binds.push(Bind::Text(param.clone()));
        let pp = binds.len();
        let any: Vec<String> =
            conds.iter().map(|c| date_sql(c, "i.low", "i.high", &mut binds)).collect();
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM fhir_index i WHERE i.tenant_id = r.tenant_id \
               AND i.resource_type = r.resource_type AND i.resource_id = r.id \
               AND i.param = ${pp} AND ({}))",
            any.join(" OR ")
        ));
    }
    for c in &q.last_updated {
        let cond = date_sql(c, "r.last_updated", "r.last_updated", &mut binds);
        sql.push_str(&format!(" AND {cond}"));
    }
    binds.push(Bind::Int(i64::from(q.limit)));
    sql.push_str(&format!(" ORDER BY r.id LIMIT ${}", binds.len()));
    (sql, binds)
}

impl ResourceRepository for Store {
    async fn put_version(
        &self,
        r: &StoredResource,
        index: &[IndexEntry],
        sort_date: Option<i64>,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(r.tenant)).await?;
        put_version_tx(&mut tx, r, index, sort_date).await?;
        tx.commit().await
    }

    async fn current(
        &self,
        tenant: TenantId,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredResource>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM fhir_resources \
             WHERE tenant_id = $1 AND resource_type = $2 AND id = $3 AND is_current = 1"
        );
        let row: Option<ResourceRow> =
            on_tx!(&mut tx, c => sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(tenant.to_string()).bind(resource_type).bind(id)
            .fetch_optional(&mut **c).await)
            .map_err(repo_err)?;
        if row.is_none()
            && resource_type == "Observation"
            && let Some(reading) = parse_reading_id(id)
        {
            let mut found =
                readings::rows(&mut tx, tenant, std::slice::from_ref(&reading), true).await?;
            if found.is_empty() {
                found.extend(readings::erased(&mut tx, tenant, &reading).await?);
            }
            tx.commit().await?;
            return Ok(found.into_iter().next());
        }
        tx.commit().await?;
        row.map(StoredResource::try_from).transpose()
    }

    async fn version(
        &self,
        tenant: TenantId,
        resource_type: &str,
        id: &str,
        version: u32,
    ) -> Result<Option<StoredResource>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        if version == 1
            && resource_type == "Observation"
            && let Some(reading) = parse_reading_id(id)
        {
            let mut found =
                readings::rows(&mut tx, tenant, std::slice::from_ref(&reading), false).await?;
            if found.is_empty() {
                found.extend(readings::erased(&mut tx, tenant, &reading).await?);
            }
            tx.commit().await?;
            return Ok(found.into_iter().next());
        }
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM fhir_resources \
             WHERE tenant_id = $1 AND resource_type = $2 AND id = $3 AND version = $4"
        );
        let row: Option<ResourceRow> =
            on_tx!(&mut tx, c => sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(tenant.to_string()).bind(resource_type).bind(id).bind(i64::from(version))
            .fetch_optional(&mut **c).await)
            .map_err(repo_err)?;
        tx.commit().await?;
        row.map(StoredResource::try_from).transpose()
    }

    async fn history(
        &self,
        tenant: TenantId,
        resource_type: &str,
        id: &str,
    ) -> Result<Vec<StoredResource>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM fhir_resources \
             WHERE tenant_id = $1 AND resource_type = $2 AND id = $3 ORDER BY version DESC"
        );
        let rows: Vec<ResourceRow> =
            on_tx!(&mut tx, c => sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(tenant.to_string()).bind(resource_type).bind(id)
            .fetch_all(&mut **c).await)
            .map_err(repo_err)?;
        // A device reading's first version is its batch's.
        let first = match parse_reading_id(id).filter(|_| resource_type == "Observation") {
            Some(reading) => readings::rows(&mut tx, tenant, &[reading], false).await?,
            None => Vec::new(),
        };
        tx.commit().await?;
        let mut out =
            rows.into_iter().map(StoredResource::try_from).collect::<Result<Vec<_>, _>>()?;
        out.extend(first);
        Ok(out)
    }

    async fn search(
        &self,
        tenant: TenantId,
        q: &StoredSearch,
    ) -> Result<Vec<SearchHit>, RepoError> {
        let (sql, binds) = search_sql(tenant, q);
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        // The SQL is assembled here from fixed fragments and `$n` placeholders; every value
        // is bound.
        let rows: Vec<HitRow> = on_tx!(&mut tx, c => {
            bind_all!(sqlx::query_as(AssertSqlSafe(sql.clone())), &binds).fetch_all(&mut **c).await
        })
        .map_err(repo_err)?;
        // Device readings' Observations, up to the same limit in all.
        let room = (q.limit as usize).saturating_sub(rows.len());
        let mut readings = Vec::new();
        if room > 0
            && let Some((sql, mut binds)) = readings::search_sql(tenant, q)
        {
            binds.push(Bind::Int(room as i64));
            let sql = format!("{sql} ORDER BY o.dev, o.seq, o.n LIMIT ${}", binds.len());
            readings = on_tx!(&mut tx, c => {
                let query = sqlx::query_as::<_, readings::ReadingHitRow>(AssertSqlSafe(sql.clone()));
                bind_all!(query, &binds).fetch_all(&mut **c).await
            })
            .map_err(repo_err)?;
        }
        tx.commit().await?;
        let readings = readings.into_iter().map(readings::ReadingHitRow::into_hit);
        rows.into_iter()
            .map(|r| {
                Ok(SearchHit {
                    id: r.id,
                    version: version_u32(r.version)?,
                    patient: r
                        .patient_id
                        .map(|p| p.parse().map_err(|_| corrupt("patient id")))
                        .transpose()?,
                    category: r.category,
                    restricted: r.restricted != 0,
                    last_updated: Timestamp::from_unix_millis(r.last_updated),
                    sort_date: r.sort_date,
                })
            })
            .chain(readings)
            .collect()
    }

    async fn current_many(
        &self,
        tenant: TenantId,
        resource_type: &str,
        ids: &[String],
    ) -> Result<Vec<StoredResource>, RepoError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM fhir_resources \
             WHERE tenant_id = $1 AND resource_type = $2 AND is_current = 1 AND deleted = 0 \
               AND id IN ({})",
            placeholders.join(", ")
        );
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<ResourceRow> = on_tx!(&mut tx, c => {
            let mut query = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .bind(tenant.to_string())
                .bind(resource_type);
            for id in ids {
                query = query.bind(id.clone());
            }
            query.fetch_all(&mut **c).await
        })
        .map_err(repo_err)?;
        let mut out =
            rows.into_iter().map(StoredResource::try_from).collect::<Result<Vec<_>, _>>()?;
        let unfound: Vec<_> = ids
            .iter()
            .filter(|id| is_reading(resource_type, id) && !out.iter().any(|r| &r.id == *id))
            .filter_map(|id| parse_reading_id(id))
            .collect();
        out.extend(readings::rows(&mut tx, tenant, &unfound, true).await?);
        tx.commit().await?;
        Ok(out)
    }

    async fn patient_versions(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> Result<Vec<StoredResource>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM fhir_resources \
             WHERE tenant_id = $1 AND patient_id = $2 ORDER BY resource_type, id, version"
        );
        let rows: Vec<ResourceRow> =
            on_tx!(&mut tx, c => sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(tenant.to_string()).bind(patient.to_string())
            .fetch_all(&mut **c).await)
            .map_err(repo_err)?;
        // Each device batch once (its readings' Observations share its body).
        let batches = readings::batches_of_patient(&mut tx, tenant, patient).await?;
        tx.commit().await?;
        let mut out =
            rows.into_iter().map(StoredResource::try_from).collect::<Result<Vec<_>, _>>()?;
        out.extend(batches);
        Ok(out)
    }

    async fn reseal(&self, r: &StoredResource) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(r.tenant)).await?;
        if r.version == 1
            && r.resource_type == "Observation"
            && let Some(reading) = parse_reading_id(&r.id)
        {
            readings::reseal_batch(&mut tx, r.tenant, &reading, &r.body).await?;
            return tx.commit().await;
        }
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE fhir_resources SET body = $1 \
             WHERE tenant_id = $2 AND resource_type = $3 AND id = $4 AND version = $5")
            .bind(&r.body)
            .bind(r.tenant.to_string())
            .bind(&r.resource_type)
            .bind(&r.id)
            .bind(i64::from(r.version))
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn compartment(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> Result<Vec<StoredResource>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM fhir_resources \
             WHERE tenant_id = $1 AND patient_id = $2 AND is_current = 1 AND deleted = 0 \
             ORDER BY resource_type, id"
        );
        let rows: Vec<ResourceRow> =
            on_tx!(&mut tx, c => sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(tenant.to_string()).bind(patient.to_string())
            .fetch_all(&mut **c).await)
            .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(StoredResource::try_from).collect()
    }

    async fn patient_readings(
        &self,
        tenant: TenantId,
        patient: PatientId,
        window: TimeWindow,
        limit: u32,
        after: Option<&ReadingRef>,
    ) -> Result<(Vec<ReadingBatch>, Option<ReadingRef>), RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let out = readings::of_patient(&mut tx, tenant, patient, window, limit, after).await?;
        tx.commit().await?;
        Ok(out)
    }
}
