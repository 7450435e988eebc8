//! Passkeys and WebAuthn ceremony state.

use telesafe_core::identity::passkey::{
    Ceremony, CeremonyPurpose, PasskeyName, PasskeyRecord, PasskeyRepository,
};
use telesafe_core::{PasskeyId, RepoError, TenantId, Timestamp, UserId};

use crate::Store;
use crate::tx::{Scope, on_tx, repo_err};

#[derive(sqlx::FromRow)]
struct PasskeyRow {
    id: String,
    tenant_id: String,
    user_id: String,
    credential_id: String,
    name: String,
    credential: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl TryFrom<PasskeyRow> for PasskeyRecord {
    type Error = RepoError;
    fn try_from(r: PasskeyRow) -> Result<Self, RepoError> {
        let bad = || RepoError::Backend("stored passkey failed to parse".into());
        Ok(PasskeyRecord {
            id: r.id.parse().map_err(|_| bad())?,
            tenant_id: r.tenant_id.parse().map_err(|_| bad())?,
            user_id: r.user_id.parse().map_err(|_| bad())?,
            credential_id: r.credential_id,
            name: PasskeyName::parse(&r.name).map_err(|_| bad())?,
            credential: r.credential,
            created_at: Timestamp::from_unix_millis(r.created_at),
            last_used_at: r.last_used_at.map(Timestamp::from_unix_millis),
        })
    }
}

#[derive(sqlx::FromRow)]
struct CeremonyRow {
    purpose: String,
    tenant_id: Option<String>,
    user_id: Option<String>,
    sealed_state: Vec<u8>,
    expires_at: i64,
}

impl TryFrom<CeremonyRow> for Ceremony {
    type Error = RepoError;
    fn try_from(r: CeremonyRow) -> Result<Self, RepoError> {
        let bad = || RepoError::Backend("stored ceremony failed to parse".into());
        Ok(Ceremony {
            purpose: CeremonyPurpose::parse(&r.purpose).ok_or_else(bad)?,
            tenant_id: r.tenant_id.map(|t| t.parse()).transpose().map_err(|_| bad())?,
            user_id: r.user_id.map(|u| u.parse()).transpose().map_err(|_| bad())?,
            sealed_state: r.sealed_state,
            expires_at: Timestamp::from_unix_millis(r.expires_at),
        })
    }
}

/// A SELECT of every passkey column with the given tail (static SQL, as sqlx requires).
macro_rules! select_passkeys {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, user_id, credential_id, name, credential, created_at, \
             last_used_at FROM passkeys ",
            $tail
        )
    };
}

impl PasskeyRepository for Store {
    async fn passkeys_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<PasskeyRecord>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<PasskeyRow> = on_tx!(&mut tx, c => sqlx::query_as(select_passkeys!(
            "WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, id"))
            .bind(tenant.to_string())
            .bind(user.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(PasskeyRecord::try_from).collect()
    }

    async fn passkey_by_credential(
        &self,
        credential_id: &str,
    ) -> Result<Option<PasskeyRecord>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let row: Option<PasskeyRow> =
            on_tx!(&mut tx, c => sqlx::query_as(select_passkeys!("WHERE credential_id = $1"))
            .bind(credential_id)
            .fetch_optional(&mut **c).await)
            .map_err(repo_err)?;
        tx.commit().await?;
        row.map(PasskeyRecord::try_from).transpose()
    }

    async fn add_passkey(&self, r: &PasskeyRecord) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(r.tenant_id)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO passkeys (id, tenant_id, user_id, credential_id, name, credential, \
             created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(r.id.to_string())
            .bind(r.tenant_id.to_string())
            .bind(r.user_id.to_string())
            .bind(&r.credential_id)
            .bind(r.name.as_str())
            .bind(&r.credential)
            .bind(r.created_at.unix_millis())
            .bind(r.last_used_at.map(Timestamp::unix_millis))
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn record_passkey_use(
        &self,
        tenant: TenantId,
        id: PasskeyId,
        credential: Option<&str>,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE passkeys SET last_used_at = $1, credential = COALESCE($2, credential) \
             WHERE tenant_id = $3 AND id = $4")
            .bind(now.unix_millis())
            .bind(credential)
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn rename_passkey(
        &self,
        tenant: TenantId,
        user: UserId,
        id: PasskeyId,
        name: &PasskeyName,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE passkeys SET name = $1 WHERE tenant_id = $2 AND user_id = $3 AND id = $4")
            .bind(name.as_str())
            .bind(tenant.to_string())
            .bind(user.to_string())
            .bind(id.to_string())
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn delete_passkey(
        &self,
        tenant: TenantId,
        user: UserId,
        id: PasskeyId,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM passkeys WHERE tenant_id = $1 AND user_id = $2 AND id = $3")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .bind(id.to_string())
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn save_ceremony(
        &self,
        id_hash: &str,
        c: &Ceremony,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        on_tx!(&mut tx, conn => sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at <= $1")
            .bind(now.unix_millis())
            .execute(&mut **conn).await.map(|_| ()))
        .map_err(repo_err)?;
        on_tx!(&mut tx, conn => sqlx::query(
            "INSERT INTO webauthn_ceremonies (id_hash, purpose, tenant_id, user_id, sealed_state, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id_hash)
            .bind(c.purpose.as_str())
            .bind(c.tenant_id.map(|t| t.to_string()))
            .bind(c.user_id.map(|u| u.to_string()))
            .bind(&c.sealed_state)
            .bind(c.expires_at.unix_millis())
            .execute(&mut **conn).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn take_ceremony(
        &self,
        id_hash: &str,
        purpose: CeremonyPurpose,
    ) -> Result<Option<Ceremony>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        // DELETE ... RETURNING: of two requests finishing the same ceremony, one gets it.
        let row: Option<CeremonyRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "DELETE FROM webauthn_ceremonies WHERE id_hash = $1 AND purpose = $2 \
             RETURNING purpose, tenant_id, user_id, sealed_state, expires_at")
            .bind(id_hash)
            .bind(purpose.as_str())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(Ceremony::try_from).transpose()
    }
}
