//! Finishing alone: the inner service's work for a request whose client went away after it was
//! forwarded.
//!
//! Once the guard has forwarded a provision, the handler may already have sent it to
//! WordPress.com, and dropping the handler's future cannot take back bytes on the wire. Freeing
//! the site then would let the next request for it be checked against the paths from before a
//! provision that is still landing. So a [`ResponseFuture`](super::ResponseFuture) dropped after
//! forwarding hands the inner future and the site's hold to a task that drives the future to
//! its end, bounded by the route's ceiling, and only then frees the site.

use super::hold::Hold;
use crate::decision::DetachedEnd;
use http::StatusCode;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

/// How long the guard keeps finishing a forwarded request whose client went away, by default:
/// long enough for a provision at WordPress.com.
pub(crate) const DEFAULT_DETACHED_CEILING: Duration = Duration::from_secs(60);

/// Polls an inner future to its end and reads the status of its answer, erasing the response's
/// body type (which [`ResponseFuture`](super::ResponseFuture)'s `Drop` cannot name).
pub(super) type PollStatus<F> = fn(Pin<&mut F>, &mut Context<'_>) -> Poll<Option<StatusCode>>;

/// `PollStatus` for an inner future answering `Result<Response<_>, _>`: the status, or `None`
/// when the inner service failed. The response itself is dropped: its client has gone.
pub(super) fn poll_status<F, ResBody, E>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Option<StatusCode>>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    future
        .poll(cx)
        .map(|output| output.ok().map(|response| response.status()))
}

/// A route's settings for its detached requests, and the tracker shared by every route of a
/// layer.
#[derive(Clone, Debug)]
pub(super) struct DetachedRoute {
    pub(super) ceiling: Duration,
    pub(super) tracker: Detached,
}

impl Default for DetachedRoute {
    fn default() -> Self {
        Self {
            ceiling: DEFAULT_DETACHED_CEILING,
            tracker: Detached::default(),
        }
    }
}

/// The inner service's work still under way for requests whose clients went away, on every route
/// of one layer; from [`UpgradeGuardLayer::detached`](super::UpgradeGuardLayer::detached).
///
/// A server that stops should wait for it after it has stopped accepting requests and before the
/// runtime goes away: a provision finished alone holds its site until it ends, and a runtime that
/// shuts down drops it half-way, as if no guard had held the site. Each one ends within its
/// route's [`detached_ceiling`](super::UpgradeGuardLayer::detached_ceiling), so the wait does too.
///
/// ```no_run
/// # use upgrade_guard::{UpgradeGuardLayer, UpgradePathsClient};
/// # async fn run(app: axum::Router, listener: tokio::net::TcpListener, guard: UpgradeGuardLayer) -> std::io::Result<()> {
/// let detached = guard.detached();
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
///     .await?;
/// // Connections are closed; provisions whose clients left may still be landing.
/// detached.wait().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Detached {
    tracker: Arc<Tracker>,
}

#[derive(Default)]
struct Tracker {
    running: AtomicUsize,
    idle: Notify,
}

impl Detached {
    /// How many forwarded requests the guard is finishing alone right now.
    pub fn in_progress(&self) -> usize {
        self.tracker.running.load(Ordering::SeqCst)
    }

    /// Waits until no forwarded request is being finished alone. Requests whose clients go away
    /// during the wait are waited for too, so stop accepting requests first.
    pub async fn wait(&self) {
        loop {
            let idle = self.tracker.idle.notified();
            let mut idle = std::pin::pin!(idle);
            // Registered before the count is read, so a task ending in between still wakes us.
            idle.as_mut().enable();
            if self.in_progress() == 0 {
                return;
            }
            idle.await;
        }
    }

    fn start(&self) -> Running {
        self.tracker.running.fetch_add(1, Ordering::SeqCst);
        Running(self.tracker.clone())
    }
}

impl fmt::Debug for Detached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detached")
            .field("in_progress", &self.in_progress())
            .finish()
    }
}

/// One request being finished alone; counted out when its task ends, whichever way.
struct Running(Arc<Tracker>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Drives `future` to its end in a task of its own, keeping `hold` (the site's lock) until
/// then or until the route's ceiling passes, then hands `ended` how it ended.
pub(super) fn detach<F>(
    route: &DetachedRoute,
    mut future: Pin<Box<F>>,
    poll_status: PollStatus<F>,
    mut hold: Option<Box<Hold>>,
    ended: impl FnOnce(DetachedEnd) + Send + 'static,
) where
    F: Future + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Dropped outside any runtime: nothing can drive the future. Say so rather than pretend.
        tracing::warn!(
            "a forwarded request was dropped outside a Tokio runtime: its work is cancelled and its site freed now, while a provision it sent may still land"
        );
        return;
    };
    let running = route.tracker.start();
    let ceiling = route.ceiling;
    let work = async move {
        let end =
            tokio::time::timeout(ceiling, poll_fn(|cx| poll_status(future.as_mut(), cx))).await;
        // Past the ceiling the work is cancelled here, before the site is freed.
        drop(future);
        if let (Ok(Some(status)), Some(hold)) = (&end, hold.as_mut()) {
            hold.answered(*status);
        }
        drop(hold);
        ended(match end {
            Ok(Some(status)) => DetachedEnd::Answered(status),
            Ok(None) => DetachedEnd::Failed,
            Err(_) => DetachedEnd::CeilingPassed,
        });
        drop(running);
    };
    // In the request's span, so the logs of the work and of its end read with the request's.
    runtime.spawn(work.instrument(tracing::Span::current()));
}
