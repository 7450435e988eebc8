//! Identity repositories: tenants, users, patients, sessions, setup tokens.

use std::str::FromStr;

use telesafe_core::identity::{
    AuthEvent, AuthEventFeed, AuthEventKind, AuthEventRepository, DisplayName, Email,
    MirrorPosition, NewUser, Patient, PatientRepository, Role, Session, SessionRepository,
    SessionStage, SetupToken, SetupTokenRepository, Tenant, TenantRepository, TenantSessionLimits,
    TenantSlug, User, UserRepository, UserStatus,
};
use telesafe_core::{PatientId, RepoError, TenantId, Timestamp, UserId};
use telesafe_crypto::TokenHash;

use crate::Store;
use crate::tx::{Scope, on_tx, repo_err};

fn corrupt(what: &str) -> RepoError {
    RepoError::Backend(format!("stored {what} failed to parse"))
}

fn parse<T: FromStr>(s: &str, what: &str) -> Result<T, RepoError> {
    s.parse().map_err(|_| corrupt(what))
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    slug: String,
    name: String,
    created_at: i64,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = RepoError;
    fn try_from(r: TenantRow) -> Result<Self, RepoError> {
        Ok(Tenant {
            id: parse(&r.id, "tenant id")?,
            slug: TenantSlug::parse(&r.slug).map_err(|_| corrupt("tenant slug"))?,
            name: DisplayName::parse(&r.name).map_err(|_| corrupt("tenant name"))?,
            created_at: Timestamp::from_unix_millis(r.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    tenant_id: String,
    email: String,
    display_name: String,
    role: String,
    status: String,
    password_hash: Option<String>,
    created_at: i64,
    failed_attempts: i64,
    last_failed_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = RepoError;
    fn try_from(r: UserRow) -> Result<Self, RepoError> {
        Ok(User {
            id: parse(&r.id, "user id")?,
            tenant_id: parse(&r.tenant_id, "tenant id")?,
            email: Email::parse(&r.email).map_err(|_| corrupt("email"))?,
            display_name: DisplayName::parse(&r.display_name).map_err(|_| corrupt("name"))?,
            role: Role::from_str(&r.role).map_err(|_| corrupt("role"))?,
            status: UserStatus::from_str(&r.status).map_err(|_| corrupt("status"))?,
            password_hash: r.password_hash,
            created_at: Timestamp::from_unix_millis(r.created_at),
            failed_attempts: u32::try_from(r.failed_attempts).unwrap_or(u32::MAX),
            last_failed_at: Timestamp::from_unix_millis(r.last_failed_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct PatientRow {
    id: String,
    tenant_id: String,
    user_id: Option<String>,
    created_at: i64,
}

impl TryFrom<PatientRow> for Patient {
    type Error = RepoError;
    fn try_from(r: PatientRow) -> Result<Self, RepoError> {
        Ok(Patient {
            id: parse::<PatientId>(&r.id, "patient id")?,
            tenant_id: parse(&r.tenant_id, "tenant id")?,
            user_id: r.user_id.as_deref().map(|u| parse::<UserId>(u, "user id")).transpose()?,
            created_at: Timestamp::from_unix_millis(r.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    token_hash: String,
    tenant_id: String,
    user_id: String,
    role: String,
    created_at: i64,
    last_seen_at: i64,
    csrf_token: String,
    source: String,
    user_agent: String,
    stage: String,
    mfa_at: Option<i64>,
}

impl TryFrom<SessionRow> for Session {
    type Error = RepoError;
    fn try_from(r: SessionRow) -> Result<Self, RepoError> {
        Ok(Session {
            token_hash: TokenHash::from_stored(r.token_hash),
            tenant_id: parse(&r.tenant_id, "tenant id")?,
            user_id: parse(&r.user_id, "user id")?,
            role: Role::from_str(&r.role).map_err(|_| corrupt("role"))?,
            created_at: Timestamp::from_unix_millis(r.created_at),
            last_seen_at: Timestamp::from_unix_millis(r.last_seen_at),
            stage: SessionStage::parse(&r.stage).ok_or_else(|| corrupt("session stage"))?,
            mfa_at: r.mfa_at.map(Timestamp::from_unix_millis),
            csrf_token: r.csrf_token,
            source: r.source,
            user_agent: r.user_agent,
        })
    }
}

/// `SELECT <session columns> FROM sessions `
macro_rules! select_sessions {
    () => {
        "SELECT token_hash, tenant_id, user_id, role, created_at, last_seen_at, csrf_token, \
         source, user_agent, stage, mfa_at FROM sessions "
    };
}

/// `SELECT <user columns> FROM users <tail>`, as one literal (sqlx only accepts literal SQL).
macro_rules! select_users {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, email, display_name, role, status, password_hash, created_at, ",
            "failed_attempts, last_failed_at ",
            "FROM users ",
            $tail
        )
    };
}

impl TenantRepository for Store {
    async fn create_tenant(&self, t: &Tenant) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(t.id.to_string())
            .bind(t.slug.as_str())
            .bind(t.name.as_str())
            .bind(t.created_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn tenant_by_slug(&self, slug: &TenantSlug) -> Result<Option<Tenant>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let row: Option<TenantRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, slug, name, created_at FROM tenants WHERE slug = $1")
            .bind(slug.as_str())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(Tenant::try_from).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let rows: Vec<TenantRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, slug, name, created_at FROM tenants ORDER BY slug")
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(Tenant::try_from).collect()
    }

    async fn tenant_session_limits(
        &self,
        tenant: TenantId,
    ) -> Result<TenantSessionLimits, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let row: Option<(Option<i64>, Option<i64>)> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT session_idle_secs, session_absolute_secs FROM tenants WHERE id = $1")
            .bind(tenant.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        let secs = |v: Option<i64>| {
            v.and_then(|s| u64::try_from(s).ok()).map(std::time::Duration::from_secs)
        };
        Ok(row.map_or_else(TenantSessionLimits::default, |(idle, absolute)| TenantSessionLimits {
            idle: secs(idle),
            absolute: secs(absolute),
        }))
    }

    async fn set_tenant_session_limits(
        &self,
        tenant: TenantId,
        limits: TenantSessionLimits,
    ) -> Result<(), RepoError> {
        let secs = |d: Option<std::time::Duration>| d.and_then(|d| i64::try_from(d.as_secs()).ok());
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE tenants SET session_idle_secs = $1, session_absolute_secs = $2 WHERE id = $3")
            .bind(secs(limits.idle))
            .bind(secs(limits.absolute))
            .bind(tenant.to_string())
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        if n == 1 { Ok(()) } else { Err(RepoError::NotFound) }
    }
}

impl UserRepository for Store {
    async fn create_user(&self, u: &NewUser) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(u.tenant_id)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO users (id, tenant_id, email, display_name, role, status, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(u.id.to_string())
            .bind(u.tenant_id.to_string())
            .bind(u.email.as_str())
            .bind(u.display_name.as_str())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.password_hash.as_deref())
            .bind(u.created_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn user_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Option<User>, RepoError> {
        const SQL: &str = select_users!("WHERE tenant_id = $1 AND email = $2");
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let row: Option<UserRow> = on_tx!(&mut tx, c => sqlx::query_as(SQL)
            .bind(tenant.to_string())
            .bind(email.as_str())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(User::try_from).transpose()
    }

    async fn user_by_id(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, RepoError> {
        const SQL: &str = select_users!("WHERE tenant_id = $1 AND id = $2");
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let row: Option<UserRow> = on_tx!(&mut tx, c => sqlx::query_as(SQL)
            .bind(tenant.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(User::try_from).transpose()
    }

    async fn list_users(&self, tenant: TenantId) -> Result<Vec<User>, RepoError> {
        const SQL: &str = select_users!("WHERE tenant_id = $1 ORDER BY email");
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<UserRow> = on_tx!(&mut tx, c => sqlx::query_as(SQL)
            .bind(tenant.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(User::try_from).collect()
    }

    async fn reserve_sign_in_attempt(
        &self,
        tenant: TenantId,
        id: UserId,
        now: Timestamp,
        window: std::time::Duration,
        max: u32,
    ) -> Result<bool, RepoError> {
        let window_start =
            now.unix_millis() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        // One conditional UPDATE, so concurrent attempts serialise on the row and can
        // never together exceed `max`.
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE users SET \
               failed_attempts = CASE WHEN attempt_window_start <= $1 THEN 1 ELSE failed_attempts + 1 END, \
               attempt_window_start = CASE WHEN attempt_window_start <= $1 THEN $2 ELSE attempt_window_start END \
             WHERE tenant_id = $3 AND id = $4 AND status = 'active' \
               AND (attempt_window_start <= $1 OR failed_attempts < $5)")
            .bind(window_start)
            .bind(now.unix_millis())
            .bind(tenant.to_string())
            .bind(id.to_string())
            .bind(i64::from(max))
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn record_sign_in_failure(
        &self,
        tenant: TenantId,
        id: UserId,
        now: Timestamp,
        max: u32,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE users SET last_failed_at = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(now.unix_millis())
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        let locked = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE users SET status = 'locked' \
             WHERE tenant_id = $1 AND id = $2 AND status = 'active' AND failed_attempts >= $3")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .bind(i64::from(max))
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(locked == 1)
    }

    async fn clear_sign_in_failures(&self, tenant: TenantId, id: UserId) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE users SET failed_attempts = 0, attempt_window_start = 0, last_failed_at = 0 \
             WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn set_user_status(
        &self,
        tenant: TenantId,
        id: UserId,
        status: UserStatus,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE users SET status = $1, failed_attempts = 0, attempt_window_start = 0, last_failed_at = 0 \
             WHERE tenant_id = $2 AND id = $3")
            .bind(status.as_str())
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        if n != 1 {
            return Err(RepoError::NotFound);
        }
        tx.commit().await
    }

    async fn set_password_hash(
        &self,
        tenant: TenantId,
        id: UserId,
        hash: &str,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE users SET password_hash = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(hash)
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        if n != 1 {
            return Err(RepoError::NotFound);
        }
        tx.commit().await
    }
}

impl PatientRepository for Store {
    async fn create_patient(&self, p: &Patient) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO patients (id, tenant_id, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(p.id.to_string())
            .bind(p.tenant_id.to_string())
            .bind(p.user_id.map(|u| u.to_string()))
            .bind(p.created_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn list_patients(&self, tenant: TenantId) -> Result<Vec<Patient>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<PatientRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, tenant_id, user_id, created_at FROM patients WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(Patient::try_from).collect()
    }

    async fn patient_by_id(
        &self,
        tenant: TenantId,
        id: PatientId,
    ) -> Result<Option<Patient>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let row: Option<PatientRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, tenant_id, user_id, created_at FROM patients WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(Patient::try_from).transpose()
    }

    async fn patient_by_user(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Patient>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let row: Option<PatientRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, tenant_id, user_id, created_at FROM patients WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(Patient::try_from).transpose()
    }
}

impl SessionRepository for Store {
    async fn create_session(&self, s: &Session) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(s.tenant_id)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO sessions (token_hash, tenant_id, user_id, role, created_at, last_seen_at, \
             csrf_token, source, user_agent, stage, mfa_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
            .bind(s.token_hash.as_str())
            .bind(s.tenant_id.to_string())
            .bind(s.user_id.to_string())
            .bind(s.role.as_str())
            .bind(s.created_at.unix_millis())
            .bind(s.last_seen_at.unix_millis())
            .bind(&s.csrf_token)
            .bind(&s.source)
            .bind(&s.user_agent)
            .bind(s.stage.as_str())
            .bind(s.mfa_at.map(Timestamp::unix_millis))
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn session_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let row: Option<SessionRow> = on_tx!(&mut tx, c => sqlx::query_as(
            concat!(select_sessions!(), "WHERE token_hash = $1"))
            .bind(hash.as_str())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(Session::try_from).transpose()
    }

    async fn touch_session(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
        at: Timestamp,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE sessions SET last_seen_at = $1 WHERE tenant_id = $2 AND token_hash = $3 AND last_seen_at < $1")
            .bind(at.unix_millis())
            .bind(tenant.to_string())
            .bind(hash.as_str())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn list_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Session>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<SessionRow> = on_tx!(&mut tx, c => sqlx::query_as(
            concat!(select_sessions!(), "WHERE tenant_id = $1 AND user_id = $2 ORDER BY last_seen_at DESC"))
            .bind(tenant.to_string())
            .bind(user.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(Session::try_from).collect()
    }

    async fn delete_sessions_of_user(
        &self,
        tenant: TenantId,
        user: UserId,
        keep: Option<&TokenHash>,
    ) -> Result<u64, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM sessions WHERE tenant_id = $1 AND user_id = $2 AND token_hash <> $3")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .bind(keep.map(|k| k.as_str().to_owned()).unwrap_or_default())
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n)
    }

    async fn delete_session(&self, tenant: TenantId, hash: &TokenHash) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM sessions WHERE tenant_id = $1 AND token_hash = $2")
            .bind(tenant.to_string())
            .bind(hash.as_str())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }
}

impl AuthEventRepository for Store {
    async fn count_auth_events(
        &self,
        tenant: TenantId,
        kinds: &[AuthEventKind],
        since: Timestamp,
    ) -> Result<u64, RepoError> {
        let mut total = 0u64;
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        for kind in kinds {
            let n: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(
                "SELECT COUNT(*) FROM auth_events WHERE tenant_id = $1 AND kind = $2 AND at >= $3")
                .bind(tenant.to_string())
                .bind(kind.as_str())
                .bind(since.unix_millis())
                .fetch_one(&mut **c).await)
            .map_err(repo_err)?;
            total += u64::try_from(n).unwrap_or(0);
        }
        tx.commit().await?;
        Ok(total)
    }

    async fn record_auth_event(&self, e: &AuthEvent) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(e.tenant_id)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO auth_events (id, tenant_id, at, kind, user_id, source, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(e.id.to_string())
            .bind(e.tenant_id.to_string())
            .bind(e.at.unix_millis())
            .bind(e.kind.as_str())
            .bind(e.user_id.map(|u| u.to_string()))
            .bind(&e.source)
            .bind(e.outcome)
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn list_auth_events(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<AuthEvent>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<AuthEventRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, tenant_id, at, kind, user_id, source, outcome FROM auth_events \
             WHERE tenant_id = $1 AND ($2 = '' OR user_id = $2) ORDER BY at DESC, id DESC LIMIT $3")
            .bind(tenant.to_string())
            .bind(user.map(|u| u.to_string()).unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(AuthEvent::try_from).collect()
    }
}

impl AuthEventFeed for Store {
    async fn auth_events_after(
        &self,
        after: Option<MirrorPosition>,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<AuthEvent>, RepoError> {
        let (at, id) =
            after.map_or((i64::MIN, String::new()), |(t, id)| (t.unix_millis(), id.to_string()));
        let mut tx = self.begin(Scope::Platform).await?;
        let rows: Vec<AuthEventRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, tenant_id, at, kind, user_id, source, outcome FROM auth_events \
             WHERE (at > $1 OR (at = $1 AND id > $2)) AND at <= $3 ORDER BY at, id LIMIT $4")
            .bind(at).bind(&id).bind(until.unix_millis()).bind(i64::from(limit))
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(AuthEvent::try_from).collect()
    }

    async fn mirror_position(&self) -> Result<Option<MirrorPosition>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let row: Option<(i64, String)> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT at, last_id FROM audit_mirror WHERE name = 'auth_events'")
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(|(at, id)| {
            Ok((
                Timestamp::from_unix_millis(at),
                id.parse().map_err(|_| RepoError::Backend("stored mirror position".into()))?,
            ))
        })
        .transpose()
    }

    async fn set_mirror_position(&self, (at, id): MirrorPosition) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO audit_mirror (name, at, last_id) VALUES ('auth_events', $1, $2) \
             ON CONFLICT (name) DO UPDATE SET at = excluded.at, last_id = excluded.last_id")
            .bind(at.unix_millis()).bind(id.to_string())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }
}

#[derive(sqlx::FromRow)]
struct AuthEventRow {
    id: String,
    tenant_id: String,
    at: i64,
    kind: String,
    user_id: Option<String>,
    source: String,
    outcome: String,
}

impl TryFrom<AuthEventRow> for AuthEvent {
    type Error = RepoError;
    fn try_from(r: AuthEventRow) -> Result<Self, RepoError> {
        Ok(AuthEvent {
            id: parse(&r.id, "event id")?,
            tenant_id: parse(&r.tenant_id, "tenant id")?,
            at: Timestamp::from_unix_millis(r.at),
            kind: AuthEventKind::parse(&r.kind).ok_or_else(|| corrupt("event kind"))?,
            user_id: r.user_id.as_deref().map(|u| parse::<UserId>(u, "user id")).transpose()?,
            source: r.source,
            outcome: telesafe_core::identity::events::outcome_from_stored(&r.outcome),
        })
    }
}

impl SetupTokenRepository for Store {
    async fn setup_token_usable(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let n: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM setup_tokens WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2")
            .bind(hash.as_str())
            .bind(now.unix_millis())
            .fetch_one(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn create_setup_token(&self, t: &SetupToken) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES ($1, $2, $3)")
            .bind(t.hash.as_str())
            .bind(t.created_at.unix_millis())
            .bind(t.expires_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn consume_setup_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        // One conditional UPDATE: the row lock (PostgreSQL) or the write lock (SQLite)
        // makes the second of two concurrent consumers see used_at already set.
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE setup_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1")
            .bind(now.unix_millis())
            .bind(hash.as_str())
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }
}
