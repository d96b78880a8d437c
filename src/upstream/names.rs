//! Which names one site goes by: WordPress.com's public site lookup.
//!
//! A site is named by its blog ID or by its URL, and provisions of one site must be serialized
//! whatever they call it. The guard learns the other name of a site from
//! `GET /rest/v1.1/sites/{site}` (WordPress.com's public site lookup, which takes a blog ID or a
//! domain with `::` for `/`): its answer's `ID` is the blog ID and its `URL` the site's address.
//! The lookup is public and is asked without a token: no partner scope or caller's token decides
//! what it answers, and a caller's bad token cannot make it fail. It is tried as an upgrade-paths
//! lookup is (a passing failure again, all within the lookup deadline): a connection that drops
//! once must not refuse the first provision of a site whose names are not known yet.

use super::answer::{Answer, get};
use super::client::{Endpoint, UpgradePathsClient};
use super::error::LookupError;
use crate::site::{Site, SiteKind};
use http::StatusCode;

/// The largest site lookup answer read: WordPress.com's is a few kilobytes of options.
const MAX_SITE_ANSWER: usize = 256 * 1024;

/// What WordPress.com's public site lookup says of a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SiteLookup {
    /// The site's blog ID and URL, each as a [`Site`] (either may be missing from the answer,
    /// or not be one a request could name: a URL with a port, say).
    Known {
        blog_id: Option<Site>,
        url: Option<Site>,
    },
    /// WordPress.com knows no site by that name (`unknown_blog` or `invalid_blog`).
    Unknown,
    /// WordPress.com knows the site but does not describe it publicly: a private site (403
    /// `unauthorized`).
    Private,
}

impl UpgradePathsClient {
    /// Asks WordPress.com's public site lookup for the names of `site`.
    pub(crate) async fn site_lookup(&self, site: &Site) -> Result<SiteLookup, LookupError> {
        self.retried(Endpoint::Site, site, || self.site_lookup_once(site))
            .await
    }

    /// One attempt of [`site_lookup`](Self::site_lookup).
    async fn site_lookup_once(&self, site: &Site) -> Result<SiteLookup, LookupError> {
        let url = self.inner.endpoints.url(Endpoint::Site, site);
        let Answer {
            status,
            retry_after,
            body,
            ..
        } = get(&self.inner.http, url, None, MAX_SITE_ANSWER).await?;
        if status.is_success() {
            return read_names(&body).ok_or(LookupError::Status {
                status,
                retry_after: None,
            });
        }
        match (status, error_code(&body).as_deref()) {
            (_, Some("unknown_blog" | "invalid_blog")) => Ok(SiteLookup::Unknown),
            (StatusCode::FORBIDDEN, Some("unauthorized")) => Ok(SiteLookup::Private),
            (status, _) => Err(LookupError::Status {
                status,
                retry_after,
            }),
        }
    }
}

/// The `error` of an error answer.
fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorAnswer {
        error: String,
    }
    serde_json::from_slice::<ErrorAnswer>(body)
        .ok()
        .map(|answer| answer.error)
}

/// A 2xx answer's names: `None` when it is not a JSON object naming the site's blog ID or URL
/// (an upstream that does not serve the lookup, say), which is an error, never "no other name".
fn read_names(body: &[u8]) -> Option<SiteLookup> {
    let answer: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    let blog_id = match answer.get("ID") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| n.to_string()),
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let url = answer.get("URL").and_then(serde_json::Value::as_str);
    if blog_id.is_none() && url.is_none() {
        return None;
    }
    let blog_id = blog_id
        .and_then(|id| Site::parse(&id).ok())
        .filter(|site| site.kind() == SiteKind::BlogId);
    let url = url
        .and_then(|url| Site::parse(url).ok())
        .filter(|site| site.kind() == SiteKind::Url);
    Some(SiteLookup::Known { blog_id, url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_answer_names_the_blog_id_and_the_url() {
        let known = |id: &str, url: Option<&str>| SiteLookup::Known {
            blog_id: Some(Site::parse(id).unwrap()),
            url: url.map(|url| Site::parse(url).unwrap()),
        };
        assert_eq!(
            read_names(
                br#"{"ID":1002,"name":"Blog","URL":"https://Example.com/blog/","jetpack":true}"#
            ),
            Some(known("1002", Some("example.com::blog")))
        );
        assert_eq!(
            read_names(br#"{"ID":"1002","URL":null}"#),
            Some(known("1002", None))
        );
        // A URL no request could name (a port) is no name to lock.
        assert_eq!(
            read_names(br#"{"ID":7,"URL":"http://localhost:8080/"}"#),
            Some(known("7", None))
        );
        assert_eq!(read_names(b"[]"), None);
        assert_eq!(read_names(b"{}"), None);
        assert_eq!(read_names(b"<html>"), None);
    }
}
