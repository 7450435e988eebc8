//! The audit log's tables: segments (each tenant's run of a group commit's entries), their
//! search keys, and the signed heads. Appends are inserts only; nothing here updates or
//! deletes.

use std::collections::HashMap;

use telesafe_core::audit::{
    AuditFilter, AuditRepository, Entry, Hash, Segment, SignedTreeHead, search_key,
};
use telesafe_core::{RepoError, TenantId};

use crate::Store;
use crate::tx::{Scope, Tx, on_tx, repo_err};

fn corrupt(what: &str) -> RepoError {
    RepoError::Backend(format!("stored audit {what} failed to parse"))
}

/// (first_seq, count, tenant_id, min_at, max_at, body, leaves)
type SegmentRow = (i64, i64, String, i64, i64, Vec<u8>, Vec<u8>);

fn to_segment(r: SegmentRow) -> Result<Segment, RepoError> {
    let (first_seq, count, tenant_id, min_at, max_at, body, leaves) = r;
    Ok(Segment {
        first_seq: u64::try_from(first_seq).map_err(|_| corrupt("seq"))?,
        count: u32::try_from(count).map_err(|_| corrupt("count"))?,
        tenant_id,
        min_at,
        max_at,
        body,
        leaves,
        keys: Vec::new(),
    })
}

/// Segment columns, for `query_as::<_, SegmentRow>` (static SQL, as sqlx requires).
macro_rules! select_segments {
    ($tail:literal) => {
        concat!(
            "SELECT first_seq, count, tenant_id, min_at, max_at, body, leaves FROM audit_segments ",
            $tail
        )
    };
}

/// Key rows per INSERT (two integers each).
const KEYS_PER_INSERT: usize = 256;

/// (idx, tree_size, root, at, signature)
type HeadRow = (i64, i64, Vec<u8>, i64, Vec<u8>);

fn to_head((idx, size, root, at, signature): HeadRow) -> Result<SignedTreeHead, RepoError> {
    Ok(SignedTreeHead {
        index: u64::try_from(idx).map_err(|_| corrupt("head index"))?,
        size: u64::try_from(size).map_err(|_| corrupt("head size"))?,
        root: root.try_into().unwrap_or([0u8; 32]),
        at,
        signature,
    })
}

/// Inserts a head; `false` when a head with its index is stored already.
async fn insert_head(tx: &mut Tx, h: &SignedTreeHead) -> Result<bool, RepoError> {
    on_tx!(&mut *tx, c => sqlx::query(
        "INSERT INTO audit_heads (idx, tree_size, root, at, signature) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idx) DO NOTHING")
        .bind(to_i64(h.index))
        .bind(to_i64(h.size))
        .bind(h.root.as_slice())
        .bind(h.at)
        .bind(&h.signature)
        .execute(&mut **c).await.map(|r| r.rows_affected() == 1))
    .map_err(repo_err)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn insert_segment(tx: &mut Tx, s: &Segment) -> Result<(), RepoError> {
    on_tx!(&mut *tx, c => sqlx::query(
        "INSERT INTO audit_segments (first_seq, count, tenant_id, min_at, max_at, body, leaves) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(to_i64(s.first_seq))
        .bind(i64::from(s.count))
        .bind(s.tenant_id.as_str())
        .bind(s.min_at)
        .bind(s.max_at)
        .bind(s.body.as_slice())
        .bind(s.leaves.as_slice())
        .execute(&mut **c).await.map(|_| ()))
    .map_err(repo_err)?;
    insert_keys(tx, &s.keys, s.first_seq).await
}

async fn insert_keys(tx: &mut Tx, keys: &[i64], first_seq: u64) -> Result<(), RepoError> {
    for chunk in keys.chunks(KEYS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO audit_keys (key, first_seq) VALUES {}",
            crate::tx::placeholders(tx, chunk.len(), 2, None)
        );
        on_tx!(&mut *tx, c => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for key in chunk {
                q = q.bind(*key).bind(to_i64(first_seq));
            }
            q.execute(&mut **c).await.map(|_| ())
        })
        .map_err(repo_err)?;
    }
    Ok(())
}

impl Store {
    /// The segments from `from` (see [`AuditRepository::audit_segments`]), without keys.
    async fn segment_rows(
        &self,
        tx: &mut Tx,
        from: u64,
        span: u64,
    ) -> Result<Vec<Segment>, RepoError> {
        let rows: Vec<SegmentRow> = on_tx!(&mut *tx, c => sqlx::query_as(select_segments!(
            "WHERE first_seq >= $1 AND first_seq < $2 ORDER BY first_seq"))
            .bind(to_i64(from))
            .bind(to_i64(from.saturating_add(span)))
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        let rows = if rows.is_empty() {
            on_tx!(&mut *tx, c => sqlx::query_as(select_segments!(
                "WHERE first_seq >= $1 ORDER BY first_seq LIMIT 1"))
                .bind(to_i64(from))
                .fetch_all(&mut **c).await)
            .map_err(repo_err)?
        } else {
            rows
        };
        rows.into_iter().map(to_segment).collect()
    }
}

impl Store {
    /// Gives the segments converted from an earlier release's rows (migration 22) their
    /// search keys, then empties the list. SQLite has no SHA-256, so this cannot be SQL.
    pub(crate) async fn finish_audit_upgrade(&self) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let pending: Vec<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT first_seq FROM audit_keys_pending ORDER BY first_seq")
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        let mut todo = pending.iter().filter_map(|s| u64::try_from(*s).ok()).peekable();
        while let Some(&from) = todo.peek() {
            let segments = self.segment_rows(&mut tx, from, 65_536).await?;
            let Some(last) = segments.last().map(|s| s.first_seq) else { break };
            for s in segments {
                if todo.next_if_eq(&s.first_seq).is_none() {
                    continue;
                }
                let entries = s.entries().map_err(|e| RepoError::Backend(e.to_string()))?;
                let mut rebuilt =
                    telesafe_core::audit::SegmentBuilder::new(s.first_seq, &s.tenant_id);
                for (e, _) in &entries {
                    rebuilt.append(e);
                }
                let keys = rebuilt.finish().keys;
                insert_keys(&mut tx, &keys, s.first_seq).await?;
            }
            while todo.next_if(|s| *s <= last).is_some() {}
        }
        on_tx!(&mut tx, c => sqlx::query("DELETE FROM audit_keys_pending").execute(&mut **c).await.map(|_| ()))
            .map_err(repo_err)?;
        tx.commit().await
    }
}

impl AuditRepository for Store {
    async fn append_segments(
        &self,
        segments: &[Segment],
        head: Option<&SignedTreeHead>,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin_write(Scope::Platform).await?;
        for s in segments {
            insert_segment(&mut tx, s).await?;
        }
        // Another node may have taken the head's index: the segments go in regardless.
        let stored = match head {
            Some(h) => insert_head(&mut tx, h).await?,
            None => false,
        };
        tx.commit().await?;
        Ok(stored)
    }

    async fn audit_segments(&self, from: u64, span: u64) -> Result<Vec<Segment>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let mut segments = self.segment_rows(&mut tx, from, span).await?;
        if let (Some(first), Some(last)) = (segments.first(), segments.last()) {
            let keys: Vec<(i64, i64)> = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT first_seq, key FROM audit_keys WHERE first_seq >= $1 AND first_seq <= $2 \
                 ORDER BY first_seq, key")
                .bind(to_i64(first.first_seq))
                .bind(to_i64(last.first_seq))
                .fetch_all(&mut **c).await)
            .map_err(repo_err)?;
            let at: HashMap<u64, usize> =
                segments.iter().enumerate().map(|(i, s)| (s.first_seq, i)).collect();
            for (seq, key) in keys {
                // A key of no segment is ignored here: it points searches at nothing.
                if let Some(&i) = u64::try_from(seq).ok().and_then(|s| at.get(&s)) {
                    segments[i].keys.push(key);
                }
            }
        }
        tx.commit().await?;
        Ok(segments)
    }

    async fn audit_entries(&self, from: u64, limit: u32) -> Result<Vec<(Entry, Hash)>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        // Start at the segment holding `from`.
        let start: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT MAX(first_seq) FROM audit_segments WHERE first_seq <= $1")
            .bind(to_i64(from))
            .fetch_one(&mut **c).await)
        .map_err(repo_err)?;
        let mut next = start.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
        let mut out = Vec::new();
        while out.len() < limit as usize {
            let segments = self.segment_rows(&mut tx, next, u64::from(limit) + 4096).await?;
            let Some(last) = segments.last() else { break };
            next = last.first_seq + u64::from(last.count.max(1));
            for s in &segments {
                let entries = s.entries().map_err(|e| RepoError::Backend(e.to_string()))?;
                out.extend(entries.into_iter().filter(|(e, _)| e.seq >= from));
            }
        }
        tx.commit().await?;
        out.truncate(limit as usize);
        Ok(out)
    }

    async fn audit_size(&self) -> Result<u64, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let n: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT MAX(first_seq + count) FROM audit_segments")
            .fetch_one(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    async fn save_head(&self, h: &SignedTreeHead) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        if !insert_head(&mut tx, h).await? {
            return Err(RepoError::Conflict);
        }
        tx.commit().await
    }

    async fn last_head(&self) -> Result<Option<SignedTreeHead>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let row: Option<HeadRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT idx, tree_size, root, at, signature FROM audit_heads ORDER BY idx DESC LIMIT 1")
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(to_head).transpose()
    }

    async fn heads(&self) -> Result<Vec<SignedTreeHead>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let rows: Vec<HeadRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT idx, tree_size, root, at, signature FROM audit_heads ORDER BY idx")
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(to_head).collect()
    }

    async fn search_audit(
        &self,
        tenant: TenantId,
        f: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<Entry>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let tenant = tenant.to_string();
        // The narrowest key the filter names picks the segments; every filter is then
        // applied to each entry.
        let key = match (&f.patient_id, &f.actor_id) {
            (Some(p), _) if !p.is_empty() => Some(search_key(&tenant, b'p', p)),
            (_, Some(a)) if !a.is_empty() => Some(search_key(&tenant, b'a', a)),
            _ => None,
        };
        let (from, until) = (f.from.unwrap_or(i64::MIN), f.until.unwrap_or(i64::MAX));
        let wanted = |e: &Entry| {
            e.tenant_id == tenant
                && f.actor_id.as_deref().is_none_or(|a| a.is_empty() || e.actor_id == a)
                && f.patient_id.as_deref().is_none_or(|p| p.is_empty() || e.patient_id == p)
                && f.action.as_deref().is_none_or(|a| a.is_empty() || e.action == a)
                && e.at >= from
                && e.at < until
        };
        let mut out = Vec::new();
        let mut before = i64::MAX;
        while out.len() < limit as usize {
            // Newest segments first, a page at a time.
            let rows: Vec<SegmentRow> = if let Some(key) = key {
                on_tx!(&mut tx, c => sqlx::query_as(
                    "SELECT s.first_seq, s.count, s.tenant_id, s.min_at, s.max_at, s.body, s.leaves \
                     FROM audit_keys k JOIN audit_segments s ON s.first_seq = k.first_seq \
                     WHERE k.key = $1 AND s.tenant_id = $2 AND k.first_seq < $3 \
                     AND s.max_at >= $4 AND s.min_at < $5 ORDER BY k.first_seq DESC LIMIT 32")
                    .bind(key).bind(tenant.as_str()).bind(before).bind(from).bind(until)
                    .fetch_all(&mut **c).await)
            } else {
                on_tx!(&mut tx, c => sqlx::query_as(select_segments!(
                    "WHERE tenant_id = $1 AND first_seq < $2 AND max_at >= $3 AND min_at < $4 \
                     ORDER BY first_seq DESC LIMIT 32"))
                    .bind(tenant.as_str()).bind(before).bind(from).bind(until)
                    .fetch_all(&mut **c).await)
            }
            .map_err(repo_err)?;
            let Some(last) = rows.last() else { break };
            before = last.0;
            for row in rows {
                let entries =
                    to_segment(row)?.entries().map_err(|e| RepoError::Backend(e.to_string()))?;
                out.extend(entries.into_iter().rev().map(|(e, _)| e).filter(|e| wanted(e)));
            }
        }
        tx.commit().await?;
        out.truncate(limit as usize);
        Ok(out)
    }
}
