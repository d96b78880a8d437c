//! Telling a site WordPress.com has never seen from a lookup that merely did not find it.
//!
//! A first provision is forwarded without a check: nothing can be a downgrade on a site that
//! holds nothing. So "WordPress.com does not know this site" must be true, not just what one
//! answer said. Before a site named by URL is forwarded as its first provision, the guard asks a
//! second endpoint, v1.4 `status` (documented to take the `host::path` form), and goes on only
//! when it too answers `invalid_blog`. Any other answer stops the request: a site `status` knows
//! is not new (the upgrade-paths endpoint refusing the URL form, say), and an error is an error.
//! One more call per first provision buys that no existing site is ever forwarded unchecked
//! because of a misleading "unknown".

use super::answer::{Answer, get, says_invalid_blog};
use super::client::{Endpoint, UpgradePathsClient, lookup_error};
use super::error::{CallerRefusal, LookupError};
use super::token::Token;
use crate::site::Site;
use http::StatusCode;

/// The largest `status` answer read: it lists a site's products, a few hundred bytes.
const MAX_STATUS_ANSWER: usize = 64 * 1024;

impl UpgradePathsClient {
    /// Whether WordPress.com's `status` endpoint confirms that `site` is unknown
    /// (`invalid_blog`): `Ok(true)` only then, `Ok(false)` when it knows the site.
    ///
    /// `caller` is the request's own bearer token, for a client that looks sites up with the
    /// caller's token; otherwise the client's token is used. Tried as an upgrade-paths lookup is
    /// (a passing failure again, all within the lookup deadline); a first provision that cannot
    /// be confirmed by then is refused, and retried by its client.
    pub(crate) async fn confirms_unknown(
        &self,
        site: &Site,
        caller: Option<&Token>,
    ) -> Result<bool, LookupError> {
        self.retried(Endpoint::Status, site, || {
            self.confirms_unknown_once(site, caller)
        })
        .await
    }

    /// One attempt of [`confirms_unknown`](Self::confirms_unknown).
    async fn confirms_unknown_once(
        &self,
        site: &Site,
        caller: Option<&Token>,
    ) -> Result<bool, LookupError> {
        let token = match caller {
            Some(token) => token.clone(),
            None => self.token_source().token().await.map_err(lookup_error)?,
        };
        let url = self.inner.endpoints.url(Endpoint::Status, site);
        let Answer {
            status,
            retry_after,
            www_authenticate,
            body,
        } = get(&self.inner.http, url, Some(&token), MAX_STATUS_ANSWER).await?;
        match status {
            status if status.is_success() => Ok(false),
            _ if says_invalid_blog(&body) => Ok(true),
            // As for a lookup: a caller's token refused is the caller's to fix, and its answer is
            // relayed; the partner's refused is the partner's.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if caller.is_some() => Err(
                LookupError::CallerRefused(CallerRefusal::new(status, &body, www_authenticate)),
            ),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(LookupError::Unauthorized { status })
            }
            // A 429's or 503's `Retry-After` is honoured by the retries and passed on.
            status => Err(LookupError::Status {
                status,
                retry_after,
            }),
        }
    }
}
