//! [`UpgradePathsClientBuilder`], filling in the defaults of `settings.rs`.

use super::auth::TokenSource;
use super::client::{Inner, SiteEndpoints, UpgradePathsClient};
use super::settings::{
    BuildError, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_BASE_URL, DEFAULT_LOOKUP_TIMEOUT,
    DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_RETRIES, default_http_client, parse_base_url,
};
use std::{fmt, sync::Arc, time::Duration};

impl UpgradePathsClient {
    /// A builder with the defaults: WordPress.com's base URL, a 5 s lookup deadline, 2 s per
    /// attempt, 2 retries, a 64 KiB cap on answers. A token source is required.
    pub fn builder() -> UpgradePathsClientBuilder {
        UpgradePathsClientBuilder::default()
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
pub struct UpgradePathsClientBuilder {
    base_url: Option<String>,
    auth: Option<Auth>,
    lookup_timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    max_retries: Option<u32>,
    connect_timeout: Option<Duration>,
    max_answer_bytes: Option<usize>,
    http: Option<reqwest::Client>,
}

impl UpgradePathsClientBuilder {
    /// Where the partner API lives; default `https://public-api.wordpress.com`. Point it at a
    /// `FakeUpstream` (feature `test-util`) in tests.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// A fixed partner token, sent as `Authorization: Bearer <token>`. It cannot be refreshed: a
    /// refused token fails the lookup with [`LookupError::Unauthorized`](crate::LookupError::Unauthorized).
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
    /// # Ok::<(), upgrade_guard::BuildError>(())
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
    /// # Ok::<(), upgrade_guard::BuildError>(())
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

    /// The deadline for one whole lookup, token fetch, retries and waits included; default 5 s.
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = Some(timeout);
        self
    }

    /// The deadline for one attempt (getting a token if needed, asking, reading the answer);
    /// default 2 s. An attempt never runs past the lookup deadline, so a value at or above it means
    /// "no per-attempt timeout".
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// How many times a lookup that failed in passing is tried again; default 2. `0` turns retries
    /// off. The lookup deadline still bounds them.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// The deadline for opening a connection; default 2 s. Ignored when
    /// [`http_client`](Self::http_client) is given.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The largest answer read, in bytes; default 64 KiB.
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
                endpoints: SiteEndpoints::new(&base_url)?,
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

impl fmt::Debug for UpgradePathsClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = match &self.auth {
            None => "none".to_owned(),
            Some(Auth::Bearer(_)) => "bearer token <redacted>".to_owned(),
            Some(Auth::ClientCredentials { id, .. }) => {
                format!("client credentials ({id}, <redacted>)")
            }
            Some(Auth::Source(source)) => format!("{source:?}"),
        };
        f.debug_struct("UpgradePathsClientBuilder")
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

#[cfg(test)]
mod tests {
    use super::*;

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
