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
    /// Unsent messages due at `now`, oldest first, across tenants (the delivery worker is
    /// platform-level). A message that failed [`MAX_ATTEMPTS`] times is no longer due.
    fn due_messages(
        &self,
        limit: u32,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<OutboxMessage>, RepoError>> + Send;
    fn mark_sent(
        &self,
        m: &OutboxMessage,
        at: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Counts a failed attempt; the message is due again at `retry_at`.
    fn mark_failed(
        &self,
        m: &OutboxMessage,
        retry_at: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
}

/// How many delivery attempts a message gets before it is given up (about 4 hours).
pub const MAX_ATTEMPTS: u32 = 10;

/// When a message that has now failed `attempts` times is tried again: 30 s, doubling,
/// at most an hour apart, so a relay outage does not use up every attempt in seconds.
pub fn retry_at(now: Timestamp, attempts: u32) -> Timestamp {
    let secs = 30u64.saturating_mul(1u64 << attempts.saturating_sub(1).min(16)).min(3600);
    now.plus(std::time::Duration::from_secs(secs))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        let t = Timestamp::from_unix_millis(0);
        let delay = |n| retry_at(t, n).since(t).as_secs();
        assert_eq!([delay(1), delay(2), delay(3), delay(7), delay(8)], [30, 60, 120, 1920, 3600]);
        assert_eq!(delay(40), 3600);
        let total: u64 = (1..MAX_ATTEMPTS).map(delay).sum();
        assert!((3 * 3600..6 * 3600).contains(&total), "{total}");
    }
}
