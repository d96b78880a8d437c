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
use tower::util::BoxCloneSyncService;
use tower_layer::Identity;
use tower_service::Service;
use upgrade_guard::{UpgradeGuard, UpgradeGuardLayer};

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

/// The layer around the partner-cancel route, built in this one place.
///
/// Today it is the identity: cancels are forwarded without a per-site hold, because a guarded
/// route needs a product to check and would refuse a cancel, so a refusal cached before a cancel
/// can be repeated for up to `--cache-ttl`. Once the library's `UpgradeGuardLayer::cancels` is
/// merged, this returns
/// `guard.clone().site(Source::path("/rest/v1.3/jpphp/{site}/partner-cancel", "site")).cancels()`
/// (an [`UpgradeGuardLayer`]; [`Proxy::new`] takes either): held per site like a provision, the
/// site's cached paths dropped.
pub fn cancel_layer(_guard: &UpgradeGuardLayer) -> Identity {
    Identity::new()
}

/// The cancel route's service, whatever [`cancel_layer`] makes of the forwarder.
type CancelService = BoxCloneSyncService<Request<Incoming>, Response<ProxyBody>, Infallible>;

/// The proxy's front service: routes each request and counts what it answered.
#[derive(Clone)]
pub struct Proxy {
    provision: UpgradeGuard<Forwarder>,
    cancel: CancelService,
    passthrough: Forwarder,
    metrics: Metrics,
}

impl Proxy {
    /// The routes: `guard` in front of the provision endpoint, [`cancel_layer`] in front of
    /// partner-cancel, `forwarder` behind all three.
    pub fn new(guard: &UpgradeGuardLayer, forwarder: &Forwarder, metrics: Metrics) -> Self {
        let cancel = ServiceBuilder::new()
            .map_response(boxed)
            .layer(cancel_layer(guard))
            .service(forwarder.on_route(Route::Cancel));
        Self {
            provision: ServiceBuilder::new()
                .layer(guard.clone())
                .service(forwarder.on_route(Route::Provision)),
            cancel: BoxCloneSyncService::new(cancel),
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
            Route::Provision => {
                let future = self.provision.call(request);
                Box::pin(async move { future.await.map(boxed) }) as Self::Future
            }
            Route::Cancel => self.cancel.call(request),
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
