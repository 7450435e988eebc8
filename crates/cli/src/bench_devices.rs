//! `telesafe bench-devices`: remote-monitoring throughput in one run, each figure beside
//! the baseline it is compared with:
//! - HTTPS: signed readings per second stored exactly once, from concurrent devices posting
//!   100 batches per request (all signed before the clock starts, so the figure is the
//!   server's), against `/healthz` requests per second on the same TLS stack;
//! - MQTT: Telesafe's acknowledged batches per second through the broker, against the
//!   broker's raw rate (QoS 1 publishes acknowledged by it) measured in the same run;
//! - where the MQTT phase's CPU goes: Telesafe's, the simulated devices' and a local
//!   broker's CPU per message, against what the cores allow at the target rate.
//!
//! Exactly once is checked, not assumed: every acknowledgement must say `stored`, and the
//! devices' last sequence numbers and stored batch counts must match what was sent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use telesafe_core::devices::DeviceRepository;
use telesafe_core::identity::PatientRepository;
use telesafe_core::{Clock, PatientId, Timestamp};
use telesafe_crypto::OpaqueToken;
use telesafe_crypto::sign::{DeviceKey, encode_base64url};
use telesafe_device::simulate::{Kind, Vitals};
use telesafe_proto::telemetry::{Batch, SignedBatch, signing_message};

use crate::bench::{BenchServer, machine, write_between};
use crate::procfs::{Snapshot, Spent};
use crate::simulate::{enrolment_code, ensure_models, protocol_time};

const START: &str = "<!-- bench:devices:start -->";
const END: &str = "<!-- bench:devices:end -->";

#[derive(Args, Debug)]
pub struct DeviceBenchArgs {
    /// Concurrent devices.
    #[arg(long, default_value_t = 8)]
    devices: usize,
    /// HTTPS requests per device (each of `--batches` batches).
    #[arg(long, default_value_t = 4)]
    requests: usize,
    /// Batches per HTTPS request (at most 100).
    #[arg(long, default_value_t = 100)]
    batches: usize,
    /// Readings per batch (at most 100).
    #[arg(long, default_value_t = 10)]
    readings: usize,
    /// MQTT messages (one batch each) per device; needs --broker.
    #[arg(long, default_value_t = 500)]
    messages: usize,
    /// The MQTT broker (host:port); without it the MQTT rows are skipped.
    #[arg(long)]
    broker: Option<String>,
    /// Days (at most 7) of minute readings filed for the demo patient to time her
    /// charts with; 0 skips the chart rows.
    #[arg(long, default_value_t = 7)]
    chart_days: usize,
    /// A PostgreSQL URL to run against instead of a fresh SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Replace the table between the device bench markers in this file.
    #[arg(long)]
    write: Option<PathBuf>,
}

struct Bencher {
    b: BenchServer,
}

struct Sender {
    device_id: String,
    server_key: Vec<u8>,
    /// The device's public key.
    key: Vec<u8>,
    batches: Vec<SignedBatch>,
}

/// What checking the senders' signatures costs the server, per batch in µs: one by one
/// (aws-lc-rs) and `per_request` together (ed25519-dalek's batch equation), both with
/// the canonical message built as the server builds it. CPU only, in this process.
fn signature_cost(senders: &[Sender], per_request: usize) -> anyhow::Result<(f64, f64)> {
    let all: Vec<(&[u8], &SignedBatch)> =
        senders.iter().flat_map(|s| s.batches.iter().map(|b| (s.key.as_slice(), b))).collect();
    let started = Instant::now();
    for (key, b) in &all {
        let sig = telesafe_crypto::sign::decode_base64url(&b.sig).unwrap_or_default();
        if !telesafe_crypto::sign::verify_ed25519(key, &signing_message(&b.batch), &sig) {
            bail!("a bench batch does not verify");
        }
    }
    let single = started.elapsed().as_secs_f64() * 1e6 / all.len().max(1) as f64;
    let started = Instant::now();
    for chunk in all.chunks(per_request) {
        if !telesafe_core::devices::batch_signatures_valid(chunk) {
            bail!("a bench request does not verify as a batch");
        }
    }
    let batched = started.elapsed().as_secs_f64() * 1e6 / all.len().max(1) as f64;
    Ok((single, batched))
}

impl Bencher {
    /// Enrols `n` devices of one model for the demo patients, and signs `per_device`
    /// batches of `readings` readings each for every one, a second apart, ending now.
    async fn devices(
        &self,
        n: usize,
        per_device: usize,
        readings: usize,
    ) -> anyhow::Result<Vec<Sender>> {
        let patients = self.b.state.store.list_patients(self.b.clinic.tenant.id).await?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let patient = patients[i % patients.len()].id;
            out.push(self.sender(i, patient, per_device, readings, 1000).await?);
        }
        Ok(out)
    }

    /// Enrols device number `i` (an oximeter) for `patient` and signs `batches` batches
    /// of `readings` readings each, `step_ms` apart, ending now.
    async fn sender(
        &self,
        i: usize,
        patient: PatientId,
        batches: usize,
        readings: usize,
        step_ms: i64,
    ) -> anyhow::Result<Sender> {
        let store = &self.b.state.store;
        let tenant = self.b.clinic.tenant.id;
        let now = self.b.clock.now();
        ensure_models(store, tenant, now).await?;
        let code = enrolment_code(store, tenant, patient, Kind::Oximeter, now).await?;
        let key = DeviceKey::generate().map_err(|_| anyhow::anyhow!("no key"))?;
        let r: serde_json::Value = self
            .b
            .client
            .post(format!("{}/api/v1/devices/enroll", self.b.base))
            .json(&serde_json::json!({"code": code.reveal(), "public_key": encode_base64url(&key.public_key()), "serial": format!("B-{i}"), "firmware": "2.4.0"}))
            .send()
            .await?
            .json()
            .await?;
        let device_id = r["device_id"].as_str().context("enrolment failed")?.to_owned();
        let server_key = telesafe_crypto::sign::decode_base64url(
            r["server_public_key"].as_str().unwrap_or_default(),
        )
        .unwrap_or_default();
        // A healthy person (device numbers not ≡ 4 mod 5): no alerts skew the figure.
        let mut vitals = Vitals::new(Kind::Oximeter, (i as u64) * 5);
        let mut out = Vec::with_capacity(batches);
        let span = i64::try_from(batches * readings).unwrap_or(i64::MAX);
        for seq in 1..=batches {
            let mut rs = Vec::with_capacity(readings);
            while rs.len() < readings {
                let k = i64::try_from((seq - 1) * readings + rs.len()).unwrap_or(0);
                let at = Timestamp::from_unix_millis(now.unix_millis() - (span - k) * step_ms);
                rs.extend(vitals.readings(&protocol_time(at)));
            }
            rs.truncate(readings);
            let batch = Batch {
                clock: protocol_time(now),
                device: device_id.clone(),
                firmware: "2.4.0".into(),
                readings: rs,
                seq: seq as u64,
            };
            let sig = encode_base64url(&key.sign(&signing_message(&batch)));
            out.push(SignedBatch { batch, sig });
        }
        Ok(Sender { device_id, server_key, key: key.public_key().to_vec(), batches: out })
    }

    async fn healthz(&self, n: usize, each: usize) -> f64 {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (c, url) = (self.b.client.clone(), format!("{}/healthz", self.b.base));
            tasks.push(tokio::spawn(async move {
                for _ in 0..each {
                    let _ = c.get(&url).send().await.map(|r| r.status());
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        (n * each) as f64 / started.elapsed().as_secs_f64()
    }

    /// Posts every sender's batches, `per_request` at a time; readings stored per second.
    async fn https(
        &self,
        senders: Vec<Sender>,
        per_request: usize,
    ) -> anyhow::Result<(f64, usize)> {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for s in senders {
            let (c, url) =
                (self.b.client.clone(), format!("{}/api/v1/devices/telemetry", self.b.base));
            tasks.push(tokio::spawn(async move {
                let mut readings = 0usize;
                for chunk in s.batches.chunks(per_request) {
                    let acks: Vec<serde_json::Value> =
                        c.post(&url).json(chunk).send().await?.error_for_status()?.json().await?;
                    if acks.iter().any(|a| a["status"] != "stored") {
                        bail!(
                            "a batch was not stored: {:?}",
                            acks.iter().find(|a| a["status"] != "stored")
                        );
                    }
                    readings += chunk.iter().map(|b| b.batch.readings.len()).sum::<usize>();
                }
                Ok::<usize, anyhow::Error>(readings)
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        Ok((total as f64 / started.elapsed().as_secs_f64(), total))
    }

    /// Publishes every sender's batches over MQTT and waits for every acknowledgement,
    /// each device keeping `window` batches in flight (the SDK's default if `None`).
    ///
    /// The devices run on a runtime of their own, whose threads are named
    /// [`DEVICE_THREADS`], so that the CPU they spend can be told from the server's.
    async fn mqtt(
        &self,
        senders: Vec<Sender>,
        broker: &str,
        window: Option<usize>,
    ) -> anyhow::Result<(f64, Spent)> {
        let root = self.b.state.config.mqtt.topic_root.clone();
        let devices = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(DEVICE_THREADS)
            .enable_all()
            .build()?;
        let port = local_port(broker);
        let before = Snapshot::take(port);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for s in senders {
            let (broker, root) = (broker.to_owned(), root.clone());
            tasks.push(devices.spawn(async move {
                let mut t = telesafe_device::Mqtt::connect(
                    &broker,
                    &root,
                    "demo",
                    &s.device_id,
                    &s.server_key,
                )
                .await?;
                t.timeout = Duration::from_secs(120);
                if let Some(w) = window {
                    t.window = w;
                }
                use telesafe_device::Transport;
                let acks = t.send(&s.batches).await?;
                if acks.len() != s.batches.len()
                    || acks
                        .iter()
                        .any(|a| !matches!(a, telesafe_proto::telemetry::Ack::Stored { .. }))
                {
                    bail!("not every batch was stored once over MQTT");
                }
                Ok::<usize, anyhow::Error>(acks.len())
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        let spent = Snapshot::take(port).since(&before);
        devices.shutdown_background();
        Ok((rate, spent))
    }
}

/// The name of the simulated devices' threads in the MQTT phase.
const DEVICE_THREADS: &str = "bench-device";

/// The broker's port if it runs on this machine (its CPU can then be read).
fn local_port(broker: &str) -> Option<u16> {
    let (host, port) = broker.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(host, "127.0.0.1" | "localhost" | "::1").then(|| port.parse().ok()).flatten()
}

/// The CPU rows for the MQTT phase: microseconds of CPU per acknowledged message for the
/// server (every thread of this process but the devices'), the simulated devices and the
/// broker, against what the machine's cores allow per message at the target rate.
fn cpu_rows(spent: &Spent, rate: f64, messages: usize, target: f64) -> String {
    let per = |secs: f64| secs * 1e6 / messages.max(1) as f64;
    let devices = spent.threads.get(DEVICE_THREADS).copied().unwrap_or(0.0);
    let server: f64 = spent.threads.values().sum::<f64>() - devices;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let budget = cores * 1e6 / target;
    let mut t = format!(
        "| baseline: CPU the machine's {cores:.0} cores allow per message at {target:.0} msg/s | {budget:.1} µs/msg | 1.00 | |\n"
    );
    let mut row = |what: &str, us: f64| {
        t.push_str(&format!("| {what} | {us:.1} µs/msg | {:.2} | |\n", us / budget));
    };
    row("CPU per MQTT message: Telesafe (verify, file, audit, acknowledge)", per(server));
    row(
        "CPU per MQTT message: the simulated devices (publish, check acknowledgements)",
        per(devices),
    );
    if let Some(b) = spent.broker {
        row("CPU per MQTT message: the broker (Mosquitto, two hops)", per(b));
    }
    if spent.machine_all > 0.0 {
        let busy = spent.machine_busy / spent.machine_all;
        row(
            &format!(
                "CPU per MQTT message: the whole machine, {:.0} % busy at {rate:.0} msg/s",
                busy * 100.0
            ),
            per(spent.machine_busy),
        );
    }
    t
}

impl Bencher {
    /// Ana's record page (`/portal/record`, the charts clinicians see on her chart), signed
    /// in as Ana: the mean time over `n` loads of `?span=` and the page's size in bytes.
    async fn record_page(
        &self,
        c: &reqwest::Client,
        span: &str,
        n: usize,
    ) -> anyhow::Result<(f64, usize)> {
        let url = format!("{}/portal/record?span={span}", self.b.base);
        let started = Instant::now();
        let mut size = 0;
        for _ in 0..n {
            let r = c.get(&url).send().await?.error_for_status()?;
            size = r.bytes().await?.len();
        }
        Ok((started.elapsed().as_secs_f64() * 1000.0 / n as f64, size))
    }

    /// The chart of a monitored patient: Ana's record page over 24 hours before her
    /// oximeter reports (the baseline: her few ordinary measurements), then over 7 days
    /// after `days` days of one SpO2 and one heart-rate reading a minute, filed over
    /// HTTPS. Milliseconds per page (baseline, monitored), readings drawn, page bytes.
    async fn chart(&self, days: usize) -> anyhow::Result<(f64, f64, usize, usize)> {
        use secrecy::ExposeSecret;
        let c = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
                self.b.state.config.tls_paths().0,
            )?)?)
            .resolve("localhost", self.b.addr)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let r = c
            .post(format!("{}/signin", self.b.base))
            .header("origin", &self.b.base)
            .form(&[
                ("organisation", "demo"),
                ("email", "ana.lopez@demo.telesafe.test"),
                ("password", self.b.password.expose_secret()),
            ])
            .send()
            .await?;
        if r.headers().get("location").and_then(|l| l.to_str().ok()) != Some("/portal") {
            bail!("the patient's sign-in did not land on the portal: {}", r.status());
        }
        let (base_ms, _) = self.record_page(&c, "1d", 20).await?;

        let store = &self.b.state.store;
        let tenant = self.b.clinic.tenant.id;
        let ana = store
            .list_patients(tenant)
            .await?
            .into_iter()
            .find(|p| p.user_id.is_some())
            .context("the demo patient")?;
        // An SpO2 and a heart rate a minute (30 s apart as readings), the oldest an hour
        // inside the 7 days a reading may be late by.
        let batches = (days * 1440 - 60) * 2 / 100;
        let sender = self.sender(99, ana.id, batches, 100, 30_000).await?;
        let (_, readings) = self.https(vec![sender], 100).await?;
        let (chart_ms, bytes) = self.record_page(&c, "7d", 5).await?;
        Ok((base_ms, chart_ms, readings, bytes))
    }
}

/// The messages the MQTT bridge has filed and the groups it filed them in, from the
/// server's Prometheus text (`telesafe_mqtt_group_size` sum and count).
fn groups_so_far(metrics: &str) -> (f64, f64) {
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("telesafe_mqtt_group_size_sum "), value("telesafe_mqtt_group_size_count "))
}

/// The SDK's MQTT window before 2026-12-06 (then sent as a block and waited for), measured
/// beside today's for comparison.
const OLD_WINDOW: usize = 32;

/// The broker's own rate: `n` clients each publish `each` QoS 1 messages of `size` bytes
/// and wait for every acknowledgement (PUBACK) from the broker; messages per second. (A
/// subscriber is left out on purpose: Mosquitto drops QoS 1 messages beyond a slow
/// subscriber's queue, which would measure the subscriber.)
async fn raw_broker(broker: &str, n: usize, each: usize, size: usize) -> anyhow::Result<f64> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let (host, port) = broker.rsplit_once(':').context("--broker must be host:port")?;
    let port: u16 = port.parse()?;
    let topic = format!("bench-raw-{}/x", &OpaqueToken::generate()?.hash().as_str()[..8]);
    let payload = vec![b'x'; size];
    let mut connected = Vec::new();
    for i in 0..n {
        let mut opts = MqttOptions::new(format!("{topic}-pub{i}").replace('/', "-"), host, port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (c, mut ev) = AsyncClient::new(opts, 4096);
        // As Telesafe and the SDK do: no Nagle delay on small messages.
        let mut net = ev.network_options();
        net.set_tcp_nodelay(true);
        ev.set_network_options(net);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut acks, mut ready_tx, mut done_tx) = (0, Some(ready_tx), Some(done_tx));
            while let Ok(e) = ev.poll().await {
                match e {
                    Event::Incoming(Packet::ConnAck(_)) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Event::Incoming(Packet::PubAck(_)) => {
                        acks += 1;
                        if acks == each
                            && let Some(d) = done_tx.take()
                        {
                            let _ = d.send(());
                            return;
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .context("the broker did not answer")??;
        connected.push((c, done));
    }
    let started = Instant::now();
    let mut waits = Vec::new();
    for (c, done) in connected {
        let (topic, payload) = (topic.clone(), payload.clone());
        tokio::spawn(async move {
            for _ in 0..each {
                if c.publish(&topic, QoS::AtLeastOnce, false, payload.clone()).await.is_err() {
                    return;
                }
            }
        });
        waits.push(done);
    }
    for done in waits {
        tokio::time::timeout(Duration::from_secs(120), done)
            .await
            .context("the broker did not acknowledge every message")??;
    }
    Ok((n * each) as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(args: DeviceBenchArgs) -> anyhow::Result<ExitCode> {
    if !(1..=100).contains(&args.batches) || !(1..=100).contains(&args.readings) {
        bail!("--batches and --readings must be between 1 and 100");
    }
    let root = format!("bench{}", &OpaqueToken::generate()?.hash().as_str()[..8]);
    let broker = args.broker.clone();
    let configure = |cfg: &mut telesafe_server::config::Config| {
        if let Some(b) = &broker {
            cfg.mqtt.broker = Some(b.clone());
            cfg.mqtt.client_id = root.clone();
            cfg.mqtt.topic_root = root.clone();
        }
    };
    let b = BenchServer::start(args.database_url.clone(), Some(&configure), args.devices).await?;
    if args.broker.is_some() {
        telesafe_server::mqtt::spawn(b.state.clone());
    }
    let backend = b.state.store.backend().as_str().to_owned();
    let bench = Bencher { b };
    // First, so that the patient's record holds the demo's and these readings only.
    let chart = match args.chart_days {
        0 => None,
        days => {
            println!("Timing a monitored patient's charts ...");
            Some(bench.chart(days.min(7)).await?)
        }
    };
    println!("Signing the batches ...");
    let per_device = args.requests * args.batches;
    let senders = bench.devices(args.devices, per_device, args.readings).await?;
    let ids: Vec<String> = senders.iter().map(|s| s.device_id.clone()).collect();
    println!("Measuring ...");
    let health = bench.healthz(args.devices, 200).await;
    let (single_us, batched_us) = signature_cost(&senders, args.batches)?;
    let (https, readings) = bench.https(senders, args.batches).await?;
    // Exactly once, checked in the store.
    let listed = bench.b.state.store.list_devices(bench.b.clinic.tenant.id).await?;
    for id in &ids {
        let d = listed.iter().find(|d| &d.device.id == id).context("a bench device is missing")?;
        if d.device.last_seq != per_device as u64 {
            bail!("device {id} stored up to {} of {per_device}", d.device.last_seq);
        }
    }
    let mut mqtt_rows = None;
    if let Some(broker) = &args.broker {
        let raw = raw_broker(broker, args.devices, args.messages, 300).await?;
        let senders = bench.devices(args.devices, args.messages, 1).await?;
        let (old, _) = bench.mqtt(senders, broker, Some(OLD_WINDOW)).await?;
        let before = groups_so_far(&bench.b.state.metrics.encode()?);
        let senders = bench.devices(args.devices, args.messages, 1).await?;
        let (rate, spent) = bench.mqtt(senders, broker, None).await?;
        let after = groups_so_far(&bench.b.state.metrics.encode()?);
        let group = (after.0 - before.0) / (after.1 - before.1).max(1.0);
        mqtt_rows = Some((raw, old, rate, group, spent));
    }
    bench.b.stop().await;

    let mut t = format!(
        "Machine: {}; {} build; {backend}; {} devices. {}.\n\
         Reproduce: `cargo run --release -p telesafe-cli -- bench-devices --devices {} --requests {} --batches {} --readings {} --messages {} --chart-days {}{}{}`.\n\n",
        machine(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        args.devices,
        protocol_time(telesafe_core::SystemClock.now()).chars().take(10).collect::<String>(),
        args.devices,
        args.requests,
        args.batches,
        args.readings,
        args.messages,
        args.chart_days,
        args.broker.as_ref().map(|b| format!(" --broker {b}")).unwrap_or_default(),
        if args.database_url.is_some() { " --database-url postgres://..." } else { "" },
    );
    t.push_str("| Workload | rate | × baseline | target |\n|---|---:|---:|---:|\n");
    t.push_str(&format!(
        "| baseline: GET /healthz, same TLS stack | {health:.0} req/s | 1.00 | |\n"
    ));
    t.push_str(&format!(
        "| HTTPS: signed readings stored once ({} batches × {} readings per request; {readings} readings) | {https:.0} readings/s | {:.2} | 100,000 readings/s |\n",
        args.batches,
        args.readings,
        https / health.max(f64::MIN_POSITIVE),
    ));
    t.push_str(&format!(
        "| baseline: a batch's signature checked alone (aws-lc-rs), CPU only | {single_us:.1} µs/batch | 1.00 | |\n\
         | signatures checked {} at a time, as a request's are (ed25519-dalek batch) | {batched_us:.1} µs/batch | {:.2} | |\n",
        args.batches,
        batched_us / single_us.max(f64::MIN_POSITIVE),
    ));
    if let Some((raw, old, rate, group, spent)) = mqtt_rows {
        t.push_str(&format!("| baseline: broker raw, QoS 1 publishes acknowledged by Mosquitto, 300 B | {raw:.0} msg/s | 1.00 | |\n"));
        t.push_str(&format!(
            "| MQTT: signed batches (1 reading) stored once and acknowledged (mean group {group:.1} messages) | {rate:.0} msg/s | {:.2} | 30,000 msg/s |\n",
            rate / raw.max(f64::MIN_POSITIVE)
        ));
        t.push_str(&format!(
            "| the same, each device keeping at most {OLD_WINDOW} batches in flight (the SDK's window before 2026-12-06) | {old:.0} msg/s | {:.2} | |\n",
            old / raw.max(f64::MIN_POSITIVE)
        ));
        t.push_str(&cpu_rows(&spent, rate, args.devices * args.messages, 30_000.0));
    }
    if let Some((base_ms, chart_ms, readings, bytes)) = chart {
        t.push_str(&format!(
            "| baseline: the patient's record page over 24 h (ordinary measurements only) | {base_ms:.1} ms/page | 1.00 | |\n"
        ));
        t.push_str(&format!(
            "| chart: the same page over 7 days after {} day(s) of SpO2 and heart rate a minute ({readings} readings opened, drawn as envelopes; page {} KiB) | {chart_ms:.1} ms/page | {:.1} | |\n",
            args.chart_days.min(7),
            bytes / 1024,
            chart_ms / base_ms.max(f64::MIN_POSITIVE),
        ));
    }
    println!("{t}");
    if let Some(path) = &args.write {
        write_between(path, START, END, &t)?;
    }
    Ok(ExitCode::SUCCESS)
}
