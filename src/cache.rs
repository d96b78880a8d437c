//! Cached, coalesced upgrade-paths lookups.
//!
//! A site's paths are kept until the site is *forgotten* or the time to live passes. The guard
//! forgets a site when it forwards a request for it (whatever the inner response), again when a
//! [`cancels`](crate::UpgradeGuardLayer::cancels) route's inner service has finished, and when a
//! partner calls [`forget`](crate::UpgradeGuardLayer::forget). Forgetting also disowns a lookup of
//! the site still in flight: its answer, which may predate the change, reaches the requests
//! already waiting for it but never the cache, and the next request starts a fresh one.
//! Concurrent lookups of one site share one upstream call. Errors are never cached.
//!
//! **The cache only ever refuses.** A cached answer decides a request only when it does *not*
//! list the product; an upgrade is always confirmed by a fresh lookup made under the site's
//! lock. So whatever a cached entry says, it can make the guard answer 409, never forward a
//! downgrade. Hot refused requests (a partner's tooling retrying a downgrade) cost no upstream
//! call; an allowed provision costs exactly one.
//!
//! How long a refusal stays *true* is another matter:
//!
//! - A provision only ever takes products off a site's upgrade paths (a product that overlaps what
//!   a site holds without adding to it stays that way when the site gains more), so a refusal
//!   cached before a provision stays true after it.
//! - A **cancellation** gives products back: a refusal cached before it is stale after it. That
//!   is why a cancel route must be marked [`cancels`](crate::UpgradeGuardLayer::cancels) (the
//!   site is forgotten when the cancel is forwarded and again when it has finished), and why a
//!   change the guard cannot see must be told with [`forget`](crate::UpgradeGuardLayer::forget).
//!   Across processes, `RedisLocks` carries each forgotten site to every other process (see
//!   [`SiteLocks::announce_forget`](crate::SiteLocks::announce_forget)). A refusal answered
//!   while a cancel of the same site is still under way reflects the site before it; no refusal
//!   is cached past the cancel's end.
//! - A **first provision** (a site WordPress.com does not know yet) caches nothing: the lookup
//!   failed, and errors are never cached. The next request for the site looks it up again and
//!   sees what the first provision left.
//!
//! The callers waiting for a lookup drive it themselves; one that goes away before the answer
//! hands the lookup to a task of its own, so the others waiting on the same call and the cache
//! still get the answer. The guard therefore needs a Tokio runtime, as reqwest does.

use crate::Site;
use crate::lock::ForgetListener;
use crate::stats::GuardStats;
use crate::upstream::{LookupError, UpgradePaths, UpgradePathsClient};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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

    /// A refusal of `product` for `site` known without a lookup of its own: the cache's, or the
    /// answer of a lookup already under way.
    ///
    /// A refusal needs neither a lookup of its own nor the site's lock: a provision in progress
    /// can only take more products off the site's paths, so a refusal stays true; a cancel in
    /// progress may make it untrue, and forgets the site when it has finished.
    pub(crate) async fn known_refusal(
        &self,
        site: &Site,
        product: &str,
    ) -> Option<Arc<UpgradePaths>> {
        if let Some(paths) = self.cached_refusal(site, product) {
            return Some(paths);
        }
        let (id, lookup) = self.inner.in_flight().get(site).cloned()?;
        self.inner.stats.coalesced();
        let paths = self.wait(site, id, lookup).await.ok()?;
        (!paths.allows(product)).then_some(paths)
    }

    fn cached_refusal(&self, site: &Site, product: &str) -> Option<Arc<UpgradePaths>> {
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
        if let Some(paths) = self.cached_refusal(site, product) {
            return Ok(paths);
        }
        let (id, lookup) = {
            let mut in_flight = self.inner.in_flight();
            match in_flight.get(site) {
                Some(under_way) => {
                    self.inner.stats.coalesced();
                    under_way.clone()
                }
                None => {
                    let id = self.inner.next_lookup.fetch_add(1, Ordering::Relaxed);
                    let lookup = self.lookup(site.clone(), id).boxed().shared();
                    in_flight.insert(site.clone(), (id, lookup.clone()));
                    (id, lookup)
                }
            }
        };
        self.wait(site, id, lookup).await
    }

    /// The site's paths for a partner's own view: the cached answer when there is one (it may
    /// list less than WordPress.com would now, never more), otherwise the answer of a lookup in
    /// flight or of a new upstream call.
    pub(crate) async fn current(&self, site: &Site) -> Result<Arc<UpgradePaths>, LookupError> {
        if let Some(paths) = self.inner.cache.as_ref().and_then(|cache| cache.get(site)) {
            self.inner.stats.cache_hit();
            return Ok(paths);
        }
        // No product is allowed by nothing: never a cached refusal, always a lookup.
        self.upgrade_paths(site, "").await
    }

    /// Forgets the site's paths in this process: the cached answer, and the lookup in flight,
    /// whose answer may predate the change (its waiters still get it; the cache does not).
    pub(crate) fn forget(&self, site: &Site) {
        self.inner.forget(site);
    }

    /// What other processes' forgets are handed to. It holds the cache weakly: a listener that
    /// outlives the guard keeps nothing alive.
    pub(crate) fn forget_listener(&self) -> ForgetListener {
        let inner = Arc::downgrade(&self.inner);
        Arc::new(move |site: Option<&Site>| {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            match site {
                Some(site) => inner.forget(site),
                None => inner.forget_all(),
            }
        })
    }

    pub(crate) fn client(&self) -> &UpgradePathsClient {
        &self.inner.client
    }

    /// One upstream call; when it completes it fills the cache and leaves the table, whoever
    /// drove it.
    fn lookup(
        &self,
        site: Site,
        id: u64,
    ) -> impl Future<Output = Result<Arc<UpgradePaths>, LookupError>> + Send + 'static {
        let inner = self.inner.clone();
        inner.stats.lookup();
        async move {
            let result = inner.client.upgrade_paths(&site).await.map(Arc::new);
            tracing::debug!(%site, ok = result.is_ok(), "upgrade-paths lookup");
            // The cache and the table change together, under the table's lock, so a forget
            // either comes first (and this answer, maybe from before the change, is not cached)
            // or after (and drops it).
            let mut in_flight = inner.in_flight();
            if in_flight
                .get(&site)
                .is_some_and(|(current, _)| *current == id)
            {
                if let (Ok(paths), Some(cache)) = (&result, &inner.cache) {
                    cache.insert(site.clone(), paths.clone());
                }
                in_flight.remove(&site);
            }
            drop(in_flight);
            result
        }
    }

    /// Waits for a lookup. The waiters drive it themselves (no task on the common path); one that
    /// goes away before the answer hands it to a task, so the others and the cache still get it.
    async fn wait(
        &self,
        site: &Site,
        id: u64,
        lookup: Lookup,
    ) -> Result<Arc<UpgradePaths>, LookupError> {
        let mut waiting = Waiting {
            inner: self.inner.clone(),
            site: site.clone(),
            id,
            lookup: Some(lookup.clone()),
        };
        let result = lookup.await;
        waiting.lookup = None;
        result
    }
}

/// A waiter that has not had its answer yet.
struct Waiting {
    inner: Arc<Inner>,
    site: Site,
    id: u64,
    lookup: Option<Lookup>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(lookup) = self.lookup.take() else {
            return;
        };
        // Leaves the table if the task ends without the answer: never run because its runtime is
        // shutting down, or no runtime at all. The next request then starts a new lookup.
        let leave = LeaveInFlight {
            inner: self.inner.clone(),
            site: self.site.clone(),
            id: self.id,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _leave = leave;
                let _ = lookup.await;
            });
        }
    }
}

impl Inner {
    fn forget(&self, site: &Site) {
        let mut in_flight = self.in_flight();
        in_flight.remove(site);
        if let Some(cache) = &self.cache {
            cache.invalidate(site);
        }
    }

    /// Forgets every site: forgets may have been missed.
    fn forget_all(&self) {
        let mut in_flight = self.in_flight();
        in_flight.clear();
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }

    /// Removes lookup `id` from the table, if it is still the one there.
    fn leave(&self, site: &Site, id: u64) {
        let mut in_flight = self.in_flight();
        if in_flight
            .get(site)
            .is_some_and(|(current, _)| *current == id)
        {
            in_flight.remove(site);
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Site, (u64, Lookup)>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a lookup from the table of lookups in flight when it is dropped.
struct LeaveInFlight {
    inner: Arc<Inner>,
    site: Site,
    id: u64,
}

impl Drop for LeaveInFlight {
    fn drop(&mut self) {
        self.inner.leave(&self.site, self.id);
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
