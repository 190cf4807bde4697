//! TLS on the listener (rustls): the certificate chain and key of `[server.tls]`, read at start.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Tls;

/// The acceptor for `tls`; the error names the key and says what is wrong.
pub fn acceptor(tls: &Tls) -> Result<TlsAcceptor, (String, String)> {
    let certs = certificates(&tls.cert).map_err(|why| ("server.tls.cert".to_owned(), why))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| ("server.tls.key".to_owned(), format!("{}: no private key in PEM: {e}", tls.key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("server.tls".to_owned(), e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ("server.tls.key".to_owned(), format!("does not fit the certificate: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}
