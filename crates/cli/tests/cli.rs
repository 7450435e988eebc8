//! The `telesafe` binary as an operator meets it: refusing unsafe starts with a message
//! naming the key or file, `init` and `config check`, the TLS policy as seen by OpenSSL,
//! and graceful shutdown on SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_telesafe");

fn telesafe() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("RUST_LOG").kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("TELESAFE_") {
            c.env_remove(k);
        }
    }
    c
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn private_dir(parent: &Path) -> std::path::PathBuf {
    let d = parent.join("data");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// Runs `telesafe serve` to completion (it must refuse to start) and returns stderr.
async fn refused(cmd: &mut Command) -> String {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.unwrap().unwrap();
    assert!(
        !out.status.success(),
        "expected a refusal; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_key_file_readable_by_others_is_refused_naming_the_file() {
    telesafe_server::tls::install_default_provider();
    let tmp = tempfile::tempdir().unwrap();
    let data = private_dir(tmp.path());
    let (cert, key) = (data.join("tls/cert.pem"), data.join("tls/key.pem"));
    let now = telesafe_core::Timestamp::from_unix_millis(1_790_000_000_000);
    telesafe_server::tls::ensure_self_signed(&cert, &key, &["localhost".into()], now).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err =
        refused(telesafe().args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data))
            .await;
    assert!(err.contains("tls.key_file"), "{err}");
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn a_data_directory_open_to_others_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = private_dir(tmp.path());
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err =
        refused(telesafe().args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data))
            .await;
    assert!(err.contains("data_dir") && err.contains("chmod 700"), "{err}");
}

#[tokio::test]
async fn plain_http_without_the_proxy_setting_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = private_dir(tmp.path());
    let err = refused(
        telesafe()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("TELESAFE_TLS__ENABLED", "false"),
    )
    .await;
    assert!(err.contains("tls.enabled"), "{err}");
    assert!(err.contains("behind_tls_proxy"), "{err}");
}

#[tokio::test]
async fn config_check_names_each_problem_and_unknown_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[tls]\nenabled = false\n[server]\nshutdown_grace_secs = 0\n").unwrap();
    let out = telesafe().args(["config", "check", "--config"]).arg(&cfg).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tls.enabled:"), "{stdout}");
    assert!(stdout.contains("server.shutdown_grace_secs:"), "{stdout}");

    std::fs::write(&cfg, "[server]\nlisten_on = \"0.0.0.0:1\"\n").unwrap();
    let out = telesafe().args(["config", "check", "--config"]).arg(&cfg).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_on"));
}

#[tokio::test]
async fn init_creates_a_private_directory_config_and_one_time_token() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fresh");
    let out = telesafe().args(["init", "--data-dir"]).arg(&data).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().unwrap().trim();
    assert_eq!(token.len(), 43, "{stdout}");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("telesafe.toml")), 0o600);
    assert_eq!(mode(&data.join("telesafe.db")), 0o600);
    // The token is stored only as a hash.
    let db = std::fs::read(data.join("telesafe.db")).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));
    // The generated config is valid as written.
    let check = telesafe()
        .args(["config", "check", "--config"])
        .arg(data.join("telesafe.toml"))
        .output()
        .await
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // A second init refuses to overwrite.
    let again = telesafe().args(["init", "--data-dir"]).arg(&data).output().await.unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// A running `telesafe serve`, and the port it listens on.
struct Running {
    child: Child,
    port: u16,
    cert_pem: Vec<u8>,
    _tmp: tempfile::TempDir,
}

async fn serve(grace_secs: u64) -> Running {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = telesafe()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("TELESAFE_SERVER__SHUTDOWN_GRACE_SECS", grace_secs.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("Telesafe is listening on ") {
                return url
                    .trim_end_matches('/')
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse::<u16>()
                    .unwrap();
            }
        }
        panic!("server exited before listening");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let cert_pem = std::fs::read(data.join("tls/cert.pem")).unwrap();
    Running { child, port, cert_pem, _tmp: tmp }
}

fn openssl(port: u16, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (scripts/test installs it)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let negotiated = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (negotiated, text)
}

#[tokio::test]
async fn openssl_sees_only_tls13_and_tls12_ecdhe_aead() {
    let s = serve(5).await;
    // SECLEVEL=0 makes the client willing to offer the old protocols and suites, so a
    // refusal is the server's.
    let weak = "DEFAULT:@SECLEVEL=0";
    for (args, what) in [
        (vec!["-tls1_1", "-cipher", weak], "TLS 1.1"),
        (vec!["-tls1", "-cipher", weak], "TLS 1.0"),
        (vec!["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"], "TLS 1.2 CBC suite"),
        (
            vec!["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0"],
            "TLS 1.2 CBC-SHA384 suite",
        ),
        (vec!["-tls1_2", "-cipher", "AES128-GCM-SHA256:@SECLEVEL=0"], "TLS 1.2 static-RSA suite"),
        (
            vec!["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0"],
            "TLS 1.2 finite-field DHE",
        ),
    ] {
        let (ok, text) = openssl(s.port, &args);
        assert!(!ok, "{what} was accepted:\n{text}");
    }
    let (ok, text) = openssl(s.port, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert!(ok && text.contains("ECDHE-ECDSA-AES128-GCM-SHA256"), "{text}");
    let (ok, text) = openssl(s.port, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]);
    assert!(ok, "{text}");
    let (ok, text) = openssl(s.port, &["-tls1_3"]);
    assert!(ok && text.contains("TLSv1.3"), "{text}");
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_zero() {
    telesafe_server::tls::install_default_provider();
    let mut s = serve(10).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], s.port));
    let tls = telesafe_testkit::tls_client_config(&s.cert_pem);
    // A patient on a slow line: the request head and half the body arrive, then a pause.
    let body = "organisation=demo&email=someone%40example.org&password=a-long-wrong-passphrase";
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = telesafe_testkit::tls_connect(addr, Arc::clone(&tls)).await;
    let head = format!(
        "POST /signin HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{first}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = nix::unistd::Pid::from_raw(s.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;

    // No new connections are accepted while draining.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after SIGTERM");

    stream.write_all(rest.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 401"),
        "the in-flight request was not answered: {response}"
    );

    let status =
        tokio::time::timeout(Duration::from_secs(15), s.child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(10), "exit took {:?}", signalled.elapsed());
}

/// Runs `telesafe` with `args` against the database at `db_url`; returns parsed JSON.
async fn admin_json(data: &Path, db_url: &str, args: &[&str]) -> serde_json::Value {
    let out = telesafe()
        .args(args)
        .arg("--json")
        .arg("--data-dir")
        .arg(data)
        .env("TELESAFE_DATABASE__URL", db_url)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automation_cli_manages_a_running_servers_tenants_users_and_clients() {
    let Some(s) = telesafe_testkit::start(
        telesafe_testkit::DbBackend::Sqlite,
        Arc::new(telesafe_core::SystemClock),
    )
    .await
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = private_dir(tmp.path());
    let db = s.database_url().to_owned();

    let t = admin_json(
        &data,
        &db,
        &["tenant", "create", "--slug", "hill-clinic", "--name", "Hill Clinic"],
    )
    .await;
    assert_eq!(t["slug"], "hill-clinic");
    let list = admin_json(&data, &db, &["tenant", "list"]).await;
    let slugs: Vec<_> =
        list.as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["demo", "hill-clinic", "platform"], "{list}");
    // The platform's code is reserved, and only operators live there.
    let refused = |args: &'static [&'static str]| {
        let data = data.clone();
        let db = db.clone();
        async move {
            let out = telesafe()
                .args(args)
                .arg("--data-dir")
                .arg(&data)
                .env("TELESAFE_DATABASE__URL", &db)
                .output()
                .await
                .unwrap();
            assert!(!out.status.success(), "{args:?} was accepted");
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
    };
    let err = refused(&["tenant", "create", "--slug", "platform", "--name", "Mine"]).await;
    assert!(err.contains("reserved"), "{err}");
    let err = refused(&[
        "user",
        "create",
        "--tenant",
        "demo",
        "--role",
        "platform-operator",
        "--email",
        "op@demo.example",
        "--name",
        "Op",
    ])
    .await;
    assert!(err.contains("telesafe operator create"), "{err}");
    let op = admin_json(
        &data,
        &db,
        &["operator", "create", "--email", "ops@platform.example", "--name", "Ops Person"],
    )
    .await;
    assert_eq!(op["role"], "platform-operator");
    assert!(op["activation_link"].as_str().unwrap().contains("/activate/"));

    let u = admin_json(
        &data,
        &db,
        &[
            "user",
            "create",
            "--tenant",
            "hill-clinic",
            "--role",
            "nurse",
            "--email",
            "nia@hill.example",
            "--name",
            "Nia",
        ],
    )
    .await;
    let link = u["activation_link"].as_str().unwrap();
    assert!(link.starts_with("https://localhost:8443/activate/") && link.len() > 40, "{link}");
    let users = admin_json(&data, &db, &["user", "list", "--tenant", "hill-clinic"]).await;
    assert_eq!(users[0]["status"], "pending");

    // A client created while the server runs can get a token from it at once.
    let c = admin_json(
        &data,
        &db,
        &[
            "client",
            "create",
            "--tenant",
            "demo",
            "--name",
            "Lab",
            "--scope",
            "system/Patient.read",
        ],
    )
    .await;
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let http = s.client();
    let token = http
        .post(s.url("/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let clients = admin_json(&data, &db, &["client", "list", "--tenant", "demo"]).await;
    assert_eq!(clients[0]["revoked"], false);
    admin_json(&data, &db, &["client", "revoke", "--tenant", "demo", "--client-id", id]).await;
    let again = http
        .post(s.url("/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);

    // Lock ends the account's sessions at once; unlock lets it sign in again.
    let patient = "walter.brown@demo.telesafe.test";
    let browser = s.signed_in(patient).await;
    assert_eq!(browser.get(s.url("/api/v1/me")).send().await.unwrap().status(), 200);
    let locked =
        admin_json(&data, &db, &["user", "lock", "--tenant", "demo", "--email", patient]).await;
    assert_eq!(locked["status"], "locked");
    assert_eq!(browser.get(s.url("/api/v1/me")).send().await.unwrap().status(), 401);
    admin_json(&data, &db, &["user", "unlock", "--tenant", "demo", "--email", patient]).await;
    s.signed_in(patient).await;

    // Bad input is a clear error naming what is wrong.
    let out = telesafe()
        .args([
            "user",
            "create",
            "--tenant",
            "demo",
            "--role",
            "surgeon",
            "--email",
            "x@y.example",
            "--name",
            "X",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env("TELESAFE_DATABASE__URL", &db)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_then_names_the_tampered_entry() {
    for backend in [telesafe_testkit::DbBackend::Sqlite, telesafe_testkit::DbBackend::Postgres] {
        let Some(s) = telesafe_testkit::start(backend, Arc::new(telesafe_core::SystemClock)).await
        else {
            continue;
        };
        // The demo's seeded records were written, and logged, as the system.
        let seeded = {
            use telesafe_core::audit::AuditRepository;
            s.state.store.audit_size().await.unwrap()
        };
        let dr = s.signed_in("dr.rivera@demo.telesafe.test").await;
        for _ in 0..5 {
            assert_eq!(dr.get(s.url("/console")).send().await.unwrap().status(), 200);
        }
        s.state.audit.sign_now().await.unwrap();
        let witness = s.data_dir().join("witness.jsonl");
        let heads = telesafe()
            .args(["audit", "heads", "--data-dir"])
            .arg(s.data_dir())
            .env("TELESAFE_DATABASE__URL", s.database_url())
            .output()
            .await
            .unwrap();
        assert!(heads.status.success(), "{}", String::from_utf8_lossy(&heads.stderr));
        std::fs::write(&witness, &heads.stdout).unwrap();
        let verify = || {
            let mut c = telesafe();
            c.args(["audit", "verify", "--json", "--data-dir"])
                .arg(s.data_dir())
                .arg("--witness")
                .arg(&witness)
                .env("TELESAFE_DATABASE__URL", s.database_url());
            c
        };
        let ok = verify().output().await.unwrap();
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(v["entries"], seeded + 20, "{v}");
        assert_eq!(v["witness_heads"], 1, "{v}");
        // A database administrator changes one byte of entry `seeded + 7` where it is
        // stored: the last byte of its encoding (its request id), in its segment's body.
        let target = seeded + 7;
        let segment = {
            use telesafe_core::audit::AuditRepository;
            let all = s.state.store.audit_segments(0, u64::MAX / 2).await.unwrap();
            all.into_iter().find(|g| g.first_seq + u64::from(g.count) > target).unwrap()
        };
        let items = segment.items().unwrap();
        let pos = usize::try_from(target - segment.first_seq).unwrap();
        let end: usize = items[..=pos].iter().map(|b| b.len() + 4).sum();
        let mut body = segment.body.clone();
        body[end - 1] ^= 0x01;
        let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
        let literal = match backend {
            telesafe_testkit::DbBackend::Sqlite => format!("X'{hex}'"),
            telesafe_testkit::DbBackend::Postgres => format!("'\\x{hex}'::bytea"),
        };
        s.database()
            .as_dba(&[format!(
                "UPDATE audit_segments SET body = {literal} WHERE first_seq = {}",
                segment.first_seq
            )])
            .await
            .unwrap();
        let bad = verify().output().await.unwrap();
        assert_eq!(bad.status.code(), Some(1), "{backend:?}");
        let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
        let named = format!("entry {}", seeded + 7);
        assert!(v["problem"].as_str().unwrap().contains(&named), "{v}");
        // Without the JSON flag a person reads the same, with progress on the terminal.
        let human = telesafe()
            .args(["audit", "verify", "--data-dir"])
            .arg(s.data_dir())
            .env("TELESAFE_DATABASE__URL", s.database_url())
            .output()
            .await
            .unwrap();
        assert_eq!(human.status.code(), Some(1));
        let said = format!("DOES NOT VERIFY: {named}");
        assert!(String::from_utf8_lossy(&human.stderr).contains(&said));
    }
}

/// Signs in as a demo staff member on a `telesafe` process, enrolling TOTP on the way.
async fn staff_session(c: &reqwest::Client, base: &str, email: &str, password: &str) {
    let r = c
        .post(format!("{base}/signin"))
        .header("origin", base)
        .form(&[("organisation", "demo"), ("email", email), ("password", password)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/mfa/enroll");
    let page = c.get(format!("{base}/mfa/enroll")).send().await.unwrap().text().await.unwrap();
    let secret = telesafe_testkit::secret_on_page(&page);
    let csrf = telesafe_testkit::field_value(&page, "csrf");
    let step = telesafe_core::Clock::now(&telesafe_core::SystemClock).unix_millis() / 30_000;
    let code = telesafe_testkit::totp_code(&secret, step);
    let r = c
        .post(format!("{base}/mfa/enroll"))
        .header("origin", base)
        .form(&[("csrf", csrf.as_str()), ("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_every_answered_read_has_its_audit_entry() {
    telesafe_server::tls::install_default_provider();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = telesafe()
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (port, password) = tokio::time::timeout(Duration::from_secs(60), async {
        let (mut port, mut password) = (None, None);
        while let Some(line) = lines.next_line().await.unwrap() {
            let line = line.trim();
            if let Some(url) = line.strip_prefix("URL:") {
                port = url
                    .trim()
                    .trim_end_matches('/')
                    .rsplit(':')
                    .next()
                    .map(|p| p.parse::<u16>().unwrap());
            }
            if let Some(p) = line.strip_prefix("Password:") {
                password = p.split_whitespace().next().map(str::to_owned);
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        (port.unwrap(), password.unwrap())
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let cert = std::fs::read(data.join("tls/cert.pem")).unwrap();
    let c = telesafe_testkit::https_client(&cert, addr);
    let base = format!("https://localhost:{port}");
    staff_session(&c, &base, "dr.rivera@demo.telesafe.test", &password).await;

    // A burst of audited reads from 8 connections; the process is killed in the middle.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (c, url, answered) = (c.clone(), format!("{base}/console"), answered.clone());
        readers.push(tokio::spawn(async move {
            while let Ok(r) = c.get(&url).send().await {
                if r.status() != 200 {
                    break;
                }
                let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
                // The whole page arrived: the client has really received the data.
                if r.text().await.is_ok_and(|body| body.contains("Ana López")) {
                    answered.lock().unwrap().push(id);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.start_kill().unwrap(); // SIGKILL: no shutdown, no flush
    child.wait().await.unwrap();
    for r in readers {
        let _ = r.await;
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 10, "the burst got answers ({})", answered.len());

    // After the crash the log still verifies, and holds every answered request.
    let verify = telesafe()
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .await
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let store =
        telesafe_store::Store::open(&format!("sqlite://{}", data.join("telesafe.db").display()), 1)
            .await
            .unwrap();
    use telesafe_core::audit::AuditRepository;
    let mut logged = std::collections::HashSet::new();
    let mut from = 0;
    loop {
        let batch = store.audit_entries(from, 10_000).await.unwrap();
        let Some(last) = batch.last() else { break };
        from = last.0.seq + 1;
        logged.extend(batch.into_iter().map(|(e, _)| e.request_id));
    }
    let missing: Vec<_> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered reads have no audit entry: {missing:?}",
        missing.len(),
        answered.len()
    );
}
