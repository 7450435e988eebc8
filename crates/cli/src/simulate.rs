//! `telesafe device simulate`, and the demo clinic's live vitals: simulated devices built on
//! the device SDK (enrolled with one-time codes, signing, buffering on disk, delivering over
//! HTTPS or MQTT), with realistic vitals, some patients unwell and some devices on old
//! firmware, so every path of remote monitoring shows: stored, quarantined, alerts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use telesafe_core::devices::{DeviceModel, DeviceRepository, ENROLLMENT_LIFETIME, Enrollment};
use telesafe_core::identity::PatientRepository;
use telesafe_core::{Clock, PatientId, TenantId, Timestamp};
use telesafe_crypto::OpaqueToken;
use telesafe_device::simulate::{CURRENT_FIRMWARE, Kind, MIN_FIRMWARE, OLD_FIRMWARE, Vitals};
use telesafe_device::{Delivery, Device, Https, Mqtt};
use telesafe_store::Store;

/// The advisory the simulator's models list against the old firmware.
pub const SIM_ADVISORY: &str = "SIM-ADV-2026-01";

/// How simulated devices reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    Https,
    Mqtt,
}

/// Registers the simulator's device models in the organisation, if missing.
pub async fn ensure_models(store: &Store, tenant: TenantId, now: Timestamp) -> anyhow::Result<()> {
    for kind in Kind::ALL {
        if store.model(tenant, kind.model_id()).await?.is_some() {
            continue;
        }
        let m = DeviceModel::new(
            tenant,
            kind.model_id(),
            "Telesafe Simulator",
            kind.model_name(),
            kind.measures().iter().map(|(c, u)| ((*c).to_owned(), (*u).to_owned())).collect(),
            MIN_FIRMWARE,
            vec![(OLD_FIRMWARE.to_owned(), SIM_ADVISORY.to_owned())],
            now,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        store.create_model(&m).await?;
    }
    Ok(())
}

/// One simulated device with the person it measures.
#[derive(Debug)]
pub struct Simulated {
    pub device: Device,
    pub vitals: Vitals,
}

/// Creates an enrolment for device `n` of `kind` and enrols it over HTTPS, its state in
/// `dir`. Every seventh device runs old firmware.
/// A one-time enrolment code for a device of `kind` for `patient`, as an administrator
/// would make one.
pub async fn enrolment_code(
    store: &Store,
    tenant: TenantId,
    patient: PatientId,
    kind: Kind,
    now: Timestamp,
) -> anyhow::Result<OpaqueToken> {
    let code = OpaqueToken::generate()?;
    store
        .create_enrollment(&Enrollment {
            code_hash: code.hash(),
            tenant,
            patient,
            model_id: kind.model_id().to_owned(),
            created_at: now,
            expires_at: now.plus(ENROLLMENT_LIFETIME),
        })
        .await?;
    Ok(code)
}

#[allow(clippy::too_many_arguments, reason = "one simulated device's whole setup")]
pub async fn enrol(
    store: &Store,
    tenant: TenantId,
    patient: PatientId,
    kind: Kind,
    n: u64,
    client: &reqwest::Client,
    base: &str,
    dir: &Path,
    now: Timestamp,
) -> anyhow::Result<Simulated> {
    let code = enrolment_code(store, tenant, patient, kind, now).await?;
    let firmware = if n % 7 == 6 { OLD_FIRMWARE } else { CURRENT_FIRMWARE };
    let device =
        Device::enroll(client, base, code.reveal(), &format!("SIM-{n:05}"), firmware, dir).await?;
    Ok(Simulated { device, vitals: Vitals::new(kind, n) })
}

/// An HTTPS client that trusts exactly the certificate in `ca` (PEM).
pub fn client_trusting(
    ca: &Path,
    resolve: Option<std::net::SocketAddr>,
) -> anyhow::Result<reqwest::Client> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .timeout(Duration::from_secs(30));
    if let Some(addr) = resolve {
        b = b.resolve("localhost", addr);
    }
    Ok(b.build()?)
}

/// RFC 3339 at second precision, as the protocol wants times.
pub fn protocol_time(t: Timestamp) -> String {
    let ms = t.unix_millis();
    Timestamp::from_unix_millis(ms - ms.rem_euclid(1000)).to_rfc3339().replace(".000", "")
}

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// The organisation's code.
    #[arg(long)]
    tenant: String,
    /// How many devices to simulate (spread over the organisation's patients).
    #[arg(long, default_value_t = 10)]
    devices: u64,
    /// How many readings each device takes.
    #[arg(long, default_value_t = 60)]
    readings: u64,
    /// Simulated minutes between two readings of a device (the last one is now).
    #[arg(long, default_value_t = 5)]
    minutes_between: u64,
    /// HTTPS or MQTT (through `[mqtt] broker`, or --broker).
    #[arg(long, value_enum, default_value = "https")]
    via: Via,
    /// The server's address (default: the configuration's public URL).
    #[arg(long)]
    url: Option<String>,
    /// The certificate to trust (default: the configured or self-signed one).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The MQTT broker, host:port (default: `[mqtt] broker`).
    #[arg(long)]
    broker: Option<String>,
    /// Where the devices keep their keys and buffers (default: a temporary directory).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    overrides: crate::Overrides,
}

#[derive(Debug, Default)]
struct Totals {
    stored: usize,
    duplicate: usize,
    refused: std::collections::BTreeMap<&'static str, usize>,
    quarantined_devices: usize,
    readings: usize,
}

impl Totals {
    fn add(&mut self, d: &Delivery) {
        self.stored += d.stored;
        self.duplicate += d.duplicate;
        for (_, r) in &d.refused {
            *self.refused.entry(r.as_str()).or_default() += 1;
        }
    }
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.devices == 0 || args.readings == 0 {
        bail!("--devices and --readings must be at least 1");
    }
    let o = crate::keys::open(&args.overrides).await?;
    let tenant = crate::keys::tenant_id(&o.store, &args.tenant).await?;
    let now = telesafe_core::SystemClock.now();
    ensure_models(&o.store, tenant, now).await?;
    let patients = o.store.list_patients(tenant).await?;
    if patients.is_empty() {
        bail!("the organisation has no patients to give devices to");
    }
    let base = args.url.clone().unwrap_or_else(|| o.cfg.public_base());
    let ca = args.ca.clone().unwrap_or_else(|| o.cfg.tls_paths().0);
    let client = client_trusting(&ca, None)?;
    let temp;
    let dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("telesafe-sim-").tempdir()?;
            temp.path().to_owned()
        }
    };
    let broker = args.broker.clone().or_else(|| o.cfg.mqtt.broker.clone());
    if args.via == Via::Mqtt && broker.is_none() {
        bail!("--via mqtt needs a broker: set [mqtt] broker or pass --broker");
    }

    println!("Enrolling {} simulated devices at {base} ...", args.devices);
    let mut fleet = Vec::new();
    for n in 0..args.devices {
        let kind = Kind::ALL[(n % 5) as usize];
        let patient = patients[(n as usize) % patients.len()].id;
        let sim = enrol(
            &o.store,
            tenant,
            patient,
            kind,
            n,
            &client,
            &base,
            &dir.join(n.to_string()),
            now,
        )
        .await
        .with_context(|| format!("enrolling device {n}"))?;
        fleet.push(sim);
    }
    crate::keys::log(&o, tenant, "device-simulate", None).await?;

    // Every reading is signed and buffered first, on the device's own clock (simulated
    // time, ending now), then delivered: what a device that was offline does.
    let total = args.devices * args.readings;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} batches  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut totals = Totals::default();
    let started = Instant::now();
    let step = Duration::from_secs(args.minutes_between * 60);
    for sim in &mut fleet {
        for r in 0..args.readings {
            let back = step * u32::try_from(args.readings - 1 - r).unwrap_or(u32::MAX);
            let at = protocol_time(Timestamp::from_unix_millis(
                now.unix_millis() - i64::try_from(back.as_millis()).unwrap_or(i64::MAX),
            ));
            let readings = sim.vitals.readings(&at);
            totals.readings += readings.len();
            sim.device.record(&at, readings)?;
        }
    }
    for sim in &mut fleet {
        let before = sim.device.waiting()?;
        let d = match args.via {
            Via::Https => {
                let mut t = Https::new(client.clone(), &base, &sim.device.server_key);
                sim.device.deliver(&mut t).await?
            }
            Via::Mqtt => {
                let slug = args.tenant.clone();
                let mut t = Mqtt::connect(
                    broker.as_deref().unwrap_or_default(),
                    &o.cfg.mqtt.topic_root,
                    &slug,
                    &sim.device.identity.device_id,
                    &sim.device.server_key,
                )
                .await?;
                sim.device.deliver(&mut t).await?
            }
        };
        if d.update_required.is_some() {
            totals.quarantined_devices += 1;
        }
        totals.add(&d);
        bar.inc(u64::try_from(before - d.remaining).unwrap_or_default());
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "Simulated {} devices, {} batches, {} readings, in {secs:.1} s ({:.0} batches/s).",
        args.devices,
        total,
        totals.readings,
        total as f64 / secs.max(0.001)
    );
    println!("  stored:      {}", totals.stored);
    println!("  duplicate:   {}", totals.duplicate);
    for (reason, n) in &totals.refused {
        println!("  refused:     {n} ({reason})");
    }
    println!(
        "  quarantined: {} devices on firmware {OLD_FIRMWARE} ({SIM_ADVISORY}); their readings wait for an administrator",
        totals.quarantined_devices
    );
    let waiting: usize = fleet.iter().map(|s| s.device.waiting().unwrap_or(0)).sum();
    if waiting > 0 {
        println!(
            "  still buffered on the devices: {waiting} (run again with --state-dir to resend)"
        );
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The demo clinic's live vitals: three devices for the demo patient (a pulse oximeter of
/// someone unwell, whose readings cross the default SpO2 threshold; a blood-pressure cuff;
/// and a thermometer on old firmware, quarantined), six hours of history, then a reading
/// from each every `every`.
pub fn spawn_demo_devices(
    store: Store,
    tenant: TenantId,
    patient: PatientId,
    client: reqwest::Client,
    base: String,
    dir: PathBuf,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = demo_devices(&store, tenant, patient, &client, &base, &dir, every).await {
            tracing::warn!(error = %e, "the demo's simulated devices stopped");
        }
    })
}

async fn demo_devices(
    store: &Store,
    tenant: TenantId,
    patient: PatientId,
    client: &reqwest::Client,
    base: &str,
    dir: &Path,
    every: Duration,
) -> anyhow::Result<()> {
    let clock = telesafe_core::SystemClock;
    ensure_models(store, tenant, clock.now()).await?;
    let mut fleet = Vec::new();
    for (kind, n) in [(Kind::Oximeter, 4), (Kind::Cuff, 0), (Kind::Thermometer, 6)] {
        let d = dir.join(format!("device-{n}"));
        let sim = match Device::open(&d) {
            Ok(device) => Simulated { device, vitals: Vitals::new(kind, n) },
            Err(_) => enrol(store, tenant, patient, kind, n, client, base, &d, clock.now()).await?,
        };
        fleet.push(sim);
    }
    // Six hours of history, a reading every 15 minutes, then live.
    let now = clock.now().unix_millis();
    for sim in &mut fleet {
        for q in (1..=24).rev() {
            let at = protocol_time(Timestamp::from_unix_millis(now - q * 15 * 60_000));
            let readings = sim.vitals.readings(&at);
            sim.device.record(&at, readings)?;
        }
    }
    loop {
        for sim in &mut fleet {
            let at = protocol_time(clock.now());
            let readings = sim.vitals.readings(&at);
            sim.device.record(&at, readings)?;
            let mut t = Https::new(client.clone(), base, &sim.device.server_key);
            // A failed delivery leaves the batches buffered for the next round.
            if let Err(e) = sim.device.deliver(&mut t).await {
                tracing::debug!(error = %e, "a simulated device could not deliver; retrying later");
            }
        }
        tokio::time::sleep(every).await;
    }
}
