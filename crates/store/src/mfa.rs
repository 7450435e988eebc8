//! Second-factor repositories: TOTP enrolments and recovery codes.

use telesafe_core::identity::mfa::{MfaRepository, TotpRecord};
use telesafe_core::{RepoError, TenantId, Timestamp, UserId};

use crate::Store;
use crate::tx::{Scope, on_tx, repo_err};

#[derive(sqlx::FromRow)]
struct TotpRow {
    tenant_id: String,
    user_id: String,
    sealed_seed: Vec<u8>,
    confirmed: i64,
    last_step: i64,
    created_at: i64,
}

impl TryFrom<TotpRow> for TotpRecord {
    type Error = RepoError;
    fn try_from(r: TotpRow) -> Result<Self, RepoError> {
        let bad = |_| RepoError::Backend("stored TOTP enrolment failed to parse".into());
        Ok(TotpRecord {
            tenant_id: r.tenant_id.parse().map_err(bad)?,
            user_id: r.user_id.parse().map_err(bad)?,
            sealed_seed: r.sealed_seed,
            confirmed: r.confirmed != 0,
            last_step: r.last_step,
            created_at: Timestamp::from_unix_millis(r.created_at),
        })
    }
}

impl MfaRepository for Store {
    async fn totp_for(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<TotpRecord>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let row: Option<TotpRow> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT tenant_id, user_id, sealed_seed, confirmed, last_step, created_at \
             FROM mfa_totp WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(TotpRecord::try_from).transpose()
    }

    async fn save_pending_totp(&self, r: &TotpRecord) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(r.tenant_id)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM mfa_totp WHERE tenant_id = $1 AND user_id = $2 AND confirmed = 0")
            .bind(r.tenant_id.to_string())
            .bind(r.user_id.to_string())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO mfa_totp (user_id, tenant_id, sealed_seed, confirmed, last_step, created_at) \
             VALUES ($1, $2, $3, 0, $4, $5)")
            .bind(r.user_id.to_string())
            .bind(r.tenant_id.to_string())
            .bind(&r.sealed_seed)
            .bind(r.last_step)
            .bind(r.created_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn confirm_totp(
        &self,
        tenant: TenantId,
        user: UserId,
        step: i64,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE mfa_totp SET confirmed = 1, last_step = $1 \
             WHERE tenant_id = $2 AND user_id = $3 AND confirmed = 0")
            .bind(step)
            .bind(tenant.to_string())
            .bind(user.to_string())
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn use_totp_step(
        &self,
        tenant: TenantId,
        user: UserId,
        step: i64,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        // The conditional UPDATE is the replay guard: of two requests with the same code,
        // only the first finds last_step < step.
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE mfa_totp SET last_step = $1 \
             WHERE tenant_id = $2 AND user_id = $3 AND confirmed = 1 AND last_step < $1")
            .bind(step)
            .bind(tenant.to_string())
            .bind(user.to_string())
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn replace_recovery_codes(
        &self,
        tenant: TenantId,
        user: UserId,
        hashes: &[String],
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM recovery_codes WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        for h in hashes {
            on_tx!(&mut tx, c => sqlx::query(
                "INSERT INTO recovery_codes (tenant_id, user_id, code_hash, created_at) VALUES ($1, $2, $3, $4)")
                .bind(tenant.to_string())
                .bind(user.to_string())
                .bind(h)
                .bind(now.unix_millis())
                .execute(&mut **c).await.map(|_| ()))
            .map_err(repo_err)?;
        }
        tx.commit().await
    }

    async fn consume_recovery_code(
        &self,
        tenant: TenantId,
        user: UserId,
        hash: &str,
        now: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 \
             WHERE tenant_id = $2 AND user_id = $3 AND code_hash = $4 AND used_at IS NULL")
            .bind(now.unix_millis())
            .bind(tenant.to_string())
            .bind(user.to_string())
            .bind(hash)
            .execute(&mut **c).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn unused_recovery_codes(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<u32, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE tenant_id = $1 AND user_id = $2 AND used_at IS NULL")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .fetch_one(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    async fn has_passkey(&self, tenant: TenantId, user: UserId) -> Result<bool, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let n: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM passkeys WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .fetch_one(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n > 0)
    }
}
