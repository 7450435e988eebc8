//! `telesafe init`: a new data directory with a config file of secure defaults, a migrated
//! database, and a one-time setup token for the first administrator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use telesafe_core::identity::{SetupToken, SetupTokenRepository};
use telesafe_core::{Clock, SystemClock};
use telesafe_crypto::OpaqueToken;
use telesafe_server::config::Config;
use telesafe_server::tls;
use telesafe_store::Store;

/// How long the first-administrator setup token stays valid.
const SETUP_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

pub async fn run(
    data_dir: PathBuf,
    listen: SocketAddr,
    database_url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config_path = data_dir.join("telesafe.toml");
    if config_path.exists() {
        anyhow::bail!(
            "{} already exists; refusing to overwrite an initialised data directory",
            config_path.display()
        );
    }
    tls::create_private_dir(&data_dir)?;
    let data_dir = data_dir.canonicalize().context("resolving the data directory")?;

    let mut cfg = Config { data_dir: data_dir.clone(), ..Config::default() };
    cfg.server.listen = listen;
    cfg.database.url = database_url;
    let mut problems = cfg.validate();
    problems.extend(cfg.check_files());
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        anyhow::bail!("the new configuration would not be safe to run");
    }

    let store = Store::open(&cfg.database_url(), 2).await?;
    let token = OpaqueToken::generate()?;
    let now = SystemClock.now();
    store
        .create_setup_token(&SetupToken {
            hash: token.hash(),
            created_at: now,
            expires_at: now.plus(SETUP_TOKEN_LIFETIME),
        })
        .await
        .context("storing the setup token")?;
    store.close().await;

    let text = format!(
        "# Created by `telesafe init`. See telesafe.example.toml for every key.\n{}",
        toml::to_string_pretty(&cfg)?
    );
    tls::write_private(&config_path, text.as_bytes())?;

    println!("Initialised {}", data_dir.display());
    println!("  Config:  {}", config_path.display());
    println!("  Start:   telesafe serve --config {}", config_path.display());
    println!();
    println!(
        "Then open {}/setup to create your organisation and its first administrator,",
        cfg.public_base()
    );
    println!("with this one-time setup token (shown only now, valid 24 hours):");
    println!("  {}", token.reveal());
    Ok(ExitCode::SUCCESS)
}
