//! Telling a site WordPress.com has never seen from a lookup that merely did not find it.
//!
//! A first provision is forwarded without a check: nothing can be a downgrade on a site that
//! holds nothing. So "WordPress.com does not know this site" must be true, not just what one
//! answer said. Before a site named by URL is forwarded as its first provision, the guard asks a
//! second endpoint, v1.4 `status` (documented to take the `host::path` form), and goes on only
//! when it too answers `invalid_blog`. Any other answer stops the request: a site `status` knows
//! is not new (the upgrade-paths endpoint refusing the URL form, say), and an error is an
//! error. One more call per first provision buys that no
//! existing site is ever forwarded unchecked because of a misleading "unknown".

use crate::Site;
use crate::upstream::{LookupError, Token, UpgradePathsClient};
use http::{StatusCode, header};
use std::sync::Arc;

/// The largest `status` answer read: it lists a site's products, a few hundred bytes.
const MAX_STATUS_ANSWER: usize = 64 * 1024;

/// Whether WordPress.com's `status` endpoint confirms that `site` is unknown (`invalid_blog`):
/// `Ok(true)` only then, `Ok(false)` when it knows the site.
///
/// `caller` is the request's own bearer token, for a client that looks sites up with the
/// caller's token; otherwise the client's token is used.
pub(super) async fn confirmed_unknown(
    client: &UpgradePathsClient,
    site: &Site,
    caller: Option<&Token>,
) -> Result<bool, LookupError> {
    let http = client.http();
    let ask = async {
        let token = match caller {
            Some(token) => token.clone(),
            None => client
                .token_source()
                .token()
                .await
                .map_err(|error| LookupError::Transport(Arc::new(error)))?,
        };
        let url = format!("{}/rest/v1.4/jpphp/{site}/status", client.base_url());
        let response = http
            .get(url)
            .header(header::AUTHORIZATION, token.authorization())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|len| len > MAX_STATUS_ANSWER as u64)
        {
            return Err(LookupError::AnswerTooLarge {
                limit: MAX_STATUS_ANSWER,
            });
        }
        let body = response.bytes().await.map_err(transport)?;
        Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(client.lookup_timeout(), ask)
        .await
        .map_err(|_| LookupError::Timeout)??;
    #[derive(serde::Deserialize)]
    struct ErrorAnswer {
        error: String,
    }
    let code = serde_json::from_slice::<ErrorAnswer>(&body).map(|answer| answer.error);
    match status {
        status if status.is_success() => Ok(false),
        _ if code.is_ok_and(|code| code == "invalid_blog") => Ok(true),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err(LookupError::Unauthorized { status })
        }
        status => Err(LookupError::Status {
            status,
            retry_after: None,
        }),
    }
}

fn transport(error: reqwest::Error) -> LookupError {
    if error.is_timeout() {
        LookupError::Timeout
    } else {
        LookupError::Transport(Arc::new(error.without_url()))
    }
}
