//! TLS to the server (rustls, ring provider): the server's certificate must chain to the CA
//! certificates given here and name `server_name`.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::error::ClientError;

#[derive(Clone)]
pub struct TlsConfig {
    server_name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Trusts the CA certificates in `ca_pem` (PEM) for a server called `server_name` (a DNS
    /// name or an IP address, as in its certificate).
    pub fn new(ca_pem: &[u8], server_name: &str) -> Result<Self, ClientError> {
        let invalid = |what: String| ClientError::Invalid(format!("TLS: {what}"));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| invalid(format!("CA certificates: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid("no CA certificate in the PEM given".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| invalid(format!("server name {server_name:?}: {e}")))?;
        Ok(Self {
            server_name,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// [`TlsConfig::new`] with the CA certificates read from a PEM file.
    pub fn from_ca_file(path: &Path, server_name: &str) -> Result<Self, ClientError> {
        let pem =
            std::fs::read(path).map_err(|e| ClientError::Invalid(format!("TLS: {}: {e}", path.display())))?;
        Self::new(&pem, server_name)
    }

    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}
