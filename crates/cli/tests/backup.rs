//! `telesafe backup create`, `verify` and `restore` against a running server's data: a
//! backup is taken while the server runs, reveals nothing without the root key, fails to
//! verify if cut, edited or opened under another key, and restores into another
//! installation without bringing back a patient erased after it was taken.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use telesafe_core::audit::AuditRepository;
use telesafe_core::identity::{PLATFORM_SLUG, PatientRepository, TenantRepository};
use telesafe_core::records::keys::KeyRepository;
use telesafe_server::demo::DEMO_OPERATOR;
use telesafe_store::Store;
use telesafe_testkit::{DbBackend, TestServer};

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs the CLI on `data_dir`, against `database` if given (else the data dir's own file).
async fn cli(data_dir: &Path, database: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_telesafe"));
    c.args(args).arg("--data-dir").arg(data_dir).env_remove("TELESAFE_ROOT_KEY");
    c.env_remove("TELESAFE_DATABASE__URL");
    if let Some(url) = database {
        c.env("TELESAFE_DATABASE__URL", url);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().await.unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn on_server(s: &TestServer, args: &[&str]) -> Out {
    cli(&s.data_dir(), Some(s.database_url()), args, &[]).await
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_sealed_verified_and_restored_without_bringing_back_an_erased_patient() {
    let s = telesafe_testkit::start(DbBackend::Sqlite, Arc::new(telesafe_core::SystemClock))
        .await
        .expect("SQLite always runs");
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let patients = store.list_patients(tenant).await.unwrap();
    let ana = patients.iter().find(|p| p.user_id.is_some()).unwrap().id;
    let walter = patients.iter().rev().find(|p| p.user_id.is_some()).unwrap().id;
    assert_ne!(ana, walter);
    let work = tempfile::tempdir().unwrap();
    let before = work.path().join("before.tsbackup");
    let before_s = before.to_str().unwrap();

    // The platform operator is warned while there is no backup.
    let operator = s.signed_in_at(PLATFORM_SLUG, DEMO_OPERATOR.0).await;
    let platform_page =
        || async { operator.get(s.url("/platform")).send().await.unwrap().text().await.unwrap() };
    let page = platform_page().await;
    assert!(page.contains("role=\"alert\">No backup has been taken"), "{page}");
    // Monitoring reads the same from /metrics (loopback only), at each scrape.
    let newest_backup = || async {
        let text = s.client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("telesafe_backup_newest_timestamp_seconds "))
            .unwrap_or_else(|| panic!("no backup gauge in {text}"));
        line.rsplit(' ').next().unwrap().parse::<i64>().unwrap()
    };
    assert_eq!(newest_backup().await, 0, "never");
    let started = telesafe_core::Clock::now(&telesafe_core::SystemClock).unix_millis() / 1000;

    // Taken while the server runs, logged, and private.
    let out = on_server(&s, &["backup", "create", "--out", before_s]).await;
    assert!(out.ok && out.stdout.contains("Backup written"), "{}{}", out.stdout, out.stderr);
    assert_eq!(std::fs::metadata(&before).unwrap().permissions().mode() & 0o777, 0o600);
    let again = on_server(&s, &["backup", "create", "--out", before_s]).await;
    assert!(
        !again.ok && again.stderr.contains("exists already"),
        "never overwrites: {}",
        again.stderr
    );
    let entries = store.audit_entries(0, 100_000).await.unwrap();
    assert!(entries.iter().any(|(e, _)| e.action == "backup" && e.tenant_id == tenant.to_string()));
    let page = platform_page().await;
    assert!(page.contains("<p>The newest backup was taken less than an hour ago"), "{page}");
    let at = newest_backup().await;
    let now = telesafe_core::Clock::now(&telesafe_core::SystemClock).unix_millis() / 1000;
    assert!((started..=now).contains(&at), "{started} <= {at} <= {now}");
    assert!(!page.contains("No backup has been taken"));

    // Nothing of the database shows through: the live file shows SQLite's header and the
    // table names, the backup neither.
    let live_path = s.database_url().trim_start_matches("sqlite://").split('?').next().unwrap();
    let live = std::fs::read(live_path).unwrap();
    let sealed = std::fs::read(&before).unwrap();
    for needle in [&b"SQLite format 3"[..], b"_sqlx_migrations", b"key_tombstones"] {
        assert!(contains(&live, needle), "the live file shows {needle:?}");
        assert!(!contains(&sealed, needle), "the backup must not show {needle:?}");
    }

    // It verifies, and says what it checked.
    let out = on_server(&s, &["backup", "verify", before_s, "--json"]).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["audit_entries"].as_u64().unwrap() > 0, "{report}");
    assert!(report["signed_heads"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["organisations"].as_u64().unwrap(), 2, "demo and platform: {report}");

    // A flipped byte, a cut, an edited header, or another installation's key: refused.
    let header_end = sealed.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(1).unwrap().0;
    let mut flipped = sealed.clone();
    let middle = header_end + (sealed.len() - header_end) / 2;
    flipped[middle] ^= 0x01;
    // The header's time moved by a year: a field nothing but the authentication covers.
    let text = String::from_utf8_lossy(&sealed[..header_end]).into_owned();
    let year = text.split("\"created_at\":\"").nth(1).unwrap()[..4].to_owned();
    let moved = text.replacen(
        &format!("\"created_at\":\"{year}"),
        &format!("\"created_at\":\"{}", year.parse::<u32>().unwrap() - 1),
        1,
    );
    assert_ne!(moved, text);
    let mut edited = moved.into_bytes();
    edited.extend_from_slice(&sealed[header_end..]);
    let cut = sealed[..sealed.len() - 100].to_vec();
    let header_only = sealed[..=header_end].to_vec();
    for (name, bytes, says) in [
        ("flipped", flipped, "chunk 0 does not authenticate"),
        ("cut", cut, "cut short"),
        ("header-only", header_only, "cut short"),
        ("edited", edited, "does not authenticate"),
    ] {
        let p = work.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let out = on_server(&s, &["backup", "verify", p.to_str().unwrap()]).await;
        assert!(!out.ok, "{name} must not verify");
        assert!(
            out.stderr.contains("THE BACKUP DOES NOT VERIFY") && out.stderr.contains(says),
            "{name}: {}",
            out.stderr
        );
    }
    let other = telesafe_crypto::keys::SecretKey::generate().unwrap();
    let other = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, other.expose());
    let out = cli(
        &s.data_dir(),
        Some(s.database_url()),
        &["backup", "verify", before_s],
        &[("TELESAFE_ROOT_KEY", &other)],
    )
    .await;
    assert!(!out.ok && out.stderr.contains("another installation's root key"), "{}", out.stderr);

    // Restoring under a running server is refused, however the database is named (here
    // relative to the working directory), and so is restoring unconfirmed.
    let out = on_server(&s, &["backup", "restore", before_s, "--yes"]).await;
    assert!(!out.ok && out.stderr.contains("stop every server"), "{}", out.stderr);
    let live_dir = Path::new(live_path).parent().unwrap();
    let relative = tokio::process::Command::new(env!("CARGO_BIN_EXE_telesafe"))
        .args(["backup", "restore", before_s, "--yes", "--data-dir"])
        .arg(s.data_dir())
        .current_dir(live_dir)
        .env("TELESAFE_DATABASE__URL", "sqlite://telesafe.db")
        .env_remove("TELESAFE_ROOT_KEY")
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&relative.stderr);
    assert!(!relative.status.success() && said.contains("stop every server"), "{said}");
    assert!(Path::new(live_path).exists());
    let out = on_server(&s, &["backup", "restore", before_s]).await;
    assert!(!out.ok && out.stderr.contains("--yes"), "{}", out.stderr);

    // After the first backup an organisation opens and one of its patients is erased: a
    // restore of the first backup cannot hold that patient, and must say so, not fail.
    let later = telesafe_core::identity::Tenant {
        id: telesafe_core::TenantId::new_v7(),
        slug: telesafe_core::identity::TenantSlug::parse("later").unwrap(),
        name: telesafe_core::identity::DisplayName::parse("Later Clinic").unwrap(),
        created_at: s.state.clock.now(),
    };
    store.create_tenant(&later).await.unwrap();
    let newcomer = telesafe_core::identity::Patient {
        id: telesafe_core::PatientId::new_v7(),
        tenant_id: later.id,
        user_id: None,
        created_at: s.state.clock.now(),
    };
    store.create_patient(&newcomer).await.unwrap();
    let out = on_server(
        &s,
        &["patient", "erase", "--tenant", "later", "--patient", &newcomer.id.to_string(), "--yes"],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);

    // Walter is erased after the first backup; a second backup holds his tombstone.
    let out = on_server(
        &s,
        &["patient", "erase", "--tenant", "demo", "--patient", &walter.to_string(), "--yes"],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let after = work.path().join("after.tsbackup");
    let out = on_server(&s, &["backup", "create", "--out", after.to_str().unwrap()]).await;
    assert!(out.ok, "{}", out.stderr);

    // Another installation with the same root key (as after losing the machine): the
    // second backup restores into an empty data directory ...
    let other_dir = work.path().join("elsewhere");
    std::fs::create_dir_all(other_dir.join("keys")).unwrap();
    std::fs::copy(s.data_dir().join("keys/root.key"), other_dir.join("keys/root.key")).unwrap();
    let out =
        cli(&other_dir, None, &["backup", "restore", after.to_str().unwrap(), "--yes"], &[]).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("0 patient erasure(s)"), "{}", out.stdout);

    // ... then the first, older one over it: Walter, erased in between, stays erased.
    let out = cli(&other_dir, None, &["backup", "restore", before_s, "--yes"], &[]).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("1 patient erasure(s) made since the backup were applied again"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("replaced database is kept as"), "{}", out.stdout);
    assert!(
        out.stdout.contains("1 erasure(s) belong to organisations this database does not hold"),
        "{}",
        out.stdout
    );
    let restored =
        Store::connect(&format!("sqlite://{}", other_dir.join("telesafe.db").display()), 1)
            .await
            .unwrap();
    let tombstones = restored.key_tombstones().await.unwrap();
    assert!(tombstones.iter().any(|t| t.tenant == tenant && t.patient == walter));
    let keys = restored.patient_keys_of(tenant).await.unwrap();
    assert!(!keys.iter().any(|k| k.patient == walter), "Walter's data key is gone again");
    assert!(keys.iter().any(|k| k.patient == ana), "Ana's record is back");
    let log = restored.audit_entries(0, 100_000).await.unwrap();
    assert!(log.iter().any(|(e, _)| e.action == "restore"));
    assert!(log.iter().any(|(e, _)| e.action == "erase" && e.patient_id == walter.to_string()));
    restored.close().await;
    // The restored installation's audit log verifies under its root key.
    let out = cli(&other_dir, None, &["audit", "verify"], &[]).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    s.stop().await;
}

/// On PostgreSQL backups are PostgreSQL's own (`pg_dump`); the documented procedure keeps
/// erasures across a restore: export the tombstones, restore the dump, apply them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_erasures_survive_a_restore_made_with_pg_dump() {
    let Some(s) =
        telesafe_testkit::start(DbBackend::Postgres, Arc::new(telesafe_core::SystemClock)).await
    else {
        return;
    };
    let out = on_server(&s, &["backup", "create"]).await;
    assert!(!out.ok && out.stderr.contains("pg_dump"), "{}", out.stderr);
    let operator = s.signed_in_at(PLATFORM_SLUG, DEMO_OPERATOR.0).await;
    let page = operator.get(s.url("/platform")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("(pg_dump or pgBackRest)"), "{page}");

    let tenant = s.clinic.tenant.id;
    let patients = s.state.store.list_patients(tenant).await.unwrap();
    let ana = patients.iter().find(|p| p.user_id.is_some()).unwrap().id;
    let walter = patients.iter().rev().find(|p| p.user_id.is_some()).unwrap().id;
    let work = tempfile::tempdir().unwrap();
    let dump = work.path().join("before.dump");
    let pg = |tool: &str, args: &[&str]| {
        let out = std::process::Command::new(tool).args(args).output();
        match out {
            Ok(o) => assert!(o.status.success(), "{tool}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("{tool} must be installed (scripts/test installs it): {e}"),
        }
    };
    // As a database administrator runs them: as a role that row-level security does not
    // hide rows from, keeping the tables' owner.
    let as_admin = |app_url: &str| {
        let admin = std::env::var("TELESAFE_TEST_PG_URL").unwrap();
        let name = app_url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
        let (base, _) = admin.rsplit_once('/').unwrap();
        format!("{base}/{name}")
    };
    let source = as_admin(s.database_url());
    pg("pg_dump", &["--format=custom", "--file", dump.to_str().unwrap(), "--dbname", &source]);

    // Walter is erased after the dump; his tombstone is exported.
    let out = on_server(
        &s,
        &["patient", "erase", "--tenant", "demo", "--patient", &walter.to_string(), "--yes"],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let erasures = work.path().join("erasures.jsonl");
    let out =
        on_server(&s, &["backup", "erasures", "export", "--out", erasures.to_str().unwrap()]).await;
    assert!(out.ok && out.stdout.contains("1 erasure(s)"), "{}{}", out.stdout, out.stderr);
    assert_eq!(std::fs::metadata(&erasures).unwrap().permissions().mode() & 0o777, 0o600);
    let listed = std::fs::read_to_string(&erasures).unwrap();
    assert!(listed.contains(&walter.to_string()) && !listed.contains(&ana.to_string()), "{listed}");

    // The dump restored into another database brings Walter back until the erasures are
    // applied; applying them twice erases once.
    let target = telesafe_store::testing::fresh(telesafe_store::Backend::Postgres).await.unwrap();
    pg(
        "pg_restore",
        &[
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--dbname",
            &as_admin(&target.url),
            dump.to_str().unwrap(),
        ],
    );
    let keys = target.store.patient_keys_of(tenant).await.unwrap();
    assert!(keys.iter().any(|k| k.patient == walter), "the dump predates the erasure");
    let apply = |file: &str| {
        let (dir, url, file) = (s.data_dir(), target.url.clone(), file.to_owned());
        async move { cli(&dir, Some(&url), &["backup", "erasures", "apply", &file], &[]).await }
    };
    let out = apply(erasures.to_str().unwrap()).await;
    assert!(
        out.ok && out.stdout.contains("1 patient erasure(s) applied again"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = apply(erasures.to_str().unwrap()).await;
    assert!(
        out.ok && out.stdout.contains("0 patient erasure(s) applied again"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let keys = target.store.patient_keys_of(tenant).await.unwrap();
    assert!(!keys.iter().any(|k| k.patient == walter) && keys.iter().any(|k| k.patient == ana));
    assert!(target.store.key_tombstones().await.unwrap().iter().any(|t| t.patient == walter));

    // A damaged erasures file is refused with its line, and changes nothing.
    let bad = work.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{listed}{{\"tenant\": \"x\"}}\n")).unwrap();
    let out = apply(bad.to_str().unwrap()).await;
    assert!(!out.ok && out.stderr.contains("line 2: not an erasure"), "{}", out.stderr);
    s.stop().await;
}

/// A day after the newest backup, the platform operator is warned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_operator_is_warned_when_the_newest_backup_is_over_a_day_old() {
    use telesafe_core::{Clock, ManualClock};
    let clock = ManualClock::at(telesafe_core::SystemClock.now());
    let s = telesafe_testkit::start(DbBackend::Sqlite, Arc::new(clock.clone()))
        .await
        .expect("SQLite always runs");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("b.tsbackup");
    let out = on_server(&s, &["backup", "create", "--out", file.to_str().unwrap()]).await;
    assert!(out.ok, "{}", out.stderr);
    clock.advance(std::time::Duration::from_secs(25 * 3600 + 1800));
    let operator = s.signed_in_at(PLATFORM_SLUG, DEMO_OPERATOR.0).await;
    let page = operator.get(s.url("/platform")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("role=\"alert\">The newest backup was taken 25 hour(s) ago"), "{page}");
    assert!(page.contains("Take one at least daily"), "{page}");
    s.stop().await;
}
