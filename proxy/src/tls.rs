//! TLS with rustls: serving HTTPS (`--tls-cert`, `--tls-key`) and reaching an `https://` upstream.

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, ServerConfig};

/// Why HTTPS can't be served or the upstream reached.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file can't be read or holds no PEM certificate (a key given as the
    /// certificate holds none).
    #[error("cannot read the certificate chain from {path} (--tls-cert)")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: pem::Error,
    },
    /// The key file can't be read or holds no PEM private key (a certificate given as the key
    /// holds none).
    #[error("cannot read a private key from {path} (--tls-key)")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: pem::Error,
    },
    /// rustls refused the pair (e.g. the key is not the certificate's).
    #[error(
        "the certificate (--tls-cert) and key (--tls-key) can't be served together: is the key the certificate's?"
    )]
    Config(#[source] rustls::Error),
    /// No CA certificate was found on this machine for an `https://` upstream.
    #[error("no CA certificates found to verify the https upstream (install ca-certificates)")]
    NoRoots(#[source] std::io::Error),
}

/// One crypto provider for both sides, named rather than left to rustls' process default, which
/// is ambiguous when several providers are compiled in.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// An acceptor serving the certificate chain in `cert` with the key in `key`, over HTTP/1.1.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .and_then(|chain| {
            if chain.is_empty() {
                Err(pem::Error::NoItemsFound)
            } else {
                Ok(chain)
            }
        })
        .map_err(|source| TlsError::Certificate {
            path: cert.to_owned(),
            source,
        })?;
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The upstream connector: TLS verified against the system's CA certificates for `https://`,
/// plain TCP for `http://` (a local fake or a sidecar).
pub fn upstream_connector(https: bool) -> Result<HttpsConnector<HttpConnector>, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let builder = HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(provider()) {
        Ok(builder) => builder,
        Err(error) if https => return Err(TlsError::NoRoots(error)),
        // Plain HTTP never verifies a certificate: no roots are needed.
        Err(_) => HttpsConnectorBuilder::new().with_tls_config(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("the provider supports the default versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    };
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}
