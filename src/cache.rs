//! Cached, coalesced upgrade-paths lookups.
//!
//! A site's paths are reused until a request for that site is forwarded (the guard drops the
//! entry then, whatever the inner response) or the time to live passes. Concurrent lookups of one
//! site share one upstream call. Errors are never cached.
//!
//! Each lookup runs in a task of its own, so a caller that goes away does not abandon the others
//! waiting on the same call: the answer still arrives, serves them and fills the cache.
//!
//! The trade-off: a change made outside this process (a purchase on WordPress.com itself, another
//! partner process without a shared lock) is seen only when the entry expires. WordPress.com
//! still refuses a downgrade at provision time; the guard's job is that it never gets that far.

use crate::Site;
use crate::stats::GuardStats;
use crate::upstream::{LookupError, UpgradePaths, UpgradePathsClient};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
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
    in_flight: Mutex<HashMap<Site, Lookup>>,
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
                stats,
            }),
        }
    }

    /// The site's paths: from the cache, from a lookup in flight, or from a new upstream call.
    pub(crate) async fn upgrade_paths(
        &self,
        site: &Site,
    ) -> Result<Arc<UpgradePaths>, LookupError> {
        let inner = &self.inner;
        if let Some(paths) = inner.cache.as_ref().and_then(|cache| cache.get(site)) {
            inner.stats.cache_hit();
            tracing::trace!(%site, "upgrade paths from the cache");
            return Ok(paths);
        }
        let lookup = {
            let mut in_flight = inner.in_flight();
            match in_flight.get(site) {
                Some(lookup) => {
                    inner.stats.coalesced();
                    lookup.clone()
                }
                None => {
                    let lookup = self.start(site.clone());
                    in_flight.insert(site.clone(), lookup.clone());
                    lookup
                }
            }
        };
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

    fn start(&self, site: Site) -> Lookup {
        let inner = self.inner.clone();
        inner.stats.lookup();
        let task = tokio::spawn(async move {
            let result = inner.client.upgrade_paths(&site).await.map(Arc::new);
            tracing::debug!(%site, ok = result.is_ok(), "upgrade-paths lookup");
            // Fill the cache and leave the table in one step, so a request never misses both.
            let mut in_flight = inner.in_flight();
            if let (Ok(paths), Some(cache)) = (&result, &inner.cache) {
                cache.insert(site.clone(), paths.clone());
            }
            in_flight.remove(&site);
            result
        });
        async move {
            task.await
                .unwrap_or_else(|join_error| Err(LookupError::Transport(Arc::new(join_error))))
        }
        .boxed()
        .shared()
    }
}

impl Inner {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Site, Lookup>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
