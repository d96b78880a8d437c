//! The body type of requests and responses that pass through the guard.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// A body that went through the guard: either the original, untouched, or bytes the guard holds.
    ///
    /// On the way in, a request keeps its original body unless the route reads a field from it;
    /// then the body was buffered (within the limit) and is handed on as the same bytes. On the
    /// way out, a response is the inner service's, untouched, or one of the guard's own JSON
    /// answers.
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
        Buffered { body: Full<Bytes> },
    }
}

impl<B> GuardBody<B> {
    /// The original body, passed on as it is.
    pub fn original(body: B) -> Self {
        Self {
            kind: Kind::Original { body },
        }
    }

    /// Bytes the guard holds: a buffered request body or one of its own responses.
    pub fn buffered(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Buffered {
                body: Full::new(bytes.into()),
            },
        }
    }

    /// Whether the guard buffered this body (or made it).
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
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
            KindProj::Buffered { body } => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Original { body } => body.is_end_stream(),
            Kind::Buffered { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Original { body } => body.size_hint(),
            Kind::Buffered { body } => body.size_hint(),
        }
    }
}
