//! TLS with rustls: serving HTTPS (`--tls-cert`, `--tls-key`, reloaded on SIGHUP) and reaching
//! an `https://` upstream.

use arc_swap::ArcSwap;
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

/// The certificate the proxy serves (`--tls-cert`, `--tls-key`), reloadable while it serves.
///
/// Each accepted connection takes the configuration current at its handshake
/// ([`acceptor`](Self::acceptor)); [`reload`](Self::reload) reads both files again and swaps the
/// configuration only if they can be served together, so connections under way keep theirs
/// and a bad pair leaves the old one in place. Cheap to clone: clones share the configuration.
#[derive(Clone)]
pub(crate) struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<ArcSwap<ServerConfig>>,
}

impl Certificates {
    /// Reads the certificate chain in `cert` and the key in `key`.
    ///
    /// # Errors
    ///
    /// A file that can't be read or holds nothing of its kind, or a key that is not the
    /// certificate's, each naming its flag.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: Arc::new(ArcSwap::from_pointee(server_config(cert, key)?)),
        })
    }

    /// Reads both files again and serves them to the connections accepted from now on.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load); the certificate served until now is kept.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// An acceptor with the configuration current now, for one connection.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// The certificate file (`--tls-cert`).
    pub(crate) fn cert_path(&self) -> &Path {
        &self.cert
    }
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The server configuration for the chain in `cert` and the key in `key`, over HTTP/1.1.
fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
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
    Ok(config)
}

/// The upstream connector: TLS verified against the system's CA certificates for `https://`,
/// plain TCP for `http://` (a local fake or a sidecar).
pub(crate) fn upstream_connector(https: bool) -> Result<HttpsConnector<HttpConnector>, TlsError> {
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
