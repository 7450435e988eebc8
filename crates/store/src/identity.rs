//! Identity repositories: tenants, users, patients, sessions, setup tokens.

use std::str::FromStr;

use telesafe_core::identity::{
    DisplayName, Email, NewUser, Patient, PatientRepository, Role, Session, SessionRepository,
    SetupToken, SetupTokenRepository, Tenant, TenantRepository, TenantSlug, User, UserRepository,
    UserStatus,
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
            user_id: r
                .user_id
                .as_deref()
                .map(|u| parse::<UserId>(u, "user id"))
                .transpose()?,
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
        })
    }
}

/// `SELECT <user columns> FROM users <tail>`, as one literal (sqlx only accepts literal SQL).
macro_rules! select_users {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, email, display_name, role, status, password_hash, created_at ",
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
}

impl SessionRepository for Store {
    async fn create_session(&self, s: &Session) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(s.tenant_id)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO sessions (token_hash, tenant_id, user_id, role, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(s.token_hash.as_str())
            .bind(s.tenant_id.to_string())
            .bind(s.user_id.to_string())
            .bind(s.role.as_str())
            .bind(s.created_at.unix_millis())
            .bind(s.last_seen_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn session_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let row: Option<SessionRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT token_hash, tenant_id, user_id, role, created_at, last_seen_at \
             FROM sessions WHERE token_hash = $1")
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

impl SetupTokenRepository for Store {
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
