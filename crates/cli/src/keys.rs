//! `telesafe keys` and `telesafe patient erase`: rotating the record's key hierarchy and
//! crypto-shredding one patient. They work on the same data directory or config as the
//! server, also while it runs; every change is recorded in the audit log as the system.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use telesafe_core::audit::{ActorKind, AuditLog, Entry, Purpose};
use telesafe_core::identity::{PatientRepository, TenantRepository, TenantSlug};
use telesafe_core::records::keys::KeyRepository;
use telesafe_core::{Clock, PatientId, SystemClock, TenantId};
use telesafe_crypto::keys::KeyProvider;
use telesafe_server::config::Config;
use telesafe_store::Store;

use crate::Overrides;

#[derive(Subcommand, Debug)]
#[allow(
    clippy::enum_variant_names,
    reason = "the commands people type: rotate-root, rotate-data, rotate-tenant"
)]
pub enum KeysCommand {
    /// Make a new root key version (a 0600 file beside the first) and re-wrap every
    /// tenant's keys under it. Resumes an unfinished rotation instead of starting another.
    RotateRoot {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Give every patient of one organisation a new data key and re-encrypt their whole
    /// record (every version) under it, then destroy the old keys. Runs beside live
    /// servers; resumes an interrupted run.
    RotateData {
        /// The organisation code.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Make a new key-encryption key for one organisation and re-wrap every patient's data
    /// key under it. Resumes an unfinished rotation instead of starting another.
    RotateTenant {
        /// The organisation code.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Subcommand, Debug)]
pub enum PatientCommand {
    /// Erase a patient by destroying their data key (crypto-shredding): nothing of their
    /// record can be decrypted again, from the database or from any backup once the
    /// tombstone is applied. Cannot be undone.
    Erase {
        #[arg(long)]
        tenant: String,
        /// The patient id (as shown on the chart).
        #[arg(long)]
        patient: String,
        /// Confirm that the erasure is intended.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
}

pub(crate) struct Opened {
    pub(crate) cfg: Config,
    pub(crate) store: Store,
    pub(crate) root: telesafe_crypto::keys::SecretKey,
    pub(crate) audit: AuditLog,
}

/// The root key, which must exist already: commands that read or seal with it would be
/// useless under a new one, so unlike the server they never create it. `why` ends the
/// refusal.
pub(crate) fn existing_root_key(
    cfg: &Config,
    why: &str,
) -> anyhow::Result<telesafe_crypto::keys::SecretKey> {
    if std::env::var(telesafe_server::keys::ROOT_KEY_ENV).is_err() && !cfg.root_key_path().exists()
    {
        bail!(
            "no root key at {} (and {} is not set): {why}",
            cfg.root_key_path().display(),
            telesafe_server::keys::ROOT_KEY_ENV
        );
    }
    Ok(telesafe_server::keys::load_root_key(cfg)?.0)
}

pub(crate) async fn open(o: &Overrides) -> anyhow::Result<Opened> {
    let cfg = o.load()?;
    let root = existing_root_key(&cfg, "nothing is encrypted here yet")?;
    let store = Store::open(&cfg.database_url(), 2).await.context("opening the database")?;
    let signer = telesafe_server::keys::audit_signer(&root)?;
    let sink = cfg.audit.witness_file.clone().map(telesafe_server::audit::witness_sink);
    let audit = AuditLog::open(store.clone(), signer, Arc::new(SystemClock), sink)
        .await
        .context("opening the audit log")?;
    Ok(Opened { cfg, store, root, audit })
}

pub(crate) async fn tenant_id(store: &Store, slug: &str) -> anyhow::Result<TenantId> {
    let slug = TenantSlug::parse(slug).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    Ok(store.tenant_by_slug(&slug).await?.context("no organisation with that code")?.id)
}

/// Records what the command did, as the system, and signs a head so a witness sees it.
pub(crate) async fn log(
    o: &Opened,
    tenant: TenantId,
    action: &str,
    patient: Option<PatientId>,
) -> anyhow::Result<()> {
    let entry = Entry {
        seq: 0,
        at: SystemClock.now().unix_millis(),
        tenant_id: tenant.to_string(),
        actor_kind: ActorKind::System,
        actor_id: "telesafe-cli".to_owned(),
        actor_role: "system".to_owned(),
        action: action.to_owned(),
        resource_type: if patient.is_some() { "Patient" } else { "Tenant" }.to_owned(),
        resource_id: patient.map_or_else(|| tenant.to_string(), |p| p.to_string()),
        patient_id: patient.map(|p| p.to_string()).unwrap_or_default(),
        purpose: Purpose::Operations,
        outcome: "success".to_owned(),
        source: String::new(),
        session: String::new(),
        request_id: String::new(),
    };
    o.audit
        .record(entry)
        .await
        .map_err(|e| anyhow::anyhow!("the audit log refused the entry: {e}"))?;
    o.audit.sign_now().await;
    Ok(())
}

fn bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{pos}}/{{len}} [{{bar:40}}] eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

pub async fn keys(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::RotateRoot { overrides } => {
            let o = open(&overrides).await?;
            let mut provider = telesafe_server::keys::record_provider(&o.cfg, &o.root)?;
            let current = provider.current_version();
            let unfinished =
                o.store.all_tenant_keys().await?.iter().any(|k| k.root_version != current);
            let version = if unfinished {
                println!("finishing the rotation to root key version {current}");
                current
            } else {
                let next = current + 1;
                let path = telesafe_server::keys::root_key_version_path(&o.cfg, next);
                let key = telesafe_crypto::keys::SecretKey::generate()?;
                telesafe_server::tls::write_private(&path, key.expose())
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("made root key version {next} at {} (back it up now)", path.display());
                provider = telesafe_server::keys::record_provider(&o.cfg, &o.root)?;
                next
            };
            let ring = telesafe_server::keys::key_ring(provider);
            let progress = bar("re-wrapping tenant keys");
            let n = ring
                .rewrap_under_current_root(&o.store, |done, total| {
                    progress.set_length(total as u64);
                    progress.set_position(done as u64);
                })
                .await?;
            progress.finish_and_clear();
            for t in o.store.list_tenants().await? {
                log(&o, t.id, "rotate-root-key", None).await?;
            }
            println!(
                "{n} tenant key set(s) now wrapped under root key version {version}. Keep the older root key files offline until no backup needs them."
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::RotateData { tenant, overrides } => {
            let o = open(&overrides).await?;
            let tenant = tenant_id(&o.store, &tenant).await?;
            let ring = telesafe_server::keys::key_ring(telesafe_server::keys::record_provider(
                &o.cfg, &o.root,
            )?);
            log(&o, tenant, "rotate-data-keys", None).await?;
            let progress = bar("re-encrypting patients");
            let done = telesafe_core::records::reencrypt::reencrypt_tenant(
                &ring,
                &o.store,
                tenant,
                SystemClock.now(),
                |done, total| {
                    progress.set_length(total as u64);
                    progress.set_position(done as u64);
                },
            )
            .await?;
            progress.finish_and_clear();
            println!(
                "{}{} patient(s) on new data keys; {} stored resource version(s) re-encrypted; the old data keys are destroyed.",
                if done.resumed { "resumed an interrupted rotation: " } else { "" },
                done.patients,
                done.resources
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::RotateTenant { tenant, overrides } => {
            let o = open(&overrides).await?;
            let tenant = tenant_id(&o.store, &tenant).await?;
            let ring = telesafe_server::keys::key_ring(telesafe_server::keys::record_provider(
                &o.cfg, &o.root,
            )?);
            let progress = bar("re-wrapping patient keys");
            let (version, n) = ring
                .rotate_tenant(&o.store, tenant, SystemClock.now(), |done, total| {
                    progress.set_length(total as u64);
                    progress.set_position(done as u64);
                })
                .await?;
            progress.finish_and_clear();
            log(&o, tenant, "rotate-tenant-key", None).await?;
            println!(
                "{n} patient key(s) now wrapped under the organisation's key version {version}."
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn patient(cmd: PatientCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PatientCommand::Erase { tenant, patient, yes, overrides } => {
            if !yes {
                bail!("erasing a patient cannot be undone; add --yes to confirm");
            }
            let o = open(&overrides).await?;
            let tenant = tenant_id(&o.store, &tenant).await?;
            let patient: PatientId = patient
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("--patient is not a patient id"))?;
            if o.store.patient_by_id(tenant, patient).await?.is_none() {
                bail!("no patient with that id in this organisation");
            }
            // Logged first: the erasure is on the record even if it is interrupted.
            log(&o, tenant, "erase", Some(patient)).await?;
            let ring = telesafe_server::keys::key_ring(telesafe_server::keys::record_provider(
                &o.cfg, &o.root,
            )?);
            ring.shred(&o.store, tenant, patient, SystemClock.now()).await?;
            println!("erased: the patient's data key is destroyed and a tombstone recorded.");
            Ok(ExitCode::SUCCESS)
        }
    }
}
