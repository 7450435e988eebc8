//! API clients and access tokens.

use telesafe_core::identity::activation::{Activation, ActivationRepository};
use telesafe_core::identity::clients::{AccessToken, ApiClient, ClientRepository, Scope};

use telesafe_core::{RepoError, TenantId, Timestamp};
use telesafe_crypto::TokenHash;

use crate::Store;
use crate::tx::{Scope as TxScope, on_tx, repo_err};

fn scopes(raw: &str) -> Result<Vec<Scope>, RepoError> {
    Scope::parse_list(raw).ok_or_else(|| RepoError::Backend("stored scopes failed to parse".into()))
}

#[derive(sqlx::FromRow)]
struct ClientRow {
    client_id: String,
    tenant_id: String,
    name: String,
    secret_hash: String,
    scopes: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<ClientRow> for ApiClient {
    type Error = RepoError;
    fn try_from(r: ClientRow) -> Result<Self, RepoError> {
        Ok(ApiClient {
            client_id: r.client_id,
            tenant_id: r
                .tenant_id
                .parse()
                .map_err(|_| RepoError::Backend("stored tenant id".into()))?,
            name: r.name,
            secret_hash: TokenHash::from_stored(r.secret_hash),
            scopes: scopes(&r.scopes)?,
            created_at: Timestamp::from_unix_millis(r.created_at),
            revoked_at: r.revoked_at.map(Timestamp::from_unix_millis),
        })
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    token_hash: String,
    tenant_id: String,
    client_id: String,
    scopes: String,
    issued_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<TokenRow> for AccessToken {
    type Error = RepoError;
    fn try_from(r: TokenRow) -> Result<Self, RepoError> {
        Ok(AccessToken {
            token_hash: TokenHash::from_stored(r.token_hash),
            tenant_id: r
                .tenant_id
                .parse()
                .map_err(|_| RepoError::Backend("stored tenant id".into()))?,
            client_id: r.client_id,
            scopes: scopes(&r.scopes)?,
            issued_at: Timestamp::from_unix_millis(r.issued_at),
            expires_at: Timestamp::from_unix_millis(r.expires_at),
            revoked_at: r.revoked_at.map(Timestamp::from_unix_millis),
        })
    }
}

impl ClientRepository for Store {
    async fn create_client(&self, c: &ApiClient) -> Result<(), RepoError> {
        let mut tx = self.begin(TxScope::Tenant(c.tenant_id)).await?;
        on_tx!(&mut tx, x => sqlx::query(
            "INSERT INTO api_clients (client_id, tenant_id, name, secret_hash, scopes, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&c.client_id)
            .bind(c.tenant_id.to_string())
            .bind(&c.name)
            .bind(c.secret_hash.as_str())
            .bind(Scope::join(&c.scopes))
            .bind(c.created_at.unix_millis())
            .execute(&mut **x).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn client_by_id(&self, client_id: &str) -> Result<Option<ApiClient>, RepoError> {
        let mut tx = self.begin(TxScope::Platform).await?;
        let row: Option<ClientRow> = on_tx!(&mut tx, x => sqlx::query_as(
            "SELECT client_id, tenant_id, name, secret_hash, scopes, created_at, revoked_at \
             FROM api_clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&mut **x).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(ApiClient::try_from).transpose()
    }

    async fn list_clients(&self, tenant: TenantId) -> Result<Vec<ApiClient>, RepoError> {
        let mut tx = self.begin(TxScope::Tenant(tenant)).await?;
        let rows: Vec<ClientRow> = on_tx!(&mut tx, x => sqlx::query_as(
            "SELECT client_id, tenant_id, name, secret_hash, scopes, created_at, revoked_at \
             FROM api_clients WHERE tenant_id = $1 ORDER BY created_at, client_id")
            .bind(tenant.to_string())
            .fetch_all(&mut **x).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter().map(ApiClient::try_from).collect()
    }

    async fn revoke_client(
        &self,
        tenant: TenantId,
        client_id: &str,
        at: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(TxScope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, x => sqlx::query(
            "UPDATE api_clients SET revoked_at = $1 \
             WHERE tenant_id = $2 AND client_id = $3 AND revoked_at IS NULL")
            .bind(at.unix_millis())
            .bind(tenant.to_string())
            .bind(client_id)
            .execute(&mut **x).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn create_access_token(&self, t: &AccessToken) -> Result<(), RepoError> {
        let mut tx = self.begin(TxScope::Tenant(t.tenant_id)).await?;
        on_tx!(&mut tx, x => sqlx::query(
            "INSERT INTO access_tokens (token_hash, tenant_id, client_id, scopes, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(t.token_hash.as_str())
            .bind(t.tenant_id.to_string())
            .bind(&t.client_id)
            .bind(Scope::join(&t.scopes))
            .bind(t.issued_at.unix_millis())
            .bind(t.expires_at.unix_millis())
            .execute(&mut **x).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn access_token(&self, hash: &TokenHash) -> Result<Option<AccessToken>, RepoError> {
        let mut tx = self.begin(TxScope::Platform).await?;
        let row: Option<TokenRow> = on_tx!(&mut tx, x => sqlx::query_as(
            "SELECT token_hash, tenant_id, client_id, scopes, issued_at, expires_at, revoked_at \
             FROM access_tokens WHERE token_hash = $1")
            .bind(hash.as_str())
            .fetch_optional(&mut **x).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        row.map(AccessToken::try_from).transpose()
    }

    async fn revoke_access_token(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
        at: Timestamp,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin(TxScope::Tenant(tenant)).await?;
        let n = on_tx!(&mut tx, x => sqlx::query(
            "UPDATE access_tokens SET revoked_at = $1 \
             WHERE tenant_id = $2 AND token_hash = $3 AND revoked_at IS NULL")
            .bind(at.unix_millis())
            .bind(tenant.to_string())
            .bind(hash.as_str())
            .execute(&mut **x).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }
}

#[derive(sqlx::FromRow)]
struct ActivationRow {
    token_hash: String,
    tenant_id: String,
    user_id: String,
    created_at: i64,
    expires_at: i64,
}

impl ActivationRepository for Store {
    async fn create_activation(&self, a: &Activation) -> Result<(), RepoError> {
        let mut tx = self.begin(TxScope::Tenant(a.tenant_id)).await?;
        on_tx!(&mut tx, x => sqlx::query(
            "INSERT INTO activations (token_hash, tenant_id, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)")
            .bind(a.token_hash.as_str())
            .bind(a.tenant_id.to_string())
            .bind(a.user_id.to_string())
            .bind(a.created_at.unix_millis())
            .bind(a.expires_at.unix_millis())
            .execute(&mut **x).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn activation(&self, hash: &TokenHash) -> Result<Option<Activation>, RepoError> {
        let mut tx = self.begin(TxScope::Platform).await?;
        let row: Option<ActivationRow> = on_tx!(&mut tx, x => sqlx::query_as(
            "SELECT token_hash, tenant_id, user_id, created_at, expires_at FROM activations \
             WHERE token_hash = $1 AND used_at IS NULL")
            .bind(hash.as_str())
            .fetch_optional(&mut **x).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        let bad = |_| RepoError::Backend("stored activation failed to parse".into());
        row.map(|r| {
            Ok(Activation {
                token_hash: TokenHash::from_stored(r.token_hash),
                tenant_id: r.tenant_id.parse().map_err(bad)?,
                user_id: r.user_id.parse().map_err(bad)?,
                created_at: Timestamp::from_unix_millis(r.created_at),
                expires_at: Timestamp::from_unix_millis(r.expires_at),
            })
        })
        .transpose()
    }

    async fn use_activation(&self, a: &Activation, at: Timestamp) -> Result<bool, RepoError> {
        let mut tx = self.begin(TxScope::Tenant(a.tenant_id)).await?;
        let n = on_tx!(&mut tx, x => sqlx::query(
            "UPDATE activations SET used_at = $1 WHERE token_hash = $2 AND tenant_id = $3 AND used_at IS NULL")
            .bind(at.unix_millis())
            .bind(a.token_hash.as_str())
            .bind(a.tenant_id.to_string())
            .execute(&mut **x).await.map(|r| r.rows_affected()))
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(n == 1)
    }
}
