use super::check::Config;
use super::layer::UpgradeGuardLayer;
use super::report::Reporter;
use super::shared::Shared;
use crate::cache::{DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL, Lookups};
use crate::catalogue::{Catalogue, UnjudgedProducts};
use crate::decision::{Mode, UnknownSites};
use crate::lock::{DEFAULT_LOCK_WAIT, LocalLocks, SiteAliases, SiteLocks, SiteNames};
use crate::peers::Peers;
use crate::recent::{DEFAULT_SETTLING_WINDOW, RecentProvisions};
use crate::request::RequestReader;
use crate::site::Site;
use crate::stats::GuardStats;
use crate::upstream::UpgradePathsClient;
use std::sync::Arc;
use std::time::Duration;

impl UpgradeGuardLayer {
    /// A layer asking `client` about sites, with every default: the provision API's sources, an
    /// in-process lock per site, a cache of upgrade paths. See [`builder`](Self::builder) to
    /// change the shared settings.
    pub fn new(client: UpgradePathsClient) -> Self {
        Self::builder(client).build()
    }

    /// A builder for the settings shared by every route: cache and site locks.
    pub fn builder(client: UpgradePathsClient) -> UpgradeGuardBuilder {
        UpgradeGuardBuilder::new(client)
    }
}

/// Builds an [`UpgradeGuardLayer`] with the settings every route of it shares: the lookup cache
/// and the site locks.
///
/// The cache keeps each site's upgrade paths until the time to live passes or the site is
/// *forgotten*: whenever a request for it is forwarded (whatever the inner response), when a
/// [`cancels`](UpgradeGuardLayer::cancels) route's work ends, on
/// [`forget`](UpgradeGuardLayer::forget), and when one of its [peers](crate::Peers) forgets
/// it. Errors are never cached. A cached answer only ever refuses: an upgrade is always
/// confirmed by a lookup made under the site's lock, so no cached answer can forward a
/// downgrade. Lookups of one site are shared by the requests that want them at once; once
/// started, a shared upstream call (a lookup, a token fetch) runs to its end even when every
/// request waiting for it goes away, so that its answer is not lost to the next one. This needs
/// a Tokio runtime, as reqwest does.
///
/// ```
/// use std::time::Duration;
/// use upgrade_guard::{UpgradeGuardLayer, UpgradePathsClient};
///
/// let client = UpgradePathsClient::builder().bearer_token("partner-token").build()?;
/// let guard = UpgradeGuardLayer::builder(client)
///     .cache_ttl(Duration::from_secs(10))
///     .cache_capacity(10_000)
///     .build();
/// # Ok::<(), upgrade_guard::BuildError>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct UpgradeGuardBuilder {
    client: UpgradePathsClient,
    cache_ttl: Duration,
    cache_capacity: u64,
    locks: Arc<dyn SiteLocks>,
    peers: Option<Arc<dyn Peers>>,
    aliases: SiteAliases,
    products: Vec<(String, String)>,
    covered: Vec<String>,
    settling_window: Duration,
}

impl UpgradeGuardBuilder {
    pub(super) fn new(client: UpgradePathsClient) -> Self {
        Self {
            client,
            cache_ttl: DEFAULT_CACHE_TTL,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            locks: Arc::new(LocalLocks::new()),
            peers: None,
            aliases: SiteAliases::default(),
            products: Vec::new(),
            covered: Vec::new(),
            settling_window: DEFAULT_SETTLING_WINDOW,
        }
    }

    /// How long a site's upgrade paths are reused; default 30 s. `Duration::ZERO` turns the cache
    /// off (concurrent lookups of one site are still coalesced). An entry is dropped early when a
    /// request for its site is forwarded.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How many sites' paths are kept at most; default 100,000. The names learned of sites (see
    /// [`SiteAliases`]) are kept for as many names.
    pub fn cache_capacity(mut self, sites: u64) -> Self {
        self.cache_capacity = sites;
        self
    }

    /// The per-site locks; default an in-process [`LocalLocks`]. Give every process of a
    /// multi-process deployment a lock on a shared engine, and the same [`peers`](Self::peers).
    pub fn site_locks(mut self, locks: impl SiteLocks) -> Self {
        self.locks = Arc::new(locks);
        self
    }

    /// The other processes guarding the same sites: told of the sites this one forgets and of
    /// the provisions it forwards, and telling it theirs (see [`Peers`]); default none, for a
    /// guard that runs as one process. A deployment of several processes that shares its locks
    /// must share its peers too: without them, a provision forwarded by one process does not
    /// make the others' not-yet-updated answers stale, nor a cancel their cached refusals.
    ///
    /// ```no_run
    /// # #[cfg(feature = "redis")]
    /// # async fn run(client: upgrade_guard::UpgradePathsClient) -> Result<(), upgrade_guard::RedisBuildError> {
    /// use upgrade_guard::{RedisLocks, UpgradeGuardLayer};
    ///
    /// let redis = RedisLocks::builder("redis://redis.internal:6379/0").build()?;
    /// let guard = UpgradeGuardLayer::builder(client)
    ///     .site_locks(redis.clone())
    ///     .peers(redis)
    ///     .build();
    /// # Ok(()) }
    /// ```
    pub fn peers(mut self, peers: impl Peers) -> Self {
        self.peers = Some(Arc::new(peers));
        self
    }

    /// How the guard tells that a blog ID and a URL name one site, so that provisions naming it
    /// both ways are serialized together; default [`SiteAliases::Resolve`] (WordPress.com's
    /// public site lookup, asked once per name).
    pub fn site_aliases(mut self, aliases: SiteAliases) -> Self {
        self.aliases = aliases;
        self
    }

    /// Says that `product` belongs to `family`, for a product WordPress.com's partner docs do not
    /// name (the documented ones are known: the plans in `jetpack-plans`, the two backups in
    /// `jetpack-backup`, `jetpack-scan` and `jetpack-anti-spam` each in its own). Products are
    /// also learned from every upgrade-paths answer read (a product listed under a family
    /// belongs to it). A product whose family is [covered](Self::covered_family) is refused when
    /// an answer does not list it; see [`UnjudgedProducts`].
    ///
    /// ```
    /// use upgrade_guard::{UpgradeGuardLayer, UpgradePathsClient};
    ///
    /// let client = UpgradePathsClient::builder().bearer_token("partner-token").build()?;
    /// let guard = UpgradeGuardLayer::builder(client)
    ///     .product_family("jetpack-security-t1", "jetpack-security")
    ///     .covered_family("jetpack-security")
    ///     .build();
    /// # Ok::<(), upgrade_guard::BuildError>(())
    /// ```
    pub fn product_family(mut self, product: impl Into<String>, family: impl Into<String>) -> Self {
        self.products.push((product.into(), family.into()));
        self
    }

    /// Says that WordPress.com's upgrade-paths answers speak about `family`, so that an answer
    /// that does not list a product of it refuses the product (409), from the first answer on.
    /// `jetpack-plans` and `jetpack-backup` always are; any other family is covered once an
    /// answer has listed it. Until then a product of it is not judged: see [`UnjudgedProducts`],
    /// whose `Refuse` is the safe setting where that matters.
    pub fn covered_family(mut self, family: impl Into<String>) -> Self {
        self.covered.push(family.into());
        self
    }

    /// How long the guard remembers a provision it forwarded; default 60 s, `Duration::ZERO`
    /// remembers nothing.
    ///
    /// WordPress.com grants products through its own jobs, so an upgrade-paths answer read right
    /// after a provision may not show it yet. While the guard remembers a provision of product P
    /// for a site (answered 2xx, or with an unknown outcome: the inner service failed, or was
    /// given up on past the [ceiling](UpgradeGuardLayer::detached_ceiling)), an answer for the
    /// site that still lists P (or does not know the site) is stale: the guard judges nothing
    /// from it and asks again, pausing briefly, within the route's lock wait, then answers 503
    /// `provision_settling`. A provision of P itself meanwhile is 409 `already_provisioned`; a
    /// cancel answered 2xx forgets what is remembered of the site. Set it above the longest time
    /// WordPress.com takes to show a grant.
    pub fn settling_window(mut self, window: Duration) -> Self {
        self.settling_window = window;
        self
    }

    /// The layer, with the provision API's defaults for where the site and the product come
    /// from; configure those per route on clones of it.
    pub fn build(self) -> UpgradeGuardLayer {
        let stats = GuardStats::default();
        let lookups = Lookups::new(
            self.client,
            self.cache_ttl,
            self.cache_capacity,
            stats.clone(),
        );
        let names = Arc::new(SiteNames::new(self.aliases, self.cache_capacity));
        // Sites other processes forget (a cancel forwarded there) are forgotten here too, under
        // every name known here: their cached paths, and the provisions remembered of them.
        // When some forgets may have been missed (`None`), every cached path goes, but no
        // provision remembered: forgetting one would trust an answer that does not show it yet.
        let recent = Arc::new(RecentProvisions::new(
            self.settling_window,
            self.peers.clone(),
        ));
        if let Some(peers) = &self.peers {
            let forget_paths = lookups.forget_listener();
            let (recent, names) = (Arc::downgrade(&recent), Arc::downgrade(&names));
            peers.listen_for_forgets(Arc::new(move |site: Option<&Site>| {
                let (Some(site), Some(recent), Some(names)) =
                    (site, recent.upgrade(), names.upgrade())
                else {
                    return forget_paths(site);
                };
                for name in names.known(site).iter() {
                    forget_paths(Some(name));
                    recent.forget_site(name);
                }
            }));
        }
        let shared = Shared {
            lookups,
            locks: self.locks,
            names,
            catalogue: Catalogue::new(self.products, self.covered),
            recent,
            stats: stats.clone(),
        };
        UpgradeGuardLayer::from_config(Config {
            shared: Arc::new(shared),
            reader: RequestReader::default(),
            lock_wait: DEFAULT_LOCK_WAIT,
            mode: Mode::default(),
            reporter: Reporter {
                stats,
                on_decision: None,
            },
            require_product: false,
            unknown_sites: UnknownSites::default(),
            unjudged: UnjudgedProducts::default(),
            cancels: false,
            detached: Default::default(),
        })
    }
}
