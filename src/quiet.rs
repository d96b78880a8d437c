//! Waiting on a shared future without being woken by one's own completion of it.
//!
//! `futures::future::Shared` wakes every task waiting on it when its future completes, the one
//! whose poll completed it included. That task already has the output and goes on; the wake
//! only marks it to run again, so Tokio, which sees it woken while it runs, queues it once more
//! as soon as it next waits, as a yield: on the run queue, waking an idle worker to take it. An
//! allowed request, whose own lookup is the shared future, paid that extra run on the other
//! core, a thread woken and the request moved away from a warm cache (see BENCHMARKS.md).
//!
//! [`Quietly`] hands the shared future a waker of its own, which drops the wakes that arrive
//! while its task polls it and passes every other one on. A wake dropped during a poll that left
//! the future pending is passed on when the poll ends, so none is lost.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// `future`, polled with a waker that drops the wakes arriving while it is being polled.
pub(crate) fn quietly<F: Future + Unpin>(future: F) -> Quietly<F> {
    Quietly {
        future,
        relay: None,
    }
}

/// See [`quietly`].
pub(crate) struct Quietly<F> {
    future: F,
    /// Made at the first poll: a future answered at once needs none.
    relay: Option<(Arc<Relay>, Waker)>,
}

/// The waker the future gets: it passes wakes on to the waiting task's waker, except while the
/// task polls the future.
struct Relay {
    state: AtomicU8,
    task: AtomicWaker,
}

/// Nobody polls the future: a wake goes to the task.
const IDLE: u8 = 0;
/// The task polls the future: a wake is only remembered.
const POLLING: u8 = 1;
/// The task polls the future and was woken meanwhile.
const WOKEN: u8 = 2;

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

impl<F: Future + Unpin> Future for Quietly<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let (relay, waker) = this.relay.get_or_insert_with(|| {
            let relay = Arc::new(Relay {
                state: AtomicU8::new(IDLE),
                task: AtomicWaker::new(),
            });
            let waker = Waker::from(relay.clone());
            (relay, waker)
        });
        relay.task.register(cx.waker());
        relay.state.store(POLLING, Ordering::Release);
        let polled = Pin::new(&mut this.future).poll(&mut Context::from_waker(waker));
        // Swapped, not stored: a wake either landed before (and is seen here) or finds the
        // relay idle and goes to the task itself.
        let woken = relay.state.swap(IDLE, Ordering::AcqRel) == WOKEN;
        if woken && polled.is_pending() {
            cx.waker().wake_by_ref();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wakes of the task that waits.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn completing_a_shared_future_does_not_wake_the_task_that_completed_it() {
        let (sender, receiver) = tokio::sync::oneshot::channel::<u8>();
        let shared = receiver.shared();
        let (mine, my_waker) = counting();
        let (theirs, their_waker) = counting();
        let mut cx = Context::from_waker(&my_waker);
        let mut other = shared.clone();
        assert!(
            other
                .poll_unpin(&mut Context::from_waker(&their_waker))
                .is_pending()
        );
        let mut waiting = quietly(shared.clone());
        assert!(waiting.poll_unpin(&mut cx).is_pending());
        sender.send(7).unwrap();
        // The value's arrival wakes both waiters (it came from outside either's poll)...
        assert_eq!(mine.0.load(Ordering::SeqCst), 1);
        assert_eq!(theirs.0.load(Ordering::SeqCst), 1);
        // ... and the poll that completes the shared future does not wake its own task again.
        assert_eq!(waiting.poll_unpin(&mut cx), Poll::Ready(Ok(7)));
        assert_eq!(mine.0.load(Ordering::SeqCst), 1);
        assert_eq!(theirs.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            other.poll_unpin(&mut Context::from_waker(&their_waker)),
            Poll::Ready(Ok(7))
        );
        // Plain `Shared` wakes the very task whose poll completed it.
        let (sender, receiver) = tokio::sync::oneshot::channel::<u8>();
        let mut plain = receiver.shared();
        let (woken, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert!(plain.poll_unpin(&mut cx).is_pending());
        sender.send(7).unwrap();
        assert!(plain.poll_unpin(&mut cx).is_ready());
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_wake_during_a_poll_that_stays_pending_is_passed_on() {
        // A future that wakes its waker while polled and stays pending once (a yield).
        let mut yielded = false;
        let future = std::future::poll_fn(move |cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        let (woken, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut waiting = quietly(Box::pin(future));
        assert!(waiting.poll_unpin(&mut cx).is_pending());
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "woken once, after the poll"
        );
        assert!(waiting.poll_unpin(&mut cx).is_ready());
    }
}
