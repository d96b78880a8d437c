use super::{Config, Detached, UpgradeGuard, UpgradeGuardBuilder};
use crate::decision::{DecisionReport, Mode};
use crate::stats::GuardStats;
use crate::{Source, UpgradePathsClient};
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// Wraps a provision handler in an [`UpgradeGuard`]. Configured per route.
///
/// Build **one** layer per process, then a clone of it per route, each saying where that route
/// names the site and the product. Clones share the client, the lookup cache and the per-site
/// locks, so a provision through one route is serialized with, and invalidates the cache of,
/// provisions of the same site through any other. Two layers built separately share nothing.
///
/// Defaults follow WordPress.com's provision API: the site from the body field `siteurl` (a URL,
/// a domain or a blog ID), the product from the body field `plan`, a body limit of
/// [`DEFAULT_BODY_LIMIT`](crate::request::DEFAULT_BODY_LIMIT) bytes.
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
/// # Ok::<(), upgrade_guard::upstream::BuildError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct UpgradeGuardLayer {
    config: Arc<Config>,
}

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

    /// Where this route names the product.
    pub fn product(mut self, source: Source) -> Self {
        Arc::make_mut(&mut self.config).reader.product = source;
        self
    }

    /// The largest body buffered when a source reads the body; larger ones are 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).reader.body_limit = bytes;
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
        Arc::make_mut(&mut self.config).on_decision = Some(Arc::new(f));
        self
    }

    /// How long the guard keeps finishing a forwarded request whose client went away; default
    /// [`DEFAULT_DETACHED_CEILING`](super::DEFAULT_DETACHED_CEILING).
    ///
    /// Once a request is forwarded, the handler may have sent the provision to WordPress.com. If
    /// the client then goes away (hyper drops the response future), the guard drives the
    /// handler's future to its end in a task of its own and holds the site until then, so that no
    /// other check of the site passes before the provision has landed. The end is logged and
    /// reported to [`on_decision`](Self::on_decision) as
    /// [`Outcome::FinishedAlone`](crate::Outcome::FinishedAlone). Past the ceiling the handler's
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
    /// # Ok::<(), upgrade_guard::upstream::BuildError>(())
    /// ```
    pub fn detached_ceiling(mut self, ceiling: Duration) -> Self {
        Arc::make_mut(&mut self.config).hold.ceiling = ceiling;
        self
    }

    /// The requests this layer and its clones are finishing alone because their clients went
    /// away (see [`detached_ceiling`](Self::detached_ceiling)): a server waits for them on
    /// shutdown, with [`Detached::wait`].
    pub fn detached(&self) -> Detached {
        self.config.hold.detached.clone()
    }

    /// How long a request waits while another provision of its site is in progress; past it
    /// the answer is 503 `site_busy`. Default [`DEFAULT_LOCK_WAIT`](crate::lock::DEFAULT_LOCK_WAIT).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        Arc::make_mut(&mut self.config).lock_wait = wait;
        self
    }
}

impl<S> Layer<S> for UpgradeGuardLayer {
    type Service = UpgradeGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UpgradeGuard::from_config(inner, self.config.clone())
    }
}
