//! What the fake has seen, so tests can assert on upstream traffic.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the fake's counters, from [`FakeUpstream::stats`](super::FakeUpstream::stats).
///
/// The per-endpoint counters count every request routed to that endpoint, whatever it was
/// answered: refused, faulted or served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FakeStats {
    /// TCP connections accepted; compare with `requests` to check connection reuse.
    pub connections: u64,
    /// HTTP requests received, on any path.
    pub requests: u64,
    /// Requests to `GET /rest/v1.3/jpphp/{site}/upgrade-paths`.
    pub lookups: u64,
    /// Requests to `/rest/v1.3/jpphp/provision`.
    pub provisions: u64,
    /// Provisions that succeeded.
    pub provisioned: u64,
    /// Provisions answered `plan_downgrade_disallowed`: downgrades that got past the guard.
    /// Only provisions that reach the fake count: a downgrade the guard stopped is not a leak.
    pub leaks: u64,
    /// Provisions without a product (no `plan`, or `free`) that connected a site.
    pub connected: u64,
    /// Sites registered by their first provision (by URL).
    pub registered: u64,
    /// Requests to `/rest/v1.3/jpphp/{site}/partner-cancel`.
    pub cancels: u64,
    /// Cancellations that took a product off a site (`cancel-all` always counts).
    pub cancelled: u64,
    /// Requests to `/rest/v1.4/jpphp/{site}/status`.
    pub status_requests: u64,
    /// Requests to `GET /rest/v1.1/sites/{site}`, WordPress.com's public site lookup.
    pub site_lookups: u64,
    /// Requests to `/oauth2/token`.
    pub token_requests: u64,
    /// Requests answered (or dropped, or delayed) by an injected fault.
    pub faults: u64,
}

/// The live counters behind [`FakeStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) lookups: AtomicU64,
    pub(crate) provisions: AtomicU64,
    pub(crate) provisioned: AtomicU64,
    pub(crate) leaks: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) registered: AtomicU64,
    pub(crate) cancels: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) status_requests: AtomicU64,
    pub(crate) site_lookups: AtomicU64,
    pub(crate) token_requests: AtomicU64,
    pub(crate) faults: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> FakeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FakeStats {
            connections: get(&self.connections),
            requests: get(&self.requests),
            lookups: get(&self.lookups),
            provisions: get(&self.provisions),
            provisioned: get(&self.provisioned),
            leaks: get(&self.leaks),
            connected: get(&self.connected),
            registered: get(&self.registered),
            cancels: get(&self.cancels),
            cancelled: get(&self.cancelled),
            status_requests: get(&self.status_requests),
            site_lookups: get(&self.site_lookups),
            token_requests: get(&self.token_requests),
            faults: get(&self.faults),
        }
    }

    pub(crate) fn reset(&self) {
        for counter in [
            &self.connections,
            &self.requests,
            &self.lookups,
            &self.provisions,
            &self.provisioned,
            &self.leaks,
            &self.connected,
            &self.registered,
            &self.cancels,
            &self.cancelled,
            &self.status_requests,
            &self.site_lookups,
            &self.token_requests,
            &self.faults,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}
