//! The middleware: [`UpgradeGuardLayer`], [`UpgradeGuard`] and its [`ResponseFuture`].
//!
//! For each request the guard reads the site and the product, asks WordPress.com for the site's
//! upgrade paths, and forwards the request only when the product is listed. Everything else is
//! answered by the guard itself, as [`Rejection`](crate::Rejection) describes.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::UpgradeGuardLayer;
pub use service::UpgradeGuard;

use crate::UpgradePathsClient;
use crate::body::GuardBody;
use crate::decision::Decision;
use crate::rejection::Rejection;
use crate::request::RequestReader;
use bytes::Bytes;
use http::Request;
use http_body::Body;

/// What a layer knows: shared by every service it builds.
#[derive(Clone, Debug)]
struct Config {
    client: UpgradePathsClient,
    reader: RequestReader,
}

/// A request that may be forwarded.
pub(crate) struct Allowed<B> {
    request: Request<GuardBody<B>>,
}

impl Config {
    fn new(client: UpgradePathsClient) -> Self {
        Self {
            client,
            reader: RequestReader::default(),
        }
    }

    /// The contract, in order: read the request (400, 413, 415), look the site up (404, 502,
    /// 503), decide (409).
    async fn check<B>(&self, request: Request<B>) -> Result<Allowed<B>, Rejection>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let read = self.reader.read(request).await?;
        let paths = self
            .client
            .upgrade_paths(&read.site)
            .await
            .map_err(Rejection::Upstream)?;
        match Decision::new(&paths, &read.product) {
            Decision::Upgrade { family } => {
                tracing::debug!(site = %read.site, product = %read.product, family, "upgrade allowed");
                Ok(Allowed {
                    request: read.request,
                })
            }
            Decision::NotAnUpgrade => {
                tracing::debug!(site = %read.site, product = %read.product, "not an upgrade");
                Err(Rejection::NotAnUpgrade {
                    site: read.site,
                    product: read.product,
                    upgrade_paths: paths,
                })
            }
        }
    }
}
