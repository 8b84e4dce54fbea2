//! TLS for the device gate: a rustls server configuration from PEM files (ring provider,
//! TLS 1.2 and 1.3). Devices outside the building connect here (DEVICE-PROTOCOL.md §3).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::BrokerError;

/// Loads the certificate chain (leaf first) and private key (PKCS#8, PKCS#1 or SEC1) from
/// PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, BrokerError> {
    let fail = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        BrokerError::Tls(format!("cannot read the {what} {} (PEM expected): {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail("certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(BrokerError::Tls(format!("{} holds no certificate", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| fail("private key", key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| BrokerError::Tls(format!("the certificate and key do not fit together: {e}")))?;
    Ok(Arc::new(config))
}
