//! Cached, coalesced upgrade-paths lookups.
//!
//! A site's paths are kept until a request for that site is forwarded (the guard drops the entry
//! then, whatever the inner response) or the time to live passes. Concurrent lookups of one site
//! share one upstream call. Errors are never cached.
//!
//! **The cache only ever refuses.** A cached answer decides a request only when it does *not*
//! list the product; an upgrade is always confirmed by a fresh lookup. A provision only ever takes
//! products off a site's upgrade paths (a product that overlaps what a site holds without adding
//! to it stays that way when the site gains more), so a stale entry, whether from a provision
//! through another spelling of the site, another process, or WordPress.com itself, can make the
//! guard answer 409 for a while, never forward a downgrade. Hot refused requests (a partner's
//! tooling retrying a downgrade) cost no upstream call; an allowed provision costs exactly one.
//!
//! Each lookup runs in a task of its own, so a caller that goes away does not abandon the others
//! waiting on the same call: the answer still arrives, serves them and fills the cache. The guard
//! therefore needs a Tokio runtime, as reqwest does.
//!
//! The trade-off: a site whose upgrade paths grow outside this process (a subscription cancelled
//! on WordPress.com) is refused until its entry expires.

use crate::Site;
use crate::stats::GuardStats;
use crate::upstream::{LookupError, UpgradePaths, UpgradePathsClient};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a site's paths are reused by default.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// How many sites' paths are kept by default.
pub const DEFAULT_CACHE_CAPACITY: u64 = 100_000;

type Lookup = Shared<BoxFuture<'static, Result<Arc<UpgradePaths>, LookupError>>>;

/// The client behind a cache and a table of lookups in flight.
#[derive(Clone)]
pub(crate) struct Lookups {
    inner: Arc<Inner>,
}

struct Inner {
    client: UpgradePathsClient,
    cache: Option<moka::sync::Cache<Site, Arc<UpgradePaths>>>,
    /// The lookup under way for each site, tagged so a finished task removes only its own.
    in_flight: Mutex<HashMap<Site, (u64, Lookup)>>,
    next_lookup: AtomicU64,
    stats: GuardStats,
}

impl Lookups {
    /// A cache of `capacity` sites for `ttl`; a zero `ttl` or capacity turns caching off (lookups
    /// are still coalesced).
    pub(crate) fn new(
        client: UpgradePathsClient,
        ttl: Duration,
        capacity: u64,
        stats: GuardStats,
    ) -> Self {
        let cache = (!ttl.is_zero() && capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Self {
            inner: Arc::new(Inner {
                client,
                cache,
                in_flight: Mutex::default(),
                next_lookup: AtomicU64::new(0),
                stats,
            }),
        }
    }

    /// The cached paths of `site` when they refuse `product`.
    ///
    /// A refusal needs neither a lookup nor the site's lock: a provision in progress can only
    /// take more products off the site's paths.
    pub(crate) fn cached_refusal(&self, site: &Site, product: &str) -> Option<Arc<UpgradePaths>> {
        let inner = &self.inner;
        let paths = inner.cache.as_ref()?.get(site)?;
        if paths.allows(product) {
            return None;
        }
        inner.stats.cache_hit();
        tracing::trace!(%site, product, "refused from the cache");
        Some(paths)
    }

    /// Paths that may decide on `product` for `site`: a cached answer when it refuses the
    /// product, otherwise the answer of a lookup in flight or of a new upstream call.
    pub(crate) async fn upgrade_paths(
        &self,
        site: &Site,
        product: &str,
    ) -> Result<Arc<UpgradePaths>, LookupError> {
        let inner = &self.inner;
        if let Some(paths) = self.cached_refusal(site, product) {
            return Ok(paths);
        }
        let (lookup, new) = {
            let mut in_flight = inner.in_flight();
            match in_flight.get(site) {
                Some((_, lookup)) => {
                    inner.stats.coalesced();
                    (lookup.clone(), None)
                }
                None => {
                    let id = inner.next_lookup.fetch_add(1, Ordering::Relaxed);
                    let (answer, answered) = oneshot::channel();
                    let lookup = async move {
                        answered
                            .await
                            .unwrap_or_else(|gone| Err(LookupError::Transport(Arc::new(gone))))
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(site.clone(), (id, lookup.clone()));
                    (lookup, Some((id, answer)))
                }
            }
        };
        // Started outside the table's lock: a task that ends at once must be able to leave it.
        if let Some((id, answer)) = new {
            self.start(site.clone(), id, answer);
        }
        lookup.await
    }

    /// Forgets the site's paths: a provision is about to change them.
    pub(crate) fn invalidate(&self, site: &Site) {
        if let Some(cache) = &self.inner.cache {
            cache.invalidate(site);
        }
    }

    pub(crate) fn client(&self) -> &UpgradePathsClient {
        &self.inner.client
    }

    fn start(
        &self,
        site: Site,
        id: u64,
        answer: oneshot::Sender<Result<Arc<UpgradePaths>, LookupError>>,
    ) {
        let inner = self.inner.clone();
        inner.stats.lookup();
        // Leaves the table however the task ends: answered, dropped with its runtime, panicked.
        let leave = LeaveInFlight {
            inner: inner.clone(),
            site: site.clone(),
            id,
        };
        tokio::spawn(async move {
            let result = inner.client.upgrade_paths(&site).await.map(Arc::new);
            tracing::debug!(%site, ok = result.is_ok(), "upgrade-paths lookup");
            // The cache first, then the table: a request never misses both.
            if let (Ok(paths), Some(cache)) = (&result, &inner.cache) {
                cache.insert(site, paths.clone());
            }
            drop(leave);
            // Nobody waiting any more is fine: the cache has the answer.
            let _ = answer.send(result);
        });
    }
}

impl Inner {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Site, (u64, Lookup)>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a lookup from the table of lookups in flight when its task ends.
struct LeaveInFlight {
    inner: Arc<Inner>,
    site: Site,
    id: u64,
}

impl Drop for LeaveInFlight {
    fn drop(&mut self) {
        let mut in_flight = self.inner.in_flight();
        if in_flight
            .get(&self.site)
            .is_some_and(|(id, _)| *id == self.id)
        {
            in_flight.remove(&self.site);
        }
    }
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("client", &self.inner.client)
            .field("cache", &self.inner.cache.as_ref().map(|c| c.entry_count()))
            .finish_non_exhaustive()
    }
}
