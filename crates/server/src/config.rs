//! Configuration: a TOML file, then `TELESAFE_*` environment overrides, then command-line
//! flags; unknown keys are refused; [`Config::validate`] refuses insecure combinations and
//! [`Config::check_files`] refuses loose permissions, each problem naming its key.
//!
//! Environment overrides map `TELESAFE_<SECTION>__<KEY>` onto `[section] key`, and
//! `TELESAFE_DATA_DIR` onto `data_dir`. Values are read as TOML scalars when they parse as
//! one (`true`, `8`) and as strings otherwise.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration. Passed by reference, never global.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the database, keys and certificates live. Must be mode 0700.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub keys: KeysConfig,
    pub mail: MailConfig,
    pub audit: AuditConfig,
    pub mqtt: MqttConfig,
    pub video: VideoConfig,
}

/// Video visits: which STUN and TURN servers browsers are told to use. Media flows
/// peer-to-peer; TURN relays it (still end-to-end encrypted with DTLS-SRTP) when a direct
/// path fails. Nothing is configured by default: no public STUN server learns who calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// `stun:host:port` URLs.
    pub stun_urls: Vec<String>,
    /// `turn:host:port?transport=udp` / `turns:host:443?transport=tcp` URLs of a coturn (or
    /// compatible) server using the REST credential scheme (`use-auth-secret`).
    pub turn_urls: Vec<String>,
    /// A file (mode 0600) holding coturn's `static-auth-secret`. Required with `turn_urls`.
    pub turn_secret_file: Option<PathBuf>,
}

/// The MQTT transport for devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `host:port` of the broker (Mosquitto, EMQX). Unset: devices use HTTPS only.
    pub broker: Option<String>,
    /// This server's MQTT client id.
    pub client_id: String,
    /// The first topic level (`<root>/<organisation>/devices/<id>/telemetry`). Run the
    /// bridge on one node per root: every subscriber receives every batch.
    pub topic_root: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self { broker: None, client_id: "telesafe".to_owned(), topic_root: "telesafe".to_owned() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A file each signed tree head is appended to (JSON lines), for an external witness to
    /// collect; `telesafe audit verify --witness FILE` checks the log against it. Keep it
    /// somewhere a database administrator cannot rewrite.
    pub witness_file: Option<PathBuf>,
}

/// How the connection to the SMTP relay is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte, "SMTPS" (port 465).
    Tls,
    /// No encryption: only for a relay on this machine.
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// The SMTP relay. Unset: mail delivery is not configured, and each message is written
    /// to the server log for an operator to pass on.
    pub smtp_host: Option<String>,
    /// Unset: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    pub smtp_port: Option<u16>,
    pub security: MailSecurity,
    /// SMTP user name, when the relay wants one.
    pub username: Option<String>,
    /// A file (mode 0600) holding the SMTP password; never the password itself.
    pub password_file: Option<PathBuf>,
    /// The sender, such as `Riverside Clinic <no-reply@riverside.example>`.
    pub from: Option<String>,
    /// A PEM CA certificate to trust for the relay in addition to the system's (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl MailConfig {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.security {
            MailSecurity::Starttls => 587,
            MailSecurity::Tls => 465,
            MailSecurity::None => 25,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// The root key file (32 random bytes, mode 0600). Unset: `<data_dir>/keys/root.key`,
    /// created on first start. The environment variable `TELESAFE_ROOT_KEY` (base64 of 32
    /// bytes) takes precedence over any file.
    pub root_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The address people reach this server at (`https://telehealth.clinic.example`), used
    /// in links it sends. Unset: `https://localhost:<port>`.
    pub public_url: Option<String>,
    /// Set only when a TLS-terminating reverse proxy forwards plain HTTP to Telesafe.
    pub behind_tls_proxy: bool,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    pub shutdown_grace_secs: u64,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Longest a request may take before it is answered 503.
    pub request_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: None,
            behind_tls_proxy: false,
            shutdown_grace_secs: 30,
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Serve HTTPS. Turning it off requires `server.behind_tls_proxy = true`.
    pub enabled: bool,
    /// PEM certificate chain. With neither file set, a self-signed certificate is created
    /// in `<data_dir>/tls/` on first start.
    pub cert_file: Option<PathBuf>,
    /// PEM private key, mode 0600.
    pub key_file: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { enabled: true, cert_file: None, key_file: None }
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...`; unset means `<data_dir>/telesafe.db`.
    pub url: Option<String>,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 16 }
    }
}

impl fmt::Debug for DatabaseConfig {
    // A PostgreSQL URL can hold a password; print only the scheme.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.url.as_deref().and_then(|u| u.split_once(':')).map(|(s, _)| s);
        f.debug_struct("DatabaseConfig")
            .field("url", &scheme.map(|s| format!("{s}:[redacted]")))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `telesafe_server=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at `/metrics`.
    pub enabled: bool,
    /// Answer `/metrics` from any address; by default only loopback peers are answered.
    pub public: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, public: false }
    }
}

/// One thing wrong with a configuration, and the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn problem(key: &str, message: impl Into<String>) -> Problem {
    Problem { key: key.to_owned(), message: message.into() }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
}

const TOP_LEVEL_KEYS: [&str; 9] =
    ["data_dir", "server", "tls", "database", "log", "metrics", "keys", "mail", "audit"];

impl Config {
    /// Reads `file` (if any), applies `env` overrides, and returns the result unvalidated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (text, origin) = match file {
            Some(path) => (
                std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?,
                path.display().to_string(),
            ),
            None => (String::new(), "defaults".to_owned()),
        };
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { origin: origin.clone(), message: e.to_string() })?;
        let mut applied = Vec::new();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("TELESAFE_") else {
                continue;
            };
            let path: Vec<String> = rest.to_lowercase().split("__").map(str::to_owned).collect();
            if !TOP_LEVEL_KEYS.contains(&path[0].as_str()) {
                continue; // TELESAFE_TEST_PG_URL and friends are not configuration
            }
            set_path(&mut table, &path, scalar(&raw));
            applied.push(name);
        }
        let origin = if applied.is_empty() {
            origin
        } else {
            format!("{origin} with {}", applied.join(", "))
        };
        let mut cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { origin, message: e.to_string() })?;
        if cfg.data_dir.as_os_str().is_empty() {
            cfg.data_dir = PathBuf::from("telesafe-data");
        }
        Ok(cfg)
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("telesafe.db").display()))
    }

    /// Where the certificate and key are read from (configured, or the self-signed pair).
    pub fn tls_paths(&self) -> (PathBuf, PathBuf) {
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => (self.data_dir.join("tls/cert.pem"), self.data_dir.join("tls/key.pem")),
        }
    }

    /// Where the root key is read from (or created).
    pub fn root_key_path(&self) -> PathBuf {
        self.keys.root_key_file.clone().unwrap_or_else(|| self.data_dir.join("keys/root.key"))
    }

    /// The base for links this server sends, without a trailing slash.
    pub fn public_base(&self) -> String {
        match &self.server.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("https://localhost:{}", self.server.listen.port()),
        }
    }

    /// Whether the self-signed certificate is in use.
    pub fn self_signed(&self) -> bool {
        self.tls.cert_file.is_none() && self.tls.key_file.is_none()
    }

    /// Problems visible from the configuration alone: insecure or inconsistent settings.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if !self.tls.enabled && !self.server.behind_tls_proxy {
            p.push(problem(
                "tls.enabled",
                "plain HTTP is refused; keep TLS on, or set server.behind_tls_proxy = true \
                 when a TLS-terminating proxy forwards to Telesafe",
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            let key = if self.tls.cert_file.is_some() { "tls.key_file" } else { "tls.cert_file" };
            p.push(problem(key, "set both tls.cert_file and tls.key_file, or neither"));
        }
        if let Some(url) = &self.database.url {
            let pg = url.starts_with("postgres://") || url.starts_with("postgresql://");
            if !pg && !url.starts_with("sqlite:") {
                p.push(problem("database.url", "must start with sqlite:// or postgres://"));
            }
            if pg && url.contains("sslmode=disable") && !pg_host_is_local(url) {
                p.push(problem(
                    "database.url",
                    "sslmode=disable sends patient data unencrypted to a remote database; \
                     use sslmode=verify-full",
                ));
            }
        }
        if !self.video.turn_urls.is_empty() && self.video.turn_secret_file.is_none() {
            p.push(problem(
                "video.turn_secret_file",
                "TURN servers need the shared secret their short-lived credentials are made with",
            ));
        }
        for (key, urls, schemes) in [
            ("video.stun_urls", &self.video.stun_urls, &["stun:", "stuns:"][..]),
            ("video.turn_urls", &self.video.turn_urls, &["turn:", "turns:"][..]),
        ] {
            if urls.iter().any(|u| !schemes.iter().any(|s| u.starts_with(s)) || u.contains(' ')) {
                p.push(problem(key, format!("each URL must start with {}", schemes.join(" or "))));
            }
        }
        if let Some(url) = &self.server.public_url {
            let host = url.strip_prefix("https://").unwrap_or("");
            if host.is_empty() || host.contains(['?', '#', ' ']) {
                p.push(problem(
                    "server.public_url",
                    "must be an https:// address without a query, such as https://telehealth.clinic.example",
                ));
            }
        }
        if self.database.max_connections == 0 {
            p.push(problem("database.max_connections", "must be at least 1"));
        }
        if !(1..=600).contains(&self.server.shutdown_grace_secs) {
            p.push(problem("server.shutdown_grace_secs", "must be between 1 and 600"));
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.server.body_limit_bytes) {
            p.push(problem("server.body_limit_bytes", "must be between 1 KiB and 256 MiB"));
        }
        if !(1..=3600).contains(&self.server.request_timeout_secs) {
            p.push(problem("server.request_timeout_secs", "must be between 1 and 3600"));
        }
        p.extend(self.mail_problems());
        if tracing_level_invalid(&self.log.level) {
            p.push(problem("log.level", "use a level such as error, warn, info, debug or trace"));
        }
        p
    }

    fn mail_problems(&self) -> Vec<Problem> {
        let m = &self.mail;
        let mut p = Vec::new();
        let Some(host) = &m.smtp_host else {
            if m.username.is_some() || m.password_file.is_some() || m.from.is_some() {
                p.push(problem(
                    "mail.smtp_host",
                    "set the SMTP relay's host name, or remove the other mail settings",
                ));
            }
            return p;
        };
        if host.trim().is_empty() || host.contains(['/', ' ', ':']) {
            p.push(problem("mail.smtp_host", "a host name such as smtp.clinic.example"));
        }
        match &m.from {
            None => p.push(problem(
                "mail.from",
                "set the sender, such as \"Riverside Clinic <no-reply@riverside.example>\"",
            )),
            Some(f) if f.parse::<lettre::message::Mailbox>().is_err() => p.push(problem(
                "mail.from",
                "not an address; use \"Name <no-reply@clinic.example>\" or a bare address",
            )),
            Some(_) => {}
        }
        if m.username.is_some() != m.password_file.is_some() {
            p.push(problem(
                "mail.password_file",
                "set both mail.username and mail.password_file, or neither",
            ));
        }
        let local = matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1");
        if m.security == MailSecurity::None && !local {
            p.push(problem(
                "mail.security",
                "\"none\" sends activation links unencrypted; use starttls or tls, or a relay on this machine",
            ));
        }
        if m.security == MailSecurity::None && m.username.is_some() {
            p.push(problem(
                "mail.security",
                "credentials are never sent without TLS; use starttls or tls",
            ));
        }
        p
    }

    /// Problems on disk: the data directory and every key or data file must be private
    /// to the service account. Missing files are fine (they are created private).
    pub fn check_files(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        check_mode(&mut p, "data_dir", &self.data_dir, "chmod 700");
        let (_, key) = self.tls_paths();
        let key_name =
            if self.self_signed() { "tls.key_file (self-signed)" } else { "tls.key_file" };
        check_mode(&mut p, key_name, &key, "chmod 600");
        let root = self.root_key_path();
        if let Some(dir) = root.parent().filter(|_| self.keys.root_key_file.is_none()) {
            check_mode(&mut p, "keys (directory)", dir, "chmod 700");
        }
        check_mode(&mut p, "keys.root_key_file", &root, "chmod 600");

        if let Some(f) = &self.mail.password_file {
            check_mode(&mut p, "mail.password_file", f, "chmod 600");
            if !f.is_file() {
                p.push(problem("mail.password_file", format!("{} cannot be read", f.display())));
            }
        }
        if let Some(f) = self.mail.ca_file.as_ref().filter(|f| !f.is_file()) {
            p.push(problem("mail.ca_file", format!("{} cannot be read", f.display())));
        }
        if let Some(f) = &self.video.turn_secret_file {
            check_mode(&mut p, "video.turn_secret_file", f, "chmod 600");
            if !f.is_file() {
                p.push(problem(
                    "video.turn_secret_file",
                    format!("{} cannot be read", f.display()),
                ));
            }
        }
        if self.database.url.is_none() {
            for suffix in ["", "-wal", "-shm"] {
                let f = self.data_dir.join(format!("telesafe.db{suffix}"));
                check_mode(&mut p, "database.url (SQLite file)", &f, "chmod 600");
            }
        }
        p
    }
}

/// Refuses a path that group or others may read, write or enter.
fn check_mode(p: &mut Vec<Problem>, key: &str, path: &Path, fix: &str) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            p.push(problem(
                key,
                format!(
                    "{} has mode {mode:04o} and is accessible to other users; run `{fix} {}`",
                    path.display(),
                    path.display()
                ),
            ));
        }
    }
}

fn pg_host_is_local(url: &str) -> bool {
    let after = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = after.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    host.is_empty()
        || host.starts_with("localhost")
        || host.starts_with("127.")
        || host.starts_with("[::1]")
}

fn tracing_level_invalid(level: &str) -> bool {
    level.trim().is_empty() || level.chars().any(|c| c.is_whitespace())
}

fn scalar(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table() && !v.is_array())
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

/// The commented example configuration shipped in `telesafe.example.toml`; a test checks
/// it parses into [`Config`] with every section present.
pub const EXAMPLE: &str = include_str!("../../../telesafe.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn example_config_matches_the_struct_and_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("telesafe.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let cfg = Config::load(Some(&path), []).unwrap();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        // Every key the struct has appears in the example, so the example documents all.
        let doc: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let full = toml::Value::try_from(Config::default()).unwrap();
        for (section, v) in full.as_table().unwrap() {
            match v.as_table() {
                Some(fields) => {
                    for k in fields.keys() {
                        let present = doc.get(section).and_then(|s| s.get(k)).is_some()
                            || EXAMPLE.contains(&format!("# {k} ="));
                        assert!(present, "example lacks {section}.{k}");
                    }
                }
                None => assert!(doc.contains_key(section), "example lacks {section}"),
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\nlsiten = 1\n").unwrap();
        let err = Config::load(Some(&path), []).unwrap_err().to_string();
        assert!(err.contains("lsiten"), "{err}");
        let err = Config::load(None, env(&[("TELESAFE_SERVER__LSITEN", "x")])).unwrap_err();
        assert!(err.to_string().contains("lsiten"), "{err}");
    }

    #[test]
    fn env_overrides_apply_with_types() {
        let cfg = Config::load(
            None,
            env(&[
                ("TELESAFE_SERVER__LISTEN", "0.0.0.0:9443"),
                ("TELESAFE_METRICS__PUBLIC", "true"),
                ("TELESAFE_DATABASE__MAX_CONNECTIONS", "4"),
                ("TELESAFE_DATA_DIR", "/srv/telesafe"),
                ("TELESAFE_TEST_PG_URL", "ignored"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.server.listen, "0.0.0.0:9443".parse().unwrap());
        assert!(cfg.metrics.public);
        assert_eq!(cfg.database.max_connections, 4);
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/telesafe"));
    }

    #[test]
    fn plain_http_needs_the_proxy_setting() {
        let mut cfg = Config::default();
        cfg.tls.enabled = false;
        let p = cfg.validate();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "tls.enabled");
        cfg.server.behind_tls_proxy = true;
        assert!(cfg.validate().is_empty());
    }

    #[test]
    fn insecure_or_inconsistent_settings_name_their_key() {
        let mut cfg = Config::default();
        cfg.tls.cert_file = Some("/etc/cert.pem".into());
        cfg.database.url = Some("postgres://u:p@db.example.org/telesafe?sslmode=disable".into());
        cfg.server.shutdown_grace_secs = 0;
        let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["tls.key_file", "database.url", "server.shutdown_grace_secs"]);
        cfg.database.url = Some("postgres://u@localhost/telesafe?sslmode=disable".into());
        assert!(!cfg.validate().iter().any(|p| p.key == "database.url"));
    }

    #[test]
    fn loose_permissions_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(data.join("tls")).unwrap();
        let key = data.join("tls/key.pem");
        std::fs::write(&key, "k").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cfg = Config { data_dir: data.clone(), ..Config::default() };
        let p = cfg.check_files();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].key, "data_dir");
        assert!(p[0].message.contains("chmod 700"));
        assert!(p[1].key.starts_with("tls.key_file"));
        assert!(p[1].message.contains(&key.display().to_string()));
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(cfg.check_files().is_empty());
    }

    #[test]
    fn debug_output_hides_the_database_password() {
        let mut cfg = Config::default();
        cfg.database.url = Some("postgres://telesafe:hunter2-secret@db/telesafe".into());
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("postgres:[redacted]"));
    }
}
