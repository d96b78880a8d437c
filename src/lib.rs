//! A tower middleware that lets a Jetpack product be provisioned on a WordPress site only when it
//! is an upgrade, as WordPress.com's *upgrade-paths* endpoint says.
//!
//! Hosting partners provision Jetpack products through WordPress.com's partner API. Products
//! overlap (Professional contains Realtime Backups), and a product may only be provisioned when it
//! adds something to what the site already has. [`UpgradeGuardLayer`] wraps a partner's own
//! provision handler: before forwarding a request it asks upgrade-paths about the site and answers
//! `409 upgrade_not_allowed` when the product is not listed, so a downgrade never reaches the
//! provision call.
//!
//! # Example
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use upgrade_guard::{Source, UpgradeGuardLayer, UpgradePathsClient};
//!
//! # async fn provision() -> &'static str { "ok" }
//! # async fn add_plan() -> &'static str { "ok" }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = UpgradePathsClient::builder().bearer_token("partner-token").build()?;
//! let guard = UpgradeGuardLayer::new(client);
//!
//! let app: Router = Router::new()
//!     // The provision API's own form: site from `siteurl`, product from `plan`.
//!     .route("/rest/v1.3/jpphp/provision", post(provision).route_layer(guard.clone()))
//!     // The site from the path, the product from a JSON or form field, required here.
//!     .route(
//!         "/sites/{site}/plans",
//!         post(add_plan).route_layer(
//!             guard.site(Source::path("/sites/{site}/plans", "site")).require_product(),
//!         ),
//!     );
//! # Ok(()) }
//! ```
//!
//! # What the guard answers
//!
//! | situation | status | `error` |
//! |---|---|---|
//! | product not in the site's upgrade paths (`{}` or PHP's `[]`: none) | 409 | `upgrade_not_allowed` |
//! | site absent or empty | 400 | `missing_site` |
//! | product absent or empty on a route that [requires one](UpgradeGuardLayer::require_product) | 400 | `missing_product` |
//! | site identifier malformed | 400 | `invalid_site` |
//! | body (or query) malformed, or a read field repeated | 400 | `invalid_body` |
//! | body content type the route can't read | 415 | `unsupported_media_type` |
//! | body over the limit | 413 | `body_too_large` |
//! | upstream: unknown blog ID (or any unknown site, on a route that [refuses them](UnknownSites::Refuse)) | 404 | `unknown_site` |
//! | upstream: the partner's token is refused | 502 | `upstream_unauthorized` |
//! | [caller's own token](UpgradePathsClientBuilder::caller_token): none in the request | 401 | `missing_token` |
//! | caller's own token: WordPress.com refuses it | WordPress.com's 401/403 | WordPress.com's own |
//! | upstream: timeout, connect error, 5xx, 429, bad answer | 503 + `Retry-After` | `upgrade_paths_unavailable` |
//! | waited too long for another provision of the same site | 503 + `Retry-After` | `site_busy` |
//!
//! Nothing is forwarded in any of these cases. Forwarded besides upgrades, with the site held and
//! marked by an [`Admission`]: a request naming no product, or `free` (a connection request); the
//! first provision of a site named by URL that WordPress.com does not know yet; a request on a
//! [`cancels`](UpgradeGuardLayer::cancels) route. Provisions of one site are serialized (see
//! [`lock`]) and lookups are cached and coalesced (see [`cache`]). The inner service's responses and errors pass
//! through untouched, and the service's error type is the inner one's, so it works behind axum.
//!
//! # Features
//!
//! - `test-util`: `fake::FakeUpstream`, a fake WordPress.com partner API on a loopback port for
//!   integration tests.
//! - `redis`: `RedisLocks`, per-site locks shared by several processes through Redis.
#![warn(missing_docs, rust_2018_idioms)]
#![deny(unreachable_pub, unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod cache;
pub mod decision;
pub mod guard;
pub mod lock;
pub mod rejection;
pub mod request;
pub mod site;
pub mod stats;
pub mod upstream;

pub use body::GuardBody;
pub use decision::{
    Admission, BYPASS_HEADER, Bypass, Checked, Decision, DecisionReport, Mode, Outcome,
};
pub use guard::{
    ResponseFuture, UnknownSites, UpgradeGuard, UpgradeGuardBuilder, UpgradeGuardLayer,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use lock::RedisLocks;
pub use lock::{LocalLocks, SiteLocks, SitePermit};
pub use rejection::Rejection;
pub use request::Source;
pub use site::Site;
pub use stats::{GuardStats, StatsSnapshot};
pub use upstream::{LookupError, Token, TokenError, TokenSource, UpgradePaths, UpgradePathsClient};

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod fake;

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
