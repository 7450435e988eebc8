//! `telesafe demo`: a demo clinic on SQLite, served over HTTPS with a self-signed
//! certificate, with the sign-in details printed once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use telesafe_core::SystemClock;
use telesafe_server::config::Config;
use telesafe_server::demo::{self, DEMO_PEOPLE, DEMO_SLUG};

/// Where a kept demo directory remembers its password (mode 0600, like everything in it).
const CREDENTIALS_FILE: &str = "demo-password.txt";

pub async fn run(
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (dir, temp) = match data_dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new().prefix("telesafe-demo-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let mut cfg = Config { data_dir: dir.clone(), ..Config::default() };
    cfg.server.listen = listen;
    cfg.database.url = database_url;
    cfg.server.shutdown_grace_secs = 10;
    crate::logging::init(&cfg.log);

    let clock = Arc::new(SystemClock);
    let prepared = telesafe_server::prepare(cfg, clock.clone()).await?;
    let cred_path = dir.join(CREDENTIALS_FILE);
    let password = match std::fs::read_to_string(&cred_path) {
        Ok(p) if !p.trim().is_empty() => SecretString::from(p.trim().to_owned()),
        _ => {
            let p = demo::generate_password()?;
            telesafe_server::tls::write_private(&cred_path, p.expose_secret().as_bytes())?;
            p
        }
    };
    let state = &prepared.state;
    telesafe_server::mail::spawn_delivery(state.clone());
    telesafe_server::mqtt::spawn(state.clone());
    telesafe_server::audit::spawn_auth_mirror(state.clone());
    let clinic = demo::seed(&state.store, &state.passwords, clock.as_ref(), &password).await?;
    demo::seed_records(state, &clinic)
        .await
        .map_err(|e| anyhow::anyhow!("the demo records could not be written: {}", e.body()))?;

    // Live vitals from simulated home devices of the demo patient.
    let patient = demo_patient(state, &clinic).await?;
    let client = crate::simulate::client_trusting(
        &state.config.tls_paths().0,
        // Where the server listens; a wildcard address is reached over loopback.
        Some(if prepared.local_addr.ip().is_unspecified() {
            std::net::SocketAddr::new(
                std::net::Ipv4Addr::LOCALHOST.into(),
                prepared.local_addr.port(),
            )
        } else {
            prepared.local_addr
        }),
    )?;
    crate::simulate::spawn_demo_devices(
        state.store.clone(),
        clinic.tenant.id,
        patient,
        client,
        format!("https://localhost:{}", prepared.local_addr.port()),
        dir.join("simulated-devices"),
        std::time::Duration::from_secs(30),
    );

    let url = telesafe_server::local_url(prepared.local_addr, true);
    println!();
    println!("Telesafe demo clinic is running.");
    println!("  URL:          {url}");
    if let Some(fp) = &prepared.fingerprint {
        println!("  Certificate:  self-signed, SHA-256 {fp}");
        println!(
            "                (your browser will warn about it; compare the fingerprint, then continue)"
        );
    }
    println!("  Organisation: {DEMO_SLUG}");
    println!("  Password:     {}  (the same for every demo account)", password.expose_secret());
    println!("  Accounts:");
    for (email, _, role) in DEMO_PEOPLE {
        println!("    {email:<36} {}", role.label());
    }
    println!(
        "    {:<36} Platform operator (organisation code: {})",
        demo::DEMO_OPERATOR.0,
        telesafe_core::identity::PLATFORM_SLUG
    );
    match &temp {
        Some(_) => println!("  Data:         {} (deleted when the demo stops)", dir.display()),
        None => {
            println!("  Data:         {} (kept; run again with the same --data-dir)", dir.display())
        }
    }
    println!("Press Ctrl-C to stop.");
    println!();

    let audit = prepared.state.audit.clone();
    let drained = prepared.server.run(telesafe_server::serve::shutdown_signal()).await;
    audit.sign_now().await;
    Ok(crate::finish(drained))
}

/// The demo patient with a portal account.
async fn demo_patient(
    state: &telesafe_server::state::AppState,
    clinic: &demo::DemoClinic,
) -> anyhow::Result<telesafe_core::PatientId> {
    use telesafe_core::identity::{PatientRepository, Role};
    let user = clinic
        .users
        .iter()
        .find(|u| u.role == Role::Patient)
        .ok_or_else(|| anyhow::anyhow!("the demo clinic has no patient"))?;
    Ok(state
        .store
        .patient_by_user(clinic.tenant.id, user.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the demo patient has no record"))?
        .id)
}
