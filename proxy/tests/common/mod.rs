//! What the proxy's integration tests share: a test certificate, an HTTPS client trusting it, a
//! proxy started in-process, an echoing upstream, and the partner tooling's multipart form.

#![allow(dead_code)] // Each test file uses its own part of this.

// The library's own test fixture, shared rather than copied.
#[path = "../../../tests/common/redis_server.rs"]
pub mod redis_server;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::CertificateDer};
use upgrade_guard_proxy::{Config, Running};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, TestBody>;

/// A self-signed certificate for `127.0.0.1` and `localhost`, written to PEM files that are
/// removed when it is dropped.
pub struct TestCert {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

impl TestCert {
    pub fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let generated =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("a test certificate");
        let dir = std::env::temp_dir().join(format!(
            "upgrade-guard-proxy-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, generated.cert.pem()).expect("cert.pem written");
        std::fs::write(&key, generated.signing_key.serialize_pem()).expect("key.pem written");
        Self {
            dir,
            cert,
            key,
            der: generated.cert.der().clone(),
        }
    }

    /// An HTTPS client that trusts this certificate only.
    pub fn client(&self) -> HttpsClient {
        client_trusting(&[self], true)
    }
}

/// An HTTPS client that trusts `certs` only; without `keep_alive`, each request opens a
/// connection (and makes a TLS handshake) of its own.
pub fn client_trusting(certs: &[&TestCert], keep_alive: bool) -> HttpsClient {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.der.clone())
            .expect("the test certificate is a root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let mut client = Client::builder(TokioExecutor::new());
    if !keep_alive {
        client.pool_max_idle_per_host(0);
    }
    client.build(connector)
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The proxy's flags as the binary reads them, listening on free loopback ports.
pub fn config(upstream: &str, extra: &[&str]) -> Config {
    let mut args = vec![
        "upgrade-guard-proxy",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--upstream",
        upstream,
    ];
    args.extend_from_slice(extra);
    Config::try_parse_from(args).expect("valid test flags")
}

/// A proxy serving HTTPS with `cert`, in front of `upstream`.
pub async fn start_https(upstream: &str, cert: &TestCert, extra: &[&str]) -> Running {
    let mut args = vec![
        "--tls-cert",
        cert.cert.to_str().unwrap(),
        "--tls-key",
        cert.key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    upgrade_guard_proxy::start(config(upstream, &args))
        .await
        .expect("the proxy starts")
}

/// A plain HTTP client (the admin listener, the proxy without TLS).
pub fn http_client() -> HttpsClient {
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(
            ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
        )
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An answer, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

pub async fn send(client: &HttpsClient, request: Request<TestBody>) -> Answer {
    let response = client.request(request).await.expect("an answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a whole body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The partner tooling's provision form: `content-type: multipart/form-data;` set by hand,
/// to which curl appends the boundary, and one part per `--form name=value`.
pub fn multipart(fields: &[(&str, &str)]) -> (String, Bytes) {
    let boundary = "------------------------d74496d66958873e";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

/// An upstream that answers every request with its own body, streamed back, and says what it
/// received in `x-echo-*` headers: method, URI, `Host`, `Via`, and the names of the other
/// headers.
pub async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let names: Vec<&str> = request.headers().keys().map(|n| n.as_str()).collect();
                    let echo = |value: &str| http::HeaderValue::from_str(value).unwrap();
                    let response = http::Response::builder()
                        .header("x-echo-method", echo(request.method().as_str()))
                        .header("x-echo-uri", echo(&request.uri().to_string()))
                        .header(
                            "x-echo-host",
                            request.headers().get("host").cloned().unwrap_or(echo("")),
                        )
                        .header("x-echo-headers", echo(&names.join(",")))
                        .header(
                            "x-echo-via",
                            echo(
                                &request
                                    .headers()
                                    .get_all("via")
                                    .iter()
                                    .map(|v| v.to_str().unwrap_or("?"))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            ),
                        )
                        .header(
                            "x-echo-transfer-encoding",
                            request
                                .headers()
                                .get("transfer-encoding")
                                .cloned()
                                .unwrap_or(echo("")),
                        )
                        .header("connection", "x-upstream-hop")
                        .header("x-upstream-hop", "must not reach the client")
                        .body(request.into_body())
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// What a front that normalises paths eagerly sends on, as some reverse proxies and frameworks
/// in front of an API do: escapes decoded until none is left, the path cut at a decoded `?`, `#`
/// or NUL, `\` as `/`, each segment cut at its `;` and trimmed of white space, dot segments
/// resolved, case folded, empty segments dropped.
pub fn eagerly_normalised(path: &str) -> String {
    let mut text = path.as_bytes().to_vec();
    loop {
        let decoded: Vec<u8> = percent_encoding::percent_decode(&text).collect();
        if decoded == text {
            break;
        }
        text = decoded;
    }
    let text = String::from_utf8_lossy(&text)
        .to_lowercase()
        .replace('\\', "/");
    let text = text.split(['?', '#', '\0']).next().unwrap();
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        let segment = segment.split(';').next().unwrap().trim();
        match segment {
            "" | "." => {}
            ".." => drop(segments.pop()),
            _ => segments.push(segment),
        }
    }
    format!("/{}", segments.join("/"))
}

/// A front on loopback that relays every request to `upstream` (an `http://` base URL) with its
/// path [`eagerly_normalised`], its query, method, headers (`Host` set anew) and body as they
/// came: what may stand between the proxy and WordPress.com.
pub async fn normalising_front(upstream: &str) -> SocketAddr {
    rewriting_front(upstream, |target| match target.split_once('?') {
        Some((path, query)) => format!("{}?{query}", eagerly_normalised(path)),
        None => eagerly_normalised(target),
    })
    .await
}

/// A front on loopback that relays every request to `upstream` (an `http://` base URL) with its
/// target (path and query) as `rewrite` reads it, and its method, headers (`Host` set anew) and
/// body as they came.
pub async fn rewriting_front(upstream: &str, rewrite: fn(&str) -> String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream.trim_end_matches('/').to_owned();
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move {
                        let (mut parts, body) = request.into_parts();
                        let target = parts
                            .uri
                            .path_and_query()
                            .map_or("/", |target| target.as_str());
                        parts.uri = format!("{upstream}{}", rewrite(target)).parse().unwrap();
                        parts.headers.remove("host");
                        let response = client
                            .request(Request::from_parts(parts, body))
                            .await
                            .expect("the upstream answers the front");
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One HTTP/1.1 request written as given (any bytes in its target) on a connection of its own,
/// and the answer read to the connection's end: its status and body.
pub async fn send_raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
