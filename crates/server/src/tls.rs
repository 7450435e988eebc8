//! TLS: the rustls server configuration (TLS 1.3, and TLS 1.2 with ECDHE key exchange and
//! AEAD ciphers only, via aws-lc-rs), and the self-signed certificate made on first start.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use telesafe_core::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key")]
    NoKey { path: String },
    #[error("the certificate and key do not form a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("could not generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The one crypto provider: aws-lc-rs, restricted to AEAD suites. rustls implements no
/// CBC, RC4, static-RSA or non-ECDHE TLS 1.2 suite at all; listing the suites here makes
/// the policy explicit and reviewable.
pub fn provider() -> CryptoProvider {
    use aws_lc_rs::cipher_suite as cs;
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..aws_lc_rs::default_provider()
    }
}

/// Installs [`provider`] as the process default (for sqlx's and clients' TLS). Idempotent.
pub fn install_default_provider() {
    let _ = provider().install_default();
}

/// Builds the server configuration from PEM files.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.display().to_string() });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .ok()
        .ok_or_else(|| TlsError::NoKey { path: path.display().to_string() })
}

/// Creates a self-signed ECDSA P-256 certificate for `names` valid 397 days from `now`
/// (the CA/Browser Forum maximum), writing the key with mode 0600. Returns true when it
/// created one, false when both files already existed.
pub fn ensure_self_signed(
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
    now: Timestamp,
) -> Result<bool, TlsError> {
    if cert_path.exists() && key_path.exists() {
        return Ok(false);
    }
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "Telesafe self-signed");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "Telesafe");
    let start = time::OffsetDateTime::from_unix_timestamp(now.unix_millis() / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    params.not_before = start - time::Duration::hours(1);
    params.not_after = start + time::Duration::days(397);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    if let Some(dir) = key_path.parent() {
        create_private_dir(dir)?;
    }
    write_private(key_path, key.serialize_pem().as_bytes())?;
    write_private(cert_path, cert.pem().as_bytes())?;
    Ok(true)
}

/// Creates `dir` (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Write { path: dir.display().to_string(), source })
}

/// Writes `bytes` to a new file created with mode 0600 (never briefly readable by others).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write { path: path.display().to_string(), source };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// SHA-256 fingerprint of the first certificate in a PEM file.
pub fn fingerprint(cert_path: &Path) -> Result<String, TlsError> {
    let certs = read_certs(cert_path)?;
    Ok(certs.first().map(|c| telesafe_crypto::sha256_fingerprint(c)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn self_signed_pair_is_private_and_loads() {
        install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("tls/cert.pem"), dir.path().join("tls/key.pem"));
        let now = Timestamp::from_unix_millis(1_790_000_000_000);
        assert!(ensure_self_signed(&c, &k, &["localhost".into()], now).unwrap());
        assert!(!ensure_self_signed(&c, &k, &["localhost".into()], now).unwrap());
        assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(dir.path().join("tls")).unwrap().permissions().mode() & 0o777,
            0o700
        );
        server_config(&c, &k).unwrap();
        assert_eq!(fingerprint(&c).unwrap().len(), 95);
    }

    #[test]
    fn only_aead_suites_are_offered() {
        for s in provider().cipher_suites {
            let name = format!("{:?}", s.suite());
            assert!(name.contains("GCM") || name.contains("CHACHA20_POLY1305"), "{name}");
            if name.starts_with("TLS_") && !name.starts_with("TLS13_") {
                assert!(name.starts_with("TLS_ECDHE_"), "{name}");
            }
        }
    }
}
