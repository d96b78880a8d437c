use super::check::{Config, Forward};
use super::detached::{self, PollStatus};
use super::hold::Hold;
use super::report::Forwarded;
use crate::body::GuardBody;
use crate::decision::BYPASS_HEADER;
use crate::rejection::Rejection;
use http::HeaderValue;
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tower_service::Service;

/// The check of one request: read it, look its site up, decide.
pub(super) type Check<B> = Pin<Box<dyn Future<Output = Result<Forward<B>, Rejection>> + Send>>;

pin_project! {
    /// Response future of [`UpgradeGuard`](super::UpgradeGuard).
    ///
    /// First the check (which does I/O and is boxed), then, only when allowed, the inner
    /// service's own future, polled while the site's lock is held.
    ///
    /// Dropped during the check, it releases whatever it held. Dropped once the request was
    /// forwarded (the client went away, a timeout outside the guard fired), it hands the inner
    /// service's future and the site's lock to a Tokio task that drives the future to its end,
    /// bounded by the route's
    /// [`detached_ceiling`](super::UpgradeGuardLayer::detached_ceiling), and only then frees the
    /// site: a provision the handler already sent may still land, and no other check of the site
    /// may pass before it has. That is why the inner service's future must be `Send + 'static`.
    // One bound per line: pin-project-lite takes a single bound per predicate.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<GuardBody<B>>>,
        S::Future: Send,
        S::Future: 'static,
    {
        state: State<S, B>,
    }

    impl<S, B> PinnedDrop for ResponseFuture<S, B>
    where
        S: Service<Request<GuardBody<B>>>,
        S::Future: Send,
        S::Future: 'static,
    {
        fn drop(this: Pin<&mut Self>) {
            let state = std::mem::replace(this.project().state, State::Done);
            // While unwinding from a panic of the inner future there is nothing left to finish.
            if let State::Forwarding { future, hold, poll_status, config, forwarded, .. } = state
                && !std::thread::panicking()
            {
                let reporter = config.reporter.clone();
                detached::detach(&config.detached, future, poll_status, hold, move |end| {
                    reporter.detached(&forwarded, end);
                });
            }
        }
    }
}

/// The inner future is boxed so that it can move to a task of its own if the response future is
/// dropped: a pinned future cannot move out of its place otherwise.
enum State<S, B>
where
    S: Service<Request<GuardBody<B>>>,
{
    Checking {
        check: Check<B>,
        inner: Option<S>,
        config: Arc<Config>,
    },
    Forwarding {
        future: Pin<Box<S::Future>>,
        hold: Option<Box<Hold>>,
        bypass: Option<HeaderValue>,
        poll_status: PollStatus<S::Future>,
        config: Arc<Config>,
        forwarded: Forwarded,
    },
    Done,
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<GuardBody<B>>>,
    S::Future: Send + 'static,
{
    pub(super) fn new(check: Check<B>, inner: S, config: Arc<Config>) -> Self {
        Self {
            state: State::Checking {
                check,
                inner: Some(inner),
                config,
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<GuardBody<B>>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Output = Result<Response<GuardBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = self.project().state;
        loop {
            match state {
                State::Checking {
                    check,
                    inner,
                    config,
                } => match ready!(check.as_mut().poll(cx)) {
                    Ok(forward) => {
                        let mut inner = inner
                            .take()
                            .expect("polled after the inner service was called");
                        let future = Box::pin(inner.call(forward.request));
                        *state = State::Forwarding {
                            future,
                            hold: forward.hold,
                            bypass: forward.bypass.map(|bypass| bypass.header_value()),
                            poll_status: detached::poll_status::<_, ResBody, S::Error>,
                            config: config.clone(),
                            forwarded: forward.forwarded,
                        };
                    }
                    Err(rejection) => {
                        *state = State::Done;
                        return Poll::Ready(Ok(rejection.into_response()));
                    }
                },
                State::Forwarding {
                    future,
                    bypass,
                    hold,
                    ..
                } => {
                    let output = ready!(future.as_mut().poll(cx));
                    if let (Ok(response), Some(hold)) = (&output, hold.as_mut()) {
                        hold.answered(response.status());
                    }
                    let bypass = bypass.take();
                    // The inner service has answered: the next provision of the site may start.
                    *state = State::Done;
                    return Poll::Ready(output.map(|response| {
                        let mut response = response.map(GuardBody::original);
                        if let Some(bypass) = bypass {
                            response.headers_mut().insert(BYPASS_HEADER, bypass);
                        }
                        response
                    }));
                }
                State::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}
