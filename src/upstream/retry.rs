//! When a failed lookup is tried again, and after how long.
//!
//! A lookup is a read, so trying it again is safe. What is retried is what may well go away in a
//! moment: a connection that failed or broke, an attempt that timed out, 500, 502, 503, 504, and
//! 429. 500 is in the set because WordPress.com answers it for passing trouble (a database
//! fail-over, a deploy) as well as for bugs, and one more read costs little; a 500 that persists
//! still ends in a 503 once the retries or the deadline run out. Everything else (other 4xx, an
//! unknown site, a refused token, a malformed answer) would be answered the same way again.
//!
//! Waits grow exponentially with random jitter (tower's [`ExponentialBackoff`]), so that partner
//! processes that failed together do not retry together. A `Retry-After` is honoured: the wait is
//! at least that long. No wait runs past the lookup's deadline: when the next attempt could not
//! start before it, the lookup gives up at once with the last error (a 429's `Retry-After` is
//! then passed on to the guard's own 503).

use super::auth::TokenError;
use super::error::LookupError;
use http::StatusCode;
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::util::rng::HasherRng;

/// The wait before the first retry; later ones double, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between attempts (unless `Retry-After` asks for more).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Each wait is lengthened by a random part of up to this share of it.
const JITTER: f64 = 1.0;

/// Whether a lookup that failed with `error` may succeed if tried again. A token that could not
/// be had is judged as a lookup would be: the token endpoint's passing trouble is retried too.
pub(super) fn is_transient(error: &LookupError) -> bool {
    match error {
        LookupError::Timeout
        | LookupError::Transport(_)
        | LookupError::Token(TokenError::Timeout | TokenError::Transport(_)) => true,
        LookupError::Status { status, .. }
        | LookupError::Token(TokenError::Status { status, .. }) => is_passing(*status),
        _ => false,
    }
}

/// The statuses that speak of passing trouble.
fn is_passing(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
    )
}

/// The retries left to one lookup, and its backoff.
pub(super) struct Retries {
    left: u32,
    deadline: Instant,
    backoff: ExponentialBackoff,
}

impl Retries {
    /// Up to `max_retries` retries, none of them starting at or after `deadline`.
    pub(super) fn new(max_retries: u32, deadline: Instant) -> Self {
        // A fresh generator per lookup: a clone of one shared generator would repeat its
        // sequence, and lookups that failed together would retry together.
        let backoff =
            ExponentialBackoffMaker::new(MIN_BACKOFF, MAX_BACKOFF, JITTER, HasherRng::new())
                .expect("the backoff constants are valid")
                .make_backoff();
        Self {
            left: max_retries,
            deadline,
            backoff,
        }
    }

    /// The wait before trying again after `error`, or `None` to give up with it.
    pub(super) fn after(&mut self, error: &LookupError) -> Option<Sleep> {
        if self.left == 0 || !is_transient(error) {
            return None;
        }
        let mut wait = self.backoff.next_backoff();
        if let Some(retry_after) = error.retry_after() {
            let asked = Instant::now() + retry_after;
            if asked > wait.deadline() {
                wait = tokio::time::sleep_until(asked);
            }
        }
        if wait.deadline() >= self.deadline {
            return None;
        }
        self.left -= 1;
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn status(code: u16, retry_after: Option<u64>) -> LookupError {
        LookupError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn transient_failures_are_told_apart() {
        for code in [500, 502, 503, 504, 429] {
            assert!(is_transient(&status(code, None)), "{code}");
        }
        for code in [400, 405, 418, 501, 505] {
            assert!(!is_transient(&status(code, None)), "{code}");
        }
        assert!(is_transient(&LookupError::Timeout));
        assert!(is_transient(&LookupError::Transport(Arc::new(
            std::io::Error::other("reset")
        ))));
        assert!(!is_transient(&LookupError::UnknownSite));
        assert!(!is_transient(&LookupError::Unauthorized {
            status: StatusCode::UNAUTHORIZED
        }));
        assert!(!is_transient(&LookupError::AnswerTooLarge { limit: 1 }));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_grow_with_jitter_and_stop_at_the_count() {
        let start = Instant::now();
        let mut retries = Retries::new(3, start + Duration::from_secs(60));
        let waits: Vec<Duration> = (0..3)
            .map(|_| retries.after(&LookupError::Timeout).unwrap().deadline() - start)
            .collect();
        for (wait, base) in waits.iter().zip([100, 200, 400]) {
            let base = Duration::from_millis(base);
            assert!(*wait >= base && *wait <= 2 * base, "{wait:?} for {base:?}");
        }
        assert!(retries.after(&LookupError::Timeout).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_within_the_deadline() {
        let start = Instant::now();
        let mut retries = Retries::new(5, start + Duration::from_secs(5));
        let wait = retries.after(&status(429, Some(2))).unwrap();
        assert_eq!(wait.deadline() - start, Duration::from_secs(2));
        assert!(retries.after(&status(429, Some(5))).is_none());
        assert!(retries.after(&status(400, None)).is_none());
        // What was refused above was not counted: four retries remain.
        for _ in 0..4 {
            assert!(retries.after(&status(503, None)).is_some());
        }
        assert!(retries.after(&status(503, None)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_ends_past_the_deadline() {
        let start = Instant::now();
        let mut retries = Retries::new(10, start + Duration::from_millis(150));
        // The first wait is 100-200 ms: it may or may not fit, but never past the deadline.
        if let Some(wait) = retries.after(&LookupError::Timeout) {
            assert!(wait.deadline() < start + Duration::from_millis(150));
        }
        let mut retries = Retries::new(10, start + Duration::from_millis(100));
        assert!(retries.after(&LookupError::Timeout).is_none());
    }
}
