//! The partner's credentials for WordPress.com.

use http::HeaderValue;
use std::fmt;

/// A bearer token for WordPress.com's partner API, kept out of logs and `Debug` output.
#[derive(Clone)]
pub(crate) struct BearerToken {
    header: HeaderValue,
}

impl BearerToken {
    /// `None` when the token cannot be an HTTP header value.
    pub(crate) fn new(token: &str) -> Option<Self> {
        let mut header = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        header.set_sensitive(true);
        Some(Self { header })
    }

    /// The `Authorization` header value.
    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}
