//! The audit log's tables. Appends are inserts only; nothing here updates or deletes.

use telesafe_core::audit::{
    ActorKind, AuditFilter, AuditRepository, Entry, Hash, Purpose, SignedTreeHead,
};
use telesafe_core::{RepoError, TenantId};

use crate::Store;
use crate::tx::{Scope, on_tx, repo_err};

#[derive(sqlx::FromRow)]
struct EntryRow {
    seq: i64,
    at: i64,
    tenant_id: String,
    actor_kind: String,
    actor_id: String,
    actor_role: String,
    action: String,
    resource_type: String,
    resource_id: String,
    patient_id: String,
    purpose: String,
    outcome: String,
    source: String,
    session: String,
    request_id: String,
    leaf_hash: Vec<u8>,
}

fn corrupt(what: &str) -> RepoError {
    RepoError::Backend(format!("stored audit {what} failed to parse"))
}

impl EntryRow {
    fn into_entry(self) -> Result<(Entry, Hash), RepoError> {
        let e = Entry {
            seq: u64::try_from(self.seq).map_err(|_| corrupt("seq"))?,
            at: self.at,
            tenant_id: self.tenant_id,
            actor_kind: ActorKind::parse(&self.actor_kind).ok_or_else(|| corrupt("actor kind"))?,
            actor_id: self.actor_id,
            actor_role: self.actor_role,
            action: self.action,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            patient_id: self.patient_id,
            purpose: Purpose::parse(&self.purpose).ok_or_else(|| corrupt("purpose"))?,
            outcome: self.outcome,
            source: self.source,
            session: self.session,
            request_id: self.request_id,
        };
        // A stored hash of the wrong length is kept as all zeroes, so verification names
        // the entry instead of failing to read the log.
        let h: Hash = self.leaf_hash.try_into().unwrap_or([0u8; 32]);
        Ok((e, h))
    }
}

/// Every entry column, in the order of `EntryRow` (static SQL, as sqlx requires).
macro_rules! select_entries {
    ($tail:literal) => {
        concat!(
            "SELECT seq, at, tenant_id, actor_kind, actor_id, actor_role, action, resource_type, \
             resource_id, patient_id, purpose, outcome, source, session, request_id, leaf_hash \
             FROM audit_entries ",
            $tail
        )
    };
}

/// Rows per INSERT. Measured (BENCHMARKS.md): on SQLite with anonymous `?` placeholders
/// (sqlx resolves each `$N` by a linear scan, quadratic per statement), bigger is better:
/// 512 rows 165k rows/s, 128 rows 153k, against 84k with 8 rows of `$N`. PostgreSQL: 32
/// rows (77k against 14k at 256).
const SQLITE_ROWS_PER_INSERT: usize = 512;
const POSTGRES_ROWS_PER_INSERT: usize = 32;
const COLUMNS: usize = 16;

/// `INSERT ... VALUES (...), (...), ...` for `rows` rows (anonymous `?` placeholders on
/// SQLite, `$N` on PostgreSQL). Only placeholders are generated; no value is ever part of
/// the text.
fn insert_statement(tx: &crate::tx::Tx, rows: usize) -> String {
    format!(
        "INSERT INTO audit_entries (seq, at, tenant_id, actor_kind, actor_id, actor_role, action, \
         resource_type, resource_id, patient_id, purpose, outcome, source, session, request_id, \
         leaf_hash) VALUES {}",
        crate::tx::placeholders(tx, rows, COLUMNS, None)
    )
}

/// (idx, tree_size, root, at, signature)
type HeadRow = (i64, i64, Vec<u8>, i64, Vec<u8>);

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl AuditRepository for Store {
    async fn append_audit(&self, entries: &[(Entry, Hash)]) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        // Many rows per statement: a group commit of thousands of entries is a few
        // statements, not thousands of round trips.
        let max = match &tx {
            crate::tx::Tx::Sqlite(_) => SQLITE_ROWS_PER_INSERT,
            crate::tx::Tx::Postgres(_) => POSTGRES_ROWS_PER_INSERT,
        };
        let mut rest = entries;
        while !rest.is_empty() {
            // Power-of-two chunks: a handful of distinct statements, each prepared once and
            // then reused from the statement cache.
            let take = if rest.len() >= max {
                max
            } else {
                1 << (usize::BITS - 1 - rest.len().leading_zeros())
            };
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            let sql = insert_statement(&tx, chunk.len());
            on_tx!(&mut tx, c => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for (e, h) in chunk {
                    q = q
                        .bind(to_i64(e.seq))
                        .bind(e.at)
                        .bind(e.tenant_id.as_str())
                        .bind(e.actor_kind.as_str())
                        .bind(e.actor_id.as_str())
                        .bind(e.actor_role.as_str())
                        .bind(e.action.as_str())
                        .bind(e.resource_type.as_str())
                        .bind(e.resource_id.as_str())
                        .bind(e.patient_id.as_str())
                        .bind(e.purpose.as_str())
                        .bind(e.outcome.as_str())
                        .bind(e.source.as_str())
                        .bind(e.session.as_str())
                        .bind(e.request_id.as_str())
                        .bind(h.as_slice());
                }
                q.execute(&mut **c).await.map(|_| ())
            })
            .map_err(repo_err)?;
        }
        tx.commit().await
    }

    async fn audit_entries(&self, from: u64, limit: u32) -> Result<Vec<(Entry, Hash)>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let rows: Vec<EntryRow> = on_tx!(&mut tx, c => sqlx::query_as(
            select_entries!("WHERE seq >= $1 ORDER BY seq LIMIT $2"))
            .bind(to_i64(from))
            .bind(i64::from(limit))
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    async fn audit_size(&self) -> Result<u64, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let n: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT MAX(seq) FROM audit_entries")
            .fetch_one(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n.map_or(0, |n| u64::try_from(n + 1).unwrap_or(0)))
    }

    async fn save_head(&self, h: &SignedTreeHead) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO audit_heads (idx, tree_size, root, at, signature) VALUES ($1, $2, $3, $4, $5)")
            .bind(to_i64(h.index))
            .bind(to_i64(h.size))
            .bind(h.root.as_slice())
            .bind(h.at)
            .bind(&h.signature)
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn heads(&self) -> Result<Vec<SignedTreeHead>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let rows: Vec<HeadRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT idx, tree_size, root, at, signature FROM audit_heads ORDER BY idx")
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter()
            .map(|(idx, size, root, at, signature)| {
                Ok(SignedTreeHead {
                    index: u64::try_from(idx).map_err(|_| corrupt("head index"))?,
                    size: u64::try_from(size).map_err(|_| corrupt("head size"))?,
                    root: root.try_into().unwrap_or([0u8; 32]),
                    at,
                    signature,
                })
            })
            .collect()
    }

    async fn search_audit(
        &self,
        tenant: TenantId,
        f: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<Entry>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        // Each filter is "unset or equal", so one static statement serves every search.
        let rows: Vec<EntryRow> = on_tx!(&mut tx, c => sqlx::query_as(select_entries!(
            "WHERE tenant_id = $1 AND ($2 = '' OR actor_id = $2) AND ($3 = '' OR patient_id = $3) \
             AND ($4 = '' OR action = $4) AND at >= $5 AND at < $6 ORDER BY seq DESC LIMIT $7"))
            .bind(tenant.to_string())
            .bind(f.actor_id.clone().unwrap_or_default())
            .bind(f.patient_id.clone().unwrap_or_default())
            .bind(f.action.clone().unwrap_or_default())
            .bind(f.from.unwrap_or(i64::MIN))
            .bind(f.until.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(|r| r.into_entry().map(|(e, _)| e)).collect()
    }
}
