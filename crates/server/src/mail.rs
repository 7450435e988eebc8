//! Delivering queued messages. The transport today is the server log, under a clear "mail
//! delivery not configured" line that names the account by id (never by address); an SMTP
//! transport plugs in here.

use std::time::Duration;

use telesafe_core::identity::UserRepository;
use telesafe_core::identity::outbox::{self, OutboxRepository};

use crate::state::AppState;

/// How often the delivery worker looks for due messages.
const POLL: Duration = Duration::from_secs(1);

/// Where messages go.
#[derive(Debug, Clone, Copy, Default)]
pub enum Transport {
    /// No mail server configured: write the message to the log for an operator to pass on.
    #[default]
    Log,
}

impl Transport {
    fn deliver(self, user: telesafe_core::UserId, subject: &str, body: &str) {
        match self {
            Transport::Log => tracing::warn!(
                target: "telesafe::mail",
                %user,
                "mail delivery not configured; pass this message to the account holder: {subject}\n{body}"
            ),
        }
    }
}

/// Delivers every due message once.
pub async fn deliver_due(state: &AppState, transport: Transport) {
    let due = match state.store.due_messages(50).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "outbox read failed");
            return;
        }
    };
    for m in due {
        let user = state.store.user_by_id(m.tenant_id, m.user_id).await.ok().flatten();
        let body = outbox::open_body(&state.outbox_key, &m);
        let result = match (user, body) {
            (Some(_), Some(body)) => {
                transport.deliver(m.user_id, &m.subject, &body);
                state.store.mark_sent(&m, state.clock.now()).await
            }
            _ => {
                tracing::error!(message = %m.id, "outbox message cannot be delivered (account gone or body unreadable)");
                state.store.mark_failed(&m).await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "outbox update failed");
        }
    }
}

/// Runs the delivery loop for the life of the process.
pub fn spawn_delivery(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            deliver_due(&state, Transport::Log).await;
        }
    });
}
