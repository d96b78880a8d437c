//! Which requests the guard sees: the proxy's front service.
//!
//! A `POST` whose path names the provision endpoint goes through the guard, and one naming a
//! site's partner-cancel through [`cancel_layer`]; everything else goes straight to the
//! [`Forwarder`]. Paths are compared the way a lenient router upstream might read them (percent
//! escapes decoded, case and repeated or trailing slashes ignored, any `v1.x` version), so a
//! spelling variant of the provision path can't slip past the guard as a passthrough.

use crate::forward::{Forwarder, ProxyBody, boxed};
use crate::metrics::{Metrics, Route};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::ServiceBuilder;
use tower_service::Service;
use upgrade_guard::{Source, UpgradeGuard, UpgradeGuardLayer};

/// The route a request takes.
pub fn route(method: &Method, path: &str) -> Route {
    if method != Method::POST {
        return Route::Passthrough;
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let lower = decoded.to_ascii_lowercase();
    let segments: Vec<&str> = lower.split('/').filter(|s| !s.is_empty()).collect();
    let versioned = |version: &str| {
        version == "v1"
            || version
                .strip_prefix("v1.")
                .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()))
    };
    match segments.as_slice() {
        ["rest", version, "jpphp", "provision"] if versioned(version) => Route::Provision,
        ["rest", version, "jpphp", _site, "partner-cancel"] if versioned(version) => Route::Cancel,
        _ => Route::Passthrough,
    }
}

/// The layer around the partner-cancel route, built in this one place: the guard's
/// [`cancels`](UpgradeGuardLayer::cancels) route, site from the path. Nothing is checked, but
/// the cancel is held per site like a provision (across replicas with `--redis`), and the site's
/// cached upgrade paths are dropped, so a product the cancel gave back is an upgrade at once.
pub fn cancel_layer(guard: &UpgradeGuardLayer) -> UpgradeGuardLayer {
    guard.clone().site(Source::from_fn(cancel_site)).cancels()
}

/// The site a partner-cancel path names, as sent: `{site}` in
/// `/rest/{version}/jpphp/{site}/partner-cancel`, read from any spelling [`route`] sends to the
/// cancel route. Not percent-decoded: [`Site::parse`](upgrade_guard::Site::parse) refuses a `%`
/// (400 `invalid_site`) rather than guess how the upstream would decode it.
fn cancel_site(request: &http::request::Parts) -> Option<String> {
    let segments: Vec<&str> = request
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        [_, _, _, site, _] => Some((*site).to_owned()),
        _ => None,
    }
}

/// The proxy's front service: routes each request and counts what it answered.
#[derive(Clone)]
pub struct Proxy {
    provision: UpgradeGuard<Forwarder>,
    cancel: UpgradeGuard<Forwarder>,
    passthrough: Forwarder,
    metrics: Metrics,
}

impl Proxy {
    /// The routes: `guard` in front of the provision endpoint, [`cancel_layer`] in front of
    /// partner-cancel, `forwarder` behind all three.
    pub fn new(guard: &UpgradeGuardLayer, forwarder: &Forwarder, metrics: Metrics) -> Self {
        Self {
            provision: ServiceBuilder::new()
                .layer(guard.clone())
                .service(forwarder.on_route(Route::Provision)),
            cancel: ServiceBuilder::new()
                .layer(cancel_layer(guard))
                .service(forwarder.on_route(Route::Cancel)),
            passthrough: forwarder.on_route(Route::Passthrough),
            metrics,
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Service<Request<Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every route is always ready (the forwarder opens connections on demand, the guard
        // forwards readiness), so readiness is settled per call below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let route = route(request.method(), request.uri().path());
        let metrics = self.metrics.clone();
        // The path only: a query string may carry what should not be logged.
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let started = std::time::Instant::now();
        let answered = match route {
            Route::Provision | Route::Cancel => {
                let guarded = match route {
                    Route::Provision => &mut self.provision,
                    _ => &mut self.cancel,
                };
                let future = guarded.call(request);
                Box::pin(async move { future.await.map(boxed) }) as Self::Future
            }
            Route::Passthrough => self.passthrough.call(request),
        };
        Box::pin(async move {
            let response = answered.await?;
            let status = response.status().as_u16();
            metrics.answered(route, status);
            tracing::debug!(
                %method,
                path,
                route = route.as_str(),
                status,
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "answered"
            );
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_the_provision_path_all_reach_the_guard() {
        for path in [
            "/rest/v1.3/jpphp/provision",
            "/rest/v1.3/jpphp/provision/",
            "//rest/v1.3//jpphp/provision",
            "/REST/V1.3/JPPHP/PROVISION",
            "/rest/v1.3/jpphp/provisio%6E",
            "/rest/v1/jpphp/provision",
            "/rest/v1.2/jpphp/provision",
        ] {
            assert_eq!(route(&Method::POST, path), Route::Provision, "{path}");
        }
        assert_eq!(
            route(
                &Method::POST,
                "/rest/v1.3/jpphp/example.com::blog/partner-cancel"
            ),
            Route::Cancel
        );
        for (method, path) in [
            (Method::GET, "/rest/v1.3/jpphp/provision"),
            (Method::POST, "/oauth2/token"),
            (Method::POST, "/rest/v1.3/jpphp/provisions"),
            (Method::POST, "/rest/v2/jpphp/provision"),
            (Method::GET, "/rest/v1.4/jpphp/1002/status"),
        ] {
            assert_eq!(route(&method, path), Route::Passthrough, "{method} {path}");
        }
    }
}
