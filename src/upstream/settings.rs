//! What the lookups' client and the token endpoint's share: the defaults, the base URL's rules,
//! the HTTP client they start from, and why building either fails.

use std::time::Duration;

/// WordPress.com's public API.
pub(crate) const DEFAULT_BASE_URL: &str = "https://public-api.wordpress.com";
/// How long one lookup may take, token fetch, retries and waits included.
pub(crate) const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt of a lookup (or one token request) may take.
pub(crate) const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a lookup that failed in passing is tried again.
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 2;
/// How long establishing a connection may take.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest upgrade-paths answer read; real ones are a few hundred bytes.
pub(crate) const DEFAULT_MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why an [`UpgradePathsClient`](super::UpgradePathsClient) (or a
/// [`TokenSource`](super::TokenSource)) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No token source was given.
    #[error("a partner token, client credentials, or caller_token() are required")]
    MissingToken,
    /// The token is empty or cannot be sent in an HTTP header.
    #[error("the partner token is empty or holds characters an HTTP header cannot carry")]
    InvalidToken,
    /// The base URL is not an absolute http(s) URL without query or fragment.
    #[error("the base URL must be an absolute http or https URL without query or fragment")]
    BaseUrl,
    /// The HTTP client could not be built (TLS set-up).
    #[error("the HTTP client could not be built")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A base URL as lookups and token requests use it: absolute http(s), no query or fragment, no
/// trailing slash.
pub(crate) fn parse_base_url(url: &str) -> Result<String, BuildError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| BuildError::BaseUrl)?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || parsed.cannot_be_a_base()
    {
        return Err(BuildError::BaseUrl);
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

pub(crate) fn default_http_client(
    connect_timeout: Option<Duration>,
) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
        .build()
        .map_err(|e| BuildError::Http(Box::new(e)))
}
