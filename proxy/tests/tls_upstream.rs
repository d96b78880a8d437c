//! An `https://` upstream: passed-through requests reach it over TLS, verified, on a connection
//! kept alive. In a test binary of its own: it sets the environment.

mod common;

use bytes::Bytes;
use common::{TestBody, TestCert, full};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// A TLS server configuration serving `cert`.
fn server_config(cert: &TestCert) -> ServerConfig {
    let chain = CertificateDer::pem_file_iter(&cert.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
}

#[tokio::test]
async fn an_https_upstream_is_reached_over_tls_on_a_kept_connection() {
    let cert = TestCert::new();
    // The proxy verifies an https upstream against the system's CA certificates, which
    // rustls-native-certs reads from SSL_CERT_FILE when it is set: here, the test certificate.
    // This binary's only test sets it before starting anything that could read the environment.
    unsafe { std::env::set_var("SSL_CERT_FILE", &cert.cert) };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&cert)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let accepted = accepted.clone();
        async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|request: Request<_>| async move {
                        let host = request.headers()["host"].clone();
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("x-echo-host", host)
                                .body(Full::new(Bytes::from("over tls")))
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    });
    let upstream = format!("https://localhost:{port}");
    let proxy = upgrade_guard_proxy::start(common::config(&upstream, &["--token", "t"]))
        .await
        .expect("the proxy starts");

    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut client, connection) = http1::handshake::<_, TestBody>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        client.ready().await.unwrap();
        let response = client
            .send_request(
                Request::get("/rest/v1.4/jpphp/1002/status")
                    .header("host", proxy.addr().to_string())
                    .body(full(Bytes::new()))
                    .unwrap(),
            )
            .await
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["x-echo-host"],
            format!("localhost:{port}")
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "over tls");
    }
    // One TLS connection, kept alive.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    proxy.shutdown().await;
}
