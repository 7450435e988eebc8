//! `telesafe audit`: verify the tamper-evident audit log, and export its signed heads for
//! an external witness.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use telesafe_core::audit::{self, AuditRepository};
use telesafe_server::audit::{HeadJson, read_witness};
use telesafe_store::Store;

use crate::Overrides;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute every entry's hash and every signed head's root, check every signature
    /// (and the witness's heads); name the first entry or head that fails. Exits 1 on any
    /// failure.
    Verify {
        /// A witness file of signed heads (JSON lines, as `[audit] witness_file` writes).
        #[arg(long, value_name = "FILE")]
        witness: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print every signed tree head as JSON lines (for a witness).
    Heads {
        #[command(flatten)]
        overrides: Overrides,
    },
}

async fn open(o: &Overrides) -> anyhow::Result<(Store, Vec<u8>)> {
    let cfg = o.load()?;
    // Verification must use the key derived from the root key, never one read from the
    // database: refuse to create a new root key here.
    let root =
        crate::keys::existing_root_key(&cfg, "the log's heads cannot be checked without it")?;
    let signer = telesafe_server::keys::audit_signer(&root)?;
    let store = Store::open(&cfg.database_url(), 2).await.context("opening the database")?;
    Ok((store, signer.public_key().to_vec()))
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { witness, json, overrides } => {
            let (store, key) = open(&overrides).await?;
            let witness = match &witness {
                Some(path) => read_witness(path).map_err(anyhow::Error::msg)?,
                None => Vec::new(),
            };
            let bar = if json { ProgressBar::hidden() } else { ProgressBar::new(0) };
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} verifying {pos}/{len} entries [{bar:40}] {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let result = audit::verify(&store, &key, &witness, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await;
            bar.finish_and_clear();
            match result {
                Ok(v) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"ok": true, "entries": v.entries, "heads": v.heads,
                                "witness_heads": v.witness_heads, "root": hex(&v.root)})
                        );
                    } else {
                        println!(
                            "The audit log verifies: {} entries, {} signed heads, {} witness heads.\nRoot: {}",
                            v.entries,
                            v.heads,
                            v.witness_heads,
                            hex(&v.root)
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    if json {
                        println!("{}", serde_json::json!({"ok": false, "problem": e.to_string()}));
                    } else {
                        eprintln!("THE AUDIT LOG DOES NOT VERIFY: {e}");
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Heads { overrides } => {
            let (store, _) = open(&overrides).await?;
            for h in store.heads().await? {
                println!("{}", serde_json::to_string(&HeadJson::from(&h))?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
