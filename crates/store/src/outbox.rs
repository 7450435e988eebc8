//! The outbox of messages to people.

use telesafe_core::identity::outbox::{MAX_ATTEMPTS, OutboxMessage, OutboxRepository};
use telesafe_core::{RepoError, Timestamp};

use crate::Store;
use crate::tx::{Scope, on_tx, repo_err};

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    tenant_id: String,
    user_id: String,
    subject: String,
    sealed_body: Vec<u8>,
    created_at: i64,
    attempts: i64,
}

impl OutboxRepository for Store {
    async fn enqueue(&self, m: &OutboxMessage) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(m.tenant_id)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO outbox (id, tenant_id, user_id, subject, sealed_body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(m.id.to_string())
            .bind(m.tenant_id.to_string())
            .bind(m.user_id.to_string())
            .bind(&m.subject)
            .bind(&m.sealed_body)
            .bind(m.created_at.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn due_messages(
        &self,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<OutboxMessage>, RepoError> {
        let mut tx = self.begin(Scope::Platform).await?;
        let rows: Vec<Row> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, tenant_id, user_id, subject, sealed_body, created_at, attempts FROM outbox \
             WHERE sent_at IS NULL AND attempts < $1 AND next_attempt_at <= $2 \
             ORDER BY created_at LIMIT $3")
            .bind(i64::from(MAX_ATTEMPTS))
            .bind(now.unix_millis())
            .bind(i64::from(limit))
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        let bad = |_| RepoError::Backend("stored outbox message failed to parse".into());
        rows.into_iter()
            .map(|r| {
                Ok(OutboxMessage {
                    id: r.id.parse().map_err(|_| RepoError::Backend("outbox id".into()))?,
                    tenant_id: r.tenant_id.parse().map_err(bad)?,
                    user_id: r.user_id.parse().map_err(bad)?,
                    subject: r.subject,
                    sealed_body: r.sealed_body,
                    created_at: Timestamp::from_unix_millis(r.created_at),
                    attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn mark_sent(&self, m: &OutboxMessage, at: Timestamp) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(m.tenant_id)).await?;
        // The sealed body (a one-time link) is not kept once delivered.
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE outbox SET sent_at = $1, attempts = attempts + 1, sealed_body = $2 WHERE id = $3 AND tenant_id = $4")
            .bind(at.unix_millis())
            .bind(Vec::<u8>::new())
            .bind(m.id.to_string())
            .bind(m.tenant_id.to_string())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn mark_failed(&self, m: &OutboxMessage, retry_at: Timestamp) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(m.tenant_id)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1 \
             WHERE id = $2 AND tenant_id = $3")
            .bind(retry_at.unix_millis())
            .bind(m.id.to_string())
            .bind(m.tenant_id.to_string())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }
}
