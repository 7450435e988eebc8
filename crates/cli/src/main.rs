//! The `telesafe` command: run the server (`serve`), try it (`demo`), set up a data
//! directory (`init`) and check a configuration (`config check`).
//!
//! This binary only parses arguments, sets up logging and calls the library crates; it must
//! never hold business rules, and never print a secret except the one-time values it was
//! asked to create (a setup token, a demo password), each printed once to stdout.

mod admin;
mod audit;
mod backup;
mod bench;
mod bench_devices;
mod bench_visits;
mod demo;
mod devices;
mod init;
mod keys;
mod logging;
mod procfs;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use telesafe_core::SystemClock;
use telesafe_server::config::Config;
use telesafe_server::serve::Drained;

// mimalloc instead of glibc's malloc: the server allocates and frees many short buffers
// from many threads at once (BENCHMARKS.md, audit appends).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "telesafe",
    version,
    about = "Self-hostable telehealth with security and compliance built in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (HTTPS by default).
    Serve(ServeArgs),
    /// Run a demo clinic on SQLite in a fresh (or given) data directory.
    Demo(DemoArgs),
    /// Create a data directory, a config file with secure defaults, and a one-time setup
    /// token for the first administrator.
    Init(InitArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create and list tenants.
    #[command(subcommand)]
    Tenant(admin::TenantCommand),
    /// Create, list, lock and unlock accounts.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Register, list and revoke API clients.
    #[command(subcommand)]
    Client(admin::ClientCommand),
    /// Create platform operators (above the tenants).
    #[command(subcommand)]
    Operator(admin::OperatorCommand),
    /// Verify the tamper-evident audit log; export its signed heads.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Encrypted, verified backups of the database, and restoring one.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Rotate the keys under the encrypted record.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Erase a patient (crypto-shredding).
    #[command(subcommand)]
    Patient(keys::PatientCommand),
    /// Measure the server under load over loopback and print (or write) a table.
    Bench(bench::BenchArgs),
    /// Measure remote-monitoring throughput (HTTPS and MQTT) against in-run baselines.
    BenchDevices(bench_devices::DeviceBenchArgs),
    /// Measure how many video-visit signaling sockets a node holds, and their memory.
    BenchVisits(bench_visits::VisitBenchArgs),
    /// Register device models, enrol and revoke devices.
    #[command(subcommand)]
    Device(devices::DeviceCommand),
}

#[derive(Args, Debug, Clone, Default)]
pub(crate) struct Overrides {
    /// Configuration file (TOML). Environment variables TELESAFE_* override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding the configuration.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Data directory, overriding the configuration.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    overrides: Overrides,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// Keep the demo in this directory (reused on the next run) instead of a fresh
    /// temporary one that is deleted on exit.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the demo clinic in this PostgreSQL database instead of SQLite. Several demo
    /// nodes given the same --data-dir (keys, certificate, password) and database serve one
    /// clinic together, as `telesafe serve` nodes do.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Args, Debug)]
struct InitArgs {
    /// The data directory to create (mode 0700).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Address the server will listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// PostgreSQL URL instead of the embedded SQLite database.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a configuration and print each problem with the key it concerns.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    overrides: Overrides,
}

impl Overrides {
    fn load(&self) -> anyhow::Result<Config> {
        let mut cfg = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(l) = self.listen {
            cfg.server.listen = l;
        }
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        Ok(cfg)
    }
}

fn main() -> ExitCode {
    // Everything this process creates (database, keys, certificates) is private to the
    // service account, whatever umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    telesafe_server::tls::install_default_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let cfg = args.overrides.load()?;
            logging::init(&cfg.log);
            serve(cfg).await
        }
        Command::Demo(args) => demo::run(args.listen, args.data_dir, args.database_url).await,
        Command::Init(args) => init::run(args.data_dir, args.listen, args.database_url).await,
        Command::Config(ConfigCommand::Check(args)) => check(&args.overrides),
        Command::Tenant(cmd) => admin::tenant(cmd).await,
        Command::User(cmd) => admin::user(cmd).await,
        Command::Client(cmd) => admin::client(cmd).await,
        Command::Operator(cmd) => admin::operator(cmd).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Backup(cmd) => backup::run(cmd).await,
        Command::Keys(cmd) => keys::keys(cmd).await,
        Command::Patient(cmd) => keys::patient(cmd).await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchDevices(args) => bench_devices::run(args).await,
        Command::BenchVisits(args) => bench_visits::run(args).await,
        Command::Device(cmd) => devices::run(cmd).await,
    }
}

async fn serve(cfg: Config) -> anyhow::Result<ExitCode> {
    let tls = cfg.tls.enabled;
    let prepared = telesafe_server::prepare(cfg, Arc::new(SystemClock)).await?;
    telesafe_server::mail::spawn_delivery(prepared.state.clone());
    telesafe_server::mqtt::spawn(prepared.state.clone());
    telesafe_server::audit::spawn_auth_mirror(prepared.state.clone());
    println!("Telesafe is listening on {}", telesafe_server::local_url(prepared.local_addr, tls));
    if let Some(fp) = &prepared.fingerprint {
        if prepared.generated_certificate {
            println!("Generated a self-signed certificate.");
        }
        println!("Certificate SHA-256 fingerprint: {fp}");
    }
    let audit = prepared.state.audit.clone();
    let drained = prepared.server.run(telesafe_server::serve::shutdown_signal()).await;
    // A last signed head, so the witness sees everything this process appended.
    audit.sign_now().await;
    Ok(finish(drained))
}

/// Exit 0 when every in-flight request finished within the grace period.
fn finish(drained: Drained) -> ExitCode {
    match drained {
        Drained::Clean => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Drained::TimedOut => {
            tracing::warn!("grace period over; in-flight requests were cut off");
            ExitCode::FAILURE
        }
    }
}

fn check(o: &Overrides) -> anyhow::Result<ExitCode> {
    let cfg = o.load()?;
    let mut problems = cfg.validate();
    problems.extend(cfg.check_files());
    if problems.is_empty() {
        println!("configuration OK");
        println!("  listen:   {}", cfg.server.listen);
        println!("  data_dir: {}", cfg.data_dir.display());
        println!(
            "  database: {}",
            if cfg.database.url.is_some() { "configured URL" } else { "SQLite in data_dir" }
        );
        println!(
            "  tls:      {}",
            if !cfg.tls.enabled {
                "off (behind proxy)"
            } else if cfg.self_signed() {
                "self-signed"
            } else {
                "configured certificate"
            }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            println!("{p}");
        }
        eprintln!("{} problem(s) found", problems.len());
        Ok(ExitCode::from(2))
    }
}
