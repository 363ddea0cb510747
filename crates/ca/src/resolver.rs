//! Presents, for each ClientHello, a leaf minted for its SNI.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::CaError;
use crate::authority::Inner;

/// The server configuration every `server_config` call clones: ring provider, TLS 1.2 and 1.3,
/// no client authentication, certificates from [`SniResolver`].
pub(crate) fn base_config(ca: Arc<Inner>) -> Result<ServerConfig, CaError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { ca }));
    Ok(config)
}

#[derive(Debug)]
struct SniResolver {
    ca: Arc<Inner>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = client_hello.server_name() else {
            tracing::debug!("ClientHello without SNI: no certificate");
            return None;
        };
        match self.ca.leaf_for(sni) {
            Ok(leaf) => Some(leaf),
            Err(error) => {
                tracing::warn!(%error, "no leaf certificate for this SNI");
                None
            }
        }
    }
}
