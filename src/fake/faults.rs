//! Fault injection: make the fake fail the way WordPress.com (or the network) sometimes does.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /rest/v1.3/jpphp/{site}/upgrade-paths`.
    UpgradePaths,
    /// `POST /rest/v1.3/jpphp/provision`.
    Provision,
    /// `POST /oauth2/token`.
    Token,
    /// `POST /rest/v1.3/jpphp/{site}/partner-cancel`.
    Cancel,
    /// `GET /rest/v1.4/jpphp/{site}/status`.
    Status,
    /// `GET /rest/v1.1/sites/{site}`, the public site lookup.
    SiteLookup,
    /// Every request, including those to unknown paths.
    Any,
}

impl Endpoint {
    /// Whether a rule for `self` applies to a request for `request` (`None`: an unknown path).
    fn matches(self, request: Option<Endpoint>) -> bool {
        self == Endpoint::Any || Some(self) == request
    }
}

/// What the fake does instead of (or before) answering a request normally.
///
/// ```
/// use std::time::Duration;
/// use upgrade_guard::fake::Fault;
///
/// let overloaded = Fault::status(429).header(http::header::RETRY_AFTER, "2");
/// let lying = Fault::status_with_body(200, "not json");
/// let slow = Fault::Delay(Duration::from_secs(30));
/// let gone = Fault::DropConnection;
/// let answer = r#"{"jetpack-plans":["professional"]}"#;
/// let cut = Fault::truncate_body(answer, 10);
/// let reset = Fault::reset_body(answer, 10);
/// let stalled = Fault::stall_body(answer, 10);
/// let trickle = Fault::trickle(answer, 1, Duration::from_millis(50));
/// let slow = Fault::slow_answer(8, Duration::from_millis(50));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status instead of the real answer.
    Status {
        /// The status to answer.
        status: StatusCode,
        /// Headers added to (or replacing) the answer's, e.g. `Retry-After`.
        headers: HeaderMap,
        /// The body; `None` answers `{"error":"<reason>","message":"..."}`.
        body: Option<Bytes>,
    },
    /// Wait this long, then answer normally. Uses tokio's clock, so a paused test clock applies.
    Delay(Duration),
    /// Close the TCP connection without answering.
    DropConnection,
    /// Answer 200 (`application/json`) declaring `body`'s full length, send its first `sent`
    /// bytes, then nothing more until the client gives up: a timeout while reading the body.
    StallBody {
        /// The whole answer, as declared by `Content-Length`.
        body: Bytes,
        /// How many of its bytes are sent before the stall.
        sent: usize,
    },
    /// As [`StallBody`](Self::StallBody), but after the `sent` bytes the connection is closed
    /// cleanly (FIN): an answer shorter than its `Content-Length`.
    TruncateBody {
        /// The whole answer, as declared by `Content-Length`.
        body: Bytes,
        /// How many of its bytes are sent before the connection is closed.
        sent: usize,
    },
    /// As [`TruncateBody`](Self::TruncateBody), but the connection is reset (RST, `SO_LINGER`
    /// zero) after the `sent` bytes.
    ResetBody {
        /// The whole answer, as declared by `Content-Length`.
        body: Bytes,
        /// How many of its bytes are sent before the reset.
        sent: usize,
    },
    /// Answer in chunked encoding (no `Content-Length`), `chunk` bytes at a time, waiting
    /// `every` before each chunk: a slow trickle, or with a zero wait and a large body, an answer
    /// whose size is only known by reading it.
    Trickle {
        /// The answer: 200 (`application/json`) with these bytes, or with `None` the endpoint's
        /// real answer (status, headers and body), slowly.
        body: Option<Bytes>,
        /// Bytes per chunk (at least 1).
        chunk: usize,
        /// The wait before each chunk; uses tokio's clock.
        every: Duration,
    },
}

impl Fault {
    /// Answers `status` with a JSON error body named after the status (`503` answers
    /// `{"error":"service_unavailable",...}`).
    ///
    /// # Panics
    ///
    /// If `status` is not in `100..=999`.
    pub fn status(status: u16) -> Self {
        Fault::Status {
            status: status_code(status),
            headers: HeaderMap::new(),
            body: None,
        }
    }

    /// Answers `status` with exactly `body` (still labelled `application/json` unless a
    /// `Content-Type` is set with [`header`](Self::header)): a 200 with a wrong body tests strict
    /// parsing.
    ///
    /// # Panics
    ///
    /// If `status` is not in `100..=999`.
    pub fn status_with_body(status: u16, body: impl Into<Bytes>) -> Self {
        Fault::Status {
            status: status_code(status),
            headers: HeaderMap::new(),
            body: Some(body.into()),
        }
    }

    /// [`Fault::StallBody`]: headers and the first `sent` bytes of `body`, then silence.
    pub fn stall_body(body: impl Into<Bytes>, sent: usize) -> Self {
        Fault::StallBody {
            body: body.into(),
            sent,
        }
    }

    /// [`Fault::TruncateBody`]: headers and the first `sent` bytes of `body`, then a clean close.
    pub fn truncate_body(body: impl Into<Bytes>, sent: usize) -> Self {
        Fault::TruncateBody {
            body: body.into(),
            sent,
        }
    }

    /// [`Fault::ResetBody`]: headers and the first `sent` bytes of `body`, then a reset.
    pub fn reset_body(body: impl Into<Bytes>, sent: usize) -> Self {
        Fault::ResetBody {
            body: body.into(),
            sent,
        }
    }

    /// [`Fault::Trickle`]: 200 with `body`, chunked, `chunk` bytes after each wait of `every`.
    pub fn trickle(body: impl Into<Bytes>, chunk: usize, every: Duration) -> Self {
        Fault::Trickle {
            body: Some(body.into()),
            chunk: chunk.max(1),
            every,
        }
    }

    /// [`Fault::Trickle`] of the endpoint's real answer: right, but slow.
    pub fn slow_answer(chunk: usize, every: Duration) -> Self {
        Fault::Trickle {
            body: None,
            chunk: chunk.max(1),
            every,
        }
    }

    /// Adds a header to a [`Fault::Status`] answer; other faults are returned unchanged.
    ///
    /// # Panics
    ///
    /// If `value` is not a valid header value.
    #[must_use]
    pub fn header<V>(mut self, name: HeaderName, value: V) -> Self
    where
        V: TryInto<HeaderValue>,
        V::Error: fmt::Debug,
    {
        if let Fault::Status { headers, .. } = &mut self {
            let value = value
                .try_into()
                .expect("Fault::header: invalid header value");
            headers.append(name, value);
        }
        self
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).expect("Fault::status: the status must be in 100..=999")
}

/// How many more requests a rule applies to; `None` is until cleared.
#[derive(Debug)]
struct Rule {
    endpoint: Endpoint,
    fault: Fault,
    remaining: Option<u64>,
}

/// The injected faults, first injected first applied.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Mutex<Vec<Rule>>,
}

impl Faults {
    fn push(&self, rule: Rule) {
        self.lock().push(rule);
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// The fault for a request to `endpoint`, if any, consuming one use of its rule.
    pub(crate) fn take(&self, endpoint: Option<Endpoint>) -> Option<Fault> {
        let mut rules = self.lock();
        let at = rules.iter().position(|r| r.endpoint.matches(endpoint))?;
        let rule = &mut rules[at];
        match &mut rule.remaining {
            None => Some(rule.fault.clone()),
            Some(n) if *n > 1 => {
                *n -= 1;
                Some(rule.fault.clone())
            }
            Some(_) => Some(rules.remove(at).fault),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        // A rule list is valid whatever a panicking holder did, so poisoning is ignored.
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A fault about to be injected; say for how long with [`once`](Self::once),
/// [`times`](Self::times) or [`always`](Self::always).
///
/// Made by [`FakeUpstream::inject`](super::FakeUpstream::inject). Faults apply in the order they
/// were injected: a request gets the first one still active for its endpoint.
#[must_use = "nothing is injected until .once(), .times(n) or .always() is called"]
#[derive(Debug)]
pub struct Injection {
    faults: Arc<Faults>,
    endpoint: Endpoint,
    fault: Fault,
}

impl Injection {
    pub(crate) fn new(faults: Arc<Faults>, endpoint: Endpoint, fault: Fault) -> Self {
        Self {
            faults,
            endpoint,
            fault,
        }
    }

    /// Applies the fault to the next matching request only.
    pub fn once(self) {
        self.times(1);
    }

    /// Applies the fault to the next `n` matching requests (none when `n` is 0).
    pub fn times(self, n: u64) {
        if n > 0 {
            self.push(Some(n));
        }
    }

    /// Applies the fault to every matching request until
    /// [`clear_faults`](super::FakeUpstream::clear_faults).
    pub fn always(self) {
        self.push(None);
    }

    fn push(self, remaining: Option<u64>) {
        self.faults.push(Rule {
            endpoint: self.endpoint,
            fault: self.fault,
            remaining,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_consumed_in_order() {
        let faults = Arc::new(Faults::default());
        let inject = |e, f| Injection::new(faults.clone(), e, f);
        inject(Endpoint::UpgradePaths, Fault::status(503)).times(2);
        inject(Endpoint::Any, Fault::DropConnection).always();
        inject(Endpoint::Token, Fault::status(500)).times(0);

        assert_eq!(
            faults.take(Some(Endpoint::UpgradePaths)),
            Some(Fault::status(503))
        );
        assert_eq!(
            faults.take(Some(Endpoint::Token)),
            Some(Fault::DropConnection)
        );
        assert_eq!(
            faults.take(Some(Endpoint::UpgradePaths)),
            Some(Fault::status(503))
        );
        assert_eq!(
            faults.take(Some(Endpoint::UpgradePaths)),
            Some(Fault::DropConnection)
        );
        faults.clear();
        assert_eq!(faults.take(None), None);
    }

    #[test]
    fn headers_only_apply_to_status_faults() {
        let fault = Fault::status(429).header(http::header::RETRY_AFTER, 3);
        let Fault::Status { headers, .. } = fault else {
            panic!("not a status fault")
        };
        assert_eq!(headers[http::header::RETRY_AFTER], "3");
        assert_eq!(
            Fault::DropConnection.header(http::header::RETRY_AFTER, "1"),
            Fault::DropConnection
        );
    }
}
