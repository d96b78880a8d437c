//! The upgrade-paths client: one pooled HTTP client asking WordPress.com about sites.
//!
//! Build one [`UpgradePathsClient`] at start-up and share it: it is cheap to clone, and every clone
//! uses the same connection pool.
//!
//! ```
//! use std::time::Duration;
//! use upgrade_guard::UpgradePathsClient;
//!
//! let client = UpgradePathsClient::builder()
//!     .bearer_token("partner-token")
//!     .lookup_timeout(Duration::from_secs(3))
//!     .build()?;
//! # Ok::<(), upgrade_guard::upstream::BuildError>(())
//! ```

mod auth;
mod error;
mod paths;

pub use error::LookupError;
pub use paths::UpgradePaths;

use crate::Site;
use auth::BearerToken;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};
use std::{fmt, sync::Arc, time::Duration};

/// WordPress.com's public API.
pub const DEFAULT_BASE_URL: &str = "https://public-api.wordpress.com";
/// How long one lookup may take, connection and answer included.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long establishing a connection may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest upgrade-paths answer read; real ones are a few hundred bytes.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Asks WordPress.com's `upgrade-paths` endpoint what may be provisioned on a site.
///
/// Cheap to clone: clones share one connection pool and configuration.
#[derive(Clone)]
pub struct UpgradePathsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    token: BearerToken,
    lookup_timeout: Duration,
    max_answer_bytes: usize,
}

impl UpgradePathsClient {
    /// A builder with the defaults: WordPress.com's base URL, a 5 s lookup deadline, a 64 KiB cap
    /// on answers. A token is required.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The base URL lookups go to.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The lookup deadline.
    pub fn lookup_timeout(&self) -> Duration {
        self.inner.lookup_timeout
    }

    /// Asks what may be provisioned on `site` now.
    ///
    /// The whole exchange (connecting, sending, reading the answer) is bounded by the lookup
    /// deadline. Errors are classified as the guard's contract needs them; see [`LookupError`].
    pub async fn upgrade_paths(&self, site: &Site) -> Result<UpgradePaths, LookupError> {
        let inner = &*self.inner;
        tokio::time::timeout(inner.lookup_timeout, inner.fetch(site))
            .await
            .unwrap_or(Err(LookupError::Timeout))
    }
}

impl Inner {
    async fn fetch(&self, site: &Site) -> Result<UpgradePaths, LookupError> {
        // A `Site` holds only unreserved characters and `::`, so it cannot change the URL's shape.
        let url = format!(
            "{}/rest/v1.3/jpphp/{}/upgrade-paths",
            self.base_url,
            site.as_str()
        );
        let response = self
            .http
            .get(url)
            .header(header::AUTHORIZATION, self.token.header().clone())
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = self.read_capped(response).await?;
        classify(status, &body, retry_after)
    }

    async fn read_capped(&self, mut response: reqwest::Response) -> Result<Bytes, LookupError> {
        let limit = self.max_answer_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(LookupError::AnswerTooLarge { limit });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                return Err(LookupError::AnswerTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

fn transport(error: reqwest::Error) -> LookupError {
    if error.is_timeout() {
        LookupError::Timeout
    } else {
        LookupError::Transport(Arc::new(error.without_url()))
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    seconds.trim().parse().ok().map(Duration::from_secs)
}

/// Maps an upstream answer to the paths or to the error the contract names.
fn classify(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<UpgradePaths, LookupError> {
    if status.is_success() {
        return UpgradePaths::from_json(body).map_err(|e| LookupError::InvalidAnswer(Arc::new(e)));
    }
    #[derive(serde::Deserialize)]
    struct ErrorAnswer {
        error: String,
    }
    let code = serde_json::from_slice::<ErrorAnswer>(body).map(|answer| answer.error);
    if status == StatusCode::NOT_FOUND || code.is_ok_and(|code| code == "invalid_blog") {
        return Err(LookupError::UnknownSite);
    }
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err(LookupError::Unauthorized { status })
        }
        _ => Err(LookupError::Status {
            status,
            retry_after,
        }),
    }
}

impl fmt::Debug for UpgradePathsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradePathsClient")
            .field("base_url", &self.inner.base_url)
            .field("token", &self.inner.token)
            .field("lookup_timeout", &self.inner.lookup_timeout)
            .field("max_answer_bytes", &self.inner.max_answer_bytes)
            .finish_non_exhaustive()
    }
}

/// Builds an [`UpgradePathsClient`].
#[derive(Default)]
#[must_use]
pub struct ClientBuilder {
    base_url: Option<String>,
    token: Option<String>,
    lookup_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    max_answer_bytes: Option<usize>,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// Where the partner API lives; default [`DEFAULT_BASE_URL`]. Point it at a
    /// [`FakeUpstream`](crate::fake::FakeUpstream) in tests.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The partner's bearer token, sent as `Authorization: Bearer <token>`.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The deadline for one whole lookup; default [`DEFAULT_LOOKUP_TIMEOUT`].
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = Some(timeout);
        self
    }

    /// The deadline for opening a connection; default [`DEFAULT_CONNECT_TIMEOUT`]. Ignored when
    /// [`http_client`](Self::http_client) is given.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The largest answer read, in bytes; default [`DEFAULT_MAX_ANSWER_BYTES`].
    pub fn max_answer_bytes(mut self, limit: usize) -> Self {
        self.max_answer_bytes = Some(limit);
        self
    }

    /// Uses this `reqwest::Client` (and its pool, proxy and TLS settings) instead of building one.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<UpgradePathsClient, BuildError> {
        let base_url = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let parsed = reqwest::Url::parse(base_url).map_err(|_| BuildError::BaseUrl)?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || parsed.cannot_be_a_base()
        {
            return Err(BuildError::BaseUrl);
        }
        let token = self.token.ok_or(BuildError::MissingToken)?;
        let token = BearerToken::new(&token).ok_or(BuildError::InvalidToken)?;
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
                .build()
                .map_err(|e| BuildError::Http(Box::new(e)))?,
        };
        Ok(UpgradePathsClient {
            inner: Arc::new(Inner {
                http,
                base_url: parsed.as_str().trim_end_matches('/').to_owned(),
                token,
                lookup_timeout: self.lookup_timeout.unwrap_or(DEFAULT_LOOKUP_TIMEOUT),
                max_answer_bytes: self.max_answer_bytes.unwrap_or(DEFAULT_MAX_ANSWER_BYTES),
            }),
        })
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("lookup_timeout", &self.lookup_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_answer_bytes", &self.max_answer_bytes)
            .finish_non_exhaustive()
    }
}

/// Why an [`UpgradePathsClient`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No token was given.
    #[error("a partner token is required")]
    MissingToken,
    /// The token cannot be sent in an HTTP header.
    #[error("the partner token holds characters an HTTP header cannot carry")]
    InvalidToken,
    /// The base URL is not an absolute http(s) URL without query or fragment.
    #[error("the base URL must be an absolute http or https URL without query or fragment")]
    BaseUrl,
    /// The HTTP client could not be built (TLS set-up).
    #[error("the HTTP client could not be built")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_contract_says() {
        let ok = classify(
            StatusCode::OK,
            br#"{"jetpack-scan":["jetpack-scan"]}"#,
            None,
        )
        .unwrap();
        assert!(ok.allows("jetpack-scan"));
        assert!(matches!(
            classify(StatusCode::OK, b"[]", None),
            Err(LookupError::InvalidAnswer(_))
        ));
        assert!(matches!(
            classify(
                StatusCode::FORBIDDEN,
                br#"{"error":"invalid_blog","message":"x"}"#,
                None
            ),
            Err(LookupError::UnknownSite)
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, b"", None),
            Err(LookupError::UnknownSite)
        ));
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, br#"{"error":"invalid_token"}"#, None),
            Err(LookupError::Unauthorized { .. })
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, b"", None),
            Err(LookupError::Unauthorized { .. })
        ));
        let throttled = classify(
            StatusCode::TOO_MANY_REQUESTS,
            b"",
            Some(Duration::from_secs(7)),
        )
        .unwrap_err();
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, b"<html>", None),
            Err(LookupError::Status { .. })
        ));
    }

    #[test]
    fn builder_checks_its_input_and_hides_the_token() {
        assert!(matches!(
            UpgradePathsClient::builder().build(),
            Err(BuildError::MissingToken)
        ));
        assert!(matches!(
            UpgradePathsClient::builder().bearer_token("a\nb").build(),
            Err(BuildError::InvalidToken)
        ));
        for bad in ["not a url", "ftp://x", "http://x/?q=1", "mailto:a@b"] {
            assert!(matches!(
                UpgradePathsClient::builder()
                    .bearer_token("t")
                    .base_url(bad)
                    .build(),
                Err(BuildError::BaseUrl)
            ));
        }
        let client = UpgradePathsClient::builder()
            .bearer_token("s3cret-token")
            .base_url("http://127.0.0.1:1/")
            .build()
            .unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:1");
        assert!(!format!("{client:?}").contains("s3cret"));
        let builder = UpgradePathsClient::builder().bearer_token("s3cret-token");
        assert!(!format!("{builder:?}").contains("s3cret"));
    }
}
