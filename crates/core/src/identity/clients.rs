//! API clients and their bearer tokens: OAuth 2.0 client credentials (RFC 6749 §4.4),
//! token introspection (RFC 7662) and revocation (RFC 7009).
//!
//! Client secrets and access tokens are 256-bit random values stored only as SHA-256
//! hashes. Tokens are short-lived and carry the scopes they were issued with; a revoked
//! client's tokens stop working at once, because every check reads the client too.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use telesafe_crypto::{OpaqueToken, TokenHash};

use crate::clock::Timestamp;
use crate::ids::TenantId;
use crate::repo::RepoError;

/// How long an access token lives.
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A space-free scope name such as `system/Patient.read` (SMART on FHIR style).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

impl Scope {
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = (1..=100).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._*:-".contains(&b));
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a space-separated list (RFC 6749 §3.3); `None` if any entry is malformed.
    pub fn parse_list(raw: &str) -> Option<Vec<Scope>> {
        let mut v: Vec<Scope> = raw.split_whitespace().map(Scope::parse).collect::<Option<_>>()?;
        v.sort();
        v.dedup();
        Some(v)
    }

    pub fn join(scopes: &[Scope]) -> String {
        scopes.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }
}

/// A registered integration.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiClient {
    pub client_id: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub secret_hash: TokenHash,
    pub scopes: Vec<Scope>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("scopes", &self.scopes)
            .field("revoked", &self.revoked_at.is_some())
            .finish_non_exhaustive()
    }
}

/// An issued access token (stored by hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token_hash: TokenHash,
    pub tenant_id: TenantId,
    pub client_id: String,
    pub scopes: Vec<Scope>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

pub trait ClientRepository: Send + Sync {
    fn create_client(&self, c: &ApiClient) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Looks a client up by id across tenants: the id arrives before the tenant is known.
    fn client_by_id(
        &self,
        client_id: &str,
    ) -> impl Future<Output = Result<Option<ApiClient>, RepoError>> + Send;
    fn list_clients(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<ApiClient>, RepoError>> + Send;
    fn revoke_client(
        &self,
        tenant: TenantId,
        client_id: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    fn create_access_token(
        &self,
        t: &AccessToken,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Looks a token up by hash across tenants (a bearer token names its own tenant).
    fn access_token(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<Option<AccessToken>, RepoError>> + Send;
    fn revoke_access_token(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OAuthError {
    /// RFC 6749 §5.2 `invalid_client`: unknown, revoked, or wrong secret (one answer).
    #[error("client authentication failed")]
    InvalidClient,
    /// `invalid_scope`: asked for a scope the client was not granted.
    #[error("the requested scope is invalid or exceeds what the client was granted")]
    InvalidScope,
    #[error("storage failure")]
    Backend,
}

/// A new client and its secret (shown once).
#[derive(Debug)]
pub struct NewClient {
    pub client: ApiClient,
    pub secret: OpaqueToken,
}

/// Registers a client with `scopes`.
pub async fn register_client<R: ClientRepository>(
    repo: &R,
    tenant: TenantId,
    name: &str,
    scopes: Vec<Scope>,
    now: Timestamp,
) -> Result<NewClient, RepoError> {
    let secret = OpaqueToken::generate().map_err(|e| RepoError::Backend(e.to_string()))?;
    let client = ApiClient {
        client_id: format!("tsc_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: tenant,
        name: name.to_owned(),
        secret_hash: secret.hash(),
        scopes,
        created_at: now,
        revoked_at: None,
    };
    repo.create_client(&client).await?;
    Ok(NewClient { client, secret })
}

/// Checks a client's id and secret. Unknown, revoked and wrong-secret look the same.
pub async fn authenticate_client<R: ClientRepository>(
    repo: &R,
    client_id: &str,
    secret: &str,
) -> Result<ApiClient, OAuthError> {
    let client = repo.client_by_id(client_id).await.map_err(|_| OAuthError::Backend)?;
    let presented = OpaqueToken::parse(secret).map(|t| t.hash());
    match (client, presented) {
        (Some(c), Some(h))
            if c.revoked_at.is_none()
                && telesafe_crypto::constant_time_eq(
                    c.secret_hash.as_str().as_bytes(),
                    h.as_str().as_bytes(),
                ) =>
        {
            Ok(c)
        }
        _ => Err(OAuthError::InvalidClient),
    }
}

/// Issues an access token for `requested` scopes (all granted scopes when empty).
pub async fn issue_token<R: ClientRepository>(
    repo: &R,
    client: &ApiClient,
    requested: Option<Vec<Scope>>,
    now: Timestamp,
) -> Result<(OpaqueToken, AccessToken), OAuthError> {
    let scopes = match requested {
        None => client.scopes.clone(),
        Some(r) if r.iter().all(|s| client.scopes.contains(s)) && !r.is_empty() => r,
        Some(_) => return Err(OAuthError::InvalidScope),
    };
    let token = OpaqueToken::generate().map_err(|_| OAuthError::Backend)?;
    let record = AccessToken {
        token_hash: token.hash(),
        tenant_id: client.tenant_id,
        client_id: client.client_id.clone(),
        scopes,
        issued_at: now,
        expires_at: now.plus(ACCESS_TOKEN_LIFETIME),
        revoked_at: None,
    };
    repo.create_access_token(&record).await.map_err(|_| OAuthError::Backend)?;
    Ok((token, record))
}

/// A bearer token that is live now: issued by us, not expired, not revoked, and its
/// client not revoked.
pub async fn active_token<R: ClientRepository>(
    repo: &R,
    presented: &str,
    now: Timestamp,
) -> Result<Option<AccessToken>, RepoError> {
    let Some(token) = OpaqueToken::parse(presented) else { return Ok(None) };
    let Some(t) = repo.access_token(&token.hash()).await? else { return Ok(None) };
    if t.revoked_at.is_some() || now >= t.expires_at {
        return Ok(None);
    }
    let client = repo.client_by_id(&t.client_id).await?;
    Ok(client.filter(|c| c.revoked_at.is_none()).map(|_| t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_sort_and_refuse_garbage() {
        let s =
            Scope::parse_list("system/Patient.read  system/*.read system/Patient.read").unwrap();
        assert_eq!(Scope::join(&s), "system/*.read system/Patient.read");
        assert!(Scope::parse_list("ok bad\"scope").is_none());
        assert!(Scope::parse("").is_none());
    }
}
