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
use crate::decision::{Checked, Decision};
use crate::lock::{LockError, SiteLocks, SitePermit};
use crate::rejection::Rejection;
use crate::request::RequestReader;
use crate::stats::GuardStats;
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
#[derive(Clone, Debug)]
struct Config {
    shared: Arc<Shared>,
    reader: RequestReader,
    lock_wait: Duration,
}

/// A request that may be forwarded, with its site held until the inner service has answered.
pub(crate) struct Allowed<B> {
    request: Request<GuardBody<B>>,
    permit: SitePermit,
}

impl Config {
    /// Checks one request, counting the outcome.
    async fn check<B>(&self, request: Request<B>) -> Result<Allowed<B>, Rejection>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let checked = self.decide(request).await;
        match &checked {
            Ok(_) => self.shared.stats.forwarded(),
            Err(_) => self.shared.stats.rejected(),
        }
        checked
    }

    /// The contract, in order: read the request (400, 413, 415), hold the site (503 `site_busy`),
    /// look it up (404, 502, 503), decide (409 or forward).
    async fn decide<B>(&self, request: Request<B>) -> Result<Allowed<B>, Rejection>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let read = self.reader.read(request).await?;
        let permit = self.hold(&read.site).await?;
        let paths = self
            .shared
            .lookups
            .upgrade_paths(&read.site, &read.product)
            .await
            .map_err(Rejection::Upstream)?;
        match Decision::new(&paths, &read.product) {
            Decision::Upgrade { family } => {
                tracing::debug!(site = %read.site, product = %read.product, family, "upgrade allowed");
                // The provision will change the paths: nobody may reuse these, whatever it answers.
                self.shared.lookups.invalidate(&read.site);
                let mut request = read.request;
                request.extensions_mut().insert(Checked {
                    site: read.site,
                    product: read.product,
                });
                Ok(Allowed { request, permit })
            }
            Decision::NotAnUpgrade => {
                tracing::debug!(site = %read.site, product = %read.product, "not an upgrade");
                Err(Rejection::NotAnUpgrade {
                    site: read.site,
                    product: read.product,
                    upgrade_paths: Arc::unwrap_or_clone(paths),
                })
            }
        }
    }

    /// Takes the site's lock, counting the requests that had to wait.
    async fn hold(&self, site: &Site) -> Result<SitePermit, Rejection> {
        let stats = &self.shared.stats;
        // Bounded here too, so a lock implementation that overstays its wait cannot hang requests.
        let bound = self.lock_wait.saturating_add(Duration::from_secs(1));
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
