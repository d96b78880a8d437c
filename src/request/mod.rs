//! Reading the site and the product from a request, and the body when a source needs it.

pub(crate) mod fields;
mod source;

pub use source::Source;

use crate::Site;
use crate::body::GuardBody;
use crate::rejection::Rejection;
use bytes::Bytes;
use fields::{BodyFormat, Fields};
use http::{Request, header::CONTENT_LENGTH, request::Parts};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// The largest body the guard buffers by default: provision forms are a few hundred bytes.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Where one route finds its site and product, and how much body it reads.
#[derive(Clone, Debug)]
pub(crate) struct RequestReader {
    pub(crate) site: Source,
    pub(crate) product: Source,
    pub(crate) body_limit: usize,
}

impl Default for RequestReader {
    fn default() -> Self {
        Self {
            site: Source::field("siteurl"),
            product: Source::field("plan"),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// A request the guard has read: what it names, and the request to forward if allowed.
pub(crate) struct ReadRequest<B> {
    pub(crate) site: Site,
    pub(crate) product: String,
    pub(crate) request: Request<GuardBody<B>>,
}

impl RequestReader {
    /// Reads the site and the product, buffering the body only when a source needs it.
    pub(crate) async fn read<B>(&self, request: Request<B>) -> Result<ReadRequest<B>, Rejection>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        if !(self.site.needs_body() || self.product.needs_body()) {
            let (site, product) = self.find(&parts, None)?;
            let request = Request::from_parts(parts, GuardBody::original(body));
            return Ok(ReadRequest {
                site,
                product,
                request,
            });
        }
        let format = BodyFormat::from_headers(&parts.headers)
            .map_err(|_| Rejection::UnsupportedMediaType)?;
        let bytes = self.buffer(&parts, body).await?;
        let fields = match format {
            Some(format) => Fields::parse(&format, bytes.clone())
                .await
                .map_err(Rejection::InvalidBody)?,
            // No Content-Type: an empty body simply has no fields; anything else is unreadable.
            None if bytes.is_empty() => Fields::default(),
            None => return Err(Rejection::UnsupportedMediaType),
        };
        let (site, product) = self.find(&parts, Some(&fields))?;
        Ok(ReadRequest {
            site,
            product,
            request: Request::from_parts(parts, GuardBody::buffered(bytes)),
        })
    }

    fn find(&self, parts: &Parts, fields: Option<&Fields>) -> Result<(Site, String), Rejection> {
        let site = self
            .site
            .find(parts, fields)?
            .ok_or(Rejection::MissingSite)?;
        let site = Site::parse(&site)?;
        let product = self
            .product
            .find(parts, fields)?
            .ok_or(Rejection::MissingProduct)?
            .into_owned();
        Ok((site, product))
    }

    /// Buffers the body within the limit: a declared length is checked before reading, and a
    /// chunked body is cut off as soon as it passes the limit.
    async fn buffer<B>(&self, parts: &Parts, body: B) -> Result<Bytes, Rejection>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.body_limit;
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(Rejection::BodyTooLarge { limit });
        }
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<LengthLimitError>() => Err(Rejection::BodyTooLarge { limit }),
            Err(error) => Err(Rejection::InvalidBody(format!(
                "the body could not be read: {error}"
            ))),
        }
    }
}
