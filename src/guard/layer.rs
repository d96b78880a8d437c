use super::{Config, UpgradeGuard};
use crate::{Source, UpgradePathsClient};
use std::sync::Arc;
use tower_layer::Layer;

/// Wraps a provision handler in an [`UpgradeGuard`]. Configured per route.
///
/// Build one client, then one layer per route, each saying where that route names the site and
/// the product. Layers are cheap to clone; clones share the client and its connection pool.
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
    /// A layer asking `client` about sites, with the provision API's defaults.
    pub fn new(client: UpgradePathsClient) -> Self {
        Self {
            config: Arc::new(Config::new(client)),
        }
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
}

impl<S> Layer<S> for UpgradeGuardLayer {
    type Service = UpgradeGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UpgradeGuard::from_config(inner, self.config.clone())
    }
}
