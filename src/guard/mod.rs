//! The middleware: [`UpgradeGuardLayer`], [`UpgradeGuard`] and its [`ResponseFuture`].
//!
//! For each request the guard reads the site and the product, takes the site's lock, asks for the
//! site's upgrade paths (cached, coalesced), and forwards the request only when the product is
//! listed, holding the lock until the inner service has answered. Everything else is answered by
//! the guard itself, as [`Rejection`] describes.

mod builder;
mod future;
mod layer;
mod service;

pub use builder::UpgradeGuardBuilder;
pub use future::ResponseFuture;
pub use layer::UpgradeGuardLayer;
pub use service::UpgradeGuard;

use crate::Site;
use crate::body::GuardBody;
use crate::cache::Lookups;
use crate::decision::{Bypass, Checked, Decision, DecisionReport, Mode, Outcome};
use crate::lock::{LockError, SiteLocks, SitePermit};
use crate::rejection::Rejection;
use crate::request::{Read, RequestReader};
use crate::stats::GuardStats;
use crate::upstream::{Token, UpgradePaths};
use bytes::Bytes;
use futures_util::FutureExt;
use http::Request;
use http_body::Body;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every route of one guard shares: the lookups and their cache, the site locks, the stats.
#[derive(Debug)]
struct Shared {
    lookups: Lookups,
    locks: Arc<dyn SiteLocks>,
    stats: GuardStats,
}

/// One route's configuration, around the shared state.
#[derive(Clone)]
struct Config {
    shared: Arc<Shared>,
    reader: RequestReader,
    lock_wait: Duration,
    mode: Mode,
    on_decision: Option<Arc<OnDecision>>,
}

/// A partner's callback for every decision.
type OnDecision = dyn Fn(&DecisionReport<'_>) + Send + Sync;

/// A request to forward: with its site held until the inner service has answered (when the
/// guard could take the lock), and what the guard would have answered had the route not let it
/// through.
pub(crate) struct Forward<B> {
    request: Request<GuardBody<B>>,
    permit: Option<SitePermit>,
    bypass: Option<Bypass>,
}

impl Config {
    /// The contract, in order: read the request (400, 413, 415), hold the site (503
    /// `site_busy`), look it up (404, 502, 503), decide (409 or forward). Then the route's mode
    /// settles what is stopped, and the decision is reported.
    async fn check<B>(&self, request: Request<B>) -> Result<Forward<B>, Rejection>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let Read { mut request, named } = self.reader.read(request).await;
        // Issue 13: a client with no token of its own looks the site up with the caller's.
        let caller = self.shared.lookups.caller_token(request.headers());
        let named = named.and_then(|named| {
            let product = named.product.ok_or(Rejection::MissingProduct)?;
            Ok(Named {
                site: named.site,
                product,
                caller,
            })
        });
        let (named, permit, stopped) = match named {
            Err(why) => (None, None, Some(why)),
            Ok(named) => {
                let (permit, stopped) = self.judge(&named).await;
                (Some(named), permit, stopped)
            }
        };
        let outcome = match &stopped {
            None => Outcome::Allowed,
            Some(why) if !self.mode.forwards(why) => Outcome::Rejected,
            Some(_) if self.mode == Mode::Shadow => Outcome::Shadowed,
            Some(_) => Outcome::FailedOpen,
        };
        self.report(&DecisionReport {
            outcome,
            mode: self.mode,
            site: named.as_ref().map(|n| &n.site),
            product: named.as_ref().map(|n| n.product.as_str()),
            rejection: stopped.as_ref(),
            latency: started.elapsed(),
        });
        let stopped = match stopped {
            Some(why) if outcome == Outcome::Rejected => return Err(why),
            stopped => stopped,
        };
        if let Some(named) = &named {
            // The provision will change the paths: nobody may reuse these, whatever it answers.
            self.shared.lookups.invalidate(&named.site);
        }
        let bypass = match (stopped, named) {
            (None, Some(Named { site, product, .. })) => {
                request.extensions_mut().insert(Checked { site, product });
                None
            }
            (Some(why), named) => {
                let (site, product) = named.map(|n| (n.site, n.product)).unzip();
                let bypass = Bypass {
                    mode: self.mode,
                    status: why.status(),
                    code: why.code(),
                    message: why.to_string(),
                    site,
                    product,
                };
                request.extensions_mut().insert(bypass.clone());
                Some(bypass)
            }
            (None, None) => unreachable!("an allowed request names its site and product"),
        };
        Ok(Forward {
            request,
            permit,
            bypass,
        })
    }

    /// Holds the site and decides; `None` when nothing stopped the request. A refusal already
    /// known (cached, or the answer of a lookup under way) needs no lock: it never forwards, and a
    /// provision in progress only takes products off a site's paths.
    async fn judge(&self, named: &Named) -> (Option<SitePermit>, Option<Rejection>) {
        let lookups = &self.shared.lookups;
        // Issue 13: `Err` is a request without the bearer token the lookup needs, or whose token
        // was just refused.
        match lookups
            .known_refusal(&named.site, &named.product, named.caller.as_ref())
            .await
        {
            Ok(Some(paths)) => return (None, Some(not_an_upgrade(named, paths))),
            Err(why) => return (None, Some(Rejection::Upstream(why))),
            Ok(None) => {}
        }
        match self.hold(&named.site).await {
            Err(why) => (None, Some(why)),
            Ok(permit) => (Some(permit), self.decide(named).await.err()),
        }
    }

    /// Looks the site up and decides: `Err` is why the request is not an upgrade (or why the
    /// guard can't tell).
    async fn decide(&self, named: &Named) -> Result<(), Rejection> {
        let paths = self
            .shared
            .lookups
            .upgrade_paths(&named.site, &named.product, named.caller.as_ref())
            .await
            .map_err(Rejection::Upstream)?;
        match Decision::new(&paths, &named.product) {
            Decision::Upgrade { .. } => Ok(()),
            Decision::NotAnUpgrade => Err(not_an_upgrade(named, paths)),
        }
    }

    /// Counts, logs and hands the decision to the partner's callback.
    fn report(&self, report: &DecisionReport<'_>) {
        let stats = &self.shared.stats;
        match report.outcome {
            Outcome::Rejected => stats.rejected(),
            _ => stats.forwarded(),
        }
        let site = report.site.map(Site::as_str);
        let code = report.rejection.map(Rejection::code);
        let latency_ms = report.latency.as_secs_f64() * 1000.0;
        let (outcome, mode) = (report.outcome.as_str(), report.mode.as_str());
        match (report.outcome, report.rejection) {
            (Outcome::Allowed, _) => {
                tracing::info!(
                    site,
                    product = report.product,
                    outcome,
                    mode,
                    latency_ms,
                    "upgrade allowed"
                );
            }
            (Outcome::Rejected, Some(why)) if why.status().is_client_error() => {
                tracing::info!(site, product = report.product, outcome, mode, code, latency_ms, reason = %why, "request stopped");
            }
            (outcome_kind, _) => {
                let message = match outcome_kind {
                    Outcome::Rejected => "request stopped: the guard could not check it",
                    _ => "forwarded although the guard would have stopped it",
                };
                tracing::warn!(
                    site,
                    product = report.product,
                    outcome,
                    mode,
                    code,
                    latency_ms,
                    reason = report.rejection.map(tracing::field::display),
                    "{message}"
                );
            }
        }
        if let Some(callback) = &self.on_decision {
            callback(report);
        }
    }

    /// Takes the site's lock, counting the requests that had to wait.
    async fn hold(&self, site: &Site) -> Result<SitePermit, Rejection> {
        let stats = &self.shared.stats;
        // Bounded here too, so a lock implementation that overstays its wait cannot hang requests;
        // the margin leaves a shared lock time to finish its last attempt and report it.
        let bound = self.lock_wait.saturating_add(Duration::from_secs(5));
        let mut acquire = Box::pin(async move {
            tokio::time::timeout(bound, self.shared.locks.acquire(site, self.lock_wait))
                .await
                .unwrap_or(Err(LockError::Busy))
        });
        let acquired = match (&mut acquire).now_or_never() {
            Some(acquired) => acquired,
            None => {
                let started = Instant::now();
                let acquired = acquire.await;
                stats.lock_waited(started.elapsed());
                tracing::debug!(%site, waited = ?started.elapsed(), ok = acquired.is_ok(), "waited for the site's lock");
                acquired
            }
        };
        acquired.map_err(|error| {
            stats.site_busy();
            Rejection::SiteBusy(error)
        })
    }
}

/// A site and the product wanted for it.
struct Named {
    site: Site,
    product: String,
    /// Issue 13: the request's bearer token, when the client uses the caller's token.
    caller: Option<Token>,
}

fn not_an_upgrade(named: &Named, paths: Arc<UpgradePaths>) -> Rejection {
    Rejection::NotAnUpgrade {
        site: named.site.clone(),
        product: named.product.clone(),
        upgrade_paths: paths,
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("shared", &self.shared)
            .field("reader", &self.reader)
            .field("lock_wait", &self.lock_wait)
            .field("mode", &self.mode)
            .field("on_decision", &self.on_decision.as_ref().map(|_| ".."))
            .finish()
    }
}
