//! Numbers a partner can read: lookups, cache hits, coalesced waits, lock waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A live handle on a guard's counters, shared by every clone of its layer.
///
/// ```
/// # use upgrade_guard::{UpgradeGuardLayer, UpgradePathsClient};
/// # let client = UpgradePathsClient::builder().bearer_token("t").build()?;
/// let guard = UpgradeGuardLayer::new(client);
/// let stats = guard.stats();
/// // … later, e.g. in a metrics exporter:
/// let now = stats.snapshot();
/// println!("{} lookups, {} answered from the cache", now.lookups, now.cache_hits);
/// # Ok::<(), upgrade_guard::BuildError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct GuardStats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    lookups: AtomicU64,
    cache_hits: AtomicU64,
    coalesced: AtomicU64,
    lock_waits: AtomicU64,
    lock_wait_micros: AtomicU64,
    site_busy: AtomicU64,
    forwarded: AtomicU64,
    rejected: AtomicU64,
    detached: AtomicU64,
}

/// The counters at one moment; see [`GuardStats::snapshot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Upstream upgrade-paths calls made.
    pub lookups: u64,
    /// Requests answered from the cache, without an upstream call.
    pub cache_hits: u64,
    /// Requests that joined a lookup already in flight for their site.
    pub coalesced: u64,
    /// Requests that had to wait for another provision of their site.
    pub lock_waits: u64,
    /// Total time spent in those waits.
    pub lock_wait_time: Duration,
    /// Requests answered `site_busy` after waiting too long.
    pub site_busy: u64,
    /// Requests forwarded to the inner service.
    pub forwarded: u64,
    /// Requests answered by the guard itself (any rejection).
    pub rejected: u64,
    /// Forwarded requests whose client went away, finished by the guard alone (each also
    /// counted in `forwarded`).
    pub detached: u64,
}

impl GuardStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &*self.counters;
        StatsSnapshot {
            lookups: c.lookups.load(Relaxed),
            cache_hits: c.cache_hits.load(Relaxed),
            coalesced: c.coalesced.load(Relaxed),
            lock_waits: c.lock_waits.load(Relaxed),
            lock_wait_time: Duration::from_micros(c.lock_wait_micros.load(Relaxed)),
            site_busy: c.site_busy.load(Relaxed),
            forwarded: c.forwarded.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            detached: c.detached.load(Relaxed),
        }
    }

    pub(crate) fn lookup(&self) {
        self.counters.lookups.fetch_add(1, Relaxed);
    }

    pub(crate) fn cache_hit(&self) {
        self.counters.cache_hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn coalesced(&self) {
        self.counters.coalesced.fetch_add(1, Relaxed);
    }

    pub(crate) fn lock_waited(&self, waited: Duration) {
        self.counters.lock_waits.fetch_add(1, Relaxed);
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.counters.lock_wait_micros.fetch_add(micros, Relaxed);
    }

    pub(crate) fn site_busy(&self) {
        self.counters.site_busy.fetch_add(1, Relaxed);
    }

    pub(crate) fn forwarded(&self) {
        self.counters.forwarded.fetch_add(1, Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.counters.rejected.fetch_add(1, Relaxed);
    }

    pub(crate) fn detached(&self) {
        self.counters.detached.fetch_add(1, Relaxed);
    }
}
