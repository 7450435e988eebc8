//! `telesafe bench-visits`: how many idle signaling sockets one node holds and what each
//! costs in memory, beside the same number of idle HTTPS keep-alive connections to the same
//! server, in one run.
//!
//! Each mode runs a fresh server in a child process (this binary with `--serve`), so that
//! its resident memory is the server's alone and one mode's freed memory cannot hide the
//! other's cost. The parent holds the connections and reads the child's `VmRSS`.

use std::io::{BufRead, Write};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use telesafe_core::Clock;
use telesafe_core::identity::{PatientRepository, Role, Session, SessionRepository, SessionStage};
use telesafe_core::visits::{Visit, VisitRepository};
use telesafe_crypto::OpaqueToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args, Debug)]
pub struct VisitBenchArgs {
    /// Connections to hold in each mode.
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    /// Internal: run as the measured server and print how to reach it.
    #[arg(long, hide = true)]
    serve: bool,
}

/// What the server child tells the parent (one JSON line on stdout).
#[derive(serde::Serialize, serde::Deserialize)]
struct Target {
    port: u16,
    cert: String,
    cookie: String,
    visits: Vec<String>,
    pid: u32,
}

/// Raises the open-file limit to its hard maximum (each connection is a descriptor).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn serve(sockets: usize) -> anyhow::Result<ExitCode> {
    raise_fd_limit();
    let server = crate::bench::BenchServer::start(None, None, 1).await?;
    let state = &server.state;
    let tenant = server.clinic.tenant.id;
    let dr = server
        .clinic
        .users
        .iter()
        .find(|u| u.role == Role::Clinician)
        .context("the demo clinic has a clinician")?;
    let patient = state
        .store
        .list_patients(tenant)
        .await?
        .into_iter()
        .find(|p| p.user_id.is_some())
        .context("the demo clinic has a patient")?;
    let now = server.clock.now();
    let token = OpaqueToken::generate()?;
    state
        .store
        .create_session(&Session {
            stage: SessionStage::Full,
            mfa_at: Some(now),
            token_hash: token.hash(),
            tenant_id: tenant,
            user_id: dr.id,
            role: Role::Clinician,
            created_at: now,
            last_seen_at: now,
            csrf_token: "bench".to_owned(),
            source: "127.0.0.1".to_owned(),
            user_agent: "bench".to_owned(),
        })
        .await?;
    // One visit per socket: a room of one, so the measure is the socket, not a room's
    // fan-out.
    let mut visits = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let mut v = Visit::booked(
            tenant,
            patient.id,
            vec![dr.id],
            (now, now.plus(Duration::from_secs(3600))),
            OpaqueToken::generate()?.hash(),
            dr.id,
            now,
        );
        v.appointment_id = "bench".to_owned();
        state.store.create_visit(&v).await?;
        visits.push(v.id.to_string());
    }
    let port = server.base.rsplit(':').next().unwrap_or_default().parse()?;
    let target = Target {
        port,
        cert: state.config.tls_paths().0.display().to_string(),
        cookie: format!("{}={}", telesafe_server::auth::SESSION_COOKIE, token.reveal()),
        visits,
        pid: std::process::id(),
    };
    println!("{}", serde_json::to_string(&target)?);
    std::io::stdout().flush()?;
    // Serve until the parent closes stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().lock().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {}
    })
    .await;
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

fn tls(cert: &str) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let pem = std::fs::read(cert)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&pem)? {
        roots.add(c)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn rustls_pemfile_certs(
    pem: &[u8],
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    Ok(rustls::pki_types::CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?)
}

/// A connection held open: only kept, never read (its memory is what is measured).
enum Held {
    Https(#[allow(dead_code, reason = "held open, not read")] Box<Tls>),
    Socket(Box<tokio_tungstenite::WebSocketStream<Tls>>),
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(
    t: &Target,
    tls: &tokio_rustls::TlsConnector,
    visit: Option<&str>,
) -> anyhow::Result<Held> {
    let step = Duration::from_secs(20);
    let tcp = tokio::time::timeout(step, tokio::net::TcpStream::connect(("127.0.0.1", t.port)))
        .await
        .context("TCP connect timed out")??;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut stream =
        tokio::time::timeout(step, tls.connect(name, tcp)).await.context("TLS timed out")??;
    let Some(visit) = visit else {
        let req = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n";
        stream.write_all(req.as_bytes()).await?;
        // TLS may hold the record until flushed.
        stream.flush().await?;
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(step, stream.read(&mut buf)).await.context("no answer")??;
        anyhow::ensure!(buf[..n].starts_with(b"HTTP/1.1 200"), "healthz did not answer 200");
        return Ok(Held::Https(Box::new(stream)));
    };
    let url = format!("wss://localhost:{}/visits/{visit}/socket?peer={}", t.port, uuid_v4());
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )?;
    let h = req.headers_mut();
    h.insert("cookie", t.cookie.parse()?);
    h.insert("origin", format!("https://localhost:{}", t.port).parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    // The welcome proves the socket is a participant's, not merely open.
    let first = ws.next().await.context("the socket closed before its welcome")??;
    anyhow::ensure!(first.to_text().unwrap_or("").contains("\"welcome\""), "no welcome");
    Ok(Held::Socket(Box::new(ws)))
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Spawns a server child, holds `n` connections of one kind, and returns the child's
/// resident memory before and after, in KiB.
async fn measure(n: usize, sockets: bool) -> anyhow::Result<(u64, u64, Duration)> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["bench-visits", "--serve", "--sockets", &n.to_string()])
        .env("TELESAFE_LOG__LEVEL", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = tokio::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line).await?;
    let t: Target = serde_json::from_str(&line).context("the server child's address")?;
    let tls = tls(&t.cert)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(t.pid)?;
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("{msg:>22} {bar:40} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(if sockets { "signaling sockets" } else { "HTTPS keep-alive" });
    let started = std::time::Instant::now();
    let mut held = Vec::with_capacity(n);
    // A few at a time: the server's accept queue and TLS handshakes stay unhurried.
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + 64).min(n))
            .map(|k| {
                let (t, tls) = (&t, &tls);
                async move {
                    let visit = sockets.then(|| t.visits[k].as_str());
                    tokio::time::timeout(Duration::from_secs(30), connect(t, tls, visit))
                        .await
                        .map_err(|_| anyhow::anyhow!("connection {k} took over 30 s"))?
                }
            })
            .collect();
        for h in futures_util::future::join_all(batch).await {
            held.push(h?);
        }
        i = held.len();
        bar.set_position(i as u64);
    }
    let took = started.elapsed();
    bar.finish_and_clear();
    // Keep the sockets alive (the server closes one silent for a minute) while memory
    // settles, then read it.
    for h in &mut held {
        if let Held::Socket(ws) = h {
            ws.send(tokio_tungstenite::tungstenite::Message::text("{\"type\":\"ping\"}")).await?;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(t.pid)?;
    drop(held);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    Ok((before, after, took))
}

pub async fn run(args: VisitBenchArgs) -> anyhow::Result<ExitCode> {
    if args.serve {
        return serve(args.sockets).await;
    }
    raise_fd_limit();
    let n = args.sockets;
    let (h0, h1, ht) = measure(n, false).await?;
    let (s0, s1, st) = measure(n, true).await?;
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / n as f64;
    let (hp, sp) = (per(h0, h1), per(s0, s1));
    println!("machine: {}", crate::bench::machine());
    println!("connections held per mode: {n}");
    println!("| Mode | Server RSS before → after | Per connection | Opened in |");
    println!("|---|---|---|---|");
    println!(
        "| idle HTTPS keep-alive (baseline) | {} → {} MiB | {hp:.1} KiB | {:.1} s |",
        h0 / 1024,
        h1 / 1024,
        ht.as_secs_f64()
    );
    println!(
        "| visit signaling socket | {} → {} MiB | {sp:.1} KiB | {:.1} s |",
        s0 / 1024,
        s1 / 1024,
        st.as_secs_f64()
    );
    println!(
        "ratio: a signaling socket costs {:.2}× an idle HTTPS connection; target ≤ 50 KiB each",
        if hp > 0.0 { sp / hp } else { f64::NAN }
    );
    Ok(ExitCode::SUCCESS)
}
