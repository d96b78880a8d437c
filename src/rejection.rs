//! The guard's own responses: every reason a request is not forwarded.
//!
//! Each is JSON, `Content-Type: application/json`, shaped `{"error":"<code>","message":"<text>"}`
//! in compact form, as WordPress.com answers: partner tooling detects failures by matching the
//! literal text `"error":"`.

use crate::body::GuardBody;
use crate::lock::LockError;
use crate::site::{InvalidSite, Site};
use crate::upstream::{LookupError, UpgradePaths};
use http::{HeaderValue, Response, StatusCode, header};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// How long a client is asked to wait when the upstream could not answer and said nothing.
pub(crate) const DEFAULT_UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a client is asked to wait when another provision of the site is in progress.
pub(crate) const SITE_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a client is asked to wait while a provision of the site settles.
pub(crate) const SETTLING_RETRY_AFTER: Duration = Duration::from_secs(2);
/// The longest `Retry-After` passed on from the upstream.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why the guard answered a request itself instead of forwarding it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// 409 `upgrade_not_allowed`: the product is not in the site's upgrade paths.
    #[error("{product} is not an upgrade for site {site}: it is not in the site's upgrade paths")]
    NotAnUpgrade {
        /// The site.
        site: Site,
        /// The product the request asked for.
        product: String,
        /// What WordPress.com says may be provisioned instead.
        upgrade_paths: Arc<UpgradePaths>,
    },
    /// 409 `product_not_judged`: the site's upgrade-paths answer does not judge the product (it
    /// does not list it, and does not speak about its family), on a route that refuses such
    /// products ([`UnjudgedProducts::Refuse`](crate::UnjudgedProducts::Refuse)).
    #[error(
        "{product} is not judged by site {site}'s upgrade paths (WordPress.com's answer does not speak about its family), and this route takes only judged products"
    )]
    NotJudged {
        /// The site.
        site: Site,
        /// The product the request asked for.
        product: String,
    },
    /// 409 `already_provisioned`: the same product was provisioned for the site a moment ago
    /// (within the [settling window](crate::UpgradeGuardBuilder::settling_window)): a retry of a
    /// provision already made, not a downgrade.
    #[error("{product} was provisioned for site {site} a moment ago")]
    AlreadyProvisioned {
        /// The site.
        site: Site,
        /// The product the request asked for.
        product: String,
    },
    /// 503 `provision_settling`: WordPress.com's answers do not show a provision of the site made
    /// a moment ago yet, and the guard judges nothing from an answer that does not.
    #[error(
        "WordPress.com does not show a provision of site {site} made a moment ago yet; try again shortly"
    )]
    ProvisionSettling {
        /// The site.
        site: Site,
    },
    /// 400 `missing_site`: the request names no site.
    #[error("the request names no site")]
    MissingSite,
    /// 400 `missing_product`: the request names no product.
    #[error("the request names no product")]
    MissingProduct,
    /// 400 `invalid_site`: the site identifier is malformed or ambiguous.
    #[error("the site identifier is not valid: {0}")]
    InvalidSite(#[from] InvalidSite),
    /// 400 `invalid_body`: the form, multipart or JSON data could not be read, or names a field
    /// the guard reads more than once; or WordPress.com would read the request otherwise than
    /// the guard (`force=secure`, a query string `esc_url()` rewrites, a `Content_Type` header).
    /// Its message carries the cause, when there is one (the body stream's own error).
    #[error("{}", Chain(.0))]
    InvalidBody(#[source] BodyError),
    /// 415 `unsupported_media_type`: the route reads a body field but the body is not a form or
    /// JSON, or is encoded (a `Content-Encoding` other than `identity`: WordPress.com does not
    /// decode it).
    #[error(
        "the body must be application/x-www-form-urlencoded, multipart/form-data (with a plain boundary) or application/json, with no Content-Encoding"
    )]
    UnsupportedMediaType,
    /// 413 `body_too_large`: the body is longer than the route's limit.
    #[error("the body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// 408 `body_timeout`: the body did not arrive whole within the route's
    /// [body timeout](crate::UpgradeGuardLayer::body_timeout). No site is held while a body is
    /// on its way.
    #[error("the request body did not arrive whole within {} ms", .after.as_millis())]
    BodyTimeout {
        /// The route's body timeout.
        after: Duration,
    },
    /// 400 `invalid_connection_header`: the `Connection` header names a header of the request
    /// that the next hop would drop (`Content-Type`, `Content-Length`, ...), after the guard read
    /// the request with it: WordPress.com would read another request than the one checked.
    #[error(
        "the Connection header names {name:?}, which the next hop drops after the guard has read the request with it: send the request without naming it in Connection"
    )]
    ConnectionHeader {
        /// The header named, lower-cased.
        name: String,
    },
    /// 404 `unknown_site`: WordPress.com does not know the site (`invalid_blog`), and the
    /// request cannot be its first provision: the site is named by a blog ID (which exists only
    /// once WordPress.com knows the site), or the route refuses unknown sites
    /// ([`UnknownSites::Refuse`](crate::UnknownSites::Refuse)).
    #[error("WordPress.com does not know site {site}")]
    UnknownSite {
        /// The site, as it was looked up.
        site: Site,
    },
    /// 502 `upstream_unauthorized` or 503 `upgrade_paths_unavailable` (404 `unknown_site` for
    /// [`LookupError::UnknownSite`]): the upgrade-paths lookup gave no answer. With a client that
    /// uses the caller's token
    /// ([`UpgradePathsClientBuilder::caller_token`](crate::UpgradePathsClientBuilder::caller_token)), also
    /// WordPress.com's own 401/403 answer when it refused that token
    /// ([`LookupError::CallerRefused`]), and 401 `missing_token` when the request carries none.
    #[error("{}", upstream_message(.0))]
    Upstream(#[source] LookupError),
    /// 503 `site_busy`: another provision of the site held it for too long, or the site's lock
    /// could not be taken.
    #[error("{}", busy_message(.0))]
    SiteBusy(#[source] LockError),
}

fn upstream_message(error: &LookupError) -> String {
    match error {
        LookupError::UnknownSite => "WordPress.com does not know this site".into(),
        error if error.is_partner_refused() => {
            "WordPress.com refused the partner's credentials for the upgrade-paths lookup".into()
        }
        LookupError::CallerRefused(refusal) => format!(
            "WordPress.com refused the request's bearer token for the upgrade-paths lookup (HTTP {})",
            refusal.status()
        ),
        LookupError::MissingToken => {
            "the request carries no bearer token (Authorization: Bearer <token>), which WordPress.com needs".into()
        }
        other => format!(
            "the site's upgrade paths could not be checked ({}); try again",
            Chain(other)
        ),
    }
}

fn busy_message(error: &LockError) -> &'static str {
    match error {
        LockError::Busy => "another provision of this site is in progress; try again shortly",
        _ => {
            "the site's lock could not be taken (the lock service is unavailable); try again shortly"
        }
    }
}

/// Appends `text` as a JSON string, quoted and escaped exactly as `serde_json` writes it.
pub(crate) fn push_json_str(json: &mut Vec<u8>, text: &str) {
    json.push(b'"');
    push_json_str_contents(json, text);
    json.push(b'"');
}

/// Appends `text` escaped as the inside of a JSON string, exactly as `serde_json` writes it.
fn push_json_str_contents(json: &mut Vec<u8>, text: &str) {
    // Names, slugs and messages rarely hold a byte JSON escapes: copy them as they are.
    if !needs_escaping(text.as_bytes()) {
        json.extend_from_slice(text.as_bytes());
        return;
    }
    // `serde_json` writes the string quoted: keep what is between the quotes.
    let start = json.len();
    serde_json::to_writer(&mut *json, text).expect("writing to a Vec never fails");
    json.pop();
    json.remove(start);
}

/// Whether `bytes` hold a byte JSON escapes: a control (below 0x20), `"` or `\\`. Eight bytes at
/// a time (each test is exact as to whether some byte of the word matches).
fn needs_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `word` is below `n` (n <= 0x80).
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0;
    let holds = |word: u64, byte: u8| below(word ^ (ONES * u64::from(byte)), 1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_ne_bytes(word.try_into().expect("chunks of eight"));
        if below(word, 0x20) || holds(word, b'"') || holds(word, b'\\') {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

/// A `fmt::Write` that escapes what it is given into the inside of a JSON string.
struct JsonStrContents<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for JsonStrContents<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        push_json_str_contents(self.0, text);
        Ok(())
    }
}

/// An error and its sources, `error: source: source's source`, for messages and logs that
/// must say what went wrong underneath (a token endpoint's 503, a body stream's reset).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

/// Why the guard could not read what a request names ([`Rejection::InvalidBody`]).
///
/// Its `Display` says what to fix. When the reading failed on an error of its own (the request
/// body's stream broke), that error is its [`source`](std::error::Error::source), and the
/// client's message (the [`Rejection`]'s) ends with it.
///
/// Only the guard makes them: a [`Rejection`] is the guard's answer, not one a handler builds.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BodyError {
    message: Cow<'static, str>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BodyError {
    /// A reading refused for the reason `message` gives.
    pub(crate) fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A reading that failed on `source`.
    pub(crate) fn with_source(
        message: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl Rejection {
    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotAnUpgrade { .. }
            | Self::NotJudged { .. }
            | Self::AlreadyProvisioned { .. } => StatusCode::CONFLICT,
            Self::ProvisionSettling { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::MissingSite
            | Self::MissingProduct
            | Self::InvalidSite(_)
            | Self::InvalidBody(_)
            | Self::ConnectionHeader { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownSite { .. } | Self::Upstream(LookupError::UnknownSite) => {
                StatusCode::NOT_FOUND
            }
            Self::Upstream(error) if error.is_partner_refused() => StatusCode::BAD_GATEWAY,
            Self::Upstream(LookupError::CallerRefused(refusal)) => refusal.status(),
            Self::Upstream(LookupError::MissingToken) => StatusCode::UNAUTHORIZED,
            Self::Upstream(_) | Self::SiteBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` code of the response body; for WordPress.com's own answer relayed
    /// ([`LookupError::CallerRefused`]), `caller_unauthorized`, the code the guard reports it by
    /// (the relayed body keeps WordPress.com's code).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnUpgrade { .. } => "upgrade_not_allowed",
            Self::NotJudged { .. } => "product_not_judged",
            Self::AlreadyProvisioned { .. } => "already_provisioned",
            Self::ProvisionSettling { .. } => "provision_settling",
            Self::MissingSite => "missing_site",
            Self::MissingProduct => "missing_product",
            Self::InvalidSite(_) => "invalid_site",
            Self::InvalidBody(_) => "invalid_body",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::ConnectionHeader { .. } => "invalid_connection_header",
            Self::UnknownSite { .. } | Self::Upstream(LookupError::UnknownSite) => "unknown_site",
            Self::Upstream(error) if error.is_partner_refused() => "upstream_unauthorized",
            Self::Upstream(LookupError::CallerRefused(_)) => "caller_unauthorized",
            Self::Upstream(LookupError::MissingToken) => "missing_token",
            Self::Upstream(_) => "upgrade_paths_unavailable",
            Self::SiteBusy(_) => "site_busy",
        }
    }

    /// The `Retry-After` the response carries, for the 503 answers.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Upstream(
                LookupError::UnknownSite
                | LookupError::CallerRefused(_)
                | LookupError::MissingToken,
            ) => None,
            Self::Upstream(error) if error.is_partner_refused() => None,
            Self::Upstream(error) => Some(
                error
                    .retry_after()
                    .unwrap_or(DEFAULT_UNAVAILABLE_RETRY_AFTER)
                    .clamp(Duration::from_secs(1), MAX_RETRY_AFTER),
            ),
            Self::SiteBusy(_) => Some(SITE_BUSY_RETRY_AFTER),
            Self::ProvisionSettling { .. } => Some(SETTLING_RETRY_AFTER),
            _ => None,
        }
    }

    /// The compact JSON body of the response: for WordPress.com's refusal of the caller's token,
    /// its own body as it came, when that was a JSON error object.
    pub fn to_json(&self) -> Vec<u8> {
        if let Self::Upstream(LookupError::CallerRefused(refusal)) = self
            && let Some(json) = refusal.json()
        {
            return json.to_vec();
        }
        // Written straight into one buffer, in the order and escaping `serde_json` gives a
        // struct of these fields (the tests hold the two byte for byte alike): on a cached
        // refusal this body is a good part of the guard's work, and one buffer is all it
        // allocates.
        let (site, product, upgrade_paths) = match self {
            Self::NotAnUpgrade {
                site,
                product,
                upgrade_paths,
            } => (Some(site), Some(product.as_str()), Some(&**upgrade_paths)),
            Self::NotJudged { site, product } | Self::AlreadyProvisioned { site, product } => {
                (Some(site), Some(product.as_str()), None)
            }
            Self::ProvisionSettling { site } => (Some(site), None, None),
            Self::UnknownSite { site } => (Some(site), None, None),
            _ => (None, None, None),
        };
        let mut json = Vec::with_capacity(256);
        json.extend_from_slice(b"{\"error\":");
        push_json_str(&mut json, self.code());
        json.extend_from_slice(b",\"message\":\"");
        // The message, escaped as `Display` writes it: no `String` of it first.
        let written =
            std::fmt::Write::write_fmt(&mut JsonStrContents(&mut json), format_args!("{self}"));
        debug_assert!(written.is_ok(), "writing to a Vec never fails");
        json.push(b'"');
        if let Some(site) = site {
            json.extend_from_slice(b",\"site\":");
            push_json_str(&mut json, site.as_str());
        }
        if let Some(product) = product {
            json.extend_from_slice(b",\"product\":");
            push_json_str(&mut json, product);
        }
        if let Some(upgrade_paths) = upgrade_paths {
            json.extend_from_slice(b",\"upgrade_paths\":");
            upgrade_paths.write_json(&mut json);
        }
        json.push(b'}');
        json
    }

    /// The response the guard sends.
    pub fn into_response<B>(self) -> Response<GuardBody<B>> {
        let mut response = Response::new(GuardBody::buffered(self.to_json()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(wait) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
        }
        if let Some(challenge) = self.www_authenticate() {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }

    /// The challenge a 401 must carry (RFC 9110, 11.6.1): WordPress.com's own when it sent one.
    fn www_authenticate(&self) -> Option<HeaderValue> {
        let Self::Upstream(error) = self else {
            return None;
        };
        let bearer = HeaderValue::from_static("Bearer");
        match error {
            LookupError::CallerRefused(refusal) => match refusal.www_authenticate() {
                Some(challenge) => Some(challenge.clone()),
                None => (refusal.status() == StatusCode::UNAUTHORIZED).then_some(bearer),
            },
            LookupError::MissingToken => Some(bearer),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(response: Response<GuardBody<http_body_util::Empty<bytes::Bytes>>>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn not_an_upgrade_carries_site_product_and_paths() {
        let rejection = Rejection::NotAnUpgrade {
            site: Site::parse("example.com").unwrap(),
            product: "jetpack-backup-realtime".into(),
            upgrade_paths: Arc::new([("jetpack-scan", ["jetpack-scan"])].into_iter().collect()),
        };
        let response = rejection.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let text = body(response).await;
        assert!(
            text.starts_with(r#"{"error":"upgrade_not_allowed","message":""#),
            "{text}"
        );
        assert!(text.contains(r#""site":"example.com","product":"jetpack-backup-realtime","upgrade_paths":{"jetpack-scan":["jetpack-scan"]}"#), "{text}");
    }

    #[tokio::test]
    async fn a_409_is_exactly_these_bytes() {
        let rejection = Rejection::NotAnUpgrade {
            site: Site::parse("https://pro.example.com/").unwrap(),
            product: "premium".into(),
            upgrade_paths: Arc::new(
                [
                    ("jetpack-plans", &["professional", "security"][..]),
                    ("jetpack-backup", &["jetpack-backup-realtime"][..]),
                    ("jetpack-scan", &[][..]),
                ]
                .into_iter()
                .map(|(family, products)| (family, products.iter().copied()))
                .collect(),
            ),
        };
        assert_eq!(
            body(rejection.into_response()).await,
            concat!(
                r#"{"error":"upgrade_not_allowed","#,
                r#""message":"premium is not an upgrade for site pro.example.com: it is not in the site's upgrade paths","#,
                r#""site":"pro.example.com","product":"premium","#,
                r#""upgrade_paths":{"jetpack-backup":["jetpack-backup-realtime"],"jetpack-plans":["professional","security"],"jetpack-scan":[]}}"#,
            )
        );
    }

    /// The oracle for the hand-written body: `serde_json` on a struct of the same fields, which
    /// the body must match byte for byte.
    fn serde_json_body(rejection: &Rejection) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: &'static str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            site: Option<&'a Site>,
            #[serde(skip_serializing_if = "Option::is_none")]
            product: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            upgrade_paths: Option<&'a UpgradePaths>,
        }
        let (site, product, upgrade_paths) = match rejection {
            Rejection::NotAnUpgrade {
                site,
                product,
                upgrade_paths,
            } => (Some(site), Some(product.as_str()), Some(&**upgrade_paths)),
            Rejection::UnknownSite { site } => (Some(site), None, None),
            _ => (None, None, None),
        };
        serde_json::to_vec(&Body {
            error: rejection.code(),
            message: rejection.to_string(),
            site,
            product,
            upgrade_paths,
        })
        .unwrap()
    }

    #[test]
    fn escaping_is_found_at_every_position() {
        for byte in 0..=u8::MAX {
            let escaped = byte < 0x20 || byte == b'"' || byte == b'\\';
            for len in 1..=17 {
                for at in 0..len {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    assert_eq!(needs_escaping(&text), escaped, "{byte:#x} at {at} of {len}");
                }
            }
        }
        // Neighbours cannot make or hide a match (borrows between the bytes of a word).
        let naive = |bytes: &[u8]| bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for first in 0..=u8::MAX {
            for second in 0..=u8::MAX {
                for at in [0, 3, 6] {
                    let mut word = [0xffu8; 8];
                    word[at] = first;
                    word[at + 1] = second;
                    assert_eq!(needs_escaping(&word), naive(&word), "{word:?}");
                }
            }
        }
    }

    #[test]
    fn bodies_escape_as_serde_json_does() {
        // Every byte JSON escapes or might be thought to: quotes, backslashes, controls, DEL,
        // non-ASCII, in the product, the paths' names and (through them) the message.
        let awkward = [
            "plain",
            "",
            "quote\"d",
            "back\\slash",
            "new\nline\r\t\u{8}\u{c}",
            "\u{0}\u{1f}\u{7f}",
            "caf\u{e9} \u{1F600} </script>",
            "\\\"\\\"",
        ];
        let site = Site::parse("example.com").unwrap();
        for text in awkward {
            let paths: UpgradePaths = [(text, [text, "b"])].into_iter().collect();
            let rejections = [
                Rejection::NotAnUpgrade {
                    site: site.clone(),
                    product: text.into(),
                    upgrade_paths: Arc::new(paths),
                },
                Rejection::InvalidBody(BodyError::new(text.to_owned())),
                Rejection::UnknownSite { site: site.clone() },
            ];
            for rejection in rejections {
                assert_eq!(
                    String::from_utf8(rejection.to_json()).unwrap(),
                    String::from_utf8(serde_json_body(&rejection)).unwrap(),
                    "{text:?}"
                );
            }
        }
        for rejection in [
            Rejection::MissingSite,
            Rejection::BodyTooLarge { limit: 65536 },
            Rejection::Upstream(LookupError::Timeout),
            Rejection::SiteBusy(LockError::Busy),
        ] {
            assert_eq!(rejection.to_json(), serde_json_body(&rejection));
        }
    }

    #[tokio::test]
    async fn unknown_site_names_the_site() {
        let site = Site::parse("4242").unwrap();
        let response = Rejection::UnknownSite { site }.into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            body(response).await,
            r#"{"error":"unknown_site","message":"WordPress.com does not know site 4242","site":"4242"}"#
        );
    }

    #[tokio::test]
    async fn a_caller_without_a_token_or_refused_is_answered_401_or_403() {
        let missing = Rejection::Upstream(LookupError::MissingToken).into_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert!(missing.headers().get(header::RETRY_AFTER).is_none());
        let text = body(missing).await;
        assert!(
            text.starts_with(r#"{"error":"missing_token","message":""#),
            "{text}"
        );

        let upstream = br#"{"error":"invalid_token","message":"The OAuth2 token is invalid."}"#;
        let refused = |status, body: &'static [u8], challenge: Option<&'static str>| {
            Rejection::Upstream(LookupError::CallerRefused(
                crate::upstream::CallerRefusal::new(
                    status,
                    &bytes::Bytes::from_static(body),
                    challenge.map(HeaderValue::from_static),
                ),
            ))
        };
        let relayed = refused(StatusCode::UNAUTHORIZED, upstream, None);
        assert_eq!(relayed.code(), "caller_unauthorized");
        let relayed = relayed.into_response();
        assert_eq!(relayed.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(relayed.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(relayed.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body(relayed).await.as_bytes(), upstream);

        let forbidden = refused(StatusCode::FORBIDDEN, b"<html>", Some("Bearer realm=\"x\""));
        let forbidden = forbidden.into_response();
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            forbidden.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"x\""
        );
        let text = body(forbidden).await;
        assert!(
            text.starts_with(r#"{"error":"caller_unauthorized","message":""#),
            "{text}"
        );
        assert!(text.contains("HTTP 403"), "{text}");
        // A 403 without a challenge of its own gets none: only a 401 must carry one.
        let bare = refused(StatusCode::FORBIDDEN, upstream, None)
            .into_response::<http_body_util::Empty<bytes::Bytes>>();
        assert!(bare.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[tokio::test]
    async fn unavailable_upstream_asks_to_retry() {
        let response = Rejection::Upstream(LookupError::Timeout).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let throttled = Rejection::Upstream(LookupError::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(Duration::from_secs(3600)),
        });
        assert_eq!(throttled.retry_after(), Some(MAX_RETRY_AFTER));
        let text = body(response).await;
        assert!(text.starts_with(r#"{"error":"upgrade_paths_unavailable","message":""#));
        assert_eq!(
            Rejection::SiteBusy(LockError::Busy).retry_after(),
            Some(SITE_BUSY_RETRY_AFTER)
        );
        assert_eq!(Rejection::MissingSite.retry_after(), None);
    }
}
