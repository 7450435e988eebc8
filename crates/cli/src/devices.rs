//! `telesafe device`: register device models with their firmware policy, create one-time
//! enrolment codes (with a QR code), and revoke devices. Each change is audited.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use telesafe_core::devices::{DeviceModel, DeviceRepository, ENROLLMENT_LIFETIME, Enrollment};
use telesafe_core::identity::PatientRepository;
use telesafe_core::{Clock, PatientId, SystemClock};
use telesafe_crypto::OpaqueToken;

use crate::Overrides;
use crate::keys::{log, open, tenant_id};

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Register a device model: what it measures and which firmware may count.
    ModelAdd {
        #[arg(long)]
        tenant: String,
        /// A short id for the model (letters, digits, '-').
        #[arg(long)]
        id: String,
        #[arg(long)]
        manufacturer: String,
        #[arg(long)]
        model: String,
        /// LOINC=UCUM, for example 8867-4=/min; repeat for each measurement.
        #[arg(long = "measures", required = true)]
        measures: Vec<String>,
        /// The lowest firmware version whose readings count as clinical data.
        #[arg(long)]
        min_firmware: String,
        /// VERSION=ADVISORY of a known-vulnerable firmware; repeat for several.
        #[arg(long = "vulnerable")]
        vulnerable: Vec<String>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Create a one-time enrolment code for a patient's device (valid 24 hours).
    Enroll {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        patient: String,
        /// The model id given to `model-add`.
        #[arg(long)]
        model: String,
        /// Also write the code as a QR code (SVG) to this file.
        #[arg(long)]
        qr: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Run simulated devices against a running server: realistic vitals (some patients
    /// unwell, some devices on old firmware), signed, buffered and delivered over HTTPS or
    /// MQTT, with a progress bar and a summary.
    Simulate(crate::simulate::SimulateArgs),
    /// Revoke a device: its batches are refused from now on.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        device: String,
        #[command(flatten)]
        overrides: Overrides,
    },
}

fn pair(raw: &str, what: &str) -> anyhow::Result<(String, String)> {
    match raw.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => bail!("{what} must look like A=B, got {raw:?}"),
    }
}

pub async fn run(cmd: DeviceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeviceCommand::ModelAdd {
            tenant,
            id,
            manufacturer,
            model,
            measures,
            min_firmware,
            vulnerable,
            overrides,
        } => {
            let o = open(&overrides).await?;
            let tenant = tenant_id(&o.store, &tenant).await?;
            let measures =
                measures.iter().map(|m| pair(m, "--measures")).collect::<Result<_, _>>()?;
            let vulnerable =
                vulnerable.iter().map(|v| pair(v, "--vulnerable")).collect::<Result<_, _>>()?;
            let m = DeviceModel::new(
                tenant,
                &id,
                &manufacturer,
                &model,
                measures,
                &min_firmware,
                vulnerable,
                SystemClock.now(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            o.store
                .create_model(&m)
                .await
                .context("a model with that id or name may exist already")?;
            log(&o, tenant, "device-model-add", None).await?;
            println!("model {id} registered");
            Ok(ExitCode::SUCCESS)
        }
        DeviceCommand::Enroll { tenant, patient, model, qr, overrides } => {
            let o = open(&overrides).await?;
            let tenant = tenant_id(&o.store, &tenant).await?;
            let patient: PatientId =
                patient.parse().map_err(|_| anyhow::anyhow!("--patient is not a patient id"))?;
            if o.store.patient_by_id(tenant, patient).await?.is_none() {
                bail!("no patient with that id in this organisation");
            }
            if o.store.model(tenant, &model).await?.is_none() {
                bail!("no device model {model:?}; register it with `telesafe device model-add`");
            }
            let code = OpaqueToken::generate()?;
            let now = SystemClock.now();
            let e = Enrollment {
                code_hash: code.hash(),
                tenant,
                patient,
                model_id: model,
                created_at: now,
                expires_at: now.plus(ENROLLMENT_LIFETIME),
            };
            o.store.create_enrollment(&e).await?;
            log(&o, tenant, "device-enroll", Some(patient)).await?;
            if let Some(path) = qr {
                let svg = telesafe_server::pages::qr_svg(code.reveal())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                telesafe_server::tls::write_private(&path, svg.as_bytes())?;
                println!("QR code written to {}", path.display());
            }
            println!(
                "enrolment code (once, until {}): {}",
                e.expires_at.to_rfc3339(),
                code.reveal()
            );
            Ok(ExitCode::SUCCESS)
        }
        DeviceCommand::Simulate(args) => crate::simulate::run(args).await,
        DeviceCommand::Revoke { tenant, device, overrides } => {
            let o = open(&overrides).await?;
            let tenant = tenant_id(&o.store, &tenant).await?;
            if !o.store.revoke_device(tenant, &device, SystemClock.now()).await? {
                bail!("no active device with that id in this organisation");
            }
            log(&o, tenant, "device-revoke", None).await?;
            println!("device {device} revoked; its batches are refused from now on");
            Ok(ExitCode::SUCCESS)
        }
    }
}
