//! Why an upgrade-paths lookup gave no answer.

use super::auth::TokenError;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why WordPress.com's upgrade-paths endpoint gave no usable answer.
///
/// The guard maps these to its contract: [`UnknownSite`](Self::UnknownSite) is 404 `unknown_site`,
/// [`Unauthorized`](Self::Unauthorized) and a refused [`Token`](Self::Token) are 502
/// `upstream_unauthorized`, [`CallerRefused`](Self::CallerRefused) is the upstream's own 401/403
/// answer, [`MissingToken`](Self::MissingToken) is 401 `missing_token`, and every other variant is
/// 503 `upgrade_paths_unavailable` with `Retry-After`.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// WordPress.com does not know the site (`invalid_blog`).
    #[error("WordPress.com does not know this site")]
    UnknownSite,
    /// WordPress.com refused the partner's token for the lookup (after one refresh, for a token
    /// source that can refresh).
    #[error("WordPress.com refused the partner's token (HTTP {status})")]
    Unauthorized {
        /// The refusing status: 401, or 403.
        status: StatusCode,
    },
    /// The partner's token source had no token to ask with: the token endpoint refused the
    /// client credentials ([`TokenError::Refused`], which the guard answers as it answers
    /// [`Unauthorized`](Self::Unauthorized)) or could not be reached or read.
    #[error("no partner token for the lookup")]
    Token(#[source] TokenError),
    /// WordPress.com refused the caller's own token (401, or a 403 other than `invalid_blog`), for
    /// a lookup made with it ([`UpgradePathsClient::upgrade_paths_with`](super::UpgradePathsClient::upgrade_paths_with)).
    /// The caller can fix this, not the partner: the guard answers with the upstream's own
    /// status and body.
    #[error("WordPress.com refused the caller's token (HTTP {})", .0.status())]
    CallerRefused(CallerRefusal),
    /// The client has no token of its own ([`UpgradePathsClientBuilder::caller_token`](super::UpgradePathsClientBuilder::caller_token))
    /// and the lookup was given none: the request being checked carries no bearer token.
    #[error("the request carries no bearer token to look the site up with")]
    MissingToken,
    /// No complete answer within the lookup deadline (or the last attempt's own timeout), from
    /// upgrade-paths or from a call the guard makes around it (the site's names, its status).
    #[error("WordPress.com did not answer in time")]
    Timeout,
    /// The connection failed or broke before a complete answer.
    #[error("the connection to WordPress.com failed")]
    Transport(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// An error status that says nothing about the site: 5xx, 429 or an unexpected 4xx.
    #[error("WordPress.com answered HTTP {status}")]
    Status {
        /// The upstream status.
        status: StatusCode,
        /// The upstream's `Retry-After`, in seconds, when it sent one.
        retry_after: Option<Duration>,
    },
    /// A success status whose body is not an object of string arrays.
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
    /// How long the upstream (or its token endpoint) asked callers to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. }
            | Self::Token(TokenError::Status { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }

    /// Whether WordPress.com refused the partner's credentials, at the lookup or at the token
    /// endpoint: only the partner can fix that (the guard's 502 `upstream_unauthorized`).
    pub(crate) fn is_partner_refused(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. }
                | Self::Token(TokenError::Refused { .. } | TokenError::CannotRefresh)
        )
    }
}

/// WordPress.com's answer refusing a caller's token, kept so that the caller gets it as
/// WordPress.com gave it.
///
/// Its `Debug` output shows the status and the body's length, not the body: an upstream's error
/// body is not ours to vouch for.
#[derive(Clone)]
pub struct CallerRefusal {
    status: StatusCode,
    json: Option<Bytes>,
    www_authenticate: Option<HeaderValue>,
}

impl CallerRefusal {
    /// Keeps `body` only when it is a JSON object with a string `error`, the shape of
    /// WordPress.com's errors, so that what the guard relays is always JSON.
    pub(crate) fn new(
        status: StatusCode,
        body: &Bytes,
        www_authenticate: Option<HeaderValue>,
    ) -> Self {
        let is_error_object = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(
            body,
        )
        .is_ok_and(|object| {
            object
                .get("error")
                .is_some_and(serde_json::Value::is_string)
        });
        Self {
            status,
            json: is_error_object.then(|| body.clone()),
            www_authenticate,
        }
    }

    /// The upstream's status: 401, or 403.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The upstream's body, byte for byte, when it was a JSON error object
    /// (`{"error":"<code>",...}`); `None` for anything else (an HTML page from a proxy, say).
    pub fn json(&self) -> Option<&Bytes> {
        self.json.as_ref()
    }

    /// The upstream's `WWW-Authenticate` header, when it sent one.
    pub fn www_authenticate(&self) -> Option<&HeaderValue> {
        self.www_authenticate.as_ref()
    }
}

impl fmt::Debug for CallerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerRefusal")
            .field("status", &self.status)
            .field("json_bytes", &self.json.as_ref().map(|json| json.len()))
            .field("www_authenticate", &self.www_authenticate.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_json_error_object_is_kept_to_relay() {
        let kept = |body: &'static [u8]| {
            CallerRefusal::new(StatusCode::UNAUTHORIZED, &Bytes::from_static(body), None)
                .json()
                .is_some()
        };
        assert!(kept(br#"{"error":"invalid_token","message":"no"}"#));
        assert!(kept(br#"{"message":"no","error":"x"}"#));
        for other in [
            &b""[..],
            b"<html>401</html>",
            br#"["invalid_token"]"#,
            br#"{"error":7}"#,
            br#"{"message":"no"}"#,
            br#""invalid_token""#,
        ] {
            assert!(!kept(other), "{}", String::from_utf8_lossy(other));
        }
        let refusal = CallerRefusal::new(
            StatusCode::FORBIDDEN,
            &Bytes::from_static(br#"{"error":"invalid_token","message":"t0k3n"}"#),
            None,
        );
        assert!(!format!("{refusal:?}").contains("t0k3n"));
    }
}
