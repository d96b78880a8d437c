//! Reading the site and the product from a request, and its body.
//!
//! The whole request is in hand before anything is held: the body is read (within the route's
//! limit and timeout) even when no source needs it, so no site waits on a client's slow body.
//!
//! Each file depends only on those below it: `content_type.rs` tells from the request head how
//! WordPress.com will read the body (a [`php::Reading`]), `php.rs` reads it that way, through
//! `multipart.rs` for multipart forms, into `fields.rs`'s [`Fields`]. `source.rs` finds the site
//! and the product in the head or in those fields, reading the query string through `query.rs`
//! (as WordPress.com reads it, or refused); `connection.rs` refuses a `Connection` header
//! that would change the reading on the next hop. A new body format is a [`php::Reading`]: named
//! in `content_type.rs`, read in `php.rs`.

mod connection;
pub(crate) mod content_type;
pub(crate) mod fields;
mod multipart;
pub(crate) mod php;
mod query;
mod source;

pub use source::Source;

use crate::body::GuardBody;
use crate::rejection::{BodyError, Rejection};
use crate::site::Site;
use bytes::{Bytes, BytesMut};
use fields::Fields;
use http::{Request, header::CONTENT_LENGTH, request::Parts};
use http_body::Body;
use php::{Reading, Unreadable};
use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Sleep, sleep};

/// The largest body the guard buffers by default: provision forms are a few hundred bytes.
pub(crate) const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// How long a body may take to arrive by default, from the first time the guard waits for it.
pub(crate) const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one route finds its site and product, and how much body it reads, for how long.
#[derive(Clone, Debug)]
pub(crate) struct RequestReader {
    pub(crate) site: Source,
    pub(crate) product: Source,
    /// Whether the route reads a product at all. A cancel route reads none, whatever `product`
    /// says, so that a cancel's own `plan` field can never be a reason to refuse it.
    pub(crate) reads_product: bool,
    pub(crate) body_limit: usize,
    pub(crate) body_timeout: Duration,
}

impl Default for RequestReader {
    fn default() -> Self {
        Self {
            site: Source::field("siteurl"),
            product: Source::field("plan"),
            reads_product: true,
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
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
    /// Reads the site and the product, and buffers the body whole whether a source needs it or
    /// not: nothing is held for a request still on its way. The request always comes back,
    /// whole, so a route in shadow mode can forward even what it could not read.
    pub(crate) async fn read<B>(&self, request: Request<B>) -> Read<B>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let unread = |parts, body, why| Read {
            request: Request::from_parts(parts, GuardBody::original(body)),
            named: Err(why),
        };
        if let Err(why) = connection::check(&parts.headers) {
            return unread(parts, body, why);
        }
        let reads_body = self.site.needs_body() || self.product().is_some_and(Source::needs_body);
        let reading = if reads_body {
            match content_type::reading(&parts.headers) {
                Ok(reading) => Some(reading),
                Err(unreadable) => return unread(parts, body, unreadable.into()),
            }
        } else {
            None
        };
        let (body, bytes) = self.buffer(&parts, body).await;
        let named = match (bytes, reading) {
            (Ok(bytes), Some(reading)) => self.find_in_body(&parts, reading, bytes).await,
            (Ok(_), None) => self.find(&parts, None),
            (Err(rejection), _) => Err(rejection),
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
        let query = query::read(&parts.uri)?;
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
        let Some(source) = self.product() else {
            return Ok(Named {
                site,
                product: None,
            });
        };
        let product = source.find(parts, fields)?.map(Cow::into_owned);
        if let Some(product) = &product
            && product.trim() != product
        {
            // WordPress.com does not trim values: ` premium` is no product there, and a 409
            // listing `premium` as an upgrade would only confuse.
            return Err(Rejection::InvalidBody(BodyError::new(format!(
                "{} has white space around it ({product:?}); WordPress.com reads it as it is, and no product is called that: send the product's slug alone",
                source.describe()
            ))));
        }
        Ok(Named { site, product })
    }

    /// Where the route reads the product, if it reads one.
    fn product(&self) -> Option<&Source> {
        self.reads_product.then_some(&self.product)
    }

    /// Buffers the body within the limit and the timeout: a declared length is checked before
    /// reading, a body without one is cut off as soon as it passes the limit, and one that
    /// stops arriving is given up on once the timeout has passed since the guard first had to
    /// wait for it (a body already there costs no timer). Gives back the body to forward, as it
    /// arrived, and the bytes to read fields from.
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
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        loop {
            let next = poll_fn(|cx| {
                if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
                    return Poll::Ready(Some(frame));
                }
                let timer = timer.get_or_insert_with(|| Box::pin(sleep(self.body_timeout)));
                timer.as_mut().poll(cx).map(|()| None)
            })
            .await;
            let frame = match next {
                Some(Some(frame)) => frame,
                Some(None) => break,
                None => {
                    let late = Rejection::BodyTimeout {
                        after: self.body_timeout,
                    };
                    return (GuardBody::resumed(data.into_bytes(), body), Err(late));
                }
            };
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
