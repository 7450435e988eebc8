//! Video visits, their clinicians and the patients' passes; and, on PostgreSQL, the relay
//! table that carries signaling between nodes.

use telesafe_core::visits::{IdentityMethod, Visit, VisitPass, VisitRepository, VisitStatus};
use telesafe_core::{RepoError, TenantId, Timestamp, UserId, VisitId};
use telesafe_crypto::TokenHash;

use crate::tx::{Scope, on_tx, repo_err};
use crate::{Pool, Store};

fn corrupt(what: &str) -> RepoError {
    RepoError::Backend(format!("stored visit {what} failed to parse"))
}

const COLUMNS: &str = "id, tenant_id, patient_id, appointment_id, starts_at, ends_at, status, \
     link_hash, link_failures, link_locked_until, present_key, present_at, admitted_key, \
     started_at, ended_at, identity_method, encounter_id, note_id, created_by, created_at";

#[derive(sqlx::FromRow)]
struct VisitRow {
    id: String,
    tenant_id: String,
    patient_id: String,
    appointment_id: String,
    starts_at: i64,
    ends_at: i64,
    status: String,
    link_hash: String,
    link_failures: i64,
    link_locked_until: Option<i64>,
    present_key: Option<String>,
    present_at: Option<i64>,
    admitted_key: Option<String>,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    identity_method: Option<String>,
    encounter_id: Option<String>,
    note_id: Option<String>,
    created_by: String,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct PassRow {
    pass_hash: String,
    tenant_id: String,
    visit_id: String,
    patient_id: String,
    created_at: i64,
    expires_at: i64,
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

impl VisitRow {
    fn into_visit(self, clinicians: Vec<UserId>) -> Result<Visit, RepoError> {
        Ok(Visit {
            id: self.id.parse().map_err(|_| corrupt("id"))?,
            tenant: self.tenant_id.parse().map_err(|_| corrupt("tenant"))?,
            patient: self.patient_id.parse().map_err(|_| corrupt("patient"))?,
            clinicians,
            appointment_id: self.appointment_id,
            starts_at: ts(self.starts_at),
            ends_at: ts(self.ends_at),
            status: VisitStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            link_hash: TokenHash::from_stored(self.link_hash),
            link_failures: u32::try_from(self.link_failures).map_err(|_| corrupt("failures"))?,
            link_locked_until: self.link_locked_until.map(ts),
            present_key: self.present_key,
            present_at: self.present_at.map(ts),
            admitted_key: self.admitted_key,
            started_at: self.started_at.map(ts),
            ended_at: self.ended_at.map(ts),
            identity_method: match self.identity_method {
                Some(m) => Some(IdentityMethod::parse(&m).ok_or_else(|| corrupt("identity"))?),
                None => None,
            },
            encounter_id: self.encounter_id,
            note_id: self.note_id,
            created_by: self.created_by.parse().map_err(|_| corrupt("creator"))?,
            created_at: ts(self.created_at),
        })
    }
}

impl Store {
    /// Loads rows with their clinicians, in the rows' order.
    async fn with_clinicians(
        &self,
        tenant: TenantId,
        rows: Vec<VisitRow>,
    ) -> Result<Vec<Visit>, RepoError> {
        let mut out = Vec::with_capacity(rows.len());
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        for row in rows {
            let users: Vec<(String,)> = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT user_id FROM visit_clinicians WHERE visit_id = $1 ORDER BY user_id")
                .bind(&row.id).fetch_all(&mut **c).await)
            .map_err(repo_err)?;
            let users = users
                .into_iter()
                .map(|(u,)| u.parse().map_err(|_| corrupt("clinician")))
                .collect::<Result<Vec<UserId>, _>>()?;
            out.push(row.into_visit(users)?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn visit_where(
        &self,
        scope: Scope,
        clause: &str,
        arg: String,
    ) -> Result<Option<Visit>, RepoError> {
        let mut tx = self.begin(scope).await?;
        let sql = format!("SELECT {COLUMNS} FROM visits WHERE {clause}");
        let row: Option<VisitRow> = on_tx!(&mut tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(arg).fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let tenant = row.tenant_id.parse().map_err(|_| corrupt("tenant"))?;
        Ok(self.with_clinicians(tenant, vec![row]).await?.pop())
    }

    /// Runs one `UPDATE visits SET ... WHERE tenant_id = $1 AND id = $2 ...` with the
    /// further arguments bound in order; returns the rows changed.
    async fn update_visit(
        &self,
        tenant: TenantId,
        id: VisitId,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<u64, RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(tenant.to_string())
                .bind(id.to_string());
            for a in args {
                q = match a {
                    Arg::Int(v) => q.bind(*v),
                    Arg::OptInt(v) => q.bind(*v),
                    Arg::Text(v) => q.bind(v.to_string()),
                };
            }
            q.execute(&mut **c).await.map(|r| r.rows_affected())
        })
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n)
    }

    /// Writes one signaling message to the relay and announces it to every node (one
    /// statement, so the announcement is sent exactly when the row commits). PostgreSQL
    /// only; SQLite runs one node and needs no relay.
    pub async fn relay_signal(
        &self,
        tenant: TenantId,
        visit: VisitId,
        body: &str,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let Pool::Postgres(_) = &self.pool else { return Ok(()) };
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "WITH r AS (INSERT INTO signal_relay (tenant_id, visit_id, body, created_at) \
                        VALUES ($1, $2, $3, $4) RETURNING id) \
             SELECT pg_notify('telesafe_signal', r.id::text) FROM r")
            .bind(tenant.to_string()).bind(visit.to_string()).bind(body).bind(now.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    /// A relayed message by id (read by every node on its announcement).
    pub async fn relayed_signal(&self, id: i64) -> Result<Option<String>, RepoError> {
        let Pool::Postgres(_) = &self.pool else { return Ok(None) };
        let mut tx = self.begin(Scope::Platform).await?;
        let row: Option<(String,)> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT body FROM signal_relay WHERE id = $1")
            .bind(id).fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(row.map(|(b,)| b))
    }

    /// Deletes relayed messages older than `before`.
    pub async fn prune_signals(&self, before: Timestamp) -> Result<u64, RepoError> {
        let Pool::Postgres(_) = &self.pool else { return Ok(0) };
        let mut tx = self.begin(Scope::Platform).await?;
        let n = on_tx!(&mut tx, c => sqlx::query("DELETE FROM signal_relay WHERE created_at < $1")
            .bind(before.unix_millis()).execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n)
    }

    /// A listener for relay announcements (PostgreSQL only).
    pub async fn signal_listener(&self) -> Result<Option<sqlx::postgres::PgListener>, RepoError> {
        let Pool::Postgres(p) = &self.pool else { return Ok(None) };
        let mut l = sqlx::postgres::PgListener::connect_with(p).await.map_err(repo_err)?;
        l.listen("telesafe_signal").await.map_err(repo_err)?;
        Ok(Some(l))
    }
}

enum Arg<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
}

impl VisitRepository for Store {
    async fn create_visit(&self, v: &Visit) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(v.tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO visits (id, tenant_id, patient_id, appointment_id, starts_at, ends_at, \
                 status, link_hash, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(v.id.to_string()).bind(v.tenant.to_string()).bind(v.patient.to_string())
            .bind(&v.appointment_id).bind(v.starts_at.unix_millis()).bind(v.ends_at.unix_millis())
            .bind(v.status.as_str()).bind(v.link_hash.as_str()).bind(v.created_by.to_string())
            .bind(v.created_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        for u in &v.clinicians {
            on_tx!(&mut tx, c => sqlx::query(
                "INSERT INTO visit_clinicians (tenant_id, visit_id, user_id) VALUES ($1, $2, $3)")
                .bind(v.tenant.to_string()).bind(v.id.to_string()).bind(u.to_string())
                .execute(&mut **c).await.map(|_| ()))
            .map_err(repo_err)?;
        }
        tx.commit().await
    }

    async fn visit(&self, tenant: TenantId, id: VisitId) -> Result<Option<Visit>, RepoError> {
        let v = self.visit_where(Scope::Tenant(tenant), "id = $1", id.to_string()).await?;
        Ok(v.filter(|v| v.tenant == tenant))
    }

    async fn visit_by_link(&self, link: &TokenHash) -> Result<Option<Visit>, RepoError> {
        self.visit_where(Scope::Platform, "link_hash = $1", link.as_str().to_owned()).await
    }

    async fn visits_between(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Visit>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM visits WHERE tenant_id = $1 AND starts_at >= $2 \
             AND starts_at < $3 ORDER BY starts_at, id"
        );
        let rows: Vec<VisitRow> = on_tx!(&mut tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string()).bind(from.unix_millis()).bind(to.unix_millis())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        self.with_clinicians(tenant, rows).await
    }

    async fn claim_link_attempt(
        &self,
        tenant: TenantId,
        id: VisitId,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        let max = i64::from(telesafe_core::visits::MAX_LINK_FAILURES);
        let n = self
            .update_visit(
                tenant,
                id,
                "UPDATE visits SET link_failures = link_failures + 1 \
                 WHERE tenant_id = $1 AND id = $2 AND link_failures < $3 \
                   AND (link_locked_until IS NULL OR link_locked_until <= $4)",
                &[Arg::Int(max), Arg::Int(now.unix_millis())],
            )
            .await?;
        Ok(n == 1)
    }

    async fn link_failed(
        &self,
        tenant: TenantId,
        id: VisitId,
        now: Timestamp,
    ) -> Result<u32, RepoError> {
        let max = telesafe_core::visits::MAX_LINK_FAILURES;
        let lock_until = now.plus(telesafe_core::visits::LINK_LOCKOUT).unix_millis();
        // One statement: the count that reached the limit locks the link and starts again.
        let locked = self
            .update_visit(
                tenant,
                id,
                "UPDATE visits SET link_locked_until = $4, link_failures = 0 \
                 WHERE tenant_id = $1 AND id = $2 AND link_failures >= $3",
                &[Arg::Int(i64::from(max)), Arg::Int(lock_until)],
            )
            .await?;
        if locked == 1 {
            return Ok(max);
        }
        let v = self.visit(tenant, id).await?.ok_or(RepoError::NotFound)?;
        Ok(v.link_failures)
    }

    async fn issue_pass(&self, p: &VisitPass) -> Result<(), RepoError> {
        let mut tx = self.begin_write(Scope::Tenant(p.tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM visit_passes WHERE tenant_id = $1 AND visit_id = $2")
            .bind(p.tenant.to_string()).bind(p.visit.to_string())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO visit_passes (pass_hash, tenant_id, visit_id, patient_id, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(p.hash.as_str()).bind(p.tenant.to_string()).bind(p.visit.to_string())
            .bind(p.patient.to_string()).bind(p.created_at.unix_millis())
            .bind(p.expires_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE visits SET link_failures = 0, link_locked_until = NULL \
             WHERE tenant_id = $1 AND id = $2")
            .bind(p.tenant.to_string()).bind(p.visit.to_string())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn visit_pass(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<VisitPass>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let row: Option<PassRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT pass_hash, tenant_id, visit_id, patient_id, created_at, expires_at \
             FROM visit_passes WHERE pass_hash = $1 AND expires_at > $2")
            .bind(hash.as_str()).bind(now.unix_millis()).fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(|r| {
            Ok(VisitPass {
                hash: TokenHash::from_stored(r.pass_hash),
                tenant: r.tenant_id.parse().map_err(|_| corrupt("pass tenant"))?,
                visit: r.visit_id.parse().map_err(|_| corrupt("pass visit"))?,
                patient: r.patient_id.parse().map_err(|_| corrupt("pass patient"))?,
                created_at: ts(r.created_at),
                expires_at: ts(r.expires_at),
            })
        })
        .transpose()
    }

    async fn set_presence(
        &self,
        tenant: TenantId,
        id: VisitId,
        key: &str,
        at: Option<Timestamp>,
    ) -> Result<(), RepoError> {
        match at {
            Some(at) => {
                self.update_visit(
                    tenant,
                    id,
                    "UPDATE visits SET present_key = $3, present_at = $4 \
                     WHERE tenant_id = $1 AND id = $2",
                    &[Arg::Text(key), Arg::Int(at.unix_millis())],
                )
                .await?
            }
            None => {
                self.update_visit(
                    tenant,
                    id,
                    "UPDATE visits SET present_at = $4 \
                     WHERE tenant_id = $1 AND id = $2 AND present_key = $3",
                    &[Arg::Text(key), Arg::OptInt(None)],
                )
                .await?
            }
        };
        Ok(())
    }

    async fn admit(
        &self,
        tenant: TenantId,
        id: VisitId,
        key: &str,
        encounter_id: &str,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let n = self
            .update_visit(
                tenant,
                id,
                "UPDATE visits SET admitted_key = $3, status = 'in-progress', \
                   started_at = COALESCE(started_at, $4), \
                   encounter_id = COALESCE(encounter_id, $5) \
                 WHERE tenant_id = $1 AND id = $2 AND status IN ('booked', 'in-progress')",
                &[Arg::Text(key), Arg::Int(now.unix_millis()), Arg::Text(encounter_id)],
            )
            .await?;
        if n == 0 { Err(RepoError::NotFound) } else { Ok(()) }
    }

    async fn set_identity_method(
        &self,
        tenant: TenantId,
        id: VisitId,
        method: IdentityMethod,
    ) -> Result<(), RepoError> {
        self.update_visit(
            tenant,
            id,
            "UPDATE visits SET identity_method = $3 WHERE tenant_id = $1 AND id = $2",
            &[Arg::Text(method.as_str())],
        )
        .await
        .map(|_| ())
    }

    async fn set_note(
        &self,
        tenant: TenantId,
        id: VisitId,
        note_id: &str,
    ) -> Result<(), RepoError> {
        self.update_visit(
            tenant,
            id,
            "UPDATE visits SET note_id = $3 WHERE tenant_id = $1 AND id = $2",
            &[Arg::Text(note_id)],
        )
        .await
        .map(|_| ())
    }

    async fn end_visit(
        &self,
        tenant: TenantId,
        id: VisitId,
        status: VisitStatus,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        let n = self
            .update_visit(
                tenant,
                id,
                "UPDATE visits SET status = $3, ended_at = $4, present_at = NULL \
                 WHERE tenant_id = $1 AND id = $2 AND status IN ('booked', 'in-progress')",
                &[Arg::Text(status.as_str()), Arg::Int(now.unix_millis())],
            )
            .await?;
        if n == 1 {
            // The passes are of no use any more.
            let mut tx = self.begin_write(Scope::Tenant(tenant)).await?;
            on_tx!(&mut tx, c => sqlx::query(
                "DELETE FROM visit_passes WHERE tenant_id = $1 AND visit_id = $2")
                .bind(tenant.to_string()).bind(id.to_string())
                .execute(&mut **c).await.map(|_| ()))
            .map_err(repo_err)?;
            tx.commit().await?;
        }
        Ok(n == 1)
    }
}
