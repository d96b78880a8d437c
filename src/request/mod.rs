//! Reading the site and the product from a request, and the body when a source needs it.

pub(crate) mod fields;
mod multipart;
pub(crate) mod php;
mod source;

pub use source::Source;

use crate::Site;
use crate::body::GuardBody;
use crate::rejection::{BodyError, Rejection};
use bytes::{Bytes, BytesMut};
use fields::Fields;
use http::{Request, header::CONTENT_LENGTH, request::Parts};
use http_body::Body;
use http_body_util::BodyExt;
use php::{Reading, Unreadable};
use std::borrow::Cow;

/// The largest body the guard buffers by default: provision forms are a few hundred bytes.
pub(crate) const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

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

/// What a request names.
#[derive(Clone, Debug)]
pub(crate) struct Named {
    pub(crate) site: Site,
    /// The product, `None` when the request names none (absent or empty): WordPress.com reads
    /// no product from it either.
    pub(crate) product: Option<String>,
}

/// A request the guard has read: the request itself, ready to forward with its body as it
/// arrived, and what it names or why it could not be read.
pub(crate) struct Read<B> {
    pub(crate) request: Request<GuardBody<B>>,
    pub(crate) named: Result<Named, Rejection>,
}

impl RequestReader {
    /// Reads the site and the product, buffering the body only when a source needs it. The
    /// request always comes back, whole, so a route in shadow mode can forward even what it
    /// could not read.
    pub(crate) async fn read<B>(&self, request: Request<B>) -> Read<B>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        if !(self.site.needs_body() || self.product.needs_body()) {
            let named = self.find(&parts, None);
            let request = Request::from_parts(parts, GuardBody::original(body));
            return Read { request, named };
        }
        let reading = match Reading::from_headers(&parts.headers) {
            Ok(reading) => reading,
            Err(unreadable) => {
                let request = Request::from_parts(parts, GuardBody::original(body));
                return Read {
                    request,
                    named: Err(unreadable.into()),
                };
            }
        };
        let (body, bytes) = self.buffer(&parts, body).await;
        let named = match bytes {
            Ok(bytes) => self.find_in_body(&parts, reading, bytes).await,
            Err(rejection) => Err(rejection),
        };
        Read {
            request: Request::from_parts(parts, body),
            named,
        }
    }

    async fn find_in_body(
        &self,
        parts: &Parts,
        reading: Option<Reading>,
        bytes: Bytes,
    ) -> Result<Named, Rejection> {
        // `input()` reads another body altogether when the query says `force=secure` and the
        // body has a `secure_key`: what the guard reads here would not be what is provisioned.
        let query = Fields::parse_query(parts.uri.query().unwrap_or_default());
        if matches!(query.as_php_reads("force"), Some(fields::Value::Text(force)) if force == "secure")
        {
            return Err(Rejection::InvalidBody(BodyError::new(
                "`force=secure` in the query string makes WordPress.com read another body than this one",
            )));
        }
        let reading = reading.unwrap_or_else(|| Reading::sniff(&bytes));
        let fields = reading.read(bytes).await?;
        self.find(parts, Some(&fields))
    }

    fn find(&self, parts: &Parts, fields: Option<&Fields>) -> Result<Named, Rejection> {
        let site = self
            .site
            .find(parts, fields)?
            .ok_or(Rejection::MissingSite)?;
        let site = Site::parse(&site)?;
        let product = self.product.find(parts, fields)?.map(Cow::into_owned);
        if let Some(product) = &product
            && product.trim() != product
        {
            // WordPress.com does not trim values: ` premium` is no product there, and a 409
            // listing `premium` as an upgrade would only confuse.
            return Err(Rejection::InvalidBody(BodyError::new(format!(
                "{} has white space around it ({product:?}); WordPress.com reads it as it is, and no product is called that: send the product's slug alone",
                self.product.describe()
            ))));
        }
        Ok(Named { site, product })
    }

    /// Buffers the body within the limit: a declared length is checked before reading, and a
    /// body without one is cut off as soon as it passes the limit. Gives back the body to
    /// forward, as it arrived, and the bytes to read fields from.
    async fn buffer<B>(&self, parts: &Parts, body: B) -> (GuardBody<B>, Result<Bytes, Rejection>)
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.body_limit;
        let too_large = Rejection::BodyTooLarge { limit };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return (GuardBody::original(body), Err(too_large));
        }
        let mut body = Box::pin(body);
        let mut data = Chunks::default();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => {
                    let why = BodyError::with_source("the body could not be read", error);
                    return (
                        GuardBody::resumed(data.into_bytes(), body),
                        Err(Rejection::InvalidBody(why)),
                    );
                }
            };
            match frame.into_data() {
                Ok(chunk) => {
                    data.push(chunk);
                    if data.len() > limit {
                        return (GuardBody::resumed(data.into_bytes(), body), Err(too_large));
                    }
                }
                Err(frame) => {
                    if let Ok(map) = frame.into_trailers() {
                        trailers = Some(map);
                    }
                }
            }
        }
        let bytes = data.into_bytes();
        (
            GuardBody::buffered_with_trailers(bytes.clone(), trailers),
            Ok(bytes),
        )
    }
}

impl From<Unreadable> for Rejection {
    fn from(unreadable: Unreadable) -> Self {
        match unreadable {
            Unreadable::MediaType => Rejection::UnsupportedMediaType,
            Unreadable::Body(message) => Rejection::InvalidBody(BodyError::new(message)),
        }
    }
}

/// Body chunks, copied together only when there is more than one (most bodies are one).
#[derive(Default)]
struct Chunks {
    first: Bytes,
    more: Option<BytesMut>,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        match &mut self.more {
            Some(more) => more.extend_from_slice(&chunk),
            None if self.first.is_empty() => self.first = chunk,
            None => {
                let mut more = BytesMut::with_capacity(self.first.len() + chunk.len());
                more.extend_from_slice(&self.first);
                more.extend_from_slice(&chunk);
                self.more = Some(more);
            }
        }
    }

    fn len(&self) -> usize {
        self.more.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    fn into_bytes(self) -> Bytes {
        self.more.map_or(self.first, BytesMut::freeze)
    }
}
