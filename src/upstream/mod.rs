//! The upgrade-paths client: one pooled HTTP client asking WordPress.com about sites.
//!
//! Build one [`UpgradePathsClient`] at start-up and share it: it is cheap to clone, and every clone
//! uses the same connection pool and the same partner token.
//!
//! ```
//! use std::time::Duration;
//! use upgrade_guard::UpgradePathsClient;
//!
//! let client = UpgradePathsClient::builder()
//!     .client_credentials("partner-client-id", "partner-client-secret")
//!     .lookup_timeout(Duration::from_secs(3))
//!     .build()?;
//! # Ok::<(), upgrade_guard::upstream::BuildError>(())
//! ```
//!
//! # Credentials
//!
//! Every call carries the partner's bearer token, from a [`TokenSource`]: a fixed token
//! ([`ClientBuilder::bearer_token`]) or OAuth2 client credentials
//! ([`ClientBuilder::client_credentials`]), exchanged for a token on first use. When a lookup's
//! token is refused (401, or a 403 other than `invalid_blog`), a client-credentials source fetches a
//! new token (once for all the lookups that saw the old one refused) and the lookup is tried once
//! more. A fixed token, a token refused again, or client credentials the token endpoint refuses
//! end the lookup with [`LookupError::Unauthorized`].
//!
//! A proxy in front of tooling that carries its own token needs no token of its own:
//! [`ClientBuilder::caller_token`] makes every lookup use the bearer token of the request the
//! guard is checking. Such a token is never refreshed, and its refusal is the caller's:
//! [`LookupError::CallerRefused`], with WordPress.com's own answer to relay.
//!
//! # Retries and deadlines
//!
//! A lookup is a read, so passing failures are retried: a connection that failed or broke, an
//! attempt that timed out, 500, 502, 503, 504 and 429, up to [`ClientBuilder::max_retries`] times
//! ([`DEFAULT_MAX_RETRIES`]), after a jittered exponential backoff (100 ms, then 200 ms, ... up to
//! 1 s, each plus up to as much again at random) or the upstream's `Retry-After` if longer. Other
//! statuses are not retried: a 4xx would be answered the same way again. (500 is retried because
//! WordPress.com answers it for passing trouble too; one more read is cheap.)
//!
//! Each attempt, token fetch included, has its own timeout ([`ClientBuilder::attempt_timeout`],
//! [`DEFAULT_ATTEMPT_TIMEOUT`]), and the whole lookup, retries and waits included, ends by its
//! deadline ([`ClientBuilder::lookup_timeout`], [`DEFAULT_LOOKUP_TIMEOUT`]). A retry that could not
//! start before the deadline is not made: the lookup ends at once with the last error, so a 429
//! whose `Retry-After` is longer than the time left is answered with that 429 (and its
//! `Retry-After`) without waiting.

mod auth;
mod error;
mod paths;
mod retry;

pub use auth::{ClientCredentialsBuilder, Token, TokenError, TokenSource};
pub use error::{CallerRefusal, LookupError};
pub use paths::UpgradePaths;

use crate::Site;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};
use retry::Retries;
use std::{fmt, sync::Arc, time::Duration};
use tokio::time::Instant;

/// WordPress.com's public API.
pub const DEFAULT_BASE_URL: &str = "https://public-api.wordpress.com";
/// How long one lookup may take, token fetch, retries and waits included.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt of a lookup (or one token request) may take.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a lookup that failed in passing is tried again.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// How long establishing a connection may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest upgrade-paths answer read; real ones are a few hundred bytes.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Asks WordPress.com's `upgrade-paths` endpoint what may be provisioned on a site.
///
/// Cheap to clone: clones share one connection pool, configuration and token.
#[derive(Clone)]
pub struct UpgradePathsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    tokens: TokenSource,
    lookup_timeout: Duration,
    attempt_timeout: Duration,
    max_retries: u32,
    max_answer_bytes: usize,
}

impl UpgradePathsClient {
    /// A builder with the defaults: WordPress.com's base URL, a 5 s lookup deadline, 2 s per
    /// attempt, 2 retries, a 64 KiB cap on answers. A token source is required.
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

    /// The timeout of one attempt.
    pub fn attempt_timeout(&self) -> Duration {
        self.inner.attempt_timeout
    }

    /// How many times a lookup that failed in passing is tried again.
    pub fn max_retries(&self) -> u32 {
        self.inner.max_retries
    }

    /// The HTTP client lookups use (its pool, TLS roots and proxies), for the guard's other calls
    /// to WordPress.com.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The partner's token source, shared with every clone of this client: use it to send the
    /// same token from your own calls to WordPress.com (the provision relay behind the guard).
    ///
    /// ```
    /// use upgrade_guard::UpgradePathsClient;
    ///
    /// let client = UpgradePathsClient::builder()
    ///     .client_credentials("partner-client-id", "partner-client-secret")
    ///     .build()?;
    /// let tokens = client.token_source().clone();
    /// assert!(tokens.can_refresh());
    /// # Ok::<(), upgrade_guard::upstream::BuildError>(())
    /// ```
    pub fn token_source(&self) -> &TokenSource {
        &self.inner.tokens
    }

    /// Asks what may be provisioned on `site` now.
    ///
    /// Passing failures are retried and a refused token is refreshed once, all within the lookup
    /// deadline (see the [module docs](self)). Errors are classified as the guard's contract
    /// needs them; see [`LookupError`].
    ///
    /// A client built with [`caller_token`](ClientBuilder::caller_token) has no token to ask
    /// with and answers [`LookupError::MissingToken`]: use
    /// [`upgrade_paths_with`](Self::upgrade_paths_with).
    pub async fn upgrade_paths(&self, site: &Site) -> Result<UpgradePaths, LookupError> {
        self.lookup(site, None).await
    }

    /// Asks what may be provisioned on `site` now, with `token`, a caller's own, in place of the
    /// client's: what a guard built on a [`caller_token`](ClientBuilder::caller_token) client does
    /// with each request's bearer token ([`Token::from_headers`]).
    ///
    /// Passing failures are retried as for [`upgrade_paths`](Self::upgrade_paths), but the
    /// token is never refreshed: when WordPress.com refuses it (401, or a 403 other than
    /// `invalid_blog`), the lookup ends with [`LookupError::CallerRefused`], which holds
    /// WordPress.com's answer for the caller.
    ///
    /// ```no_run
    /// # async fn check(request: http::Request<()>) -> Result<(), Box<dyn std::error::Error>> {
    /// use upgrade_guard::{LookupError, Site, Token, UpgradePathsClient};
    ///
    /// let client = UpgradePathsClient::builder().caller_token().build()?;
    /// let token = Token::from_headers(request.headers()).ok_or(LookupError::MissingToken)?;
    /// let paths = client.upgrade_paths_with(&Site::parse("example.com")?, &token).await?;
    /// # Ok(()) }
    /// ```
    pub async fn upgrade_paths_with(
        &self,
        site: &Site,
        token: &Token,
    ) -> Result<UpgradePaths, LookupError> {
        self.lookup(site, Some(token)).await
    }

    /// Whether lookups use the caller's token ([`ClientBuilder::caller_token`]): the guard then
    /// passes each request's bearer token to [`upgrade_paths_with`](Self::upgrade_paths_with).
    pub fn uses_caller_token(&self) -> bool {
        self.inner.tokens.is_caller()
    }

    async fn lookup(
        &self,
        site: &Site,
        caller: Option<&Token>,
    ) -> Result<UpgradePaths, LookupError> {
        let inner = &*self.inner;
        let deadline = Instant::now() + inner.lookup_timeout;
        // Attempts and waits stop themselves at the deadline; this bounds everything else.
        tokio::time::timeout_at(deadline, inner.lookup(site, caller, deadline))
            .await
            .unwrap_or(Err(LookupError::Timeout))
    }
}

impl Inner {
    /// Looks `site` up with the caller's token when given one, else with the partner's.
    async fn lookup(
        &self,
        site: &Site,
        caller: Option<&Token>,
        deadline: Instant,
    ) -> Result<UpgradePaths, LookupError> {
        let mut retries = Retries::new(self.max_retries, deadline);
        // The token the upstream refused, while a newer one is still to be had.
        let mut stale: Option<Token> = None;
        let mut refreshed = false;
        let mut attempt = 1u32;
        loop {
            let mut sent_with = None;
            let attempt_deadline = deadline.min(Instant::now() + self.attempt_timeout);
            let result = tokio::time::timeout_at(
                attempt_deadline,
                self.attempt(site, caller, stale.as_ref(), &mut sent_with),
            )
            .await
            .unwrap_or(Err(LookupError::Timeout));
            let error = match result {
                Ok(paths) => return Ok(paths),
                Err(error) => error,
            };
            if sent_with.is_some() {
                stale = None;
            }
            // Only a refusal of the lookup itself calls for a new token, not one from the token
            // endpoint (which `sent_with` being unset tells apart).
            if let (LookupError::Unauthorized { status }, Some(token)) = (&error, sent_with) {
                if refreshed || !self.tokens.can_refresh() {
                    return Err(error);
                }
                tracing::info!(
                    site = %site,
                    status = status.as_u16(),
                    "WordPress.com refused the partner token; refreshing it and trying once more"
                );
                refreshed = true;
                stale = Some(token);
                continue;
            }
            let Some(wait) = retries.after(&error) else {
                return Err(error);
            };
            tracing::debug!(
                site = %site,
                attempt,
                %error,
                wait_ms = (wait.deadline() - Instant::now()).as_millis() as u64,
                "upgrade-paths lookup failed; retrying"
            );
            wait.await;
            attempt += 1;
        }
    }

    /// One try: get a token (the caller's, or the partner's: a new one in place of `stale`),
    /// then ask. `sent_with` is set to the partner's token once there is one, so a refusal can be
    /// told from a token endpoint's error.
    async fn attempt(
        &self,
        site: &Site,
        caller: Option<&Token>,
        stale: Option<&Token>,
        sent_with: &mut Option<Token>,
    ) -> Result<UpgradePaths, LookupError> {
        if let Some(caller) = caller {
            return self.fetch(site, caller, Whose::Caller).await;
        }
        let token = match stale {
            Some(stale) => self.tokens.refresh(stale).await,
            None => self.tokens.token().await,
        }
        .map_err(lookup_error)?;
        *sent_with = Some(token.clone());
        self.fetch(site, &token, Whose::Partner).await
    }

    async fn fetch(
        &self,
        site: &Site,
        token: &Token,
        whose: Whose,
    ) -> Result<UpgradePaths, LookupError> {
        // A `Site` holds only unreserved characters and `::`, so it cannot change the URL's shape.
        let url = format!(
            "{}/rest/v1.3/jpphp/{}/upgrade-paths",
            self.base_url,
            site.as_str()
        );
        let response = self
            .http
            .get(url)
            .header(header::AUTHORIZATION, token.authorization())
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let www_authenticate = response.headers().get(header::WWW_AUTHENTICATE).cloned();
        let limit = self.max_answer_bytes;
        let body = read_capped(response, limit)
            .await
            .map_err(|error| match error {
                ReadError::TooLarge => LookupError::AnswerTooLarge { limit },
                ReadError::Transport(error) => transport(error),
            })?;
        match classify(status, &body, retry_after) {
            // The caller's token, the caller's refusal: kept as WordPress.com gave it, to relay.
            Err(LookupError::Unauthorized { status }) if whose == Whose::Caller => Err(
                LookupError::CallerRefused(CallerRefusal::new(status, &body, www_authenticate)),
            ),
            answer => answer,
        }
    }
}

/// Whose token a lookup is sent with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Whose {
    Partner,
    Caller,
}

/// How a token source's failure ends a lookup.
fn lookup_error(error: TokenError) -> LookupError {
    match error {
        // The guard answers these 502 `upstream_unauthorized`: only the partner can fix them.
        TokenError::Refused { status, .. } => LookupError::Unauthorized { status },
        TokenError::CannotRefresh => LookupError::Unauthorized {
            status: StatusCode::UNAUTHORIZED,
        },
        TokenError::CallersOwn => LookupError::MissingToken,
        TokenError::Timeout => LookupError::Timeout,
        TokenError::Transport(error) => LookupError::Transport(error),
        TokenError::Status {
            status,
            retry_after,
        } => LookupError::Status {
            status,
            retry_after,
        },
        TokenError::InvalidAnswer => {
            let error = <serde_json::Error as serde::de::Error>::custom(
                "the token endpoint's answer holds no usable access_token",
            );
            LookupError::InvalidAnswer(Arc::new(error))
        }
    }
}

/// Why an answer's body could not be read.
pub(crate) enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

/// The body of `response`, if it is at most `limit` bytes long.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, ReadError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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
    // Only WordPress.com's own word makes a site unknown: an unknown site may be forwarded as its
    // first provision, so a bare 404 (a wrong base URL, a proxy's page) must not pass for one.
    if code.is_ok_and(|code| code == "invalid_blog") {
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

/// A base URL as lookups and token requests use it: absolute http(s), no query or fragment, no
/// trailing slash.
fn parse_base_url(url: &str) -> Result<String, BuildError> {
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

fn default_http_client(connect_timeout: Option<Duration>) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
        .build()
        .map_err(|e| BuildError::Http(Box::new(e)))
}

impl fmt::Debug for UpgradePathsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("UpgradePathsClient")
            .field("base_url", &inner.base_url)
            .field("tokens", &inner.tokens)
            .field("lookup_timeout", &inner.lookup_timeout)
            .field("attempt_timeout", &inner.attempt_timeout)
            .field("max_retries", &inner.max_retries)
            .field("max_answer_bytes", &inner.max_answer_bytes)
            .finish_non_exhaustive()
    }
}

/// Where the builder's token will come from.
enum Auth {
    Bearer(String),
    ClientCredentials { id: String, secret: String },
    Source(TokenSource),
}

/// Builds an [`UpgradePathsClient`].
///
/// One of [`bearer_token`](Self::bearer_token), [`client_credentials`](Self::client_credentials),
/// [`caller_token`](Self::caller_token) or [`token_source`](Self::token_source) is required; the
/// last one called wins.
#[derive(Default)]
#[must_use]
pub struct ClientBuilder {
    base_url: Option<String>,
    auth: Option<Auth>,
    lookup_timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    max_retries: Option<u32>,
    connect_timeout: Option<Duration>,
    max_answer_bytes: Option<usize>,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// Where the partner API lives; default [`DEFAULT_BASE_URL`]. Point it at a
    /// `FakeUpstream` (feature `test-util`) in tests.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// A fixed partner token, sent as `Authorization: Bearer <token>`. It cannot be refreshed: a
    /// refused token fails the lookup with [`LookupError::Unauthorized`].
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.auth = Some(Auth::Bearer(token.into()));
        self
    }

    /// The partner's OAuth2 client credentials, exchanged at `{base_url}/oauth2/token` for a token
    /// on the first lookup and again when WordPress.com refuses the token. Token requests use this
    /// client's HTTP client and attempt timeout.
    ///
    /// ```
    /// use upgrade_guard::UpgradePathsClient;
    ///
    /// let client = UpgradePathsClient::builder()
    ///     .client_credentials("partner-client-id", "partner-client-secret")
    ///     .build()?;
    /// assert!(!format!("{client:?}").contains("partner-client-secret"));
    /// # Ok::<(), upgrade_guard::upstream::BuildError>(())
    /// ```
    pub fn client_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.auth = Some(Auth::ClientCredentials {
            id: client_id.into(),
            secret: client_secret.into(),
        });
        self
    }

    /// No token of the partner's own: every lookup uses the bearer token of the request the guard
    /// is checking (`Authorization: Bearer …`).
    ///
    /// Use it for a proxy in front of tooling that already carries its own token (the partner's
    /// shell tooling or back office, pointed at the proxy instead of WordPress.com): the tooling
    /// needs no change and the proxy holds no credentials. The guard then never serves an answer
    /// fetched with one caller's token to another, from its cache or by joining a lookup in
    /// flight; a caller whose token WordPress.com refuses gets WordPress.com's own 401/403
    /// answer; a request with no bearer token is answered 401 `missing_token` without a lookup.
    ///
    /// ```
    /// use upgrade_guard::{UpgradeGuardLayer, UpgradePathsClient};
    ///
    /// let client = UpgradePathsClient::builder().caller_token().build()?;
    /// assert!(client.uses_caller_token());
    /// let guard = UpgradeGuardLayer::new(client);
    /// # Ok::<(), upgrade_guard::upstream::BuildError>(())
    /// ```
    pub fn caller_token(self) -> Self {
        self.token_source(TokenSource::caller())
    }

    /// A token source built elsewhere, to share one token between several clients (or with code
    /// that was set up before the client).
    pub fn token_source(mut self, source: TokenSource) -> Self {
        self.auth = Some(Auth::Source(source));
        self
    }

    /// The deadline for one whole lookup, token fetch, retries and waits included; default
    /// [`DEFAULT_LOOKUP_TIMEOUT`].
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = Some(timeout);
        self
    }

    /// The deadline for one attempt (getting a token if needed, asking, reading the answer);
    /// default [`DEFAULT_ATTEMPT_TIMEOUT`]. An attempt never runs past the lookup deadline, so a
    /// value at or above it means "no per-attempt timeout".
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// How many times a lookup that failed in passing is tried again; default
    /// [`DEFAULT_MAX_RETRIES`]. `0` turns retries off. The lookup deadline still bounds them.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
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

    /// Builds the client. No request is made until the first lookup.
    pub fn build(self) -> Result<UpgradePathsClient, BuildError> {
        let base_url = parse_base_url(self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL))?;
        let auth = self.auth.ok_or(BuildError::MissingToken)?;
        let http = match self.http {
            Some(http) => http,
            None => default_http_client(self.connect_timeout)?,
        };
        let attempt_timeout = self.attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT);
        let tokens = match auth {
            Auth::Bearer(token) => TokenSource::bearer(token)?,
            Auth::ClientCredentials { id, secret } => TokenSource::client_credentials(id, secret)
                .base_url(&base_url)
                .http_client(http.clone())
                .timeout(attempt_timeout)
                .build()?,
            Auth::Source(source) => source,
        };
        Ok(UpgradePathsClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                tokens,
                lookup_timeout: self.lookup_timeout.unwrap_or(DEFAULT_LOOKUP_TIMEOUT),
                attempt_timeout,
                max_retries: self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
                max_answer_bytes: self.max_answer_bytes.unwrap_or(DEFAULT_MAX_ANSWER_BYTES),
            }),
        })
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = match &self.auth {
            None => "none".to_owned(),
            Some(Auth::Bearer(_)) => "bearer token <redacted>".to_owned(),
            Some(Auth::ClientCredentials { id, .. }) => {
                format!("client credentials ({id}, <redacted>)")
            }
            Some(Auth::Source(source)) => format!("{source:?}"),
        };
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("credentials", &format_args!("{credentials}"))
            .field("lookup_timeout", &self.lookup_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_retries", &self.max_retries)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_answer_bytes", &self.max_answer_bytes)
            .finish_non_exhaustive()
    }
}

/// Why an [`UpgradePathsClient`] (or a [`TokenSource`]) could not be built.
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
        // PHP's `[]` is "no upgrade paths"; any other array fails closed.
        assert!(classify(StatusCode::OK, b"[]", None).unwrap().is_empty());
        assert!(matches!(
            classify(StatusCode::OK, br#"["jetpack-scan"]"#, None),
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
        // A bare 404 (a wrong base URL) is not WordPress.com saying the site is unknown.
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, b"", None),
            Err(LookupError::Status { .. })
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
        let builder = UpgradePathsClient::builder().client_credentials("id", "client-s3cret");
        assert!(!format!("{builder:?}").contains("s3cret"));
        let client = builder.build().unwrap();
        assert!(client.token_source().can_refresh());
        assert!(!format!("{client:?}").contains("s3cret"));
        assert!(matches!(
            UpgradePathsClient::builder().bearer_token("").build(),
            Err(BuildError::InvalidToken)
        ));
    }
}
