use super::check::Config;
use super::detached::Detached;
use crate::catalogue::UnjudgedProducts;
use crate::decision::{DecisionReport, Mode, UnknownSites};
use crate::request::Source;
use crate::site::Site;
use crate::stats::GuardStats;
use crate::upstream::{LookupError, Token, UpgradePaths, UpgradePathsClient};
use std::sync::Arc;
use std::time::Duration;

/// Wraps a provision handler in an [`UpgradeGuard`](super::UpgradeGuard). Configured per route.
///
/// Build **one** layer per process, then a clone of it per route, each saying where that route
/// names the site and the product. Clones share the client, the lookup cache and the per-site
/// locks, so a provision through one route is serialized with, and invalidates the cache of,
/// provisions of the same site through any other. Two layers built separately share nothing.
///
/// Defaults follow WordPress.com's provision API: the site from the body field `siteurl` (a URL,
/// a domain or a blog ID), the product from the body field `plan`, a body limit of
/// 64 KiB.
///
/// ```
/// use upgrade_guard::{Source, UpgradeGuardLayer, UpgradePathsClient};
///
/// let client = UpgradePathsClient::builder().bearer_token("partner-token").build()?;
///
/// // The provision API's own form.
/// let provision = UpgradeGuardLayer::new(client.clone());
/// // `POST /sites/{site}/plans` with a JSON or form body holding `plan`.
/// let plans = UpgradeGuardLayer::new(client)
///     .site(Source::path("/sites/{site}/plans", "site"))
///     .product(Source::field("plan"));
/// # Ok::<(), upgrade_guard::BuildError>(())
/// ```
///
/// What it does, against the fake upstream (`fake`, feature `test-util`): a site holding
/// Professional gets no Realtime Backups, and the handler never sees the request.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use tower::{Layer, ServiceExt, service_fn};
/// use upgrade_guard::fake::{FakeSite, FakeUpstream};
/// use upgrade_guard::{GuardBody, UpgradeGuardLayer, UpgradePathsClient};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let fake = FakeUpstream::builder()
///     .site(FakeSite::new(1003).holding(["professional"]))
///     .start()
///     .await?;
/// let client = UpgradePathsClient::builder()
///     .base_url(fake.url())
///     .bearer_token(fake.token())
///     .build()?;
/// // Your provision handler (here, one that answers 200 to whatever reaches it).
/// let handler = service_fn(|_: Request<GuardBody<Full<Bytes>>>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::from("provisioned")))
/// });
/// let guarded = UpgradeGuardLayer::new(client).layer(handler);
///
/// let request = Request::post("/rest/v1.3/jpphp/provision")
///     .header("content-type", "application/x-www-form-urlencoded")
///     .body(Full::<Bytes>::from("siteurl=1003&plan=jetpack-backup-realtime&local_user=admin"))?;
/// let response = guarded.oneshot(request).await?;
/// // The guard's own answer: the handler was never called.
/// assert_eq!(response.status(), StatusCode::CONFLICT);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct UpgradeGuardLayer {
    pub(super) config: Arc<Config>,
}

impl UpgradeGuardLayer {
    pub(super) fn from_config(config: Config) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The counters of this layer and all its clones.
    pub fn stats(&self) -> GuardStats {
        self.config.shared.stats.clone()
    }

    /// The client the layer asks.
    pub fn client(&self) -> &UpgradePathsClient {
        self.config.shared.lookups.client()
    }

    /// Where this route names the site.
    pub fn site(mut self, source: Source) -> Self {
        Arc::make_mut(&mut self.config).reader.site = source;
        self
    }

    /// Where this route names the product. A [`cancels`](Self::cancels) route reads none,
    /// whether this is called before or after `cancels`.
    pub fn product(mut self, source: Source) -> Self {
        Arc::make_mut(&mut self.config).reader.product = source;
        self
    }

    /// The largest body the route buffers; larger ones are 413 `body_too_large`. Default
    /// 64 KiB.
    ///
    /// Every guarded request's body is read whole before its site is held, whether a source
    /// reads it or not: a client sending its body slowly (or never finishing it) holds no site.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).reader.body_limit = bytes;
        self
    }

    /// How long a request's body may take to arrive, from the first time the guard has to wait
    /// for it; past it the answer is 408 `body_timeout`. Default 10 s. No site is held while
    /// the body is on its way, so this bounds what a slow client costs: a connection and at
    /// most [`body_limit`](Self::body_limit) bytes, never another request's provision.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.config).reader.body_timeout = timeout;
        self
    }

    /// What the route does with requests the guard would stop; default [`Mode::FailClosed`].
    /// See [`Mode`] for a rollout recipe.
    pub fn mode(mut self, mode: Mode) -> Self {
        Arc::make_mut(&mut self.config).mode = mode;
        self
    }

    /// Calls `f` with every decision of this route (allowed, rejected and why, failed open,
    /// shadowed), e.g. to count them in the partner's own metrics. It runs on the request's
    /// task: keep it quick.
    pub fn on_decision<F>(mut self, f: F) -> Self
    where
        F: Fn(&DecisionReport<'_>) + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.config).reporter.on_decision = Some(Arc::new(f));
        self
    }

    /// How long the guard keeps finishing a forwarded request whose client went away; default
    /// 60 s.
    ///
    /// Once a request is forwarded, the handler may have sent the provision to WordPress.com. If
    /// the client then goes away (hyper drops the response future), the guard drives the
    /// handler's future to its end in a task of its own and holds the site until then, so that no
    /// other check of the site passes before the provision has landed. The end is logged and
    /// reported to [`on_decision`](Self::on_decision) as
    /// [`Outcome::Detached`](crate::Outcome::Detached). Past the ceiling the handler's
    /// future is dropped, the site is freed and a warning says so: set it above the longest
    /// provision your handler makes. `Duration::ZERO` frees the site as soon as the client goes
    /// away, which lets a downgrade through in that window: only for handlers that do nothing a
    /// dropped future would leave half done.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use upgrade_guard::{UpgradeGuardLayer, UpgradePathsClient};
    /// # let client = UpgradePathsClient::builder().bearer_token("t").build()?;
    /// // The handler's own call to WordPress.com times out after 30 s: never hold a site longer.
    /// let guard = UpgradeGuardLayer::new(client).detached_ceiling(Duration::from_secs(35));
    /// # Ok::<(), upgrade_guard::BuildError>(())
    /// ```
    pub fn detached_ceiling(mut self, ceiling: Duration) -> Self {
        Arc::make_mut(&mut self.config).detached.ceiling = ceiling;
        self
    }

    /// The requests this layer and its clones are finishing alone because their clients went
    /// away (see [`detached_ceiling`](Self::detached_ceiling)): a server waits for them on
    /// shutdown, with [`Detached::wait`].
    pub fn detached(&self) -> Detached {
        self.config.detached.tracker.clone()
    }

    /// How long a request waits while another provision of its site is in progress; past it
    /// the answer is 503 `site_busy`. Default 20 s.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        Arc::make_mut(&mut self.config).lock_wait = wait;
        self
    }

    /// This route needs a product: a request naming none is 400 `missing_product`, and `free`
    /// is checked like any product (it is never in any upgrade paths: 409).
    ///
    /// By default a request naming no product (absent, or empty) or `free` is a *connection
    /// request*, as on WordPress.com's provision: it registers or connects the site (a repair,
    /// with `force_register` or `force_connect`) and provisions no paid product. The guard
    /// forwards it with the site held as for a provision, marked
    /// [`Admission::Connection`](crate::Admission::Connection). Use this on routes whose whole
    /// point is a product, such as a `/sites/{site}/plans` route.
    ///
    /// ```
    /// use upgrade_guard::{Source, UpgradeGuardLayer, UpgradePathsClient};
    ///
    /// let client = UpgradePathsClient::builder().bearer_token("partner-token").build()?;
    /// let plans = UpgradeGuardLayer::new(client)
    ///     .site(Source::path("/sites/{site}/plans", "site"))
    ///     .require_product();
    /// # Ok::<(), upgrade_guard::BuildError>(())
    /// ```
    pub fn require_product(mut self) -> Self {
        Arc::make_mut(&mut self.config).require_product = true;
        self
    }

    /// What this route does with a product the site's upgrade-paths answer does not judge (one
    /// it does not list, of a family WordPress.com's answers do not speak about: Scan and
    /// Anti-spam, where upgrade-paths answers about plans and backups only); default
    /// [`UnjudgedProducts::Forward`], WordPress.com's provision endpoint deciding.
    ///
    /// ```
    /// use upgrade_guard::{UnjudgedProducts, UpgradeGuardLayer, UpgradePathsClient};
    ///
    /// let client = UpgradePathsClient::builder().bearer_token("partner-token").build()?;
    /// // Only provisions upgrade-paths judges reach the provision call.
    /// let strict = UpgradeGuardLayer::new(client).unjudged_products(UnjudgedProducts::Refuse);
    /// # Ok::<(), upgrade_guard::BuildError>(())
    /// ```
    pub fn unjudged_products(mut self, unjudged: UnjudgedProducts) -> Self {
        Arc::make_mut(&mut self.config).unjudged = unjudged;
        self
    }

    /// What this route does with a site WordPress.com does not know (`invalid_blog`); default
    /// [`UnknownSites::FirstProvision`].
    pub fn unknown_sites(mut self, unknown: UnknownSites) -> Self {
        Arc::make_mut(&mut self.config).unknown_sites = unknown;
        self
    }

    /// This route changes a site's products other than by provisioning: WordPress.com's
    /// `partner-cancel`, say. Nothing is checked, but the request is held per site like a
    /// provision. The site's cached upgrade paths are dropped when it is forwarded and again
    /// when the inner service has finished; answered 2xx, the provisions remembered of the site
    /// are dropped too, and both in every one of the guard's
    /// [peers](crate::Peers::announce_forget). Without it, a product a cancel gave back would be
    /// refused from the cache until the entry expired. A cancel that failed, or whose outcome is
    /// unknown (one asking for WordPress.com's `http_envelope`, answered 200 whatever happened,
    /// counts as unknown), leaves the provisions remembered: one still settling keeps a
    /// downgrade or a repeat of it from passing on an answer that does not show it yet (the
    /// other processes' caches then keep their refusals until they expire).
    ///
    /// The site is not looked up and no product is read, so a cancel's `plan` field can never be
    /// a reason to refuse it: [`product`](Self::product) and
    /// [`require_product`](Self::require_product) do nothing on a cancel route, whether they are
    /// called before or after this.
    ///
    /// ```
    /// use upgrade_guard::{Source, UpgradeGuardLayer, UpgradePathsClient};
    ///
    /// let client = UpgradePathsClient::builder().bearer_token("partner-token").build()?;
    /// let guard = UpgradeGuardLayer::new(client);
    /// let cancel = guard
    ///     .clone()
    ///     .site(Source::path("/rest/v1.3/jpphp/{site}/partner-cancel", "site"))
    ///     .cancels();
    /// # Ok::<(), upgrade_guard::BuildError>(())
    /// ```
    pub fn cancels(mut self) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.cancels = true;
        config.reader.reads_product = false;
        self
    }

    /// Drops `site`'s cached upgrade paths and the provisions remembered of it, under every name
    /// the guard knows it by, in this process and in every one of its
    /// [peers](super::UpgradeGuardBuilder::peers): for a change the guard cannot see, such as a subscription cancelled on
    /// WordPress.com itself or through a route the guard does not wrap. A lookup of the site
    /// under way is disowned too: its answer may predate the change.
    ///
    /// The cache never forwards a downgrade whatever it holds (it only ever refuses); what a
    /// forgotten entry would do is refuse, until it expired, a product the change made an
    /// upgrade again.
    pub fn forget(&self, site: &Site) {
        let shared = &self.config.shared;
        for name in shared.names.known(site).iter() {
            shared.forget_everywhere(name);
        }
    }

    /// The site's upgrade paths now, as the guard sees them: for a partner's dashboard that
    /// shows only the products that can be provisioned. Through the guard's own client, cache
    /// and coalesced lookups, so a dashboard costs no more upstream calls than it must. A view,
    /// not a decision (every provision is still checked): a cached answer may list more than
    /// WordPress.com would now (a provision under way, or made in another process) or less (a
    /// cancel the guard was not told of).
    ///
    /// ```
    /// use upgrade_guard::fake::{FakeSite, FakeUpstream};
    /// use upgrade_guard::{Site, UpgradeGuardLayer, UpgradePathsClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let fake = FakeUpstream::builder()
    ///     .site(FakeSite::new(1002).holding(["jetpack-backup-realtime"]))
    ///     .start()
    ///     .await?;
    /// let client = UpgradePathsClient::builder()
    ///     .base_url(fake.url())
    ///     .bearer_token(fake.token())
    ///     .build()?;
    /// let guard = UpgradeGuardLayer::new(client);
    ///
    /// let paths = guard.upgrade_paths(&Site::parse("1002")?).await?;
    /// assert!(paths.allows("professional"));
    /// assert!(!paths.allows("jetpack-backup-daily"));
    /// # Ok(()) }
    /// ```
    ///
    /// With a client that looks sites up with the caller's token
    /// ([`caller_token`](crate::UpgradePathsClientBuilder::caller_token)) this answers
    /// [`LookupError::MissingToken`]: ask [`upgrade_paths_for`](Self::upgrade_paths_for) with the
    /// caller's token instead.
    pub async fn upgrade_paths(&self, site: &Site) -> Result<Arc<UpgradePaths>, LookupError> {
        self.config.shared.lookups.current(site, None).await
    }

    /// The site's current upgrade paths as `token` sees them, for a client that looks sites up
    /// with the caller's token: the same cache and shared lookups as the guard's checks, and an
    /// answer fetched with another token is never given. A client with a token of its own uses
    /// that one, as [`upgrade_paths`](Self::upgrade_paths) does.
    pub async fn upgrade_paths_for(
        &self,
        site: &Site,
        token: &Token,
    ) -> Result<Arc<UpgradePaths>, LookupError> {
        self.config.shared.lookups.current(site, Some(token)).await
    }
}
