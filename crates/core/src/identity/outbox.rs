//! Messages to people (activation and invitation links), queued durably and delivered by a
//! pluggable transport: SMTP when configured, otherwise the server log (the demo uses this).
//!
//! A message carries nothing but a greeting and its link: no patient data. The body is
//! sealed at rest (it holds a one-time link, which is a credential until used) and the
//! recipient is an account id, resolved to an address only at delivery.

use std::future::Future;

use telesafe_crypto::keys::SealingKey;

use crate::clock::Timestamp;
use crate::ids::{TenantId, UserId};
use crate::repo::RepoError;

/// A queued message.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub subject: String,
    pub sealed_body: Vec<u8>,
    pub created_at: Timestamp,
    pub attempts: u32,
}

impl std::fmt::Debug for OutboxMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxMessage")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

pub trait OutboxRepository: Send + Sync {
    fn enqueue(&self, m: &OutboxMessage) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Unsent messages, oldest first, across tenants (the delivery worker is platform-level).
    fn due_messages(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<OutboxMessage>, RepoError>> + Send;
    fn mark_sent(
        &self,
        m: &OutboxMessage,
        at: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn mark_failed(&self, m: &OutboxMessage) -> impl Future<Output = Result<(), RepoError>> + Send;
}

fn aad(tenant: TenantId, user: UserId, id: uuid::Uuid) -> Vec<u8> {
    format!("telesafe/outbox/v1|{tenant}|{user}|{id}").into_bytes()
}

/// Seals and queues a message.
pub async fn enqueue<R: OutboxRepository>(
    repo: &R,
    key: &SealingKey,
    tenant: TenantId,
    user: UserId,
    subject: &str,
    body: &str,
    now: Timestamp,
) -> Result<(), RepoError> {
    let id = uuid::Uuid::now_v7();
    let sealed = key
        .seal(body.as_bytes(), &aad(tenant, user, id))
        .map_err(|e| RepoError::Backend(e.to_string()))?;
    repo.enqueue(&OutboxMessage {
        id,
        tenant_id: tenant,
        user_id: user,
        subject: subject.to_owned(),
        sealed_body: sealed,
        created_at: now,
        attempts: 0,
    })
    .await
}

/// Opens a queued message's body.
pub fn open_body(key: &SealingKey, m: &OutboxMessage) -> Option<String> {
    key.open(&m.sealed_body, &aad(m.tenant_id, m.user_id, m.id))
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
}
