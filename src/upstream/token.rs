//! [`Token`]: a bearer token for the partner API, kept out of sight.

use http::{HeaderMap, HeaderValue, header};
use std::fmt;
use std::sync::Arc;

/// A bearer token for WordPress.com's partner API.
///
/// Cheap to clone. Its `Debug` output is `Token(<redacted>)`: the secret is only reachable through
/// [`secret`](Self::secret) and [`authorization`](Self::authorization), so it cannot end up in a
/// log line by accident.
#[derive(Clone)]
pub struct Token {
    // Shared so that `TokenSource::refresh` can tell "the token I was refused" from "a newer token
    // that happens to be equal" by identity, and so that clones are cheap.
    inner: Arc<TokenInner>,
}

struct TokenInner {
    secret: Box<str>,
    header: HeaderValue,
}

impl Token {
    /// `None` when the token cannot be sent in an HTTP header (or is empty).
    pub(super) fn new(secret: &str) -> Option<Self> {
        if secret.is_empty() {
            return None;
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {secret}")).ok()?;
        // Sensitive values are left out of HPACK tables and print as `Sensitive` in `Debug`.
        header.set_sensitive(true);
        Some(Self {
            inner: Arc::new(TokenInner {
                secret: secret.into(),
                header,
            }),
        })
    }

    /// The token itself, for a caller that must place it somewhere other than an
    /// `Authorization` header. Handle it as a secret.
    pub fn secret(&self) -> &str {
        &self.inner.secret
    }

    /// The `Authorization: Bearer <token>` header value, marked
    /// [sensitive](HeaderValue::set_sensitive).
    ///
    /// ```no_run
    /// # async fn relay(source: upgrade_guard::TokenSource) -> Result<(), Box<dyn std::error::Error>> {
    /// let token = source.token().await?;
    /// let response = reqwest::Client::new()
    ///     .post("https://public-api.wordpress.com/rest/v1.3/jpphp/provision")
    ///     .header(http::header::AUTHORIZATION, token.authorization())
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn authorization(&self) -> HeaderValue {
        self.inner.header.clone()
    }

    /// The bearer token a request carries in `Authorization: Bearer <token>`, for a proxy that
    /// looks sites up with its callers' own tokens ([`TokenSource::caller`](super::TokenSource::caller)).
    ///
    /// `None` unless there is exactly one `Authorization` header, its scheme is `Bearer` (in any
    /// case) and a token follows: with two headers it is not certain which one WordPress.com would
    /// read, so neither is used.
    ///
    /// ```
    /// use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
    /// use upgrade_guard::Token;
    ///
    /// let mut headers = HeaderMap::new();
    /// assert!(Token::from_headers(&headers).is_none());
    /// headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer caller-token"));
    /// assert_eq!(Token::from_headers(&headers).unwrap().secret(), "caller-token");
    /// headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
    /// assert!(Token::from_headers(&headers).is_none());
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (value, None) = (values.next()?, values.next()) else {
            return None;
        };
        let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        Self::new(token.trim_start_matches(' '))
    }

    /// Whether `self` and `other` came from the same issue of a token (not merely equal text).
    pub(super) fn same_issue(&self, other: &Token) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether `self` and `other` are the same token, compared exactly, in a time that depends
    /// on their lengths only: the cache compares a caller's token with the one that fetched an
    /// answer, and how long that takes must not tell a caller how much of its guess was right.
    pub(crate) fn same_secret(&self, other: &Token) -> bool {
        let (a, b) = (self.secret().as_bytes(), other.secret().as_bytes());
        if a.len() != b.len() {
            return false;
        }
        // `black_box` keeps the optimiser from turning the fold into an early exit.
        let difference = a
            .iter()
            .zip(b)
            .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
        difference == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}
