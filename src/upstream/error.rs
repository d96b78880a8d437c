//! Why an upgrade-paths lookup gave no answer.

use http::StatusCode;
use std::sync::Arc;
use std::time::Duration;

/// Why WordPress.com's upgrade-paths endpoint gave no usable answer.
///
/// The guard maps these to its contract: [`UnknownSite`](Self::UnknownSite) is 404
/// `unknown_site`, [`Unauthorized`](Self::Unauthorized) is 502 `upstream_unauthorized`, and every
/// other variant is 503 `upgrade_paths_unavailable` with `Retry-After`.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// WordPress.com does not know the site (`invalid_blog`, or 404).
    #[error("WordPress.com does not know this site")]
    UnknownSite,
    /// WordPress.com refused the partner's credentials: the lookup refused the token (after one
    /// refresh, for a token source that can refresh), or the token endpoint refused the client
    /// credentials.
    #[error("WordPress.com refused the partner's credentials (HTTP {status})")]
    Unauthorized {
        /// The refusing status: 401 or 403 from the lookup, or the token endpoint's 4xx.
        status: StatusCode,
    },
    /// No complete answer within the lookup deadline (or the last attempt's own timeout).
    #[error("the upgrade-paths lookup timed out")]
    Timeout,
    /// The connection failed or broke before a complete answer.
    #[error("the upgrade-paths lookup failed in transport")]
    Transport(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// An error status that says nothing about the site: 5xx, 429 or an unexpected 4xx, from the
    /// lookup or from the token endpoint.
    #[error("WordPress.com answered HTTP {status}")]
    Status {
        /// The upstream status.
        status: StatusCode,
        /// The upstream's `Retry-After`, in seconds, when it sent one.
        retry_after: Option<Duration>,
    },
    /// A success status whose body is not an object of string arrays (or, from the token
    /// endpoint, holds no usable `access_token`).
    #[error("WordPress.com's answer is not an upgrade-paths object")]
    InvalidAnswer(#[source] Arc<serde_json::Error>),
    /// An answer larger than the client's cap.
    #[error("WordPress.com's answer is larger than {limit} bytes")]
    AnswerTooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
}

impl LookupError {
    /// How long the upstream asked callers to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
