//! `telesafe backup`: encrypted, verified backups of an installation's database, and
//! restoring one (the answer to ransomware and lost disks in the threat model).
//!
//! A backup file is a line `TELESAFE-BACKUP 1`, a line of JSON (the [`Header`]: when, what
//! schema, how many audit entries, and the salt and nonce prefix it was sealed with), then
//! the database copy sealed with AES-256-GCM in the STREAM construction
//! ([`telesafe_crypto::stream`]), every chunk authenticating those two lines. The key is
//! derived from the installation's root key (version 1, which every rotation keeps) and the
//! backup's own random salt, so a backup opens only where that root key is, and a file cut
//! short, edited or spliced anywhere fails to open. Without the key nothing but the
//! header can be read, not even that the rest holds an SQLite database.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use telesafe_core::audit::{self, AuditRepository};
use telesafe_core::identity::TenantRepository;
use telesafe_core::records::keys::{KeyRepository, KeyTombstone};
use telesafe_core::{Clock, SystemClock, Timestamp};
use telesafe_crypto::keys::SecretKey;
use telesafe_crypto::stream::{self, NONCE_PREFIX_LEN};
use telesafe_server::config::Config;
use telesafe_store::Store;

use crate::Overrides;
use crate::keys::{Opened, log};

const MAGIC: &[u8] = b"TELESAFE-BACKUP 1\n";
/// The longest header line accepted (a real one is about 400 bytes).
const MAX_HEADER: usize = 4096;

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Take a backup while servers run: a consistent copy of the database, sealed under a
    /// key derived from the root key, written (mode 0600) to --out or to
    /// <data dir>/backups/telesafe-<time>.tsbackup. Logged in the audit log first.
    Create {
        /// Where to write the backup (a new file).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Check a backup without changing anything: every chunk authenticates under this
    /// installation's root key, the database inside passes SQLite's integrity check, and
    /// its audit log verifies (every entry's hash, every signed head). Exits 1 if not.
    Verify {
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Replace this installation's database with a verified backup's. Patients erased in
    /// the current database stay erased (its tombstones are applied again); the replaced
    /// file is kept beside it. Stop every server using the database first.
    Restore {
        file: PathBuf,
        /// Confirm: everything written since the backup was taken is set aside.
        #[arg(long)]
        yes: bool,
        /// Restore even though the current database cannot be read, so patients erased
        /// since the backup cannot be erased again from its tombstones.
        #[arg(long)]
        current_unreadable: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// The list of erased patients (tenant and patient ids, no other data), to carry
    /// erasures across a restore made with other tools (PostgreSQL's).
    #[command(subcommand)]
    Erasures(ErasuresCommand),
}

#[derive(Subcommand, Debug)]
pub enum ErasuresCommand {
    /// Write every erasure tombstone of the database, as JSON lines (mode 0600).
    Export {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Erase again every patient a file from `export` names who is not erased in the
    /// database (after restoring an older copy). Each erasure is logged first.
    Apply {
        file: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
}

/// One line of an erasures file.
#[derive(Debug, Serialize, Deserialize)]
struct Erased {
    tenant: String,
    patient: String,
    destroyed_at: String,
}

/// The second line of a backup file. It holds no patient data and no secret.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    created_at: String,
    backend: String,
    /// The newest migration the database had.
    schema: i64,
    telesafe: String,
    /// Entries in the audit log of the copy.
    audit_entries: u64,
    /// What the key derives from.
    sealed_with: String,
    salt: String,
    nonce_prefix: String,
}

const SEALED_WITH: &str = "hkdf-sha256(root key v1, telesafe/v1/backup/<salt>)";

impl Header {
    fn key(&self, root: &SecretKey) -> SecretKey {
        root.derive(&format!("telesafe/v1/backup/{}", self.salt))
    }

    fn nonce_prefix(&self) -> anyhow::Result<[u8; NONCE_PREFIX_LEN]> {
        hex::decode(&self.nonce_prefix)
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("the backup's header is damaged (nonce prefix)")
    }
}

pub async fn run(cmd: BackupCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BackupCommand::Create { out, overrides } => create(out, &overrides).await,
        BackupCommand::Verify { file, json, overrides } => {
            let cfg = overrides.load()?;
            let root = root_key(&cfg)?;
            let work = private_workspace(&cfg.data_dir, ".telesafe-verify-")?;
            match unseal_and_check(&cfg, &file, &root, work.path(), !json).await {
                Ok((header, report)) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"ok": true, "created_at": header.created_at,
                                "schema": header.schema, "bytes": report.bytes,
                                "audit_entries": report.entries, "signed_heads": report.heads,
                                "organisations": report.organisations})
                        );
                    } else {
                        println!(
                            "The backup verifies: taken {}, schema {}, {} MiB; every chunk authenticates, the database is sound, its audit log's {} entries and {} signed heads verify, and the keys of its {} organisation(s) open with the root keys here.",
                            header.created_at,
                            header.schema,
                            report.bytes.div_ceil(1 << 20),
                            report.entries,
                            report.heads,
                            report.organisations
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"ok": false, "problem": format!("{e:#}")})
                        );
                    } else {
                        eprintln!("THE BACKUP DOES NOT VERIFY: {e:#}");
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        BackupCommand::Restore { file, yes, current_unreadable, overrides } => {
            if !yes {
                bail!(
                    "restoring sets aside everything written since the backup was taken; add --yes to confirm"
                );
            }
            restore(&file, current_unreadable, &overrides).await
        }
        BackupCommand::Erasures(ErasuresCommand::Export { out, overrides }) => {
            let opened = crate::keys::open(&overrides).await?;
            let mut text = String::new();
            let tombstones = opened.store.key_tombstones().await?;
            for t in &tombstones {
                text.push_str(&serde_json::to_string(&Erased {
                    tenant: t.tenant.to_string(),
                    patient: t.patient.to_string(),
                    destroyed_at: t.destroyed_at.to_rfc3339(),
                })?);
                text.push('\n');
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("creating {} (it must not exist)", out.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            println!("{} erasure(s) written to {}.", tombstones.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Erasures(ErasuresCommand::Apply { file, overrides }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let mut tombstones = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let bad = || anyhow::anyhow!("{} line {}: not an erasure", file.display(), i + 1);
                let e: Erased = serde_json::from_str(line).map_err(|_| bad())?;
                let at = time::OffsetDateTime::parse(
                    &e.destroyed_at,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|_| bad())?;
                tombstones.push(KeyTombstone {
                    tenant: e.tenant.parse().map_err(|_| bad())?,
                    patient: e.patient.parse().map_err(|_| bad())?,
                    destroyed_at: Timestamp::from_unix_millis(
                        i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())?,
                    ),
                });
            }
            let opened = crate::keys::open(&overrides).await?;
            let (again, skipped) = erase_again(&opened, &tombstones).await?;
            println!("{again} patient erasure(s) applied again ({} listed).", tombstones.len());
            say_skipped(skipped);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Erases every patient of `tombstones` not erased in `opened`'s database yet, each logged
/// first as `telesafe patient erase` does and keeping the time of the original erasure.
/// Returns how many, and how many were skipped because their organisation is not in the
/// database at all (created after the copy was taken: none of its patients are there).
async fn erase_again(
    opened: &Opened,
    tombstones: &[KeyTombstone],
) -> anyhow::Result<(usize, usize)> {
    let have: std::collections::HashSet<_> =
        opened.store.key_tombstones().await?.into_iter().map(|t| (t.tenant, t.patient)).collect();
    let tenants: std::collections::HashSet<_> =
        opened.store.list_tenants().await?.into_iter().map(|t| t.id).collect();
    let (pending, absent): (Vec<&KeyTombstone>, Vec<&KeyTombstone>) = tombstones
        .iter()
        .filter(|t| !have.contains(&(t.tenant, t.patient)))
        .partition(|t| tenants.contains(&t.tenant));
    let ring = telesafe_server::keys::key_ring(telesafe_server::keys::record_provider(
        &opened.cfg,
        &opened.root,
    )?);
    for t in &pending {
        log(opened, t.tenant, "erase", Some(t.patient)).await?;
        ring.shred(&opened.store, t.tenant, t.patient, t.destroyed_at).await?;
    }
    Ok((pending.len(), absent.len()))
}

fn say_skipped(skipped: usize) {
    if skipped > 0 {
        println!(
            "{skipped} erasure(s) belong to organisations this database does not hold, so none of their patients are in it."
        );
    }
}

/// A private (0700) temporary directory for a plaintext copy of the database: inside the
/// data directory when there is one (same disk, same protection as the database itself),
/// never beside a backup's destination; removed when dropped.
fn private_workspace(data_dir: &Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let dir = if data_dir.is_dir() { data_dir.to_owned() } else { std::env::temp_dir() };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&dir)
        .with_context(|| format!("creating a private working directory in {}", dir.display()))
}

/// The root key, refusing to make one: a backup opened under a new key is useless.
fn root_key(cfg: &Config) -> anyhow::Result<SecretKey> {
    crate::keys::existing_root_key(
        cfg,
        "backups are sealed under the root key, so restore it from its own backup first",
    )
}

/// The SQLite file a configuration names, or an error for PostgreSQL.
fn sqlite_file(cfg: &Config) -> anyhow::Result<PathBuf> {
    let url = cfg.database_url();
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        bail!(
            "this installation runs on PostgreSQL: back it up with PostgreSQL's own tools (pg_dump or pgBackRest, encrypted at rest), as docs/operations.md describes; telesafe backup covers the embedded SQLite database"
        );
    };
    Ok(PathBuf::from(rest.split('?').next().unwrap_or(rest)))
}

fn bytes_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

async fn create(out: Option<PathBuf>, o: &Overrides) -> anyhow::Result<ExitCode> {
    let cfg = o.load()?;
    sqlite_file(&cfg)?;
    let opened = crate::keys::open(o).await?;
    let now = SystemClock.now();
    let stamp = now.to_rfc3339().replace([':', '-'], "");
    let out = out.unwrap_or_else(|| {
        cfg.data_dir
            .join("backups")
            .join(format!("telesafe-{}.tsbackup", stamp.trim_end_matches('Z')))
    });
    if out.exists() {
        bail!("{} exists already; a backup never overwrites a file", out.display());
    }
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Logged first, in every organisation's log: a copy of everything was taken.
    for t in opened.store.list_tenants().await? {
        log(&opened, t.id, "backup", None).await?;
    }
    let work = private_workspace(&cfg.data_dir, ".telesafe-backup-")?;
    let copy = work.path().join("telesafe.db");
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("taking a consistent copy of the database ...");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    opened.store.snapshot_into(&copy).await.context("copying the database")?;
    let snap = Store::connect(&format!("sqlite://{}", copy.display()), 1).await?;
    let (schema, entries) = (snap.schema_version().await?, snap.audit_size().await?);
    snap.close().await;
    spinner.finish_and_clear();

    let mut salt = [0u8; 32];
    let mut prefix = [0u8; NONCE_PREFIX_LEN];
    telesafe_crypto::fill_random(&mut salt)?;
    telesafe_crypto::fill_random(&mut prefix)?;
    let header = Header {
        format: 1,
        created_at: now.to_rfc3339(),
        backend: "sqlite".into(),
        schema,
        telesafe: env!("CARGO_PKG_VERSION").into(),
        audit_entries: entries,
        sealed_with: SEALED_WITH.into(),
        salt: hex::encode(salt),
        nonce_prefix: hex::encode(prefix),
    };
    let key = header.key(&opened.root);
    let mut top = MAGIC.to_vec();
    top.extend_from_slice(serde_json::to_string(&header)?.as_bytes());
    top.push(b'\n');
    // Written under a temporary name and renamed when whole: a file with the final name
    // is always a complete backup.
    let partial = out.with_extension("tsbackup.partial");
    if partial.exists() {
        bail!("{} is left from an interrupted backup; delete it and run again", partial.display());
    }
    let len = std::fs::metadata(&copy)?.len();
    let bar = bytes_bar(len, "sealing");
    let sealed = {
        let (copy, partial, bar) = (copy.clone(), partial.clone(), bar.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            let mut w = BufWriter::new(f);
            w.write_all(&top)?;
            let input = BufReader::new(File::open(&copy)?);
            stream::seal(&key, &prefix, &top, input, &mut w, |n| bar.set_position(n))?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(())
        })
        .await?
    };
    bar.finish_and_clear();
    if let Err(e) = sealed {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    // A link, not a rename: it fails rather than replace a file that appeared meanwhile.
    let linked = std::fs::hard_link(&partial, &out);
    let _ = std::fs::remove_file(&partial);
    linked.with_context(|| format!("naming the backup {}", out.display()))?;
    File::open(dir)?.sync_all()?;
    let size = std::fs::metadata(&out)?.len();
    println!(
        "Backup written: {} ({} MiB; schema {schema}; {entries} audit entries).\nIt opens only with this installation's root key ({}): keep the two in separate places, one of them offline, and check the backup with `telesafe backup verify`.",
        out.display(),
        size.div_ceil(1 << 20),
        cfg.root_key_path().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What checking an unsealed copy found.
struct Report {
    bytes: u64,
    entries: u64,
    heads: u64,
    organisations: usize,
}

/// Reads a backup's header; the bytes read are what every chunk authenticates.
fn read_header(r: &mut impl Read) -> anyhow::Result<(Header, Vec<u8>)> {
    let mut magic = vec![0u8; MAGIC.len()];
    if r.read_exact(&mut magic).is_err() || magic != MAGIC {
        bail!("this is not a Telesafe backup (or not one of a format this version reads)");
    }
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if r.read(&mut byte)? == 0 || line.len() > MAX_HEADER {
            bail!("the backup's header is damaged");
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    let header: Header = serde_json::from_slice(&line).context("the backup's header is damaged")?;
    if header.format != 1 || header.backend != "sqlite" || header.sealed_with != SEALED_WITH {
        bail!("this backup was written in a form this version does not read");
    }
    let mut top = magic;
    top.extend_from_slice(&line);
    top.push(b'\n');
    Ok((header, top))
}

/// Unseals `file` into `work/telesafe.db` and checks it: every chunk, SQLite's integrity
/// check, the schema, and the audit log (with the head key derived from `root`).
async fn unseal_and_check(
    cfg: &Config,
    file: &Path,
    root: &SecretKey,
    work: &Path,
    show: bool,
) -> anyhow::Result<(Header, Report)> {
    let db = work.join("telesafe.db");
    let head_key = telesafe_server::keys::audit_signer(root)?.public_key().to_vec();
    let (file, target, root_copy) = (file.to_owned(), db.clone(), root.clone());
    let (header, bytes) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Header, u64)> {
        let f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata()?.len();
        let mut r = BufReader::new(f);
        let (header, top) = read_header(&mut r)?;
        let bar = if show { bytes_bar(len, "unsealing") } else { ProgressBar::hidden() };
        let out =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&target)?;
        let mut w = BufWriter::new(out);
        let key = header.key(&root_copy);
        let n = stream::open(&key, &header.nonce_prefix()?, &top, r, &mut w, |n| {
            bar.set_position(n + top.len() as u64)
        })
        .map_err(|e| match e {
            stream::StreamError::Corrupt { chunk: 0 } => anyhow::anyhow!(
                "{e} (if the file is whole, it was sealed under another installation's root key)"
            ),
            e => e.into(),
        })?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        bar.finish_and_clear();
        Ok((header, n))
    })
    .await??;
    // Opened without migrating: the copy must be checked as it was taken.
    let store = Store::connect(&format!("sqlite://{}", db.display()), 1).await?;
    let problems = store.integrity_problems().await?;
    if !problems.is_empty() {
        bail!("the database inside fails SQLite's integrity check: {}", problems.join("; "));
    }
    let schema = store.schema_version().await?;
    if schema != header.schema {
        bail!(
            "the database inside is at schema {schema}, not the {} its header names",
            header.schema
        );
    }
    if schema > store.latest_schema_version() {
        bail!(
            "the backup was taken by a newer Telesafe (schema {schema}; this one knows {}): restore it with that version",
            store.latest_schema_version()
        );
    }
    let checked = async {
        let bar = if show { ProgressBar::new(0) } else { ProgressBar::hidden() };
        let verified = audit::verify(&store, &head_key, &[], |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await;
        bar.finish_and_clear();
        let v =
            verified.map_err(|e| anyhow::anyhow!("the backup's audit log does not verify: {e}"))?;
        if v.entries != header.audit_entries {
            bail!(
                "the backup's audit log holds {} entries, not the {} its header names",
                v.entries,
                header.audit_entries
            );
        }
        // Every organisation's keys open under the root keys here: without them the record
        // in the backup could not be read after restoring it.
        let ring =
            telesafe_server::keys::key_ring(telesafe_server::keys::record_provider(cfg, root)?);
        let tenants = store.list_tenants().await?;
        for t in &tenants {
            if ring.tenant(&store, t.id, SystemClock.now()).await.is_err() {
                bail!(
                    "organisation {}'s keys in the backup do not open with the root keys here (after a root key rotation, the keys directory must hold every root-v<N>.key the backup needs)",
                    t.slug
                );
            }
        }
        anyhow::Ok((v, tenants.len()))
    }
    .await;
    store.close().await;
    let (v, organisations) = checked?;
    Ok((header, Report { bytes, entries: v.entries, heads: v.heads, organisations }))
}

async fn restore(file: &Path, current_unreadable: bool, o: &Overrides) -> anyhow::Result<ExitCode> {
    let cfg = o.load()?;
    let target = absolute_file(&sqlite_file(&cfg)?)?;
    let root = root_key(&cfg)?;
    let in_use = |why: String| {
        anyhow::anyhow!(
            "{} is in use ({why}): stop every server using it, then restore",
            target.display()
        )
    };
    // A first look through /proc; the lock taken below is what proves it.
    if let Some(pid) = crate::procfs::holder(|p| p == target, Some(std::process::id())) {
        return Err(in_use(format!("process {pid} has it open")));
    }
    let dir = target.parent().unwrap_or(Path::new("/")).to_owned();
    std::fs::create_dir_all(&dir)?;
    // Beside the target: the same filesystem, so the final rename replaces it atomically.
    let work = tempfile::Builder::new().prefix(".telesafe-restore-").tempdir_in(&dir)?;
    let (header, report) = unseal_and_check(&cfg, file, &root, work.path(), true).await?;

    // The current database: its tombstones, so that patients erased in it stay erased;
    // then its write-ahead log folded into it, which needs the only connection to it and
    // so fails if a server has it open.
    let mut tombstones = Vec::new();
    let current_exists = target.exists();
    if current_exists {
        let url = format!("sqlite://{}", target.display());
        let current = async {
            let s = Store::connect(&url, 1).await?;
            let t = s.key_tombstones().await;
            s.close().await;
            anyhow::Ok(t?)
        };
        match current.await {
            Ok(t) => {
                tombstones = t;
                telesafe_store::settle_sqlite_file(&target, Duration::from_secs(5))
                    .await
                    .map_err(|e| in_use(e.to_string()))?;
            }
            Err(e) if current_unreadable => {
                eprintln!(
                    "warning: the current database cannot be read ({e:#}); no erasure is applied again from it"
                )
            }
            Err(e) => bail!(
                "the current database cannot be read ({e:#}), so patients erased since the backup cannot be erased again from its tombstones. If it is lost for good, run again with --current-unreadable and repeat those erasures from your record of erasure requests"
            ),
        }
    }

    // The restored copy, brought to this build's schema, with its own audit log.
    let restored = work.path().join("telesafe.db");
    let store = Store::open(&format!("sqlite://{}", restored.display()), 2).await?;
    let signer = telesafe_server::keys::audit_signer(&root)?;
    // No witness sink: the witness keeps the heads the replaced log reached (see the
    // operations guide on restoring).
    let audit = telesafe_core::audit::AuditLog::open(
        store.clone(),
        signer,
        std::sync::Arc::new(SystemClock),
        None,
    )
    .await?;
    let opened = Opened { cfg: cfg.clone(), store, root: root.clone(), audit };
    let (again, skipped) = erase_again(&opened, &tombstones).await?;
    for t in opened.store.list_tenants().await? {
        log(&opened, t.id, "restore", None).await?;
    }
    opened.store.close().await;
    drop(opened);
    // Everything restored and erased again lives in the file itself before it is moved.
    telesafe_store::settle_sqlite_file(&restored, Duration::from_secs(10)).await?;

    // The swap. The current file stays in place, also linked under its new name, until
    // one rename replaces it with the restored copy, so the name never points at nothing.
    let stamp = SystemClock.now().to_rfc3339().replace([':', '-'], "");
    let aside =
        PathBuf::from(format!("{}.replaced-{}", target.display(), stamp.trim_end_matches('Z')));
    if current_exists {
        std::fs::hard_link(&target, &aside)
            .with_context(|| format!("keeping the current database as {}", aside.display()))?;
        // Left only when the current file could not be settled: a log must never meet the
        // restored file, whose pages it does not describe.
        for suffix in ["-wal", "-shm", "-journal"] {
            let side = PathBuf::from(format!("{}{suffix}", target.display()));
            if side.exists() {
                std::fs::rename(&side, format!("{}{suffix}", aside.display()))?;
            }
        }
    }
    if let Err(e) = std::fs::rename(&restored, &target) {
        let kept = work.keep();
        bail!(
            "could not put the restored database in place ({e}); the verified copy is kept at {}",
            kept.join("telesafe.db").display()
        );
    }
    if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
        eprintln!("warning: the restore is done, but syncing {} failed: {e}", dir.display());
    }
    println!(
        "Restored the backup taken {} ({} audit entries, {} signed heads verified) into {}.",
        header.created_at,
        report.entries,
        report.heads,
        target.display()
    );
    println!("{again} patient erasure(s) made since the backup were applied again.");
    say_skipped(skipped);
    if current_exists {
        println!(
            "The replaced database is kept as {}; delete it once you no longer need it.",
            aside.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `path` made absolute with its directory's symbolic links resolved, as `/proc` shows
/// the files a process holds.
fn absolute_file(path: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    if let Ok(real) = abs.canonicalize() {
        return Ok(real);
    }
    match (abs.parent().map(Path::canonicalize), abs.file_name()) {
        (Some(Ok(dir)), Some(name)) => Ok(dir.join(name)),
        _ => Ok(abs),
    }
}
