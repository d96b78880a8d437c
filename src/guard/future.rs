use super::{Forward, SiteHold};
use crate::body::GuardBody;
use crate::decision::BYPASS_HEADER;
use crate::rejection::Rejection;
use http::HeaderValue;
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower_service::Service;

/// The check of one request: read it, look its site up, decide.
pub(super) type Check<B> = Pin<Box<dyn Future<Output = Result<Forward<B>, Rejection>> + Send>>;

pin_project! {
    /// Response future of [`UpgradeGuard`](super::UpgradeGuard).
    ///
    /// First the check (which does I/O and is boxed), then, only when allowed, the inner
    /// service's own future, polled in place while the site's lock is held. Dropping the future
    /// at any point releases whatever it held.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<GuardBody<B>>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<GuardBody<B>>>,
    {
        Checking {
            check: Check<B>,
            inner: Option<S>,
        },
        Forwarding {
            #[pin]
            future: S::Future,
            permit: Option<SiteHold>,
            bypass: Option<HeaderValue>,
        },
        Done,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<GuardBody<B>>>,
{
    pub(super) fn new(check: Check<B>, inner: S) -> Self {
        Self {
            state: State::Checking {
                check,
                inner: Some(inner),
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<GuardBody<B>>, Response = Response<ResBody>>,
{
    type Output = Result<Response<GuardBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check, inner } => match ready!(check.as_mut().poll(cx)) {
                    Ok(forward) => {
                        let mut inner = inner
                            .take()
                            .expect("polled after the inner service was called");
                        let future = inner.call(forward.request);
                        this.state.set(State::Forwarding {
                            future,
                            permit: forward.permit,
                            bypass: forward.bypass.map(|bypass| bypass.header_value()),
                        });
                    }
                    Err(rejection) => return Poll::Ready(Ok(rejection.into_response())),
                },
                StateProj::Forwarding { future, bypass, .. } => {
                    let output = ready!(future.poll(cx));
                    let bypass = bypass.take();
                    // The inner service has answered: the next provision of the site may start.
                    this.state.set(State::Done);
                    return Poll::Ready(output.map(|response| {
                        let mut response = response.map(GuardBody::original);
                        if let Some(bypass) = bypass {
                            response.headers_mut().insert(BYPASS_HEADER, bypass);
                        }
                        response
                    }));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}
