//! Forwarding to the upstream, as a reverse proxy must (RFC 9110 section 7.6).
//!
//! Bodies are streamed both ways, never buffered here; the request keeps its method, path, query
//! and end-to-end headers; hop-by-hop headers (RFC 9110 section 7.6.1, and every header the
//! `Connection` header names) are dropped both ways; `Host` names the upstream; `Via: 1.1
//! upgrade-guard-proxy` is added both ways (section 7.6.3), after any `Via` already there. The
//! proxy's own errors are JSON in WordPress.com's compact shape, which partner tooling detects by
//! the text `"error":"`:
//!
//! | situation | status | `error` |
//! |---|---|---|
//! | the client's own body broke off or was malformed (a bad chunk) while it was streamed | 400 | `invalid_request_body` |
//! | the upstream can't be reached or broke off before answering | 502 | `upstream_unreachable` |
//! | the upstream did not start answering within `--request-timeout` | 504 | `upstream_timeout` |

use crate::metrics::Metrics;
use crate::routes::Route;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower_service::Service;

/// Any error a body may give.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy answers with: the upstream's, streamed, or one of its own.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Headers meaningful for one connection only (RFC 9110 section 7.6.1), plus the proxy
/// authentication pair, which is for a proxy and must not reach the origin.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// On a response the upstream gave (in its extensions): the upstream's status. A response
/// without it was made by the guard or the proxy itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UpstreamStatus(pub StatusCode);

/// Where requests go: the upstream's scheme and authority.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
}

/// Why `--upstream` can't be forwarded to.
#[derive(Debug, thiserror::Error)]
#[error(
    "--upstream {0:?} must be an http:// or https:// URL with a host and no path, query or user (e.g. https://public-api.wordpress.com)"
)]
pub struct InvalidUpstream(String);

impl Upstream {
    /// Reads `--upstream`: `http` or `https`, a host and optional port, nothing after.
    pub(crate) fn parse(url: &str) -> Result<Self, InvalidUpstream> {
        let invalid = || InvalidUpstream(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| invalid())?;
        let scheme = uri.scheme().cloned().ok_or_else(invalid)?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(invalid());
        }
        let authority = uri.authority().cloned().ok_or_else(invalid)?;
        let bare_path = matches!(
            uri.path_and_query().map(PathAndQuery::as_str),
            None | Some("/")
        );
        if !bare_path || authority.as_str().contains('@') {
            return Err(invalid());
        }
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| invalid())?;
        Ok(Self {
            scheme,
            authority,
            host,
        })
    }

    /// Whether the upstream is reached over TLS.
    pub(crate) fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }
}

/// Forwards any request to the upstream and answers with the upstream's response, streamed.
/// Never fails: upstream trouble is answered as JSON (see the [module docs](self)).
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub(crate) struct Forwarder {
    inner: Arc<Inner>,
    route: Route,
    /// Whether `--request-timeout` applies here; off behind the guard, which takes it outside.
    bounded: bool,
}

#[derive(Debug)]
struct Inner {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    upstream: Upstream,
    timeout: Duration,
    metrics: Metrics,
}

impl Forwarder {
    /// A forwarder to `upstream` through `connector`, waiting at most `timeout` for each
    /// response head.
    pub(crate) fn new(
        upstream: Upstream,
        connector: HttpsConnector<HttpConnector>,
        timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        let client = Client::builder(TokioExecutor::new())
            // An idle upstream connection is reused for the next request instead of a new
            // TCP (and TLS) handshake; the upstream closes what it doesn't want to keep.
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            // Host is set here, from the upstream, not from the pool's key.
            .set_host(false)
            .build(connector);
        Self {
            inner: Arc::new(Inner {
                client,
                upstream,
                timeout,
                metrics,
            }),
            route: Route::Passthrough,
            bounded: true,
        }
    }

    /// The same forwarder, counting its requests under `route`.
    pub(crate) fn on_route(&self, route: Route) -> Self {
        Self {
            inner: self.inner.clone(),
            route,
            bounded: self.bounded,
        }
    }

    /// The same forwarder, waiting for the upstream as long as it takes: for the guarded routes,
    /// where the timeout goes around the guard instead (see [`routes`](crate::routes)). A
    /// timeout in here would end the guard's inner future early, which the guard takes as the
    /// provision's end, freeing the site while the provision may still land.
    pub(crate) fn without_timeout(&self) -> Self {
        Self {
            bounded: false,
            ..self.clone()
        }
    }

    /// `--request-timeout`: how long the upstream may take to start answering.
    pub(crate) fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    async fn forward<B>(self, request: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let inner = &*self.inner;
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from_parts({
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(inner.upstream.scheme.clone());
            uri.authority = Some(inner.upstream.authority.clone());
            uri.path_and_query = Some(path_and_query);
            uri
        })
        .expect("scheme, authority and path make a valid URI");
        let received = via(parts.version);
        parts.version = Version::HTTP_11;
        drop_hop_by_hop(&mut parts.headers);
        parts.headers.append(header::VIA, received);
        // The proxy answered any `Expect: 100-continue` itself when it started reading the body
        // (hyper does so); passing it on would ask the upstream for a second one.
        parts.headers.remove(header::EXPECT);
        parts
            .headers
            .insert(header::HOST, inner.upstream.host.clone());
        // Set when the client's own body broke (a malformed chunk, say) while it was streamed
        // upstream: that failure is the caller's to fix, not the upstream's.
        let client_failed = Arc::new(AtomicBool::new(false));
        let body = body
            .map_err({
                let client_failed = client_failed.clone();
                move |error| {
                    client_failed.store(true, Ordering::Relaxed);
                    error.into()
                }
            })
            .boxed_unsync();
        let started = Instant::now();
        let request = inner.client.request(Request::from_parts(parts, body));
        let sent = if self.bounded {
            tokio::time::timeout(inner.timeout, request).await
        } else {
            Ok(request.await)
        };
        match sent {
            Ok(Ok(response)) => {
                inner
                    .metrics
                    .upstream_latency(self.route, started.elapsed());
                let (mut parts, body) = response.into_parts();
                // Tells the logs an upstream answer from one of the proxy's own.
                parts.extensions.insert(UpstreamStatus(parts.status));
                let received = via(parts.version);
                drop_hop_by_hop(&mut parts.headers);
                parts.headers.append(header::VIA, received);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
            }
            Ok(Err(error)) if client_failed.load(Ordering::Relaxed) => {
                let error = anyhow::Error::new(error);
                tracing::info!(
                    route = self.route.as_str(),
                    error = format_args!("{error:#}"),
                    "the client's request body could not be read"
                );
                error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_body",
                    "the request body could not be read (malformed chunked encoding, or the connection broke off)",
                )
            }
            Ok(Err(error)) => {
                let error = anyhow::Error::new(error);
                tracing::warn!(
                    route = self.route.as_str(),
                    error = format_args!("{error:#}"),
                    "upstream unreachable"
                );
                error_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    "the partner API upstream could not be reached; try again",
                )
            }
            Err(_) => {
                tracing::warn!(route = self.route.as_str(), timeout = ?inner.timeout, "upstream timed out");
                error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the partner API upstream did not answer in time; try again",
                )
            }
        }
    }
}

impl<B> Service<Request<B>> for Forwarder
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The pool opens connections on demand; there is nothing to wait for here.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(request).await) })
    }
}

/// This proxy's `Via` entry (RFC 9110 section 7.6.3) for a message received as `version`: the
/// version alone as `received-protocol` (the protocol is HTTP), and a pseudonym, not the host,
/// as `received-by`. Appended as a field line of its own: a list's members may be split over
/// several lines (section 5.3), so the entries already there stay untouched, before it.
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 upgrade-guard-proxy",
        Version::HTTP_10 => "1.0 upgrade-guard-proxy",
        Version::HTTP_2 => "2 upgrade-guard-proxy",
        Version::HTTP_3 => "3 upgrade-guard-proxy",
        _ => "1.1 upgrade-guard-proxy",
    })
}

/// Drops the hop-by-hop headers, first those the `Connection` header names.
pub(crate) fn drop_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// One of the proxy's own answers: compact JSON `{"error":"<code>","message":"<text>"}`.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Any response, its body boxed as the proxy's.
pub(crate) fn boxed<B>(response: Response<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Partner-Secret"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic Zm9v"),
            ("x-partner-secret", "hop"),
            ("authorization", "Bearer partner-token"),
            ("content-type", "multipart/form-data; boundary=x"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        drop_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn upstreams_are_bare_http_urls() {
        assert!(
            Upstream::parse("https://public-api.wordpress.com")
                .unwrap()
                .is_https()
        );
        assert!(
            !Upstream::parse("http://127.0.0.1:8000/")
                .unwrap()
                .is_https()
        );
        for bad in [
            "public-api.wordpress.com",
            "ftp://example.com",
            "https://example.com/rest",
            "https://example.com/?x=1",
            "https://user:pass@example.com",
            "",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn own_errors_are_compact_json() {
        let response = error_response(StatusCode::BAD_GATEWAY, "upstream_unreachable", "down");
        assert_eq!(response.status(), 502);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
