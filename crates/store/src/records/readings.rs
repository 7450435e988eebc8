//! Device readings' Observations (see `telesafe_core::devices::readings`): one narrow row
//! per reading, served as version 1 of an Observation whose body is its sealed batch.
//! The resource repository's reads, searches and writes see them beside ordinary
//! resources; this module holds their SQL.
//!
//! A row names its device by the device's number (`devices.num`), not its id, and holds
//! no patient: the device's row gives both. Statements join `devices d ON d.num = o.dev`
//! for them, and name a device of a reading id with `(SELECT num FROM devices ...)`.

use sqlx::AssertSqlSafe;
use telesafe_core::devices::readings::{
    FiledReading, KIND_PARAMS, KindEntry, READING_CATEGORY, ReadingRef, parse_reading_id,
    reading_id,
};
use telesafe_core::records::{ReadingBatch, SearchHit, StoredResource, StoredSearch, TimeWindow};
use telesafe_core::{PatientId, RepoError, TenantId, Timestamp};

use super::{Bind, bind_all, corrupt, date_sql};
use crate::devices::seq_i64;
use crate::tx::{Tx, on_tx, placeholders, repo_err};

/// `(o.dev = <number of device $a> AND o.seq = $b AND o.n = $c) OR ...` for `refs`, in
/// a statement whose `$1` is the tenant.
fn refs_sql(refs: &[ReadingRef], binds: &mut Vec<Bind>) -> Option<String> {
    let mut any = Vec::with_capacity(refs.len());
    for r in refs {
        binds.push(Bind::Text(r.device.clone()));
        let d = binds.len();
        binds.push(Bind::Int(i64::try_from(r.seq).ok()?));
        binds.push(Bind::Int(i64::from(r.n)));
        any.push(format!(
            "(o.dev = (SELECT num FROM devices WHERE tenant_id = $1 AND id = ${d}) \
             AND o.seq = ${} AND o.n = ${})",
            d + 1,
            d + 2
        ));
    }
    Some(any.join(" OR "))
}

/// The search over device readings' rows for `q`, or `None` if no reading can match
/// (another resource type, a parameter readings do not carry, or an id of another shape).
pub(super) fn search_sql(tenant: TenantId, q: &StoredSearch) -> Option<(String, Vec<Bind>)> {
    if q.resource_type != "Observation" {
        return None;
    }
    let mut binds = vec![Bind::Text(tenant.to_string())];
    let mut sql = String::from(
        "SELECT d.id AS device_id, o.seq, o.n, d.patient_id, o.received_at, o.low \
         FROM device_readings o JOIN devices d ON d.num = o.dev \
         WHERE o.tenant_id = $1 AND d.tenant_id = $1 AND o.superseded = 0",
    );
    if let Some(ids) = &q.ids {
        let refs: Vec<ReadingRef> = ids.iter().filter_map(|i| parse_reading_id(i)).collect();
        if refs.is_empty() {
            return None;
        }
        sql.push_str(&format!(" AND ({})", refs_sql(&refs, &mut binds)?));
    }
    if let Some(patients) = &q.patients {
        if patients.is_empty() {
            return None;
        }
        let mut l = Vec::with_capacity(patients.len());
        for p in patients {
            binds.push(Bind::Text(p.to_string()));
            l.push(format!("${}", binds.len()));
        }
        sql.push_str(&format!(" AND d.patient_id IN ({})", l.join(", ")));
    }
    for (param, hashes) in &q.tokens {
        if param == "identifier" {
            if q.identified_readings.is_empty() {
                return None;
            }
            sql.push_str(&format!(" AND ({})", refs_sql(&q.identified_readings, &mut binds)?));
        } else if KIND_PARAMS.contains(&param.as_str()) {
            binds.push(Bind::Text(param.clone()));
            let pp = binds.len();
            let mut l = Vec::with_capacity(hashes.len());
            for h in hashes {
                binds.push(Bind::Text(h.clone()));
                l.push(format!("${}", binds.len()));
            }
            sql.push_str(&format!(
                " AND o.kind IN (SELECT k.kind FROM device_kinds k WHERE k.tenant_id = $1 \
                   AND k.param = ${pp} AND k.value IN ({}))",
                l.join(", ")
            ));
        } else {
            return None;
        }
    }
    for (param, conds) in &q.dates {
        if param != "date" {
            return None;
        }
        let any: Vec<String> =
            conds.iter().map(|c| date_sql(c, "o.low", "o.high", &mut binds)).collect();
        sql.push_str(&format!(" AND ({})", any.join(" OR ")));
    }
    for c in &q.last_updated {
        let cond = date_sql(c, "o.received_at", "o.received_at", &mut binds);
        sql.push_str(&format!(" AND {cond}"));
    }
    Some((sql, binds))
}

/// A reading row's Observation id and patient.
fn identify(
    device: &str,
    seq: i64,
    n: i64,
    patient: &str,
) -> Result<(String, PatientId), RepoError> {
    let seq = u64::try_from(seq).map_err(|_| corrupt("sequence number"))?;
    let n = u32::try_from(n).map_err(|_| corrupt("reading index"))?;
    let id = reading_id(device, seq, n).ok_or_else(|| corrupt("device id"))?;
    Ok((id, patient.parse().map_err(|_| corrupt("patient id"))?))
}

#[derive(sqlx::FromRow)]
pub(super) struct ReadingHitRow {
    device_id: String,
    seq: i64,
    n: i64,
    patient_id: String,
    received_at: i64,
    low: i64,
}

impl ReadingHitRow {
    pub(super) fn into_hit(self) -> Result<SearchHit, RepoError> {
        let (id, patient) = identify(&self.device_id, self.seq, self.n, &self.patient_id)?;
        Ok(SearchHit {
            id,
            version: 1,
            patient: Some(patient),
            category: READING_CATEGORY.to_owned(),
            restricted: false,
            last_updated: Timestamp::from_unix_millis(self.received_at),
            sort_date: Some(self.low),
        })
    }
}

#[derive(sqlx::FromRow)]
struct ReadingRow {
    device_id: String,
    seq: i64,
    n: i64,
    patient_id: String,
    received_at: i64,
    body: Vec<u8>,
}

impl ReadingRow {
    fn into_resource(self, tenant: TenantId) -> Result<StoredResource, RepoError> {
        let (id, patient) = identify(&self.device_id, self.seq, self.n, &self.patient_id)?;
        Ok(StoredResource {
            tenant,
            resource_type: "Observation".to_owned(),
            id,
            version: 1,
            patient: Some(patient),
            last_updated: Timestamp::from_unix_millis(self.received_at),
            deleted: false,
            category: READING_CATEGORY.to_owned(),
            restricted: false,
            body: self.body,
        })
    }
}

const ROW_SELECT: &str = "SELECT d.id AS device_id, o.seq, o.n, d.patient_id, o.received_at, b.body \
     FROM device_readings o JOIN devices d ON d.num = o.dev \
     JOIN device_batches b ON b.device_id = d.id AND b.seq = o.seq \
     WHERE o.tenant_id = $1 AND d.tenant_id = $1";

/// Version 1 of the readings `refs` name, as rows whose body is the sealed batch; with
/// `current_only`, not those edited or deleted since.
pub(super) async fn rows(
    tx: &mut Tx,
    tenant: TenantId,
    refs: &[ReadingRef],
    current_only: bool,
) -> Result<Vec<StoredResource>, RepoError> {
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let mut binds = vec![Bind::Text(tenant.to_string())];
    let Some(any) = refs_sql(refs, &mut binds) else { return Ok(Vec::new()) };
    let current = if current_only { " AND o.superseded = 0" } else { "" };
    let sql = format!("{ROW_SELECT}{current} AND ({any}) ORDER BY o.dev, o.seq, o.n");
    let rows: Vec<ReadingRow> = on_tx!(tx, c => {
        bind_all!(sqlx::query_as(AssertSqlSafe(sql.clone())), &binds).fetch_all(&mut **c).await
    })
    .map_err(repo_err)?;
    rows.into_iter().map(|r| r.into_resource(tenant)).collect()
}

/// Pairs of `(device, seq)` asked for in one statement when fetching batches' bodies.
const BATCHES_PER_STATEMENT: usize = 300;

/// The patient's current readings measured in `window`, newest first, after `after` if
/// given, at most `limit`, grouped by batch; and the last one given if more matched (see
/// `ResourceRepository::patient_readings`). Two statements, three with `after`: where
/// `after` lies, the narrow rows (through the `(device, time)` index), then each batch's
/// sealed body once, however many of its readings matched.
pub(super) async fn of_patient(
    tx: &mut Tx,
    tenant: TenantId,
    patient: PatientId,
    window: TimeWindow,
    limit: u32,
    after: Option<&ReadingRef>,
) -> Result<(Vec<ReadingBatch>, Option<ReadingRef>), RepoError> {
    let mut binds = vec![Bind::Text(tenant.to_string()), Bind::Text(patient.to_string())];
    let mut sql = String::from(
        "SELECT d.id, o.seq, o.n FROM device_readings o JOIN devices d ON d.num = o.dev \
         WHERE o.tenant_id = $1 AND d.tenant_id = $1 AND d.patient_id = $2 \
           AND o.superseded = 0",
    );
    if let Some(a) = after {
        // Keyset paging: the readings after `a` in the order below. A reading filed
        // since, measured earlier than `a`, still comes on a later page; none comes twice.
        let seq = seq_i64(a.seq)?;
        let at: Option<(i64, i64)> = on_tx!(tx, c => sqlx::query_as(
            "SELECT o.low, o.dev FROM device_readings o JOIN devices d ON d.num = o.dev \
             WHERE o.tenant_id = $1 AND d.tenant_id = $1 AND d.patient_id = $2 AND d.id = $3 \
               AND o.seq = $4 AND o.n = $5")
            .bind(tenant.to_string()).bind(patient.to_string()).bind(&a.device).bind(seq)
            .bind(i64::from(a.n))
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        let (low, dev) = at.ok_or(RepoError::NotFound)?;
        let first = binds.len() + 1;
        binds.extend([Bind::Int(low), Bind::Int(dev), Bind::Int(seq), Bind::Int(i64::from(a.n))]);
        let (l, d, s, n) = (first, first + 1, first + 2, first + 3);
        sql.push_str(&format!(
            " AND o.low <= ${l} AND (o.low < ${l} OR o.dev > ${d} \
               OR (o.dev = ${d} AND (o.seq < ${s} OR (o.seq = ${s} AND o.n > ${n}))))"
        ));
    }
    if let Some(from) = window.from {
        binds.push(Bind::Int(from));
        sql.push_str(&format!(" AND o.low >= ${}", binds.len()));
    }
    if let Some(to) = window.to {
        binds.push(Bind::Int(to));
        sql.push_str(&format!(" AND o.low < ${}", binds.len()));
    }
    binds.push(Bind::Int(i64::from(limit) + 1));
    sql.push_str(&format!(" ORDER BY o.low DESC, o.dev, o.seq DESC, o.n LIMIT ${}", binds.len()));
    let mut rows: Vec<(String, i64, i64)> = on_tx!(tx, c => {
        bind_all!(sqlx::query_as(AssertSqlSafe(sql.clone())), &binds).fetch_all(&mut **c).await
    })
    .map_err(repo_err)?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let last = match rows.last() {
        Some((device, seq, n)) if more => Some(ReadingRef {
            device: device.clone(),
            seq: u64::try_from(*seq).map_err(|_| corrupt("sequence number"))?,
            n: u32::try_from(*n).map_err(|_| corrupt("reading index"))?,
        }),
        _ => None,
    };

    // Each batch once, in the order of its newest matched reading.
    let mut order: Vec<(String, i64)> = Vec::new();
    let mut wanted: std::collections::HashMap<(String, i64), Vec<u32>> =
        std::collections::HashMap::new();
    for (device, seq, n) in rows {
        let n = u32::try_from(n).map_err(|_| corrupt("reading index"))?;
        let key = (device, seq);
        match wanted.get_mut(&key) {
            Some(ns) => ns.push(n),
            None => {
                order.push(key.clone());
                wanted.insert(key, vec![n]);
            }
        }
    }
    let mut bodies: std::collections::HashMap<(String, i64), (i64, Vec<u8>)> =
        std::collections::HashMap::with_capacity(order.len());
    for chunk in order.chunks(BATCHES_PER_STATEMENT) {
        let mut binds = vec![Bind::Text(tenant.to_string())];
        let mut any = Vec::with_capacity(chunk.len());
        for (device, seq) in chunk {
            binds.push(Bind::Text(device.clone()));
            binds.push(Bind::Int(*seq));
            any.push(format!("(device_id = ${} AND seq = ${})", binds.len() - 1, binds.len()));
        }
        let sql = format!(
            "SELECT device_id, seq, received_at, body FROM device_batches \
             WHERE tenant_id = $1 AND ({})",
            any.join(" OR ")
        );
        let found: Vec<(String, i64, i64, Vec<u8>)> = on_tx!(tx, c => {
            bind_all!(sqlx::query_as(AssertSqlSafe(sql.clone())), &binds).fetch_all(&mut **c).await
        })
        .map_err(repo_err)?;
        for (device, seq, received_at, body) in found {
            bodies.insert((device, seq), (received_at, body));
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for key in order {
        let (received_at, body) = bodies.remove(&key).ok_or_else(|| corrupt("reading's batch"))?;
        let mut readings = wanted.remove(&key).unwrap_or_default();
        readings.sort_unstable();
        let (device_id, seq) = key;
        let batch =
            ReadingRow { device_id, seq, n: 0, patient_id: patient.to_string(), received_at, body }
                .into_resource(tenant)?;
        out.push(ReadingBatch { batch, readings });
    }
    Ok((out, last))
}

/// One row per stored batch of the patient's devices (quarantined ones too), named by
/// its reading 0, for re-sealing: every batch body is sealed under the patient's key.
pub(super) async fn batches_of_patient(
    tx: &mut Tx,
    tenant: TenantId,
    patient: PatientId,
) -> Result<Vec<StoredResource>, RepoError> {
    let rows: Vec<(String, i64, i64, Vec<u8>)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT b.device_id, b.seq, b.received_at, b.body FROM device_batches b \
         JOIN devices d ON d.id = b.device_id \
         WHERE b.tenant_id = $1 AND d.tenant_id = $1 AND d.patient_id = $2 \
         ORDER BY b.device_id, b.seq")
        .bind(tenant.to_string()).bind(patient.to_string())
        .fetch_all(&mut **c).await)
    .map_err(repo_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for (device, seq, received_at, body) in rows {
        // An erased patient's batches keep no body.
        if body.is_empty() {
            continue;
        }
        out.push(
            ReadingRow {
                device_id: device,
                seq,
                n: 0,
                patient_id: patient.to_string(),
                received_at,
                body,
            }
            .into_resource(tenant)?,
        );
    }
    Ok(out)
}

/// Replaces a batch's sealed body (a data-key rotation).
pub(super) async fn reseal_batch(
    tx: &mut Tx,
    tenant: TenantId,
    r: &ReadingRef,
    body: &[u8],
) -> Result<(), RepoError> {
    let seq = seq_i64(r.seq)?;
    on_tx!(tx, c => sqlx::query(
        "UPDATE device_batches SET body = $1 WHERE tenant_id = $2 AND device_id = $3 AND seq = $4")
        .bind(body).bind(tenant.to_string()).bind(&r.device).bind(seq)
        .execute(&mut **c).await.map(|_| ()))
    .map_err(repo_err)
}

/// A reading of an erased patient: its row is gone, but its batch is still there with no
/// body, under the device's patient. It reads as deleted (410), as the patient's other
/// resources do, once the policy has decided on that patient: a caller who may not see
/// them learns no more than of an id that never existed. (Any index of such a batch reads
/// so: how many readings it held went with its body.)
pub(super) async fn erased(
    tx: &mut Tx,
    tenant: TenantId,
    r: &ReadingRef,
) -> Result<Option<StoredResource>, RepoError> {
    let seq = seq_i64(r.seq)?;
    let row: Option<(i64, String)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT b.received_at, d.patient_id FROM device_batches b \
         JOIN devices d ON d.id = b.device_id \
         WHERE b.tenant_id = $1 AND d.tenant_id = $1 AND b.device_id = $2 AND b.seq = $3 \
           AND length(b.body) = 0")
        .bind(tenant.to_string()).bind(&r.device).bind(seq)
        .fetch_optional(&mut **c).await)
    .map_err(repo_err)?;
    let Some((received_at, patient_id)) = row else { return Ok(None) };
    let row = ReadingRow {
        device_id: r.device.clone(),
        seq,
        n: i64::from(r.n),
        patient_id,
        received_at,
        body: Vec::new(),
    };
    Ok(Some(StoredResource { deleted: true, ..row.into_resource(tenant)? }))
}

/// Whether the reading has a row (edited or not): its Observation's version 1 exists.
pub(super) async fn exists(
    tx: &mut Tx,
    tenant: TenantId,
    r: &ReadingRef,
) -> Result<bool, RepoError> {
    let seq = seq_i64(r.seq)?;
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM device_readings o \
         WHERE o.tenant_id = $1 AND o.seq = $3 AND o.n = $4 \
           AND o.dev = (SELECT num FROM devices WHERE tenant_id = $1 AND id = $2)")
        .bind(tenant.to_string()).bind(&r.device).bind(seq).bind(i64::from(r.n))
        .fetch_one(&mut **c).await)
    .map_err(repo_err)?;
    Ok(n > 0)
}

/// Marks the reading's row superseded: a stored version 2 or later now speaks for it.
pub(super) async fn supersede(
    tx: &mut Tx,
    tenant: TenantId,
    r: &ReadingRef,
) -> Result<(), RepoError> {
    let seq = seq_i64(r.seq)?;
    on_tx!(tx, c => sqlx::query(
        "UPDATE device_readings SET superseded = 1 \
         WHERE tenant_id = $1 AND seq = $3 AND n = $4 \
           AND dev = (SELECT num FROM devices WHERE tenant_id = $1 AND id = $2)")
        .bind(tenant.to_string()).bind(&r.device).bind(seq).bind(i64::from(r.n))
        .execute(&mut **c).await.map(|_| ()))
    .map_err(repo_err)
}

/// Stores readings' rows (`(device, seq, received_at, reading)`) and their kinds' index
/// values with multi-row statements, inside the caller's transaction.
pub(crate) async fn insert_tx(
    tx: &mut Tx,
    tenant: TenantId,
    readings: &[(&str, u64, Timestamp, &FiledReading)],
    kinds: &[&KindEntry],
) -> Result<(), RepoError> {
    let t = tenant.to_string();
    let devices = numbers(tx, tenant, readings.iter().map(|(d, ..)| *d)).await?;
    // 8 bound columns per row: 3,200 parameters a statement, well under both backends'
    // limits, and few enough statements for a round of hundreds of batches.
    for chunk in readings.chunks(400) {
        let sql = format!(
            "INSERT INTO device_readings (tenant_id, dev, seq, n, kind, low, high, received_at) \
             VALUES {}",
            placeholders(tx, chunk.len(), 8, None)
        );
        let mut rows = Vec::with_capacity(chunk.len());
        for (device, seq, _, r) in chunk {
            let (num, patient) = devices
                .get(*device)
                .ok_or_else(|| RepoError::Backend("a reading of an unknown device".into()))?;
            // The row holds no patient: the device's must be the reading's.
            if *patient != r.patient {
                return Err(RepoError::Backend(
                    "a reading filed for another patient than its device's".into(),
                ));
            }
            rows.push((*num, seq_i64(*seq)?));
        }
        on_tx!(tx, c => {
            let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
            for ((_, _, received, r), (num, seq)) in chunk.iter().zip(&rows) {
                q = q.bind(&t).bind(*num).bind(*seq).bind(i64::from(r.n)).bind(&r.kind)
                    .bind(r.low).bind(r.high).bind(received.unix_millis());
            }
            q.execute(&mut **c).await.map(|_| ())
        })
        .map_err(repo_err)?;
    }
    // In one order everywhere: on PostgreSQL, concurrent rounds inserting the same new
    // kinds then wait for each other instead of deadlocking.
    let mut kinds = kinds.to_vec();
    kinds
        .sort_unstable_by(|a, b| (&a.param, &a.value, &a.kind).cmp(&(&b.param, &b.value, &b.kind)));
    for chunk in kinds.chunks(400) {
        let sql = format!(
            "INSERT INTO device_kinds (tenant_id, kind, param, value) VALUES {} \
             ON CONFLICT DO NOTHING",
            placeholders(tx, chunk.len(), 4, None)
        );
        on_tx!(tx, c => {
            let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
            for k in chunk {
                q = q.bind(&t).bind(&k.kind).bind(&k.param).bind(&k.value);
            }
            q.execute(&mut **c).await.map(|_| ())
        })
        .map_err(repo_err)?;
    }
    Ok(())
}

/// The number and patient of each of the tenant's `devices` (a round names a few).
async fn numbers<'d>(
    tx: &mut Tx,
    tenant: TenantId,
    devices: impl Iterator<Item = &'d str>,
) -> Result<std::collections::HashMap<String, (i64, PatientId)>, RepoError> {
    let mut ids: Vec<&str> = devices.collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(400) {
        let sql = format!(
            "SELECT id, num, patient_id FROM devices WHERE tenant_id = $1 AND id IN ({})",
            (2..chunk.len() + 2).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
        );
        let rows: Vec<(String, i64, String)> = on_tx!(tx, c => {
            let mut q = sqlx::query_as(AssertSqlSafe(sql.clone())).bind(tenant.to_string());
            for id in chunk {
                q = q.bind(*id);
            }
            q.fetch_all(&mut **c).await
        })
        .map_err(repo_err)?;
        for (id, num, patient) in rows {
            out.insert(id, (num, patient.parse().map_err(|_| corrupt("patient id"))?));
        }
    }
    Ok(out)
}

/// Erases a patient's readings: their rows go, and their batches keep no body (the key
/// that sealed them is destroyed in the same transaction).
pub(super) async fn erase_tx(
    tx: &mut Tx,
    tenant: TenantId,
    patient: PatientId,
) -> Result<(), RepoError> {
    let (t, p) = (tenant.to_string(), patient.to_string());
    on_tx!(tx, c => {
        sqlx::query(
            "DELETE FROM device_readings WHERE tenant_id = $1 AND dev IN \
             (SELECT num FROM devices WHERE tenant_id = $1 AND patient_id = $2)")
            .bind(&t).bind(&p).execute(&mut **c).await.map_err(repo_err)?;
        sqlx::query(
            "UPDATE device_batches SET body = $3 WHERE tenant_id = $1 AND device_id IN \
             (SELECT id FROM devices WHERE tenant_id = $1 AND patient_id = $2)")
            .bind(&t).bind(&p).bind(Vec::<u8>::new()).execute(&mut **c).await.map(|_| ())
            .map_err(repo_err)
    })
}
