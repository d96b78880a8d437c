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
//! list the product; an upgrade is always confirmed by a lookup that started after the request
//! took the site's lock (never by one started earlier, which may have read the site while the
//! previous provision was still under way). So whatever a cached entry says, it can make the
//! guard answer 409, never forward a downgrade. Hot refused requests (a partner's tooling
//! retrying a downgrade) cost no upstream call; an allowed provision costs exactly one. And an
//! answer that allows the product of the request that asked for it is not cached at all: that
//! request forwards, and forgets the site as it does, so the entry would only be written to be
//! dropped (the other requests waiting for the lookup get its answer all the same).
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
//!   Across processes, `RedisLocks` carries the site of each cancel answered 2xx, and each site
//!   `forget` is told of, to every other process (see
//!   [`Peers::announce_forget`](crate::Peers::announce_forget)). A refusal answered
//!   while a cancel of the same site is still under way reflects the site before it; no refusal
//!   is cached past the cancel's end.
//! - A **first provision** (a site WordPress.com does not know yet) caches nothing: the lookup
//!   failed, and errors are never cached. The next request for the site looks it up again and
//!   sees what the first provision left.
//!
//! **Shared calls run to their end.** The crate shares two kinds of upstream call between the
//! callers that want the same thing: upgrade-paths lookups (here) and token fetches
//! ([`TokenSource`](crate::TokenSource)). Both follow one rule: once started, a shared call runs
//! to its end even when every caller waiting for it goes away, so its answer still reaches the
//! cache (or the token state) and nobody who joins later inherits a call that stalled half-way
//! (its deadline passing while nobody polled it). Lookups are the hot path: the request that
//! starts one drives it itself, in its own task and with its own waker (no task per lookup, no
//! shared future between it and its call), and if it goes away before the answer it hands the
//! lookup to a task of its own; the requests that join it wait for the answer to be published,
//! and never past the lookup's deadline: should the request that started it stop polling it
//! without going away (a caller that parks a partner's view, say), they end with a timeout.
//! Token fetches are rare and simply run in a task. The guard therefore needs a Tokio runtime,
//! as reqwest does.
//!
//! Why not moka's own coalescing (`try_get_with`): it shares only among callers inside that one
//! call, and when the caller evaluating the shared future goes away its work is dropped and
//! another waiter starts over; it has no way for a refusal check to *join* a lookup under way
//! without starting one, to keep a lookup from being joined by a request that must see the site
//! as it is after the last provision (see `LookupMark`), to disown lookups when a site is
//! forgotten, or to keep answers fetched with different callers' tokens apart. moka stays the
//! cache; the table of lookups in flight is ours.
//!
//! **Whose answer.** With a client that uses the caller's token
//! ([`UpgradePathsClientBuilder::caller_token`](crate::UpgradePathsClientBuilder::caller_token)),
//! an answer is only ever given to requests carrying the token that fetched it: WordPress.com
//! answers each token as it sees fit (or refuses it), and a caller must not learn, or be allowed
//! by, what another caller's token was told. The cache stays keyed by site, so forgetting a site
//! stays one key: an entry remembers the token that fetched it, and a lookup with another token
//! neither uses it (nor its refusals) nor joins the other token's lookup in flight; it makes its
//! own, whose answer then replaces the entry. Tokens are compared exactly (in a time that depends
//! only on their lengths), so no two tokens are ever taken for one. A client with a token of its
//! own tags every entry as the partner's.

use crate::peers::ForgetListener;
use crate::site::{Site, SiteHashing};
use crate::stats::GuardStats;
use crate::upstream::{LookupError, Token, UpgradePaths, UpgradePathsClient};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a site's paths are reused by default.
pub(crate) const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// How many sites' paths are kept by default.
pub(crate) const DEFAULT_CACHE_CAPACITY: u64 = 100_000;

type Answer = Result<Arc<UpgradePaths>, LookupError>;

/// Whose token fetched an answer (or is fetching it).
#[derive(Clone)]
enum Fetcher {
    /// The client's own: the partner's token.
    Partner,
    /// A caller's own token, for a client built with `caller_token()`.
    Caller(Token),
}

impl Fetcher {
    fn is(&self, other: &Fetcher) -> bool {
        match (self, other) {
            (Self::Partner, Self::Partner) => true,
            (Self::Caller(a), Self::Caller(b)) => a.same_secret(b),
            _ => false,
        }
    }
}

/// A cached answer and whose token fetched it.
#[derive(Clone)]
struct Entry {
    fetched_by: Fetcher,
    paths: Arc<UpgradePaths>,
}

/// Where lookups stood at one moment: see [`Lookups::mark`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct LookupMark(u64);

/// A lookup under way, tagged so a finished lookup removes only its own entry. Ids grow with
/// time, so an id also tells whether the lookup started before or after a [`LookupMark`].
#[derive(Clone)]
struct InFlight {
    id: u64,
    fetched_by: Fetcher,
    flight: Arc<Flight>,
}

/// Where a lookup's answer is published for the requests that joined it. The request that
/// started the lookup gets the answer as its own future's output, and does not wait here.
struct Flight {
    answer: OnceLock<Answer>,
    published: Notify,
    /// When a request that joined stops waiting: see [`answer`](Self::answer).
    deadline: Instant,
}

/// How long past the lookup's own deadline a request that joined it still waits: the lookup
/// ends by its deadline, with an answer or an error, and publishes it at once.
const JOINED_GRACE: Duration = Duration::from_millis(250);

impl Flight {
    fn new(lookup_timeout: Duration) -> Self {
        Self {
            answer: OnceLock::new(),
            published: Notify::new(),
            deadline: Instant::now() + lookup_timeout + JOINED_GRACE,
        }
    }

    /// Waits for the answer (a request that joined the lookup). The request that started the
    /// lookup drives it; should that request's task stop polling it without going away (a
    /// caller parking a partner's view, say), a request that joined still ends by the lookup's
    /// deadline, with [`LookupError::Timeout`].
    async fn answer(&self) -> Answer {
        let published = async {
            loop {
                let published = self.published.notified();
                let mut published = std::pin::pin!(published);
                // Registered before the answer is read: a publication in between is not missed.
                published.as_mut().enable();
                if let Some(answer) = self.answer.get() {
                    return answer.clone();
                }
                published.await;
            }
        };
        tokio::time::timeout_at(self.deadline, published)
            .await
            .unwrap_or(Err(LookupError::Timeout))
    }

    fn publish(&self, answer: Answer) {
        // Only the first answer counts (a lookup publishes once; an abandoned one, see
        // `Publisher`, only if it has not).
        if self.answer.set(answer).is_ok() {
            self.published.notify_waiters();
        }
    }
}

/// The client behind a cache and a table of lookups in flight.
#[derive(Clone)]
pub(crate) struct Lookups {
    inner: Arc<Inner>,
}

struct Inner {
    client: UpgradePathsClient,
    cache: Option<moka::sync::Cache<Site, Entry, SiteHashing>>,
    /// The lookups under way for each site: one per token asking (one in all with the partner's);
    /// a newer one for a token disowns the older, see `upgrade_paths`.
    in_flight: Mutex<HashMap<Site, Vec<InFlight>, SiteHashing>>,
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
                // A site carries its hash: no second SipHash per read or invalidation.
                .build_with_hasher(SiteHashing)
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

    /// The token a request's lookups are to use: the request's bearer token when the client
    /// uses the caller's token, else `None` (the client's own).
    pub(crate) fn caller_token(&self, headers: &http::HeaderMap) -> Option<Token> {
        if self.inner.client.uses_caller_token() {
            Token::from_headers(headers)
        } else {
            None
        }
    }

    /// Whose token looks the site up for a request that carries `caller`
    /// ([`caller_token`](Self::caller_token)).
    fn fetcher(&self, caller: Option<&Token>) -> Result<Fetcher, LookupError> {
        if !self.inner.client.uses_caller_token() {
            return Ok(Fetcher::Partner);
        }
        caller
            .cloned()
            .map(Fetcher::Caller)
            .ok_or(LookupError::MissingToken)
    }

    /// A refusal of `product` for `site` known without a lookup of its own: the cache's, or the
    /// answer of a lookup already under way, fetched with the same token as this request's.
    /// `Err` when the request has no token to look up with (a client using the caller's), or
    /// when the lookup under way with its token was refused that token.
    ///
    /// A refusal needs neither a lookup of its own nor the site's lock: a provision in progress
    /// can only take more products off the site's paths, so a refusal stays true; a cancel in
    /// progress may make it untrue, and forgets the site when it has finished.
    pub(crate) async fn known_refusal(
        &self,
        site: &Site,
        product: &str,
        caller: Option<&Token>,
    ) -> Result<Option<Arc<UpgradePaths>>, LookupError> {
        let fetcher = self.fetcher(caller)?;
        if let Some(paths) = self.cached_refusal(site, product, &fetcher) {
            return Ok(Some(paths));
        }
        let Some(under_way) = self.inner.under_way(site, &fetcher) else {
            return Ok(None);
        };
        self.inner.stats.coalesced();
        match under_way.flight.answer().await {
            Ok(paths) => Ok((!paths.allows(product)).then_some(paths)),
            // This very token was refused a moment ago: asking again, after queueing for the
            // site behind its provisions, would only be refused again.
            Err(refused @ LookupError::CallerRefused(_)) => Err(refused),
            Err(_) => Ok(None),
        }
    }

    fn cached_refusal(
        &self,
        site: &Site,
        product: &str,
        fetcher: &Fetcher,
    ) -> Option<Arc<UpgradePaths>> {
        let inner = &self.inner;
        let entry = inner.cache.as_ref()?.get(site)?;
        if !entry.fetched_by.is(fetcher) || entry.paths.allows(product) {
            return None;
        }
        inner.stats.cache_hit();
        tracing::trace!(%site, product, "refused from the cache");
        Some(entry.paths)
    }

    /// A mark for [`upgrade_paths`](Self::upgrade_paths): lookups started from now on are at or
    /// past it, lookups already under way before it.
    pub(crate) fn mark(&self) -> LookupMark {
        // Under the table's lock, which every new lookup takes its id under: ordered against
        // them all.
        let _table = self.inner.in_flight();
        LookupMark(self.inner.next_lookup.load(Ordering::SeqCst))
    }

    /// Paths that may decide on `product` for `site`: a cached answer when it refuses the
    /// product, otherwise the answer of a lookup in flight or of a new upstream call; each only
    /// when fetched with the same token as this request's.
    ///
    /// Only a lookup started at or after `fresh_from` is joined. A request that holds the site
    /// passes the mark taken when it got the lock: a lookup started before then (a dashboard's
    /// [`current`](Self::current), another request's check abandoned mid-way) may have read the
    /// site while the previous provision was still under way, and would show products that
    /// provision took away. One started since can only have read the site as it is now.
    pub(crate) async fn upgrade_paths(
        &self,
        site: &Site,
        product: &str,
        caller: Option<&Token>,
        fresh_from: LookupMark,
    ) -> Result<Arc<UpgradePaths>, LookupError> {
        let fetcher = self.fetcher(caller)?;
        if let Some(paths) = self.cached_refusal(site, product, &fetcher) {
            return Ok(paths);
        }
        self.look_up(site, product, fetcher, fresh_from).await
    }

    /// The answer of a lookup in flight started at or after `fresh_from`, or of a new upstream
    /// call, fetched with `fetcher`'s token.
    async fn look_up(
        &self,
        site: &Site,
        product: &str,
        fetcher: Fetcher,
        fresh_from: LookupMark,
    ) -> Result<Arc<UpgradePaths>, LookupError> {
        let lead = 'table: {
            let mut in_flight = self.inner.in_flight();
            let lookups = in_flight.entry(site.clone()).or_default();
            let joinable = |l: &&InFlight| l.fetched_by.is(&fetcher) && l.id >= fresh_from.0;
            if let Some(under_way) = lookups.iter().find(joinable) {
                self.inner.stats.coalesced();
                break 'table Err(under_way.flight.clone());
            }
            // A lookup of this token older than the mark may still be under way: disown it, so
            // its answer (maybe from before the last provision, made in another process) never
            // lands in the cache over this one's. Its waiters still get it.
            lookups.retain(|l| !l.fetched_by.is(&fetcher));
            let id = self.inner.next_lookup.fetch_add(1, Ordering::Relaxed);
            let flight = Arc::new(Flight::new(self.inner.client.lookup_timeout()));
            lookups.push(InFlight {
                id,
                fetched_by: fetcher.clone(),
                flight: flight.clone(),
            });
            let publisher = Publisher {
                inner: self.inner.clone(),
                site: site.clone(),
                id,
                flight,
                finished: false,
            };
            Ok(Box::pin(self.lookup(publisher, fetcher, product.into())))
        };
        match lead {
            Ok(lookup) => lead_to_the_end(lookup).await,
            // Another request's lookup, started after the mark: its answer.
            Err(joined) => joined.answer().await,
        }
    }

    /// The site's paths for a partner's own view: the cached answer when there is one, otherwise
    /// the answer of a lookup in flight or of a new upstream call. A view, not a decision: it may
    /// list more than WordPress.com would now (a provision under way, or made in another
    /// process) or less (a cancel the guard has not been told of).
    pub(crate) async fn current(
        &self,
        site: &Site,
        caller: Option<&Token>,
    ) -> Result<Arc<UpgradePaths>, LookupError> {
        let fetcher = self.fetcher(caller)?;
        let cached = self.inner.cache.as_ref().and_then(|cache| cache.get(site));
        if let Some(entry) = cached.filter(|entry| entry.fetched_by.is(&fetcher)) {
            self.inner.stats.cache_hit();
            return Ok(entry.paths);
        }
        // The cache was read just above: a lookup. A partner's view may join any lookup under
        // way: it decides nothing.
        self.look_up(site, "", fetcher, LookupMark(0)).await
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

    /// One upstream call; when it completes it leaves the table, publishes its answer to the
    /// requests that joined it, and, unless the answer allows `product` (the asking request's,
    /// which then forwards and forgets the site), fills the cache, whoever drove it.
    fn lookup(
        &self,
        publisher: Publisher,
        fetcher: Fetcher,
        product: Box<str>,
    ) -> impl Future<Output = Answer> + Send + 'static {
        self.inner.stats.lookup();
        async move {
            let caller = match &fetcher {
                Fetcher::Partner => None,
                Fetcher::Caller(token) => Some(token),
            };
            let mut publisher = publisher;
            let (inner, site, id) = (&publisher.inner, &publisher.site, publisher.id);
            let result = inner.client.lookup(site, caller).await;
            log_lookup(site, result.is_ok());
            // The cache and the table change together, under the table's lock, so a forget
            // either comes first (and this answer, maybe from before the change, is not cached)
            // or after (and drops it).
            let mut in_flight = inner.in_flight();
            let lookups = in_flight.get_mut(site);
            if let Some(lookups) = lookups.filter(|lookups| lookups.iter().any(|l| l.id == id)) {
                if let (Ok(paths), Some(cache)) = (&result, &inner.cache)
                    && !paths.allows(&product)
                {
                    let entry = Entry {
                        fetched_by: fetcher.clone(),
                        paths: paths.clone(),
                    };
                    cache.insert(site.clone(), entry);
                }
                lookups.retain(|under_way| under_way.id != id);
                if lookups.is_empty() {
                    in_flight.remove(site);
                }
            }
            drop(in_flight);
            publisher.finish(&result);
            result
        }
    }
}

/// Logs a lookup's end. Out of line, as every log of this module's futures: a `tracing` macro
/// expanded inside an `async` block doubled the boxed lookup's size (1,640 bytes against 808
/// without it), past the allocator's per-thread cache of small blocks (see BENCHMARKS.md).
fn log_lookup(site: &Site, ok: bool) {
    tracing::debug!(%site, ok, "upgrade-paths lookup");
}

/// Drives a lookup this request started to its answer. Should the request go away first, the
/// lookup runs on in a task of its own, so the requests that joined it and the cache still get
/// its answer.
async fn lead_to_the_end(lookup: BoxFuture<'static, Answer>) -> Answer {
    struct Leading(Option<BoxFuture<'static, Answer>>);

    impl Drop for Leading {
        fn drop(&mut self) {
            // Without a runtime (the request dropped outside one, or its runtime shutting
            // down), or when the lookup itself panicked, the lookup is dropped: its `Publisher`
            // then frees its place in the table and answers whoever joined it with an error.
            if let (Some(lookup), Ok(runtime), false) = (
                self.0.take(),
                tokio::runtime::Handle::try_current(),
                std::thread::panicking(),
            ) {
                runtime.spawn(lookup);
            }
        }
    }

    let mut leading = Leading(Some(lookup));
    // Polled in place with this task's own waker: the answer wakes nobody else.
    let answer = leading.0.as_mut().expect("set above").await;
    leading.0 = None;
    answer
}

/// A lookup's place in the table and its publication. When a lookup ends without an answer (its
/// future dropped unfinished: its runtime went away), it leaves the table, so the next request
/// starts a new lookup, and the requests that joined it get an error rather than waiting on.
struct Publisher {
    inner: Arc<Inner>,
    site: Site,
    id: u64,
    flight: Arc<Flight>,
    finished: bool,
}

impl Publisher {
    /// Publishes the answer of a lookup that has left the table.
    fn finish(&mut self, answer: &Answer) {
        self.finished = true;
        // Out of the table, the flight is held only by the requests that joined the lookup:
        // none, most often, and then there is nobody to publish to.
        if Arc::strong_count(&self.flight) > 1 {
            self.flight.publish(answer.clone());
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.inner.leave(&self.site, self.id);
        let abandoned = std::io::Error::other("the lookup was dropped before its answer");
        self.flight
            .publish(Err(LookupError::Transport(Arc::new(abandoned))));
    }
}

impl Inner {
    fn forget(&self, site: &Site) {
        let mut in_flight = self.in_flight();
        // Most forgets find no lookup under way at all: then no need to hash the site.
        if !in_flight.is_empty() {
            in_flight.remove(site);
        }
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

    /// The lookup of `site` under way with `fetcher`'s token, if there is one.
    fn under_way(&self, site: &Site, fetcher: &Fetcher) -> Option<InFlight> {
        self.in_flight()
            .get(site)?
            .iter()
            .find(|under_way| under_way.fetched_by.is(fetcher))
            .cloned()
    }

    /// Removes lookup `id` from the table, if it is still there.
    fn leave(&self, site: &Site, id: u64) {
        let mut in_flight = self.in_flight();
        let Some(lookups) = in_flight.get_mut(site) else {
            return;
        };
        lookups.retain(|under_way| under_way.id != id);
        if lookups.is_empty() {
            in_flight.remove(site);
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Site, Vec<InFlight>, SiteHashing>> {
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

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use super::*;
    use crate::fake::{Endpoint, FakeSite, FakeUpstream, Fault};
    use crate::upstream::UpgradePathsClientBuilder;

    async fn setup() -> (FakeUpstream, Lookups) {
        setup_with(|client| client).await
    }

    /// A fake with site 7, and lookups through a client `configure`d further.
    async fn setup_with(
        configure: impl FnOnce(UpgradePathsClientBuilder) -> UpgradePathsClientBuilder,
    ) -> (FakeUpstream, Lookups) {
        let fake = FakeUpstream::builder()
            .site(FakeSite::new(7))
            .start()
            .await
            .unwrap();
        let client = UpgradePathsClient::builder()
            .base_url(fake.url())
            .bearer_token(fake.token());
        let client = configure(client).build().unwrap();
        let lookups = Lookups::new(
            client,
            DEFAULT_CACHE_TTL,
            DEFAULT_CACHE_CAPACITY,
            GuardStats::default(),
        );
        (fake, lookups)
    }

    fn in_flight(lookups: &Lookups) -> usize {
        lookups.inner.in_flight().len()
    }

    /// The table of lookups in flight holds nothing once no lookup is under way: not after an
    /// answer, not after every waiter went away, not after a forget.
    #[tokio::test]
    async fn the_table_of_lookups_in_flight_empties() {
        let (fake, lookups) = setup().await;
        let site = Site::parse("7").unwrap();
        let paths = lookups
            .upgrade_paths(&site, "not-a-product", None, lookups.mark())
            .await
            .unwrap();
        assert!(!paths.allows("not-a-product"));
        assert_eq!(in_flight(&lookups), 0);

        fake.inject(
            Endpoint::UpgradePaths,
            Fault::Delay(Duration::from_millis(100)),
        )
        .always();
        lookups.forget(&site);
        let abandoned = lookups.upgrade_paths(&site, "not-a-product", None, lookups.mark());
        let gave_up = tokio::time::timeout(Duration::from_millis(10), abandoned).await;
        assert!(gave_up.is_err());
        assert_eq!(in_flight(&lookups), 1, "the lookup runs on in a task");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while in_flight(&lookups) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the lookup ended");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }

        // The abandoned lookup's refusal is cached now: forgotten, so the next one looks up.
        lookups.forget(&site);
        let forgotten = tokio::spawn({
            let (lookups, site) = (lookups.clone(), site.clone());
            async move {
                lookups
                    .upgrade_paths(&site, "not-a-product", None, lookups.mark())
                    .await
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while in_flight(&lookups) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the lookup started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lookups.forget(&site);
        assert_eq!(in_flight(&lookups), 0, "a forget disowns the lookup");
        assert!(forgotten.await.unwrap().is_ok(), "its waiter still gets it");
        assert_eq!(in_flight(&lookups), 0);
    }

    /// A lookup whose runtime goes away before its answer (so nobody can run it on) frees its
    /// place in the table, and the requests that joined it get an error instead of waiting for
    /// ever.
    #[tokio::test]
    async fn a_lookup_dropped_unfinished_answers_who_joined_it() {
        let (fake, lookups) = setup().await;
        let site = Site::parse("7").unwrap();
        fake.inject(
            Endpoint::UpgradePaths,
            Fault::Delay(Duration::from_secs(30)),
        )
        .always();
        let mark = lookups.mark();
        let elsewhere = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        elsewhere.spawn({
            let (lookups, site) = (lookups.clone(), site.clone());
            async move { lookups.upgrade_paths(&site, "x", None, mark).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while in_flight(&lookups) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the lookup started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut joined = std::pin::pin!(lookups.upgrade_paths(&site, "x", None, mark));
        assert!(futures_util::poll!(joined.as_mut()).is_pending());

        elsewhere.shutdown_background();
        let answer = tokio::time::timeout(Duration::from_secs(10), joined)
            .await
            .expect("the request that joined is answered");
        assert!(matches!(answer, Err(LookupError::Transport(_))));
        assert_eq!(in_flight(&lookups), 0);
    }

    /// A request that joined a lookup is not held past the lookup's deadline by a request that
    /// started it and then stopped polling it (without going away).
    #[tokio::test]
    async fn a_joined_lookup_ends_by_its_deadline_whoever_drives_it() {
        let (fake, lookups) =
            setup_with(|client| client.lookup_timeout(Duration::from_millis(200))).await;
        fake.inject(
            Endpoint::UpgradePaths,
            Fault::Delay(Duration::from_secs(30)),
        )
        .always();
        let site = Site::parse("7").unwrap();
        let mark = lookups.mark();
        let mut started = std::pin::pin!(lookups.upgrade_paths(&site, "x", None, mark));
        assert!(futures_util::poll!(started.as_mut()).is_pending());
        // `started` is kept, and never polled again.
        let joined = lookups.upgrade_paths(&site, "x", None, mark);
        let answer = tokio::time::timeout(Duration::from_secs(10), joined)
            .await
            .expect("the request that joined is answered");
        assert!(matches!(answer, Err(LookupError::Timeout)));
    }

    /// An answer that allows the asking request's product is not cached (that request forwards
    /// and forgets the site); one that refuses it is.
    #[tokio::test]
    async fn only_refusals_are_written_to_the_cache() {
        let (_fake, lookups) = setup().await;
        let site = Site::parse("7").unwrap();
        let cache = lookups.inner.cache.as_ref().unwrap();
        let allowed = lookups
            .upgrade_paths(&site, "jetpack-scan", None, lookups.mark())
            .await
            .unwrap();
        assert!(allowed.allows("jetpack-scan"));
        assert!(cache.get(&site).is_none());
        let refused = lookups
            .upgrade_paths(&site, "not-a-product", None, lookups.mark())
            .await
            .unwrap();
        assert!(!refused.allows("not-a-product"));
        assert!(cache.get(&site).is_some());
        let known = lookups
            .known_refusal(&site, "not-a-product", None)
            .await
            .unwrap();
        assert!(known.is_some(), "the next refusal comes from the cache");
    }
}
