//! [`UpgradePathsClient`]: lookups with their retries, deadlines and token refreshes.

use super::answer::{Answer, classify, get};
use super::auth::{TokenError, TokenSource};
use super::error::{CallerRefusal, LookupError};
use super::paths::UpgradePaths;
use super::retry::Retries;
use super::settings::BuildError;
use super::token::Token;
use crate::rejection::Chain;
use crate::site::Site;
use std::{fmt, sync::Arc, time::Duration};
use tokio::time::Instant;

/// Asks WordPress.com's `upgrade-paths` endpoint what may be provisioned on a site.
///
/// Build one [`UpgradePathsClient`] at start-up and share it: it is cheap to clone, and every clone
/// uses the same connection pool and the same partner token.
///
/// ```
/// use std::time::Duration;
/// use upgrade_guard::UpgradePathsClient;
///
/// let client = UpgradePathsClient::builder()
///     .client_credentials("partner-client-id", "partner-client-secret")
///     .lookup_timeout(Duration::from_secs(3))
///     .build()?;
/// # Ok::<(), upgrade_guard::BuildError>(())
/// ```
///
/// # Credentials
///
/// Every call carries the partner's bearer token, from a [`TokenSource`]: a fixed token
/// ([`UpgradePathsClientBuilder::bearer_token`](super::UpgradePathsClientBuilder::bearer_token)) or OAuth2 client credentials
/// ([`UpgradePathsClientBuilder::client_credentials`](super::UpgradePathsClientBuilder::client_credentials)), exchanged for a token on first use. When a
/// lookup's token is refused (401, or a 403 other than `invalid_blog`), a client-credentials source
/// fetches a new token (once for all the lookups that saw the old one refused) and the lookup is
/// tried once more. A fixed token or a token refused again end the lookup with
/// [`LookupError::Unauthorized`]; client credentials the token endpoint refuses end it with
/// [`LookupError::Token`] holding [`TokenError::Refused`]. The guard answers both 502
/// `upstream_unauthorized`: only the partner can fix them.
///
/// A proxy in front of tooling that carries its own token needs no token of its own:
/// [`UpgradePathsClientBuilder::caller_token`](super::UpgradePathsClientBuilder::caller_token) makes every lookup use the bearer token of the
/// request the guard is checking. Such a token is never refreshed, and its refusal is the caller's:
/// [`LookupError::CallerRefused`], with WordPress.com's own answer to relay.
///
/// # Retries and deadlines
///
/// A lookup is a read, so passing failures are retried: a connection that failed or broke, an
/// attempt that timed out, 500, 502, 503, 504 and 429, up to
/// [`UpgradePathsClientBuilder::max_retries`](super::UpgradePathsClientBuilder::max_retries) times (2 by default), after a jittered exponential
/// backoff (100 ms, then 200 ms, ... up to 1 s, each plus up to as much again at random) or the
/// upstream's `Retry-After` if longer. Other statuses are not retried: a 4xx would be answered the
/// same way again. (500 is retried because WordPress.com answers it for passing trouble too; one
/// more read is cheap.)
///
/// Each attempt, token fetch included, has its own timeout
/// ([`UpgradePathsClientBuilder::attempt_timeout`](super::UpgradePathsClientBuilder::attempt_timeout), 2 s by default), and the whole lookup, retries
/// and waits included, ends by its deadline ([`UpgradePathsClientBuilder::lookup_timeout`](super::UpgradePathsClientBuilder::lookup_timeout), 5 s by
/// default). A retry that could not start before the deadline is not made: the lookup ends at once
/// with the last error, so a 429 whose `Retry-After` is longer than the time left is answered with
/// that 429 (and its `Retry-After`) without waiting.
///
/// The guard's two other calls, the public site lookup (a site's other name) and `status` (is a
/// first provision's site new), are tried the same way, each by a deadline of its own.
#[derive(Clone)]
pub struct UpgradePathsClient {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) http: reqwest::Client,
    pub(super) base_url: String,
    /// Each lookup's URL is built on these.
    pub(super) endpoints: SiteEndpoints,
    pub(super) tokens: TokenSource,
    pub(super) lookup_timeout: Duration,
    pub(super) attempt_timeout: Duration,
    pub(super) max_retries: u32,
    pub(super) max_answer_bytes: usize,
}

impl UpgradePathsClient {
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
    /// # Ok::<(), upgrade_guard::BuildError>(())
    /// ```
    pub fn token_source(&self) -> &TokenSource {
        &self.inner.tokens
    }

    /// Asks what may be provisioned on `site` now.
    ///
    /// Passing failures are retried and a refused token is refreshed once, all within the lookup
    /// deadline (see the [type's docs](Self)). Errors are classified as the guard's contract
    /// needs them; see [`LookupError`].
    ///
    /// A client built with [`caller_token`](super::UpgradePathsClientBuilder::caller_token) has no token to ask
    /// with and answers [`LookupError::MissingToken`]: use
    /// [`upgrade_paths_with`](Self::upgrade_paths_with).
    pub async fn upgrade_paths(&self, site: &Site) -> Result<UpgradePaths, LookupError> {
        self.lookup(site, None).await.map(Arc::unwrap_or_clone)
    }

    /// Asks what may be provisioned on `site` now, with `token`, a caller's own, in place of the
    /// client's: what a guard built on a [`caller_token`](super::UpgradePathsClientBuilder::caller_token) client does
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
        self.lookup(site, Some(token))
            .await
            .map(Arc::unwrap_or_clone)
    }

    /// Whether lookups use the caller's token ([`UpgradePathsClientBuilder::caller_token`](super::UpgradePathsClientBuilder::caller_token)): the guard then
    /// passes each request's bearer token to [`upgrade_paths_with`](Self::upgrade_paths_with).
    pub fn uses_caller_token(&self) -> bool {
        self.inner.tokens.is_caller()
    }

    /// The lookup behind [`upgrade_paths`](Self::upgrade_paths) (`caller` `None`) and
    /// [`upgrade_paths_with`](Self::upgrade_paths_with), its answer shared: the guard's cache
    /// keeps it as it is, and sites given the same answer share one.
    pub(crate) async fn lookup(
        &self,
        site: &Site,
        caller: Option<&Token>,
    ) -> Result<Arc<UpgradePaths>, LookupError> {
        let inner = &*self.inner;
        let deadline = Instant::now() + inner.lookup_timeout;
        // No timer of its own around the whole: everything a lookup awaits is bounded by the
        // deadline already (each attempt, token fetch included, by a timeout that ends at the
        // latest at the deadline, and no retry waits past it), and between those awaits it only
        // computes. One timer per lookup, not two.
        inner.lookup(site, caller, deadline).await
    }

    /// One of the calls around the upgrade-paths lookup (the site's names, its status), tried
    /// as a lookup is: each attempt by the attempt timeout, a passing failure (see `retry.rs`)
    /// tried again after a backoff, all by the lookup deadline. `call` makes one attempt.
    pub(super) async fn retried<T, F, Fut>(
        &self,
        endpoint: Endpoint,
        site: &Site,
        mut call: F,
    ) -> Result<T, LookupError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, LookupError>>,
    {
        let inner = &*self.inner;
        let deadline = Instant::now() + inner.lookup_timeout;
        let mut retries = Retries::new(inner.max_retries, deadline);
        let mut attempt = 1u32;
        loop {
            let attempt_deadline = deadline.min(Instant::now() + inner.attempt_timeout);
            let error = match tokio::time::timeout_at(attempt_deadline, call()).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(error)) => error,
                Err(_) => LookupError::Timeout,
            };
            let Some(wait) = retries.after(&error) else {
                return Err(error);
            };
            log_retry(endpoint, site, attempt, &error, wait.deadline());
            wait.await;
            attempt += 1;
        }
    }
}

impl Inner {
    /// Looks `site` up with the caller's token when given one, else with the partner's, by
    /// `deadline`: every await below is bounded by it.
    async fn lookup(
        &self,
        site: &Site,
        caller: Option<&Token>,
        deadline: Instant,
    ) -> Result<Arc<UpgradePaths>, LookupError> {
        let mut retries = Retries::new(self.max_retries, deadline);
        // The token the upstream refused, while a newer one is still to be had.
        let mut stale: Option<Token> = None;
        let mut refreshed = false;
        let mut attempt = 1u32;
        loop {
            let mut sent_with = None;
            let attempt_deadline = deadline.min(Instant::now() + self.attempt_timeout);
            // The attempt (reqwest's request and the reading of its answer) is boxed apart
            // from the lookup, which the cache boxes whole to share it: as one future they would
            // be too large for the allocator's per-thread cache of small blocks, and every lookup
            // would take malloc's slow path (sizes and costs: BENCHMARKS.md, issue 14 round 3).
            let this_try = Box::pin(self.attempt(site, caller, stale.as_ref(), &mut sent_with));
            let result = tokio::time::timeout_at(attempt_deadline, this_try)
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
                log_refresh(site, *status);
                refreshed = true;
                stale = Some(token);
                continue;
            }
            let Some(wait) = retries.after(&error) else {
                return Err(error);
            };
            log_retry(
                Endpoint::UpgradePaths,
                site,
                attempt,
                &error,
                wait.deadline(),
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
    ) -> Result<Arc<UpgradePaths>, LookupError> {
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
    ) -> Result<Arc<UpgradePaths>, LookupError> {
        let url = self.endpoints.url(Endpoint::UpgradePaths, site);
        let Answer {
            status,
            retry_after,
            www_authenticate,
            body,
        } = get(&self.http, url, Some(token), self.max_answer_bytes).await?;
        match classify(status, &body, retry_after) {
            // The caller's token, the caller's refusal: kept as WordPress.com gave it, to relay.
            Err(LookupError::Unauthorized { status }) if whose == Whose::Caller => Err(
                LookupError::CallerRefused(CallerRefusal::new(status, &body, www_authenticate)),
            ),
            answer => answer,
        }
    }
}

/// The endpoints' URLs up to the site (`{base_url}/rest/v1.x/jpphp/`,
/// `{base_url}/rest/v1.1/sites/`), parsed once.
pub(super) struct SiteEndpoints {
    upgrade_paths: reqwest::Url,
    status: reqwest::Url,
    site: reqwest::Url,
}

/// Which endpoint of a site to ask.
#[derive(Clone, Copy, Debug)]
pub(super) enum Endpoint {
    /// v1.3 `upgrade-paths`.
    UpgradePaths,
    /// v1.4 `status`.
    Status,
    /// v1.1 `sites/{site}`, the public site lookup.
    Site,
}

impl Endpoint {
    /// The endpoint as the logs name it.
    fn name(self) -> &'static str {
        match self {
            Self::UpgradePaths => "upgrade-paths",
            Self::Status => "status",
            Self::Site => "site",
        }
    }
}

impl SiteEndpoints {
    /// `base_url` is a checked, trimmed base URL (`parse_base_url`).
    pub(super) fn new(base_url: &str) -> Result<Self, BuildError> {
        let parse = |version| {
            reqwest::Url::parse(&format!("{base_url}/rest/{version}/jpphp/"))
                .map_err(|_| BuildError::BaseUrl)
        };
        Ok(Self {
            upgrade_paths: parse("v1.3")?,
            status: parse("v1.4")?,
            site: reqwest::Url::parse(&format!("{base_url}/rest/v1.1/sites/"))
                .map_err(|_| BuildError::BaseUrl)?,
        })
    }

    /// `{base_url}/rest/v1.x/jpphp/{site}/{endpoint}`: the URL a parse of that whole string
    /// gives, without parsing it whole for every lookup. Only the two last segments are added,
    /// and the scheme and host (a domain's IDNA mapping the dearest part of a parse) are the
    /// base's, parsed once. A `Site` holds only unreserved characters and `::`, which a path
    /// segment takes as they are, so it cannot change the URL's shape.
    pub(super) fn url(&self, endpoint: Endpoint, site: &Site) -> reqwest::Url {
        let (mut url, last) = match endpoint {
            Endpoint::UpgradePaths => (self.upgrade_paths.clone(), Some("upgrade-paths")),
            Endpoint::Status => (self.status.clone(), Some("status")),
            Endpoint::Site => (self.site.clone(), None),
        };
        // A base with a path can be a base: `parse_base_url` refuses the others.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(site.as_str());
            if let Some(last) = last {
                segments.push(last);
            }
        }
        url
    }
}

// The lookup's logs are out of line: a `tracing` macro expanded in an `async fn` grows its
// future, which every lookup carries (see `log_lookup` in `cache.rs`).

#[cold]
fn log_refresh(site: &Site, status: http::StatusCode) {
    tracing::info!(
        %site,
        status = status.as_u16(),
        "WordPress.com refused the partner token; refreshing it and trying once more"
    );
}

#[cold]
fn log_retry(endpoint: Endpoint, site: &Site, attempt: u32, error: &LookupError, at: Instant) {
    tracing::debug!(
        %site,
        endpoint = endpoint.name(),
        attempt,
        error = %Chain(error),
        wait_ms = at.saturating_duration_since(Instant::now()).as_millis() as u64,
        "lookup failed; retrying"
    );
}

/// Whose token a lookup is sent with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Whose {
    Partner,
    Caller,
}

/// How a token source's failure ends a lookup: kept whole as its source, but for a source that
/// has no token of its own, which is a lookup given no caller's token.
pub(super) fn lookup_error(error: TokenError) -> LookupError {
    match error {
        TokenError::CallersOwn => LookupError::MissingToken,
        error => LookupError::Token(error),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_urls_are_what_parsing_the_whole_string_gives() {
        let bases = [
            "https://public-api.wordpress.com",
            "https://public-api.wordpress.com/",
            "https://Public-API.WordPress.com:443//",
            "http://127.0.0.1:8080",
            "http://[::1]:9/api/",
            "http://localhost/a/./b/../partner%20api/",
            "https://bücher.example/wp",
        ];
        let sites = [
            "12345",
            "example.com",
            "example.com::demo::wp",
            "xn--bcher-kva.example::A-b_c~d.e::Wp",
        ];
        for base in bases {
            let client = UpgradePathsClient::builder()
                .base_url(base)
                .bearer_token("token")
                .build()
                .unwrap();
            for site in sites {
                let site = Site::parse(site).unwrap();
                for (version, endpoint, which) in [
                    ("v1.3", "upgrade-paths", Endpoint::UpgradePaths),
                    ("v1.4", "status", Endpoint::Status),
                ] {
                    let whole = format!(
                        "{}/rest/{version}/jpphp/{site}/{endpoint}",
                        client.base_url()
                    );
                    let built = client.inner.endpoints.url(which, &site);
                    assert_eq!(built, reqwest::Url::parse(&whole).unwrap(), "{base} {site}");
                    // The base is kept in its parsed form, so the string is already the URL's.
                    assert_eq!(built.as_str(), whole);
                }
                let whole = format!("{}/rest/v1.1/sites/{site}", client.base_url());
                let built = client.inner.endpoints.url(Endpoint::Site, &site);
                assert_eq!(built.as_str(), whole);
            }
        }
    }
}
