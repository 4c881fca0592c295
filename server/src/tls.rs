//! TLS on the protocol port (rustls with the ring provider, TLS 1.2 and 1.3): the certificate
//! chain and key come from PEM files, checked at start-up so a bad file stops the server with a
//! message instead of failing every handshake later.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The acceptor for `cert` (PEM chain, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or SEC1).
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("TLS certificate {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "TLS certificate {}: no CERTIFICATE block in the file",
        cert.display()
    );
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("TLS private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS: the certificate and key do not form a usable pair")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
