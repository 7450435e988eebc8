//! Outbox delivery over SMTP to a real SMTP server (aiosmtpd, from Debian), with STARTTLS
//! required and the relay's certificate trusted through `mail.ca_file`; retries with
//! back-off when the relay is down; and no downgrade to plain text when STARTTLS is missing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use telesafe_core::identity::outbox::{self, OutboxRepository};
use telesafe_core::identity::{Email, UserRepository};
use telesafe_core::{Clock, SystemClock};
use telesafe_server::config::{Config, MailSecurity};
use telesafe_testkit::{DbBackend, TestServer, both_backends, start_with};

/// A running aiosmtpd that stores what it receives in a Maildir.
struct Relay {
    child: Child,
    addr: SocketAddr,
    maildir: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts aiosmtpd on loopback; with `tls` it offers STARTTLS and requires it.
async fn relay(dir: &Path, tls: Option<(&Path, &Path)>) -> Option<Relay> {
    let Some(py) = python() else {
        assert!(
            !telesafe_store::testing::postgres_required(),
            "aiosmtpd is missing (apt-get install python3-aiosmtpd); CI must run this test"
        );
        eprintln!("SKIPPED: python3-aiosmtpd is not installed");
        return None;
    };
    let maildir = dir.join("maildir");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new(py);
    cmd.args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string()]);
    if let Some((cert, key)) = tls {
        cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
    }
    cmd.args(["-c", "aiosmtpd.handlers.Mailbox"]).arg(&maildir);
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let relay = Relay { child, addr, maildir };
    // Bounded wait for the relay to listen: 400 tries, 50 ms apart.
    for attempt in 0.. {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(attempt < 400, "aiosmtpd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(relay)
}

fn received(relay: &Relay) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(relay.maildir.join("new")) else {
        return Vec::new();
    };
    entries.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect()
}

fn mail_config(cfg: &mut Config, addr: SocketAddr, security: MailSecurity, ca: Option<&Path>) {
    cfg.mail.smtp_host = Some(addr.ip().to_string());
    cfg.mail.smtp_port = Some(addr.port());
    cfg.mail.security = security;
    cfg.mail.from = Some("Demo Clinic <no-reply@demo.telesafe.test>".into());
    cfg.mail.ca_file = ca.map(Path::to_path_buf);
}

/// Queues an activation-style message for the demo patient; returns the address and link.
async fn queue_for_patient(s: &TestServer) -> (Email, String) {
    let tenant = s.clinic.tenant.id;
    let email = Email::parse(common::PATIENT).unwrap();
    let user = s.state.store.user_by_email(tenant, &email).await.unwrap().unwrap();
    let link = format!("{}/activate/abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", s.base);
    let body = format!("Hello,\n\nOpen this link to finish setting up your account:\n{link}\n");
    outbox::enqueue(
        &s.state.store,
        &s.state.outbox_key,
        tenant,
        user.id,
        "Your Telesafe account",
        &body,
        s.state.clock.now(),
    )
    .await
    .unwrap();
    (email, link)
}

async fn delivers_over_required_starttls(backend: DbBackend) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("relay.pem"), dir.path().join("relay.key"));
    telesafe_server::tls::ensure_self_signed(&cert, &key, &["127.0.0.1".into()], SystemClock.now())
        .unwrap();
    let Some(relay) = relay(dir.path(), Some((&cert, &key))).await else { return };
    let Some(s) = start_with(backend, Arc::new(SystemClock), |c| {
        mail_config(c, relay.addr, MailSecurity::Starttls, Some(&cert));
    })
    .await
    else {
        return;
    };
    let (email, link) = queue_for_patient(&s).await;
    telesafe_server::mail::deliver_due(&s.state).await;
    let got = received(&relay);
    assert_eq!(got.len(), 1, "one message reached the relay");
    let m = &got[0];
    assert!(m.contains(&format!("To: {}", email.as_str())), "{m}");
    assert!(
        m.contains("From: \"Demo Clinic\" <no-reply@demo.telesafe.test>")
            || m.contains("From: Demo Clinic <no-reply@demo.telesafe.test>"),
        "{m}"
    );
    assert!(m.contains("Subject: Your Telesafe account"), "{m}");
    assert!(m.contains(&link), "the link arrives intact: {m}");
    assert!(!m.contains("Ana") && !m.contains("López"), "no name or other personal data: {m}");
    let now = s.state.clock.now();
    assert!(
        s.state
            .store
            .due_messages(10, now.plus(Duration::from_secs(7200)))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn retries_with_back_off_and_never_downgrades(backend: DbBackend) {
    let dir = tempfile::tempdir().unwrap();
    // A relay without STARTTLS: Telesafe must not send the link in the clear.
    let Some(plain) = relay(dir.path(), None).await else { return };
    let Some(s) = start_with(backend, Arc::new(SystemClock), |c| {
        mail_config(c, plain.addr, MailSecurity::Starttls, None);
    })
    .await
    else {
        return;
    };
    queue_for_patient(&s).await;
    telesafe_server::mail::deliver_due(&s.state).await;
    assert!(received(&plain).is_empty(), "nothing was sent without TLS");
    let now = s.state.clock.now();
    // The failed message waits 30 s before its next attempt, then is due again.
    assert!(s.state.store.due_messages(10, now).await.unwrap().is_empty());
    let later = s.state.store.due_messages(10, now.plus(Duration::from_secs(31))).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].attempts, 1);
    // A relay that is down is the same: counted, retried later, nothing lost.
    drop(plain);
    let s2 = start_with(backend, Arc::new(SystemClock), |c| {
        mail_config(
            c,
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            MailSecurity::Starttls,
            None,
        );
    })
    .await
    .unwrap();
    queue_for_patient(&s2).await;
    telesafe_server::mail::deliver_due(&s2.state).await;
    let now = s2.state.clock.now();
    let later = s2.state.store.due_messages(10, now.plus(Duration::from_secs(31))).await.unwrap();
    assert_eq!(later.len(), 1, "the message is kept for a retry");
}

#[test]
fn mail_settings_are_validated() {
    let mut cfg = Config::default();
    cfg.mail.smtp_host = Some("smtp.clinic.example".into());
    let keys = |c: &Config| c.validate().into_iter().map(|p| p.key).collect::<Vec<_>>();
    assert_eq!(keys(&cfg), ["mail.from"]);
    cfg.mail.from = Some("not an address".into());
    assert_eq!(keys(&cfg), ["mail.from"]);
    cfg.mail.from = Some("Clinic <no-reply@clinic.example>".into());
    assert!(keys(&cfg).is_empty());
    cfg.mail.security = MailSecurity::None;
    assert_eq!(keys(&cfg), ["mail.security"], "plain SMTP to another host is refused");
    cfg.mail.smtp_host = Some("127.0.0.1".into());
    assert!(keys(&cfg).is_empty(), "plain SMTP to this machine is allowed");
    cfg.mail.username = Some("telesafe".into());
    assert!(keys(&cfg).contains(&"mail.password_file".to_owned()));
    assert!(keys(&cfg).contains(&"mail.security".to_owned()), "no credentials without TLS");
}

both_backends!(delivers_over_required_starttls, retries_with_back_off_and_never_downgrades);
