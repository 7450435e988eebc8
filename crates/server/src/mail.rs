//! Delivering queued messages: over SMTP (lettre, TLS by rustls) when `[mail]` names a
//! relay, otherwise to the server log under a clear "mail delivery not configured" line that
//! names the account by id (never by address) for an operator to pass on.
//!
//! A failed delivery is retried with back-off (`outbox::retry_at`) up to
//! `outbox::MAX_ATTEMPTS` times. Logs never carry the recipient's address or the body.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use telesafe_core::identity::outbox::{self, OutboxRepository};
use telesafe_core::identity::{Email, UserRepository};

use crate::config::{Config, MailSecurity};
use crate::state::AppState;

/// How often the delivery worker looks for due messages.
const POLL: Duration = Duration::from_secs(1);
/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where messages go.
#[derive(Clone, Default)]
pub enum Transport {
    /// No mail server configured: write the message to the log for an operator to pass on.
    #[default]
    Log,
    /// An SMTP relay.
    Smtp { mailer: AsyncSmtpTransport<Tokio1Executor>, from: Mailbox },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Log => f.write_str("Transport::Log"),
            // The mailer holds credentials: name the kind only.
            Self::Smtp { .. } => f.write_str("Transport::Smtp"),
        }
    }
}

/// Why the configured relay cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error("mail.from: not an address")]
    From,
    #[error("mail.password_file: cannot read {0}")]
    Password(String),
    #[error("mail.ca_file: {0}")]
    Ca(String),
    #[error("mail: {0}")]
    Tls(String),
}

impl Transport {
    /// The transport `[mail]` describes: SMTP when a relay is named, else the log.
    pub fn from_config(config: &Config) -> Result<Self, MailSetupError> {
        let m = &config.mail;
        let Some(host) = m.smtp_host.clone() else {
            return Ok(Self::Log);
        };
        let from: Mailbox =
            m.from.as_deref().unwrap_or("").parse().map_err(|_| MailSetupError::From)?;
        let tls = || -> Result<TlsParameters, MailSetupError> {
            let mut b = TlsParameters::builder(host.clone());
            if let Some(ca) = &m.ca_file {
                let pem = std::fs::read(ca).map_err(|e| MailSetupError::Ca(e.to_string()))?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|e| MailSetupError::Ca(e.to_string()))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls().map_err(|e| MailSetupError::Tls(e.to_string()))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(m.port())
            .timeout(Some(SMTP_TIMEOUT));
        builder = match m.security {
            MailSecurity::Starttls => builder.tls(Tls::Required(tls()?)),
            MailSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
            MailSecurity::None => builder.tls(Tls::None),
        };
        if let (Some(user), Some(file)) = (&m.username, &m.password_file) {
            let password = std::fs::read_to_string(file)
                .map_err(|_| MailSetupError::Password(file.display().to_string()))?;
            builder = builder.credentials(Credentials::new(user.clone(), password.trim().into()));
        }
        Ok(Self::Smtp { mailer: builder.build(), from })
    }

    /// Sends one message. The error is safe to log: it names neither address nor body.
    async fn deliver(
        &self,
        to: &Email,
        user: telesafe_core::UserId,
        subject: &str,
        body: &str,
    ) -> Result<(), String> {
        match self {
            Transport::Log => {
                tracing::warn!(
                    target: "telesafe::mail",
                    %user,
                    "mail delivery not configured; pass this message to the account holder: {subject}\n{body}"
                );
                Ok(())
            }
            Transport::Smtp { mailer, from } => {
                let to: Mailbox =
                    to.as_str().parse().map_err(|_| "recipient address refused".to_owned())?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(body.to_owned())
                    .map_err(|e| format!("message could not be built: {e}"))?;
                mailer.send(message).await.map(|_| ()).map_err(|e| smtp_reason(&e))
            }
        }
    }
}

/// A loggable reason for an SMTP failure. lettre's errors can quote the server's reply,
/// which may echo the recipient address, so only the kind and status code are kept.
fn smtp_reason(e: &lettre::transport::smtp::Error) -> String {
    let kind = if e.is_permanent() {
        "refused permanently"
    } else if e.is_transient() {
        "refused for now"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_tls() {
        "TLS failed"
    } else {
        "connection or protocol error"
    };
    match e.status() {
        Some(code) => format!("SMTP {kind} (status {code})"),
        None => format!("SMTP {kind}"),
    }
}

/// Delivers every due message once.
pub async fn deliver_due(state: &AppState) {
    let now = state.clock.now();
    let due = match state.store.due_messages(50, now).await {
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
            (Some(u), Some(body)) => {
                match state.mail.deliver(&u.email, m.user_id, &m.subject, &body).await {
                    Ok(()) => state.store.mark_sent(&m, state.clock.now()).await,
                    Err(reason) => {
                        let attempt = m.attempts + 1;
                        if attempt >= outbox::MAX_ATTEMPTS {
                            tracing::error!(message = %m.id, user = %m.user_id, %reason, "message not delivered; giving up after {attempt} attempts");
                        } else {
                            tracing::warn!(message = %m.id, user = %m.user_id, %reason, "message not delivered; will retry");
                        }
                        state.store.mark_failed(&m, outbox::retry_at(now, attempt)).await
                    }
                }
            }
            _ => {
                tracing::error!(message = %m.id, "outbox message cannot be delivered (account gone or body unreadable)");
                // Nothing is likely to change soon: wait the longest interval.
                state.store.mark_failed(&m, outbox::retry_at(now, outbox::MAX_ATTEMPTS)).await
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
            deliver_due(&state).await;
        }
    });
}
