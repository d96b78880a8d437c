//! Which requests the guard sees: the proxy's front service.
//!
//! A `POST` whose path names the provision endpoint goes through the guard, one naming a site's
//! partner-provision (what Jetpack's own `wp jetpack partner_provision` calls) through the guard
//! with the site read from the path, and one naming a site's partner-cancel through the guard's
//! cancel route; everything else goes straight to the upstream, except the ambiguous paths below.
//!
//! Requests are matched at least as leniently as WordPress.com's `WPCOM_JSON_API::serve()` reads
//! them, so that no spelling WordPress.com would serve as a provision slips past the guard as a
//! passthrough: the method compared ignoring case (WordPress.com upper-cases it), any version
//! `v<digits>(.<digits>)*` (WordPress.com takes it with `#^/rest/v(\d+(\.\d+)*)#` and compares it
//! with `version_compare`, so `v01.3` and `v1.3.0` are `v1.3`), percent escapes decoded, case and
//! repeated or trailing slashes ignored. A spelling WordPress.com would not serve is guarded all
//! the same: the guard then refuses or forwards it, and WordPress.com answers 404.
//!
//! Only plain paths are matched: once decoded, no dot segment (`.`, `..`,
//! `%2e%2e`, `.%2e`), no `\`, `;`, `%` (double encoding, `%252e`, `%250a`), `?` or `#`, no white
//! space, NUL or other control character, no `"`, `{`, `}`, `^`, `` ` ``, `<` or `>`, nothing
//! outside printable ASCII. A path that is not plain is read differently by each front that
//! normalises paths (many resolve dot segments, some drop `;x` or trim white space), so one of
//! them could turn it into a provision the guard never saw, or into another site than the one
//! the guard checked. WordPress.com itself is such a reader: it routes on the request target
//! read through `esc_url_raw()`, which removes those characters (and `\`, white space and
//! control characters) wherever they stand and removes `%0a`/`%0d` until none is left, so
//! `provi"sion` and `provi%0%0aasion` are provisions there. When any reading of such a path
//! could name a guarded endpoint, at any depth of percent decoding and whatever characters
//! WordPress.com removes stand in it, the proxy answers it itself, `400
//! {"error":"ambiguous_path",...}`, and forwards nothing ([`Route::AmbiguousPath`]); other paths
//! that are not plain (a dot segment in a status call) are passed through. The site of
//! partner-provision and partner-cancel is read from the segment the route matched, as sent
//! ([`raw_segments`]).
//!
//! On the guarded routes `--request-timeout` bounds the guard's whole future, from outside: when
//! it passes after the request was forwarded, the guard finishes the provision alone (holding the
//! site until it lands, within its detached ceiling) while the client gets its 504. A timeout
//! inside the guard would look like the provision's end and free the site while the provision may
//! still land.

use crate::forward::{Forwarder, ProxyBody, boxed, error_response};
use crate::metrics::Metrics;
pub use crate::path_reading::raw_segments;
use crate::path_reading::{self, PlainPath};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::ServiceBuilder;
use tower_service::Service;
use upgrade_guard::{Source, UpgradeGuard, UpgradeGuardLayer};

/// Which route of the proxy a request took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// `POST /rest/v1.3/jpphp/provision`, through the guard.
    Provision,
    /// `POST /rest/v1.3/jpphp/{site}/partner-provision` (Jetpack's `wp jetpack
    /// partner_provision`), through the guard.
    PartnerProvision,
    /// `POST /rest/v1.3/jpphp/{site}/partner-cancel`.
    Cancel,
    /// Everything else, passed through.
    Passthrough,
    /// A path that is not plain and could be read as a guarded route's: answered by the proxy
    /// (400 `ambiguous_path`), never forwarded.
    AmbiguousPath,
}

impl Route {
    /// The route's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::PartnerProvision => "partner_provision",
            Self::Cancel => "cancel",
            Self::Passthrough => "passthrough",
            Self::AmbiguousPath => "ambiguous_path",
        }
    }

    /// Whether the guard stands in front of the route.
    pub fn is_guarded(self) -> bool {
        matches!(
            self,
            Self::Provision | Self::PartnerProvision | Self::Cancel
        )
    }

    /// The routes that reach the upstream.
    pub(crate) const FORWARDED: [Self; 4] = [
        Self::Provision,
        Self::PartnerProvision,
        Self::Cancel,
        Self::Passthrough,
    ];
}

/// The route a request takes.
pub fn route(method: &Method, path: &str) -> Route {
    // WordPress.com upper-cases the method before it picks an endpoint: `post` is a POST there.
    if !method.as_str().eq_ignore_ascii_case(Method::POST.as_str()) {
        return Route::Passthrough;
    }
    match PlainPath::read(path) {
        Some(plain) => guarded_route(&plain.segments().collect::<Vec<_>>()),
        None if path_reading::could_name(path, &GUARDED_ENDPOINTS) => Route::AmbiguousPath,
        None => Route::Passthrough,
    }
}

/// The last segments of the guarded routes (`partner-provision` holds `provision`): a path that
/// is not plain and could be read as holding one is refused.
const GUARDED_ENDPOINTS: [&str; 2] = ["provision", "partner-cancel"];

/// The route table, on a plain path's segments.
fn guarded_route(segments: &[&str]) -> Route {
    match segments {
        ["rest", version, "jpphp", "provision"] if is_version(version) => Route::Provision,
        // Any number of segments where the site goes: the site source refuses all but one
        // (400), rather than let an odd spelling pass unguarded.
        ["rest", version, "jpphp", site @ .., "partner-provision"]
            if is_version(version) && !site.is_empty() =>
        {
            Route::PartnerProvision
        }
        ["rest", version, "jpphp", site @ .., "partner-cancel"]
            if is_version(version) && !site.is_empty() =>
        {
            Route::Cancel
        }
        _ => Route::Passthrough,
    }
}

/// `v<digits>(.<digits>)*`, the versions WordPress.com's API serves (any of them: a version
/// it doesn't serve costs a guarded 404, a version it serves that passed unguarded would cost a
/// downgrade).
fn is_version(segment: &str) -> bool {
    segment.strip_prefix('v').is_some_and(|number| {
        number
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The layer around the partner-cancel route, built in this one place: the guard's
/// [`cancels`](UpgradeGuardLayer::cancels) route, site from the path. Nothing is checked, but
/// the cancel is held per site like a provision (across replicas with `--redis`), and the site's
/// cached upgrade paths are dropped, so a product the cancel gave back is an upgrade at once.
pub(crate) fn cancel_layer(guard: &UpgradeGuardLayer) -> UpgradeGuardLayer {
    guard.clone().site(Source::from_fn(path_site)).cancels()
}

/// The layer around partner-provision, `POST /rest/v1.3/jpphp/{site}/partner-provision`: what
/// Jetpack's `wp jetpack partner_provision` (`class.jetpack-provision.php`) sends, the site's blog
/// ID in the path and `plan` in a JSON body. Checked as a provision: site from the path, product
/// from `plan` (the guard reads the body as WordPress.com does: the tool sends JSON without a
/// content type of its own, which its HTTP client labels urlencoded, and WordPress.com reads an
/// urlencoded body as JSON first), no `plan` a connection request.
pub(crate) fn partner_provision_layer(guard: &UpgradeGuardLayer) -> UpgradeGuardLayer {
    guard.clone().site(Source::from_fn(path_site))
}

/// The site a partner-provision or partner-cancel path names, as sent: `{site}` in
/// `/rest/{version}/jpphp/{site}/partner-cancel`, read from the path's
/// [`raw_segments`](path_reading::raw_segments), one for one with the segments [`route`] matched,
/// so it is the segment the route matched there: no `;x`, dot segment or encoded `/` can make
/// the guard check one site while the upstream acts on another (such a path has no raw
/// segments, and no site). Not percent-decoded: [`Site::parse`](upgrade_guard::Site::parse)
/// refuses a `%` (400 `invalid_site`) rather than guess how the upstream would decode it.
/// Several segments where the site goes name no site (400 `missing_site`): WordPress.com's
/// endpoint takes one segment there, and the guard must not check `a/b` as the site `a::b`.
fn path_site(request: &http::request::Parts) -> Option<String> {
    match path_reading::raw_segments(request.uri.path())?.as_slice() {
        [_, _, _, site, _] => Some((*site).to_owned()),
        _ => None,
    }
}

/// The proxy's front service: routes each request and counts what it answered.
#[derive(Clone)]
pub(crate) struct Proxy {
    provision: UpgradeGuard<Forwarder>,
    partner_provision: UpgradeGuard<Forwarder>,
    cancel: UpgradeGuard<Forwarder>,
    passthrough: Forwarder,
    /// `--request-timeout`, applied around the guard on the guarded routes.
    timeout: Duration,
    metrics: Metrics,
}

impl Proxy {
    /// The routes: `guard` in front of the provision endpoint, [`partner_provision_layer`] and
    /// [`cancel_layer`] in front of theirs, `forwarder` behind all four. On the guarded routes
    /// the forwarder's timeout is taken outside the guard (see the [module docs](self)).
    pub(crate) fn new(guard: &UpgradeGuardLayer, forwarder: &Forwarder, metrics: Metrics) -> Self {
        let guarded = |layer: UpgradeGuardLayer, route: Route| {
            ServiceBuilder::new()
                .layer(layer)
                .service(forwarder.on_route(route).without_timeout())
        };
        Self {
            provision: guarded(guard.clone(), Route::Provision),
            partner_provision: guarded(partner_provision_layer(guard), Route::PartnerProvision),
            cancel: guarded(cancel_layer(guard), Route::Cancel),
            passthrough: forwarder.on_route(Route::Passthrough),
            timeout: forwarder.timeout(),
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // `call` picks a route by the request, so every route's service must be ready (as
        // tower's `Steer` does). Each is polled every time: a service that said ready stays so
        // until it is called.
        let ready = [
            Service::<Request<Incoming>>::poll_ready(&mut self.provision, cx)?.is_ready(),
            Service::<Request<Incoming>>::poll_ready(&mut self.partner_provision, cx)?.is_ready(),
            Service::<Request<Incoming>>::poll_ready(&mut self.cancel, cx)?.is_ready(),
            Service::<Request<Incoming>>::poll_ready(&mut self.passthrough, cx)?.is_ready(),
        ];
        if ready.iter().all(|&ready| ready) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let route = route(request.method(), request.uri().path());
        let metrics = self.metrics.clone();
        // For the debug line, copied only when it is written. The path only: a query string
        // may carry what should not be logged.
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            (
                request.method().clone(),
                request.uri().path().to_owned(),
                std::time::Instant::now(),
            )
        });
        let answered = match route {
            Route::Provision | Route::PartnerProvision | Route::Cancel => {
                let guarded = match route {
                    Route::Provision => &mut self.provision,
                    Route::PartnerProvision => &mut self.partner_provision,
                    _ => &mut self.cancel,
                };
                let future = guarded.call(request);
                let timeout = self.timeout;
                Box::pin(async move {
                    // Outside the guard: when it passes, the guard's future is dropped, which
                    // the guard reads as the client going away. Before forwarding that frees
                    // the site; after, the guard finishes the request alone and holds the site
                    // until it ends (bounded by its detached ceiling).
                    match tokio::time::timeout(timeout, future).await {
                        Ok(answered) => answered.map(boxed),
                        Err(_) => {
                            tracing::warn!(
                                route = route.as_str(),
                                ?timeout,
                                "no answer within --request-timeout; a request already forwarded is finished by the guard, holding its site"
                            );
                            Ok(error_response(
                                StatusCode::GATEWAY_TIMEOUT,
                                "upstream_timeout",
                                "the partner API upstream did not answer in time; a request already sent may still complete, and its site stays held until it does",
                            ))
                        }
                    }
                }) as Self::Future
            }
            Route::AmbiguousPath => {
                // Debug-formatted: the path may hold anything, control characters included.
                tracing::info!(
                    path = ?request.uri().path(),
                    "refused: a path that is not plain could name a guarded endpoint"
                );
                Box::pin(std::future::ready(Ok(error_response(
                    StatusCode::BAD_REQUEST,
                    "ambiguous_path",
                    "the path is not plain (a dot segment, an encoded dot or slash, a backslash, a ';' parameter, white space, a control character, a character WordPress.com drops such as a quote or '{', or a double encoding) and could be read as a guarded endpoint's by WordPress.com or a front that normalises paths; send its plain spelling",
                ))))
            }
            Route::Passthrough => self.passthrough.call(request),
        };
        Box::pin(async move {
            let response = answered.await?;
            let status = response.status().as_u16();
            metrics.answered(route, status);
            if let Some((method, path, started)) = logged {
                tracing::debug!(
                    %method,
                    path,
                    route = route.as_str(),
                    status,
                    latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "answered"
                );
            }
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
            // WordPress.com's version_compare reads these as 1.3.
            "/rest/v01.3/jpphp/provision",
            "/rest/v1.3.0/jpphp/provision",
            "/rest/v1.03/jpphp/provision",
            // Versions WordPress.com may serve tomorrow.
            "/rest/v2/jpphp/provision",
            "/rest/v2.0.1/jpphp/provision",
            "/rest/v1%2E3/jpphp/provision",
        ] {
            assert_eq!(route(&Method::POST, path), Route::Provision, "{path}");
        }
        // WordPress.com upper-cases the method: any spelling of POST is a provision.
        for method in ["post", "Post", "pOsT"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                route(&method, "/rest/v1.3/jpphp/provision"),
                Route::Provision,
                "{method}"
            );
            assert_eq!(
                route(&method, "/rest/v1.3/jpphp/1002/partner-cancel"),
                Route::Cancel,
                "{method}"
            );
        }
        for path in [
            "/rest/v1.3/jpphp/example.com::blog/partner-cancel",
            "/rest/v01.3/jpphp/1002/partner-cancel/",
            "/rest/v2/jpphp/1002/Partner-Cancel",
            // Several segments where the site goes: guarded, and the site refused there.
            "/rest/v1.3/jpphp/a/b/partner-cancel",
            "/rest/v1.3/jpphp/a%2Fb/partner-cancel",
        ] {
            assert_eq!(route(&Method::POST, path), Route::Cancel, "{path}");
        }
        for path in [
            "/rest/v1.3/jpphp/1002/partner-provision",
            "/rest/v1.3/jpphp/1002/partner-provision?partner_tracking_id=x",
            "/rest/v1.3.0/jpphp/1002/partner-provision/",
            "/rest/V01.3/JPPHP/1002/PARTNER-PROVISION",
        ] {
            let path = path.split('?').next().unwrap();
            assert_eq!(
                route(&Method::POST, path),
                Route::PartnerProvision,
                "{path}"
            );
        }
        for (method, path) in [
            (Method::GET, "/rest/v1.3/jpphp/provision"),
            (Method::PUT, "/rest/v1.3/jpphp/provision"),
            (Method::POST, "/oauth2/token"),
            (Method::POST, "/rest/v1.3/jpphp/provisions"),
            (Method::POST, "/rest/v1.3/jpphp/partner-keys/verify"),
            (Method::POST, "/rest/v1.3/jpphp/partner-provision"),
            (Method::POST, "/rest/v1.3/jpphp/partner-cancel"),
            (Method::POST, "/rest/va/jpphp/provision"),
            (Method::POST, "/rest/v/jpphp/provision"),
            (Method::POST, "/rest/v1./jpphp/provision"),
            (Method::GET, "/rest/v1.4/jpphp/1002/status"),
        ] {
            assert_eq!(route(&method, path), Route::Passthrough, "{method} {path}");
        }
    }

    #[test]
    fn spellings_a_normalising_front_reads_as_a_guarded_route_are_refused() {
        for (path, could_be) in [
            // Dot segments, plain and encoded, alone and mixed.
            ("/rest/v1.3/jpphp/x/../provision", Route::Provision),
            ("/rest/v1.3/jpphp/./provision", Route::Provision),
            ("/rest/v1.3/jpphp/provision/.", Route::Provision),
            ("/rest/v1.3/./jpphp/provision", Route::Provision),
            ("/rest/v1.3/x/../jpphp/provision", Route::Provision),
            ("/rest/v1.3/jpphp/x/%2E%2E/provision", Route::Provision),
            ("/rest/v1.3/jpphp/x/%2e%2e/provision", Route::Provision),
            ("/rest/v1.3/jpphp/x/.%2e/provision", Route::Provision),
            ("/rest/v1.3/jpphp/x/%2e./provision", Route::Provision),
            ("/rest/v1.3/jpphp/%2E/provision", Route::Provision),
            ("/rest/v1.3/jpphp/x%2F..%2Fprovision", Route::Provision),
            ("/rest/v1.3/jpphp/x%2f%2e%2e%2fprovision", Route::Provision),
            // Double (and triple) encoding.
            ("/rest/v1.3/jpphp/x/%252e%252e/provision", Route::Provision),
            ("/rest/v1.3/jpphp/x/%252E%252E/provision", Route::Provision),
            ("/rest/v1.3/jpphp/x%252f..%252fprovision", Route::Provision),
            (
                "/rest/v1.3/jpphp/x/%25252e%25252e/provision",
                Route::Provision,
            ),
            ("/rest/v1.3/jpphp/provisio%256E", Route::Provision),
            // Matrix parameters, backslashes.
            ("/rest/v1.3/jpphp/provision;x", Route::Provision),
            ("/rest/v1.3/jpphp;x/provision", Route::Provision),
            ("/rest/v1.3;x=1/jpphp/provision", Route::Provision),
            ("/rest/v1.3/jpphp/x/..;/provision", Route::Provision),
            ("/rest/v1.3/jpphp/provision%3Bx", Route::Provision),
            ("/rest/v1.3/jpphp\\provision", Route::Provision),
            ("/rest\\v1.3\\jpphp\\provision", Route::Provision),
            ("/rest/v1.3/jpphp/x\\..\\provision", Route::Provision),
            ("/rest/v1.3/jpphp%5cprovision", Route::Provision),
            ("/rest/v1.3/jpphp%5Cx%5C..%5Cprovision", Route::Provision),
            ("/rest/v1.3/jpphp%255cprovision", Route::Provision),
            // White space, NUL, control characters, anywhere in a segment.
            ("/rest/v1.3/jpphp/provision%20", Route::Provision),
            ("/rest/v1.3/jpphp/%20provision", Route::Provision),
            ("/rest/v1.3/jpphp/provision%09", Route::Provision),
            ("/rest/v1.3/jpphp/provision%00", Route::Provision),
            ("/rest/v1.3/jpphp/provision%00.json", Route::Provision),
            ("/rest/v1.3/jpphp/provision%0A", Route::Provision),
            ("/rest/v1.3/jpphp/provi%00sion", Route::Provision),
            ("/rest/v1.3/jpphp/provision%C2%A0", Route::Provision),
            ("/rest/v1.3%20/jpphp/provision", Route::Provision),
            ("/rest/v1.3/jpphp/provision%2520", Route::Provision),
            // A query or fragment a decoding front would cut.
            ("/rest/v1.3/jpphp/provision%3Fx=1", Route::Provision),
            ("/rest/v1.3/jpphp/provision%23x", Route::Provision),
            // Combinations, with case and slashes.
            (
                "//REST/V1.3//JPPHP/X/%2E%2E//PROVISION;X%20",
                Route::Provision,
            ),
            (
                "/rest/v1.3/jpphp/x/..%2f.%2f;/provision%09",
                Route::Provision,
            ),
            // The site-in-path routes: the guard must not check one site while a front sends
            // the upstream another.
            ("/rest/v1.3/jpphp/1002/./partner-cancel", Route::Cancel),
            (
                "/rest/v1.3/jpphp/1002;x/partner-provision",
                Route::PartnerProvision,
            ),
            (
                "/rest/v1.3/jpphp/1003/../1002/partner-provision",
                Route::PartnerProvision,
            ),
            (
                "/rest/v1.3/jpphp/1002%2F..%2F1003/partner-cancel",
                Route::Cancel,
            ),
            (
                "/rest/v1.3/jpphp/1002%20/partner-provision",
                Route::PartnerProvision,
            ),
            ("/rest/v1.3/jpphp/1002/partner-cancel;x", Route::Cancel),
            ("/rest/v1.3/jpphp/1002\\partner-cancel", Route::Cancel),
            ("/rest/v1.3/jpphp/1002/partner%2Dcancel%00", Route::Cancel),
            (
                "/rest/v1.3/jpphp/1002/PARTNER-PROVISION%252F%252E",
                Route::PartnerProvision,
            ),
        ] {
            assert_eq!(route(&Method::POST, path), Route::AmbiguousPath, "{path}");
            // The spelling is worth its place: some front reads it as that route.
            if path != "/rest/v1.3/jpphp/provi%00sion" {
                let front = front_reading(path);
                let front: Vec<&str> = front.iter().map(String::as_str).collect();
                assert_eq!(guarded_route(&front), could_be, "{path} read as {front:?}");
            }
        }
        // Other methods are not provisions at WordPress.com whatever the path.
        assert_eq!(
            route(&Method::GET, "/rest/v1.3/jpphp/x/../provision"),
            Route::Passthrough
        );
        // Not plain, but no reading names a guarded endpoint: passed through.
        for path in [
            "/rest/v1.4/jpphp/1002/./status",
            "/rest/v1.3/jpphp/x/../partner-keys/verify",
            "/rest/v1.1/sites/example.com;x",
            "/oauth2/%2e/token",
            "/rest/v1.4/jpphp/1002/st\"atus",
            "/rest/v1.4/jpphp/1002/status%0a",
        ] {
            assert_eq!(route(&Method::POST, path), Route::Passthrough, "{path}");
        }
    }

    /// What a front that normalises paths eagerly sends on: escapes decoded until none is left,
    /// the path cut at a decoded `?`, `#` or NUL, `\\` as `/`, each segment cut at its `;` and
    /// trimmed of white space, dot segments resolved, case folded, empty segments dropped.
    fn front_reading(path: &str) -> Vec<String> {
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
        let mut segments: Vec<String> = Vec::new();
        for segment in text.split('/') {
            let segment = segment.split(';').next().unwrap().trim();
            match segment {
                "" | "." => {}
                ".." => drop(segments.pop()),
                _ => segments.push(segment.to_owned()),
            }
        }
        segments
    }

    #[test]
    fn every_guarded_route_ends_in_a_guarded_endpoint_name() {
        // What keeps GUARDED_ENDPOINTS in step with the table.
        for path in [
            "/rest/v1.3/jpphp/provision",
            "/rest/v1.3/jpphp/1002/partner-provision",
            "/rest/v1.3/jpphp/1002/partner-cancel",
        ] {
            assert_ne!(route(&Method::POST, path), Route::Passthrough, "{path}");
            let last = path.rsplit('/').next().unwrap();
            assert!(
                GUARDED_ENDPOINTS.iter().any(|name| last.contains(name)),
                "{last}"
            );
        }
    }

    #[test]
    fn the_site_is_read_from_the_path_as_sent() {
        let site = |path: &str| {
            let (parts, ()) = Request::post(path).body(()).unwrap().into_parts();
            path_site(&parts)
        };
        assert_eq!(
            site("/rest/v1.3/jpphp/1002/partner-provision").as_deref(),
            Some("1002")
        );
        assert_eq!(
            site("//rest/v1.3/jpphp/example.com::blog/partner-cancel/").as_deref(),
            Some("example.com::blog")
        );
        // Several segments: no site (400 missing_site), never `a::b`.
        assert_eq!(site("/rest/v1.3/jpphp/a/b/partner-cancel"), None);
        // An encoded `/`: the route matched two segments there (`a` and `b`), so no site.
        assert_eq!(site("/rest/v1.3/jpphp/a%2Fb/partner-cancel"), None);
        // Escapes in the site itself stay, for Site::parse to refuse (400 invalid_site).
        assert_eq!(
            site("/rest/v1.3/jpphp/10%302/partner-cancel").as_deref(),
            Some("10%302")
        );
        assert!(upgrade_guard::Site::parse("10%302").is_err());
        // Not plain, or an encoded `/` before the site: no site, rather than one the route
        // did not match there.
        for path in [
            "/rest/v1.3/jpphp/1002;x/partner-cancel",
            "/rest/v1.3/jpphp/1002/./partner-cancel",
            "/rest/v1.3/jpphp%2F1002/x/partner-cancel",
            "/rest/v1.3/jpphp/1002%20/partner-provision",
        ] {
            assert_eq!(site(path), None, "{path}");
        }
    }
}
