//! Loading the root key, and the purpose keys the server derives from it.

use base64::Engine;
use telesafe_core::identity::mfa::MfaKeys;
use telesafe_crypto::keys::{SealingKey, SecretKey};

use crate::config::Config;
use crate::tls;

/// The environment variable that may carry the root key (base64 of 32 bytes).
pub const ROOT_KEY_ENV: &str = "TELESAFE_ROOT_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("{ROOT_KEY_ENV} must be the base64 encoding of exactly 32 bytes")]
    BadEnv,
    #[error("{path} must hold exactly 32 bytes (it holds {len}); restore it from your key backup")]
    BadFile { path: String, len: usize },
    #[error("cannot read or create the root key {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot create the root key: {0}")]
    Create(String),
}

/// Reads the root key from the environment or its file, creating the file (0600, in a
/// 0700 directory) on first start.
pub fn load_root_key(config: &Config) -> Result<(SecretKey, bool), KeyLoadError> {
    if let Ok(b64) = std::env::var(ROOT_KEY_ENV) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| KeyLoadError::BadEnv)?;
        return SecretKey::from_bytes(&bytes).map(|k| (k, false)).map_err(|_| KeyLoadError::BadEnv);
    }
    let path = config.root_key_path();
    let shown = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => SecretKey::from_bytes(&bytes)
            .map(|k| (k, false))
            .map_err(|_| KeyLoadError::BadFile { path: shown, len: bytes.len() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate().map_err(|e| KeyLoadError::Create(e.to_string()))?;
            if let Some(dir) = path.parent() {
                tls::create_private_dir(dir).map_err(|e| KeyLoadError::Create(e.to_string()))?;
            }
            tls::write_private(&path, key.expose())
                .map_err(|e| KeyLoadError::Create(e.to_string()))?;
            Ok((key, true))
        }
        Err(source) => Err(KeyLoadError::Io { path: shown, source }),
    }
}

/// The key sealing queued message bodies (they hold one-time links).
pub fn outbox_key(root: &SecretKey) -> SealingKey {
    SealingKey::new(root.derive("telesafe/v1/outbox"), 1)
}

/// The key that seals signaling relayed between nodes (PostgreSQL's `signal_relay`).
pub fn relay_key(root: &SecretKey) -> SealingKey {
    SealingKey::new(root.derive("telesafe/v1/signal-relay"), 1)
}

/// The key that signs the audit log's tree heads (Ed25519, from a seed derived from the root
/// key: it is kept, backed up and rotated with the other keys).
pub fn audit_signer(
    root: &SecretKey,
) -> Result<telesafe_core::audit::HeadSigner, telesafe_audit::sth::BadSeed> {
    telesafe_core::audit::HeadSigner::from_seed(
        root.derive("telesafe/v1/audit-head-signing").expose(),
    )
}

/// The key that signs the server's answers to devices (telemetry acknowledgements).
pub fn device_ack_signer(
    root: &SecretKey,
) -> Result<telesafe_crypto::sign::SeedSigner, telesafe_crypto::sign::KeyPairError> {
    telesafe_crypto::sign::SeedSigner::from_seed(root.derive("telesafe/v1/device-acks").expose())
}

/// The key sealing WebAuthn ceremony state while a passkey ceremony is in progress.
pub fn ceremony_key(root: &SecretKey) -> SealingKey {
    SealingKey::new(root.derive("telesafe/v1/webauthn-ceremony"), 1)
}

/// The keys for second factors, derived from the root key.
pub fn mfa_keys(root: &SecretKey) -> MfaKeys {
    MfaKeys {
        seed: SealingKey::new(root.derive("telesafe/v1/totp-seed"), 1),
        recovery: root.derive("telesafe/v1/recovery-code"),
    }
}

/// How many patient data keys are held unwrapped at once (each well under a kilobyte).
pub const KEY_CACHE_CAPACITY: u64 = 10_000;

/// Where root key version `version` lives: version 1 is the original root key (its file,
/// or the environment); later versions, made by `telesafe keys rotate-root`, are files
/// `root-v<N>.key` beside it.
pub fn root_key_version_path(config: &Config, version: u32) -> std::path::PathBuf {
    let first = config.root_key_path();
    if version <= 1 {
        return first;
    }
    first.with_file_name(format!("root-v{version}.key"))
}

/// The record hierarchy's root keys: version 1 and every later version present, the
/// newest wrapping new tenant keys. (The purpose keys above derive from version 1.)
pub fn record_provider(
    config: &Config,
    root: &SecretKey,
) -> Result<telesafe_crypto::keys::LocalKeyProvider, KeyLoadError> {
    let mut versions = vec![(1u32, root.clone())];
    for v in 2.. {
        let path = root_key_version_path(config, v);
        match std::fs::read(&path) {
            Ok(bytes) => versions.push((
                v,
                SecretKey::from_bytes(&bytes).map_err(|_| KeyLoadError::BadFile {
                    path: path.display().to_string(),
                    len: bytes.len(),
                })?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(source) => {
                return Err(KeyLoadError::Io { path: path.display().to_string(), source });
            }
        }
    }
    let (newest_version, newest) = versions.pop().unwrap_or((1, root.clone()));
    let mut provider = telesafe_crypto::keys::LocalKeyProvider::new(&newest, newest_version);
    for (v, key) in versions {
        provider = provider.with_previous(&key, v);
    }
    Ok(provider)
}

/// The root keys a running server holds: loaded at start, and loaded again when a
/// tenant key arrives wrapped under a root version it has not seen (a `telesafe keys
/// rotate-root` run while it was up), so servers need no restart after a rotation.
#[derive(Debug)]
pub struct RootKeys {
    config: Config,
    first: SecretKey,
    inner: std::sync::RwLock<telesafe_crypto::keys::LocalKeyProvider>,
}

impl RootKeys {
    pub fn load(config: &Config, first: &SecretKey) -> Result<Self, KeyLoadError> {
        Ok(Self {
            config: config.clone(),
            first: first.clone(),
            inner: std::sync::RwLock::new(record_provider(config, first)?),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&telesafe_crypto::keys::LocalKeyProvider) -> T) -> T {
        match self.inner.read() {
            Ok(p) => f(&p),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }
}

impl telesafe_crypto::keys::KeyProvider for RootKeys {
    fn current_version(&self) -> u32 {
        self.with(|p| p.current_version())
    }

    fn wrap(
        &self,
        key: &SecretKey,
        aad: &[u8],
    ) -> Result<Vec<u8>, telesafe_crypto::keys::KeyError> {
        self.with(|p| p.wrap(key, aad))
    }

    fn unwrap(
        &self,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<SecretKey, telesafe_crypto::keys::KeyError> {
        let first = self.with(|p| p.unwrap(wrapped, aad));
        let newer = telesafe_crypto::keys::sealed_key_version(wrapped)
            .is_some_and(|v| v > self.current_version());
        match first {
            Err(_) if newer => {
                if let Ok(fresh) = record_provider(&self.config, &self.first)
                    && let Ok(mut p) = self.inner.write()
                {
                    *p = fresh;
                }
                self.with(|p| p.unwrap(wrapped, aad))
            }
            other => other,
        }
    }
}

/// The record's key hierarchy over `provider`.
pub fn key_ring(
    provider: impl telesafe_crypto::keys::KeyProvider + 'static,
) -> telesafe_core::records::keys::KeyRing {
    telesafe_core::records::keys::KeyRing::new(std::sync::Arc::new(provider), KEY_CACHE_CAPACITY)
}
