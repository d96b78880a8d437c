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
//! | product not in the site's upgrade paths, of a family the answer speaks about (`{}` or PHP's `[]`: none) | 409 | `upgrade_not_allowed` |
//! | product the answer does not judge, on a route that [refuses those](UnjudgedProducts::Refuse) | 409 | `product_not_judged` |
//! | the same product provisioned a moment ago ([settling window](UpgradeGuardBuilder::settling_window)) | 409 | `already_provisioned` |
//! | the site's answers do not show a provision made a moment ago yet | 503 + `Retry-After` | `provision_settling` |
//! | site absent or empty | 400 | `missing_site` |
//! | product absent or empty on a route that [requires one](UpgradeGuardLayer::require_product) | 400 | `missing_product` |
//! | site identifier malformed | 400 | `invalid_site` |
//! | body (or query) malformed, or a read field repeated | 400 | `invalid_body` |
//! | body content type the route can't read | 415 | `unsupported_media_type` |
//! | body over the limit | 413 | `body_too_large` |
//! | body not in whole within the [body timeout](UpgradeGuardLayer::body_timeout) | 408 | `body_timeout` |
//! | a `Connection` header naming a header of the request the next hop would drop (`Content-Type`, ...) | 400 | `invalid_connection_header` |
//! | upstream: unknown blog ID (or any unknown site, on a route that [refuses them](UnknownSites::Refuse)) | 404 | `unknown_site` |
//! | upstream: the partner's token is refused | 502 | `upstream_unauthorized` |
//! | [caller's own token](UpgradePathsClientBuilder::caller_token): none in the request | 401 | `missing_token` |
//! | caller's own token: WordPress.com refuses it | WordPress.com's 401/403 | WordPress.com's own |
//! | upstream: timeout, connect error, 5xx, 429, bad answer | 503 + `Retry-After` | `upgrade_paths_unavailable` |
//! | waited too long for another provision of the same site | 503 + `Retry-After` | `site_busy` |
//!
//! Nothing is forwarded in any of these cases. Forwarded besides upgrades, with the site held and
//! marked by an [`Admission`]: a request naming no product, or `free` (a connection request); the
//! first provision of a site named by URL that WordPress.com does not know yet; a product the
//! site's answer does not judge ([`UnjudgedProducts`]); a request on a
//! [`cancels`](UpgradeGuardLayer::cancels) route. The inner service's responses and errors pass
//! through untouched, and the service's error type is the inner one's, so it works behind axum.
//!
//! # Contents
//!
//! **Guarding a route.** [`UpgradeGuardLayer`] is the layer, configured per route: where the
//! site and product are read ([`Source`]), [`require_product`](UpgradeGuardLayer::require_product),
//! [`UnknownSites`], [`cancels`](UpgradeGuardLayer::cancels), the [`Mode`] (fail closed, fail
//! open, shadow), the body limit and the waits. [`UpgradeGuardBuilder`] sets what its routes
//! share: the cache and the site locks. [`UpgradeGuard`] is the service it makes, with its
//! [`ResponseFuture`] and request body, [`GuardBody`]; [`Detached`] tracks the forwarded requests
//! the guard finishes after their clients went away, for a graceful shutdown.
//!
//! **What the guard tells you.** The inner service finds a [`Checked`] (and an [`Admission`]) in
//! each forwarded request's extensions, or a [`Bypass`] ([`BYPASS_HEADER`]) when a fail-open or
//! shadow route forwarded what it would have refused. Every request ends in a [`DecisionReport`]
//! handed to [`on_decision`](UpgradeGuardLayer::on_decision), with its [`Outcome`] (and how a
//! request finished detached, [`DetachedEnd`]); [`GuardStats`] counts them ([`StatsSnapshot`]). Each
//! refusal is a [`Rejection`], the table above; an unreadable body carries a [`BodyError`].
//!
//! **Asking WordPress.com.** [`UpgradePathsClient`] (built with [`UpgradePathsClientBuilder`])
//! asks upgrade-paths, with retries and deadlines, and answers [`UpgradePaths`] or a
//! [`LookupError`] ([`CallerRefusal`] when a caller's own token was refused). The partner's
//! credentials are a [`TokenSource`] (client credentials through [`ClientCredentialsBuilder`]),
//! which gives a [`Token`] or a [`TokenError`]; a client that cannot be built says why with a
//! [`BuildError`]. A [`Site`] is a blog ID or a URL as WordPress.com reads it ([`SiteKind`]), or
//! an [`InvalidSite`].
//!
//! **One provision per site at a time.** An upgrade-paths answer is good for one provision only:
//! two provisions of a site that both checked first could both pass, and the second would be the
//! downgrade the guard exists to stop. So the guard holds the site from before its lookup until the
//! inner service's work has finished; a request that waits sees the site as the previous provision
//! left it. Nothing is held before the whole request (its body too) is in hand. One site is one
//! lock whatever it is called: a site is held under its blog ID and its URL alike, learned from
//! WordPress.com's public site lookup ([`SiteAliases`]). [`LocalLocks`] (the default) serialize
//! within one process; with the `redis` feature, `RedisLocks` serialize across replicas
//! (`RedisLocksBuilder`, `RedisBuildError`). Any other shared engine can implement [`SiteLocks`],
//! with [`SitePermit`], [`Acquire`] and [`LockError`]. What the processes tell each other besides
//! (forgotten sites, the provisions just made) is [`Peers`] (`RedisLocks` too), with
//! [`ForgetListener`], [`PeersFuture`], [`Remembered`] and [`PeersError`].
//!
//! **Caching.** Lookups of one site are shared by the requests that want them at the same time, and
//! their answers are cached, for refusals only: a cached answer decides a request only when it does
//! *not* list the product, so whatever the cache holds can make the guard answer 409, never forward
//! a downgrade; an upgrade is always confirmed by a lookup made under the site's lock. Hot refused
//! requests (tooling retrying a downgrade) cost no upstream call, an allowed provision exactly one
//! (plus one site lookup the first time a name is seen). A cancellation gives products back, which
//! is why a cancel route is marked [`cancels`](UpgradeGuardLayer::cancels) and a change the guard
//! cannot see is told with [`forget`](UpgradeGuardLayer::forget); processes sharing [`Peers`] tell
//! each other.
//!
//! **Testing.** The `fake` module (feature `test-util`) is a fake WordPress.com partner API on a
//! loopback port, with WordPress.com's product catalogue and injectable faults.
//!
//! # Features
//!
//! - `test-util`: the `fake` module, a fake WordPress.com partner API for integration tests.
//! - `redis`: `RedisLocks`, per-site locks and [`Peers`] shared by several processes through Redis.
#![warn(missing_docs, rust_2018_idioms)]
#![deny(unreachable_pub, unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod cache;
mod catalogue;
mod decision;
mod guard;
mod lock;
mod peers;
mod recent;
mod rejection;
mod request;
mod site;
mod stats;
mod upstream;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod fake;

pub use body::GuardBody;
pub use catalogue::UnjudgedProducts;
pub use decision::{
    Admission, BYPASS_HEADER, Bypass, Checked, DecisionReport, DetachedEnd, Mode, Outcome,
    UnknownSites,
};
pub use guard::{Detached, ResponseFuture, UpgradeGuard, UpgradeGuardBuilder, UpgradeGuardLayer};
pub use lock::{Acquire, LocalLocks, LockError, SiteAliases, SiteLocks, SitePermit};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use lock::{RedisBuildError, RedisLocks, RedisLocksBuilder};
pub use peers::{ForgetListener, Peers, PeersError, PeersFuture, Remembered};
pub use rejection::{BodyError, Rejection};
pub use request::Source;
pub use site::{InvalidSite, Site, SiteKind};
pub use stats::{GuardStats, StatsSnapshot};
pub use upstream::{
    BuildError, CallerRefusal, ClientCredentialsBuilder, LookupError, Token, TokenError,
    TokenSource, UpgradePaths, UpgradePathsClient, UpgradePathsClientBuilder,
};

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
