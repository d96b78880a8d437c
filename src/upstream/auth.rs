//! The partner's credentials for WordPress.com: a static bearer token, OAuth2 client credentials
//! exchanged for a token on first use and again when WordPress.com refuses it, or none of its own
//! (each lookup then uses the bearer token of the request being checked).
//!
//! Secrets stay out of sight: [`Token`], [`TokenSource`] and [`ClientCredentialsBuilder`] print
//! `<redacted>` in place of them in `Debug` output, [`TokenError`] never quotes them, and nothing
//! here logs them.

use super::answer::{ReadError, read_capped, retry_after};
use super::settings::{
    BuildError, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_BASE_URL, default_http_client, parse_base_url,
};
use super::token::Token;
use crate::rejection::Chain;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::{HeaderValue, StatusCode, header};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::{fmt, time::Duration};

/// The OAuth2 scope a partner token needs for the `jpphp` endpoints.
const PARTNER_SCOPE: &str = "jetpack-partner";
/// The largest token answer read; real ones are a couple of hundred bytes.
const MAX_TOKEN_ANSWER_BYTES: usize = 16 * 1024;

/// Why a [`TokenSource`] has no token to give.
///
/// Neither `Display` nor `Debug` ever shows a token or a client secret.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token endpoint refused the client credentials (a 4xx other than 408 and 429): a wrong
    /// client ID or secret, a revoked client, a missing scope. Asking again will not help.
    #[error("the token endpoint refused the client credentials (HTTP {status}{})", code_suffix(.code))]
    Refused {
        /// The token endpoint's status.
        status: StatusCode,
        /// The OAuth2 `error` code of the answer, such as `invalid_client`, when it had one.
        code: Option<String>,
    },
    /// A static bearer token was refused; it has nothing to be refreshed from.
    #[error("a static bearer token cannot be refreshed")]
    CannotRefresh,
    /// No complete answer from the token endpoint in time.
    #[error("the token request timed out")]
    Timeout,
    /// The connection to the token endpoint failed or broke.
    #[error("the token request failed in transport")]
    Transport(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The token endpoint is unavailable (5xx, 408, 429) or answered an unexpected status.
    #[error("the token endpoint answered HTTP {status}")]
    Status {
        /// The token endpoint's status.
        status: StatusCode,
        /// Its `Retry-After`, in seconds, when it sent one.
        retry_after: Option<Duration>,
    },
    /// A success status without a usable `access_token` in the answer.
    #[error("the token endpoint's answer holds no usable access_token")]
    InvalidAnswer,
    /// The source has no token of its own ([`TokenSource::caller`]): each lookup uses the token
    /// of the request it checks.
    #[error("this token source has no token of its own: it uses each caller's")]
    CallersOwn,
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_deref()
        .map(|code| format!(", {code}"))
        .unwrap_or_default()
}

/// Where the partner's bearer token comes from: a fixed token, OAuth2 client credentials, or
/// nowhere ([`caller`](Self::caller): each lookup uses the caller's own token).
///
/// Cheap to clone; clones share one token. [`UpgradePathsClient`](crate::UpgradePathsClient) uses
/// one for its lookups, and
/// [`UpgradePathsClient::token_source`](crate::UpgradePathsClient::token_source) hands it out, so a
/// partner's own provision relay sends the same token and refreshes it in step with the guard.
///
/// With client credentials the token is fetched from `POST {base_url}/oauth2/token` on first use
/// and kept until someone reports it refused ([`refresh`](Self::refresh)). Concurrent callers
/// share one fetch, whether it succeeds or fails; a failed fetch is not remembered, so the next
/// call tries again. The answer's `expires_in`, if any, is not used: a token is replaced when
/// WordPress.com refuses it, which also covers a token revoked before its time.
///
/// ```no_run
/// use http::header::{AUTHORIZATION, CONTENT_TYPE};
/// use upgrade_guard::{Token, TokenSource};
///
/// # async fn relay() -> Result<(), Box<dyn std::error::Error>> {
/// let source = TokenSource::client_credentials("partner-client-id", "partner-client-secret")
///     .build()?;
///
/// let http = reqwest::Client::new();
/// let provision = |token: &Token| {
///     http.post("https://public-api.wordpress.com/rest/v1.3/jpphp/provision")
///         .header(AUTHORIZATION, token.authorization())
///         .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
///         .body("siteurl=https%3A%2F%2Fexample.com%2F&plan=jetpack-scan&local_user=admin")
///         .send()
/// };
/// let token = source.token().await?;
/// let mut response = provision(&token).await?;
/// if response.status() == 401 {
///     // Refused: get a new token (one fetch, however many callers saw the old one refused).
///     response = provision(&source.refresh(&token).await?).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenSource {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Static(Token),
    ClientCredentials(Arc<Credentials>),
    Caller,
}

impl TokenSource {
    /// A fixed bearer token. It cannot be refreshed: when WordPress.com refuses it, lookups fail
    /// with [`LookupError::Unauthorized`](super::LookupError::Unauthorized) at once.
    ///
    /// Fails with [`BuildError::InvalidToken`] when the token is empty or holds characters an
    /// HTTP header cannot carry.
    ///
    /// ```
    /// use upgrade_guard::TokenSource;
    ///
    /// let source = TokenSource::bearer("partner-token")?;
    /// assert!(!source.can_refresh());
    /// assert!(TokenSource::bearer("two\nlines").is_err());
    /// # Ok::<(), upgrade_guard::BuildError>(())
    /// ```
    pub fn bearer(token: impl Into<String>) -> Result<Self, BuildError> {
        let token = Token::new(&token.into()).ok_or(BuildError::InvalidToken)?;
        Ok(Self {
            kind: Kind::Static(token),
        })
    }

    /// OAuth2 client credentials, exchanged at `POST {base_url}/oauth2/token` with
    /// `grant_type=client_credentials` and `scope=jetpack-partner`. Configure and build the
    /// source with the returned builder.
    pub fn client_credentials(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            base_url: None,
            http: None,
            timeout: None,
        }
    }

    /// No token of its own: every lookup uses the bearer token of the request the guard is
    /// checking, and no answer fetched with one caller's token is served to another. Most
    /// readably set with [`UpgradePathsClientBuilder::caller_token`](super::UpgradePathsClientBuilder::caller_token),
    /// which says when to use it.
    ///
    /// [`token`](Self::token) and [`refresh`](Self::refresh) answer
    /// [`TokenError::CallersOwn`].
    ///
    /// ```
    /// use upgrade_guard::TokenSource;
    ///
    /// let source = TokenSource::caller();
    /// assert!(source.is_caller());
    /// assert!(!source.can_refresh());
    /// ```
    pub fn caller() -> Self {
        Self { kind: Kind::Caller }
    }

    /// Whether lookups use the caller's token ([`caller`](Self::caller)) rather than one of the
    /// source's own.
    pub fn is_caller(&self) -> bool {
        matches!(self.kind, Kind::Caller)
    }

    /// Whether [`refresh`](Self::refresh) can get a new token (client credentials can, a static
    /// token cannot, nor can a source that uses the caller's).
    pub fn can_refresh(&self) -> bool {
        matches!(self.kind, Kind::ClientCredentials(_))
    }

    /// The current token, fetched first if there is none yet.
    ///
    /// When many callers ask at once before the first fetch, one request goes to the token
    /// endpoint and all of them get its answer. A fetch is bounded by the source's timeout
    /// ([`ClientCredentialsBuilder::timeout`]) and is made once: retrying is the caller's choice.
    pub async fn token(&self) -> Result<Token, TokenError> {
        match &self.kind {
            Kind::Static(token) => Ok(token.clone()),
            Kind::ClientCredentials(credentials) => credentials.token(None).await,
            Kind::Caller => Err(TokenError::CallersOwn),
        }
    }

    /// A token to use in place of `stale`, which the upstream refused.
    ///
    /// Fetches a new token only if `stale` is still the current one; if someone else has already
    /// replaced it (or is replacing it now), that token is returned, so a burst of refused
    /// requests causes one fetch. A static source answers [`TokenError::CannotRefresh`].
    pub async fn refresh(&self, stale: &Token) -> Result<Token, TokenError> {
        match &self.kind {
            Kind::Static(_) => Err(TokenError::CannotRefresh),
            Kind::ClientCredentials(credentials) => credentials.token(Some(stale)).await,
            Kind::Caller => Err(TokenError::CallersOwn),
        }
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Static(token) => f.debug_tuple("TokenSource::Bearer").field(token).finish(),
            Kind::Caller => f.write_str("TokenSource::Caller"),
            Kind::ClientCredentials(credentials) => {
                let state = match &*credentials.lock() {
                    State::Empty => "no token yet",
                    State::Fetching { .. } => "fetching",
                    State::Ready(_) => "holding a token",
                };
                f.debug_struct("TokenSource::ClientCredentials")
                    .field("token_url", &credentials.token_url)
                    .field("client_id", &credentials.client_id)
                    .field("client_secret", &format_args!("<redacted>"))
                    .field("timeout", &credentials.timeout)
                    .field("state", &format_args!("{state}"))
                    .finish()
            }
        }
    }
}

/// Configures a client-credentials [`TokenSource`]; made by [`TokenSource::client_credentials`].
///
/// ```
/// use std::time::Duration;
/// use upgrade_guard::TokenSource;
///
/// let source = TokenSource::client_credentials("partner-client-id", "partner-client-secret")
///     .base_url("https://public-api.wordpress.com")
///     .timeout(Duration::from_secs(3))
///     .build()?;
/// assert!(source.can_refresh());
/// assert!(!format!("{source:?}").contains("partner-client-secret"));
/// # Ok::<(), upgrade_guard::BuildError>(())
/// ```
#[must_use]
pub struct ClientCredentialsBuilder {
    client_id: String,
    client_secret: String,
    base_url: Option<String>,
    http: Option<reqwest::Client>,
    timeout: Option<Duration>,
}

impl ClientCredentialsBuilder {
    /// Where the token endpoint lives (`{base_url}/oauth2/token`); default
    /// `https://public-api.wordpress.com`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Uses this `reqwest::Client` (and its pool, proxy and TLS settings) for token requests.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The deadline for one token request; default 2 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Builds the source; no request is made until a token is needed.
    pub fn build(self) -> Result<TokenSource, BuildError> {
        let base_url = parse_base_url(self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL))?;
        let http = match self.http {
            Some(http) => http,
            None => default_http_client(None)?,
        };
        Ok(TokenSource {
            kind: Kind::ClientCredentials(Arc::new(Credentials {
                http,
                token_url: format!("{base_url}/oauth2/token"),
                client_id: self.client_id,
                client_secret: self.client_secret,
                timeout: self.timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT),
                state: Mutex::new(State::Empty),
                next_fetch: AtomicU64::new(0),
            })),
        })
    }
}

impl fmt::Debug for ClientCredentialsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsBuilder")
            .field("client_id", &self.client_id)
            .field("client_secret", &format_args!("<redacted>"))
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One token fetch, shared by everyone waiting for it.
type Fetch = Shared<BoxFuture<'static, Result<Token, TokenError>>>;

struct Credentials {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    timeout: Duration,
    state: Mutex<State>,
    /// Names fetches, so that a waiter only settles the state of the fetch it waited for.
    next_fetch: AtomicU64,
}

enum State {
    /// No token, and no fetch under way (at first, and after a failed fetch).
    Empty,
    Fetching {
        id: u64,
        fetch: Fetch,
    },
    Ready(Token),
}

impl Credentials {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every state is valid whatever a panicking holder did, so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current token, or (given `stale`) one newer than `stale`.
    async fn token(&self, stale: Option<&Token>) -> Result<Token, TokenError> {
        let (id, fetch) = {
            let mut state = self.lock();
            match &*state {
                State::Ready(token) if stale.is_none_or(|stale| !token.same_issue(stale)) => {
                    return Ok(token.clone());
                }
                // A fetch under way started after `stale` was replaced, so it is newer: join it.
                State::Fetching { id, fetch } => (*id, fetch.clone()),
                State::Ready(_) | State::Empty => {
                    let id = self.next_fetch.fetch_add(1, Ordering::Relaxed);
                    // A task of its own: the fetch runs to its end even if every waiter goes
                    // away (see `crate::cache` for the one rule both shared calls follow).
                    let task = tokio::spawn(self.fetch());
                    let fetch = async move {
                        task.await
                            .unwrap_or_else(|gone| Err(TokenError::Transport(Arc::new(gone))))
                    }
                    .boxed()
                    .shared();
                    *state = State::Fetching {
                        id,
                        fetch: fetch.clone(),
                    };
                    (id, fetch)
                }
            }
        };
        // Every waiter settles the state; the first one to get here does it, the rest find it
        // settled already. If every waiter went away, the finished fetch waits in the state until
        // the next caller joins it and settles it.
        let result = fetch.await;
        let mut state = self.lock();
        if matches!(&*state, State::Fetching { id: current, .. } if *current == id) {
            *state = match &result {
                Ok(token) => State::Ready(token.clone()),
                Err(_) => State::Empty,
            };
        }
        result
    }

    /// A future that asks the token endpoint once; owns what it needs so it can be shared.
    fn fetch(&self) -> impl Future<Output = Result<Token, TokenError>> + Send + 'static {
        let request = self
            .http
            .post(&self.token_url)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .body(self.form());
        let timeout = self.timeout;
        async move {
            tracing::debug!("fetching a partner token with client credentials");
            let result = tokio::time::timeout(timeout, async {
                let response = request.send().await.map_err(transport)?;
                let status = response.status();
                let retry_after = retry_after(response.headers());
                let body = read_capped(response, MAX_TOKEN_ANSWER_BYTES)
                    .await
                    .map_err(|error| match error {
                        ReadError::TooLarge => TokenError::InvalidAnswer,
                        ReadError::Transport(error) => transport(error),
                    })?;
                classify(status, &body, retry_after)
            })
            .await
            .unwrap_or(Err(TokenError::Timeout));
            match &result {
                Ok(_) => tracing::debug!("fetched a partner token"),
                Err(error) => tracing::warn!(
                    error = %Chain(error),
                    "could not fetch a partner token"
                ),
            }
            result
        }
    }

    /// The urlencoded token request; holds the client secret, so it is built per request and
    /// never kept or logged.
    fn form(&self) -> String {
        form_urlencoded(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("scope", PARTNER_SCOPE),
        ])
    }
}

fn form_urlencoded(fields: &[(&str, &str)]) -> String {
    // A list of string pairs always serialises.
    serde_urlencoded::to_string(fields).unwrap_or_default()
}

fn transport(error: reqwest::Error) -> TokenError {
    if error.is_timeout() {
        TokenError::Timeout
    } else {
        TokenError::Transport(Arc::new(error.without_url()))
    }
}

/// Maps the token endpoint's answer to a token or to what went wrong.
fn classify(
    status: StatusCode,
    body: &Bytes,
    retry_after: Option<Duration>,
) -> Result<Token, TokenError> {
    #[derive(serde::Deserialize)]
    struct Granted {
        access_token: String,
    }
    #[derive(serde::Deserialize)]
    struct Refusal {
        error: String,
    }
    if status.is_success() {
        // The answer is not echoed into the error: it may hold a token, however malformed.
        return serde_json::from_slice::<Granted>(body)
            .ok()
            .and_then(|granted| Token::new(&granted.access_token))
            .ok_or(TokenError::InvalidAnswer);
    }
    let throttled = matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
    );
    if status.is_client_error() && !throttled {
        let code = serde_json::from_slice::<Refusal>(body)
            .ok()
            .map(|refusal| refusal.error)
            // Only a code-shaped string is kept: it ends up in messages and logs.
            .filter(|code| {
                code.len() <= 64
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        return Err(TokenError::Refused { status, code });
    }
    Err(TokenError::Status {
        status,
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn token_answers_are_classified() {
        let ok = classify(
            StatusCode::OK,
            &Bytes::from_static(br#"{"access_token":"t0k3n","token_type":"bearer"}"#),
            None,
        )
        .unwrap();
        assert_eq!(ok.secret(), "t0k3n");
        assert_eq!(ok.authorization(), "Bearer t0k3n");
        assert!(ok.authorization().is_sensitive());
        for bad in [
            &b"{}"[..],
            br#"{"access_token":""}"#,
            br#"{"access_token":"a\nb"}"#,
            br#"{"access_token":7}"#,
            b"<html>",
        ] {
            assert!(matches!(
                classify(StatusCode::OK, &Bytes::copy_from_slice(bad), None),
                Err(TokenError::InvalidAnswer)
            ));
        }
        let refused = classify(
            StatusCode::BAD_REQUEST,
            &Bytes::from_static(br#"{"error":"invalid_client","message":"no"}"#),
            None,
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the token endpoint refused the client credentials (HTTP 400 Bad Request, invalid_client)"
        );
        let odd = classify(
            StatusCode::UNAUTHORIZED,
            &Bytes::from_static(br#"{"error":"not a code: s3cret"}"#),
            None,
        )
        .unwrap_err();
        assert!(matches!(odd, TokenError::Refused { code: None, .. }));
        let throttled = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &Bytes::new(),
            Some(Duration::from_secs(3)),
        );
        assert!(matches!(
            throttled,
            Err(TokenError::Status {
                retry_after: Some(_),
                ..
            })
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &Bytes::new(), None),
            Err(TokenError::Status { .. })
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let token = Token::new("t0k3n-s3cret").unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        let source = TokenSource::bearer("t0k3n-s3cret").unwrap();
        assert!(!format!("{source:?}").contains("s3cret"));
        let builder = TokenSource::client_credentials("id", "client-s3cret");
        assert!(!format!("{builder:?}").contains("s3cret"));
        let source = builder.base_url("http://127.0.0.1:1").build().unwrap();
        let debug = format!("{source:?}");
        assert!(debug.contains("http://127.0.0.1:1/oauth2/token"), "{debug}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn the_form_is_urlencoded() {
        assert_eq!(
            form_urlencoded(&[("client_secret", "a&b=c d"), ("scope", PARTNER_SCOPE)]),
            "client_secret=a%26b%3Dc+d&scope=jetpack-partner"
        );
    }

    #[test]
    fn a_requests_bearer_token_is_read_strictly() {
        let read = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            }
            Token::from_headers(&headers).map(|token| token.secret().to_owned())
        };
        assert_eq!(read(&["Bearer abc"]).as_deref(), Some("abc"));
        assert_eq!(read(&["bearer  abc"]).as_deref(), Some("abc"));
        assert_eq!(read(&["BEARER a#b$c(d)!"]).as_deref(), Some("a#b$c(d)!"));
        for refused in [
            &[][..],
            &["Bearer"],
            &["Bearer "],
            &["Basic YTpi"],
            &["Bearerabc"],
            &["Bearer a", "Bearer b"],
            &["Bearer a", "Bearer a"],
        ] {
            assert_eq!(read(refused), None, "{refused:?}");
        }
        let mut headers = HeaderMap::new();
        let opaque = HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap();
        headers.insert(header::AUTHORIZATION, opaque);
        assert!(Token::from_headers(&headers).is_none());
    }

    #[test]
    fn secrets_are_compared_exactly() {
        let token = |secret| Token::new(secret).unwrap();
        assert!(token("abc").same_secret(&token("abc")));
        assert!(!token("abc").same_secret(&token("abd")));
        assert!(!token("abc").same_secret(&token("abcd")));
        assert!(!token("abc").same_secret(&token("ABC")));
        assert_eq!(
            format!("{:?}", TokenSource::caller()),
            "TokenSource::Caller"
        );
    }

    #[tokio::test]
    async fn a_caller_source_has_no_token_of_its_own() {
        let source = TokenSource::caller();
        assert!(matches!(source.token().await, Err(TokenError::CallersOwn)));
        let token = Token::new("t").unwrap();
        assert!(matches!(
            source.refresh(&token).await,
            Err(TokenError::CallersOwn)
        ));
    }

    #[tokio::test]
    async fn a_static_token_cannot_refresh() {
        let source = TokenSource::bearer("t").unwrap();
        let token = source.token().await.unwrap();
        assert_eq!(token.secret(), "t");
        assert!(matches!(
            source.refresh(&token).await,
            Err(TokenError::CannotRefresh)
        ));
        assert!(TokenSource::bearer("").is_err());
    }
}
