//! The body type of requests and responses that pass through the guard.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// A body that went through the guard: the original, untouched, or bytes the guard read,
    /// handed on as they arrived.
    ///
    /// On the way in, the guard reads every request's body whole (within the route's limit and
    /// timeout) before it holds the site, and hands it on as the same bytes and trailers; a request
    /// it refused before reading keeps its original body. When the guard forwards a request it
    /// could not read whole (only in [shadow mode](crate::Mode::Shadow)), the bytes it read come
    /// first, then the rest of the original. On the way out, a response is the inner service's,
    /// untouched, or one of the guard's own JSON answers.
    ///
    /// Frameworks take it as it is: axum's `Router` accepts any body with `Data = Bytes`, and so
    /// does hyper's server.
    #[derive(Debug)]
    pub struct GuardBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Original { #[pin] body: B },
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Resumed { prefix: Option<Bytes>, rest: Pin<Box<B>> },
    }
}

impl<B> GuardBody<B> {
    /// The original body, passed on as it is.
    pub(crate) fn original(body: B) -> Self {
        Self {
            kind: Kind::Original { body },
        }
    }

    /// Bytes the guard holds: a buffered request body or one of its own responses.
    pub(crate) fn buffered(bytes: impl Into<Bytes>) -> Self {
        Self::buffered_with_trailers(bytes.into(), None)
    }

    pub(crate) fn buffered_with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Buffered {
                data: Some(data).filter(|d| !d.is_empty()),
                trailers,
            },
        }
    }

    /// The bytes already read from `rest`, then `rest` itself.
    pub(crate) fn resumed(prefix: Bytes, rest: Pin<Box<B>>) -> Self {
        Self {
            kind: Kind::Resumed {
                prefix: Some(prefix).filter(|p| !p.is_empty()),
                rest,
            },
        }
    }

    /// Whether the guard read this body (or made it).
    pub fn is_buffered(&self) -> bool {
        !matches!(self.kind, Kind::Original { .. })
    }
}

impl<B> Body for GuardBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Original { body } => body.poll_frame(cx),
            KindProj::Buffered { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            KindProj::Resumed { prefix, rest } => match prefix.take() {
                Some(prefix) => Poll::Ready(Some(Ok(Frame::data(prefix)))),
                None => rest.as_mut().poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Original { body } => body.is_end_stream(),
            Kind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Resumed { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Original { body } => body.size_hint(),
            Kind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Resumed { prefix, rest } => {
                let read = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn buffered_bodies_give_back_data_and_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let body: GuardBody<http_body_util::Empty<Bytes>> =
            GuardBody::buffered_with_trailers(Bytes::from("data"), Some(trailers.clone()));
        assert_eq!(body.size_hint().exact(), Some(4));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "data");
    }

    #[tokio::test]
    async fn resumed_bodies_put_the_prefix_back_in_front() {
        let rest =
            StreamBody::new(futures_util::stream::iter(["cd", "ef"].map(|c| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c)))
            })));
        let body = GuardBody::resumed(Bytes::from("ab"), Box::pin(rest));
        assert!(body.is_buffered());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcdef");
    }
}
