//! `telesafe bench`: starts a Telesafe server in this process (the demo clinic on a fresh
//! SQLite file, or on the PostgreSQL given), drives each workload over loopback HTTPS with
//! a fixed number of concurrent clients for a fixed time, and prints one table: requests
//! per second, median and p99 latency, each also as a ratio against the baseline workload
//! (`/healthz`, which touches neither the database nor a key) measured in the same run,
//! because these machines are shared and absolute figures alone say little.
//! `--write BENCHMARKS.md` replaces the table between its markers there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use telesafe_core::SystemClock;
use telesafe_core::identity::PatientRepository;
use telesafe_core::identity::clients::{self, Scope};
use telesafe_server::config::Config;
use telesafe_server::demo;

const START: &str = "<!-- bench:record:start -->";
const END: &str = "<!-- bench:record:end -->";

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Seconds per workload.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients per workload.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// A PostgreSQL URL to run against instead of a fresh SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Replace the table between the bench markers in this file (BENCHMARKS.md).
    #[arg(long)]
    write: Option<PathBuf>,
}

/// One workload's measurements.
struct Row {
    name: &'static str,
    what: &'static str,
    requests: usize,
    errors: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

#[derive(Clone, Copy)]
enum Work {
    Health,
    Me,
    ReadPatient,
    SearchVitals,
    CreateObservation,
}

const WORKLOADS: &[(Work, &str, &str)] = &[
    (Work::Health, "baseline: GET /healthz", "TLS + HTTP only"),
    (Work::Me, "GET /api/v1/me", "+ bearer token lookup"),
    (Work::ReadPatient, "FHIR read Patient", "+ policy, audit append (group commit), key, decrypt"),
    (
        Work::SearchVitals,
        "FHIR search Observation?patient=",
        "+ blind-index query, 14 decisions, 15 audit entries, 14 decrypts",
    ),
    (
        Work::CreateObservation,
        "FHIR create Observation",
        "+ validate, seal, index, versioned write",
    ),
];

struct Target {
    client: reqwest::Client,
    base: String,
    token: String,
    patient: String,
}

async fn once(t: &Target, w: Work) -> bool {
    let req = match w {
        Work::Health => t.client.get(format!("{}/healthz", t.base)),
        Work::Me => t.client.get(format!("{}/api/v1/me", t.base)).bearer_auth(&t.token),
        Work::ReadPatient => {
            t.client.get(format!("{}/fhir/Patient/{}", t.base, t.patient)).bearer_auth(&t.token)
        }
        Work::SearchVitals => t
            .client
            .get(format!("{}/fhir/Observation?patient={}&_count=20", t.base, t.patient))
            .bearer_auth(&t.token),
        Work::CreateObservation => t
            .client
            .post(format!("{}/fhir/Observation", t.base))
            .bearer_auth(&t.token)
            .header("content-type", "application/fhir+json")
            .header("prefer", "return=minimal")
            .body(
                json!({
                    "resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": format!("Patient/{}", t.patient)},
                    "effectiveDateTime": "2026-01-01T08:00:00Z",
                    "valueQuantity": {"value": 72, "unit": "beats/min", "system": "http://unitsofmeasure.org", "code": "/min"}
                })
                .to_string(),
            ),
    };
    match req.send().await {
        Ok(r) => {
            let status = r.status();
            let body = r.bytes().await.unwrap_or_default();
            if !status.is_success() && std::env::var_os("TELESAFE_BENCH_DEBUG").is_some() {
                eprintln!("{status}: {}", String::from_utf8_lossy(&body));
            }
            status.is_success()
        }
        Err(e) => {
            if std::env::var_os("TELESAFE_BENCH_DEBUG").is_some() {
                eprintln!("{e}");
            }
            false
        }
    }
}

async fn measure(
    t: Arc<Target>,
    w: Work,
    name: &'static str,
    what: &'static str,
    args: &BenchArgs,
) -> Row {
    let bar = ProgressBar::new(args.seconds);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:42} [{bar:30}] {pos}/{len} s")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(name);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let s = Instant::now();
                if !once(&t, w).await {
                    errors += 1;
                }
                lat.push(s.elapsed());
            }
            (lat, errors)
        }));
    }
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                bar.set_position(started.elapsed().as_secs().min(bar.length().unwrap_or(0)));
            }
        })
    };
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((lat, e)) = task.await {
            all.extend(lat);
            errors += e;
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
    };
    Row {
        name,
        what,
        requests: all.len(),
        errors,
        per_sec: all.len() as f64 / elapsed,
        p50: pick(0.5),
        p99: pick(0.99),
    }
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores ({cpu})")
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn table(rows: &[Row], args: &BenchArgs, backend: &str) -> String {
    let base = &rows[0];
    let mut out = String::new();
    out.push_str(&format!(
        "Machine: {}; {} build; {backend}; {} concurrent clients, {} s per workload; {}.\n\
         Reproduce: `cargo run --release -p telesafe-cli -- bench --seconds {} --concurrency {}{}`.\n\n",
        machine(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        args.concurrency,
        args.seconds,
        telesafe_core::Timestamp::from_unix_millis(
            i64::try_from(std::time::SystemTime::UNIX_EPOCH.elapsed().map(|d| d.as_millis()).unwrap_or(0)).unwrap_or(0)
        )
        .to_rfc3339()
        .chars()
        .take(10)
        .collect::<String>(),
        args.seconds,
        args.concurrency,
        if args.database_url.is_some() { " --database-url postgres://..." } else { "" },
    ));
    out.push_str("| Workload | Adds | requests | req/s | × baseline | p50 | p99 | p99 × baseline | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {} | {} | {:.1} | {} |\n",
            r.name,
            r.what,
            r.requests,
            r.per_sec,
            r.per_sec / base.per_sec.max(f64::MIN_POSITIVE),
            ms(r.p50),
            ms(r.p99),
            r.p99.as_secs_f64() / base.p99.as_secs_f64().max(f64::MIN_POSITIVE),
            r.errors,
        ));
    }
    out
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if std::env::var_os("TELESAFE_BENCH_DEBUG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("error")
            .try_init();
    }
    let b = BenchServer::start(args.database_url.clone(), None, args.concurrency).await?;
    let (state, clinic, client, clock) =
        (b.state.clone(), &b.clinic, b.client.clone(), b.clock.clone());
    let backend = state.store.backend().as_str().to_owned();
    let base = b.base.clone();
    let reg = clients::register_client(
        &state.store,
        clinic.tenant.id,
        "bench",
        Scope::parse_list("system/*.*").context("scopes")?,
        telesafe_core::Clock::now(clock.as_ref()),
    )
    .await?;
    let token: Value = client
        .post(format!("{base}/oauth2/token"))
        .basic_auth(&reg.client.client_id, Some(reg.secret.reveal()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"].as_str().context("no token")?.to_owned();
    let patient = state
        .store
        .list_patients(clinic.tenant.id)
        .await?
        .into_iter()
        .find(|p| p.user_id.is_some())
        .context("the demo has patients")?
        .id
        .to_string();
    let target = Arc::new(Target { client, base, token, patient });
    if !once(&target, Work::ReadPatient).await {
        bail!("the server did not answer a FHIR read; nothing to measure");
    }

    let mut rows = Vec::new();
    for (w, name, what) in WORKLOADS {
        rows.push(measure(target.clone(), *w, name, what, &args).await);
    }
    b.stop().await;

    let t = table(&rows, &args, &backend);
    println!("{t}");
    if let Some(path) = &args.write {
        write_between(path, START, END, &t)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Replaces the text between two markers in a file (BENCHMARKS.md).
pub fn write_between(
    path: &std::path::Path,
    start: &str,
    end: &str,
    t: &str,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(a), Some(b)) = (text.find(start), text.find(end)) else {
        bail!("{} has no {start} … {end} markers", path.display());
    };
    let updated = format!("{}{start}\n{t}{}", &text[..a], &text[b..]);
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote the table into {}", path.display());
    Ok(())
}

/// A Telesafe server in this process on a fresh data directory (the demo clinic seeded),
/// and an HTTPS client that trusts it.
pub struct BenchServer {
    pub state: telesafe_server::state::AppState,
    pub clinic: demo::DemoClinic,
    pub client: reqwest::Client,
    pub base: String,
    pub addr: SocketAddr,
    pub clock: Arc<SystemClock>,
    /// Every demo account's password.
    pub password: secrecy::SecretString,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<telesafe_server::serve::Drained>,
    _dir: tempfile::TempDir,
}

impl BenchServer {
    pub async fn start(
        database_url: Option<String>,
        configure: Option<&dyn Fn(&mut Config)>,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a temporary data directory")?;
        let mut cfg = Config { data_dir: dir.path().join("data"), ..Config::default() };
        cfg.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        cfg.database.url = database_url;
        if let Some(f) = configure {
            f(&mut cfg);
        }
        let (cert_path, _) = cfg.tls_paths();
        let clock = Arc::new(SystemClock);
        let prepared = telesafe_server::prepare(cfg, clock.clone()).await?;
        let state = prepared.state.clone();
        let password = demo::generate_password()?;
        let clinic = demo::seed(&state.store, &state.passwords, clock.as_ref(), &password).await?;
        demo::seed_records(&state, &clinic)
            .await
            .map_err(|e| anyhow::anyhow!("seeding: {}", e.body()))?;
        let addr = prepared.local_addr;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(prepared.server.run(async move {
            let _ = stopped.await;
        }));
        let pem = std::fs::read(&cert_path).context("the server's certificate")?;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .resolve("localhost", addr)
            .pool_max_idle_per_host(concurrency)
            .build()?;
        let base = format!("https://localhost:{}", addr.port());
        Ok(Self { state, clinic, client, base, addr, clock, password, stop, server, _dir: dir })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.state.audit.sign_now().await;
    }
}
