//! Routing and the answers of the three endpoints, shaped like WordPress.com's.

use super::catalogue::{self, Product};
use super::faults::{Endpoint, Fault, Faults};
use super::faulty_body::{self, AnswerBody};
use super::stats::Counters;
use super::store::{Cancel, CancelError, ProvisionError, Store};
use crate::request::content_type;
use crate::request::fields::{Fields, Value};
use crate::request::php::{Reading, Unreadable};
use crate::site::Site;
use bytes::{Bytes, BytesMut};
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Bodies past this are answered 413; no partner form comes near it.
const MAX_BODY: u64 = 1024 * 1024;
/// How much of a too-large body is read and thrown away before answering 413.
const DRAIN_LIMIT: u64 = 16 * MAX_BODY;
const PARTNER_SCOPE: &str = "jetpack-partner";

pub(crate) type Response = http::Response<Full<Bytes>>;

/// What every connection's service shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) faults: Arc<Faults>,
    pub(crate) counters: Counters,
    /// The bearer token accepted now; [`FakeUpstream::rotate_token`](super::FakeUpstream::rotate_token)
    /// replaces it.
    pub(crate) token: Mutex<String>,
    /// Other callers' tokens, accepted too and never rotated.
    pub(crate) other_tokens: Vec<String>,
    /// Upgrade-paths requests by the bearer token they presented, accepted or not.
    pub(crate) lookups_by_token: Mutex<HashMap<String, u64>>,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    /// Whether a site offered nothing is answered `[]` (PHP's empty array) rather than `{}`.
    pub(crate) empty_paths_as_array: bool,
    /// The families upgrade-paths answers about; `None`: all of them.
    pub(crate) families: Option<Vec<String>>,
}

impl Shared {
    /// The bearer token accepted now.
    pub(crate) fn token(&self) -> String {
        // A string is valid whatever a panicking holder did, so poisoning is ignored.
        self.token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the accepted token with `token`.
    pub(crate) fn set_token(&self, token: String) {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// How many upgrade-paths requests presented `token`.
    pub(crate) fn lookups_with(&self, token: &str) -> u64 {
        let counts = self.lookups_by_token.lock();
        let counts = counts.unwrap_or_else(PoisonError::into_inner);
        counts.get(token).copied().unwrap_or(0)
    }

    pub(crate) fn reset_lookups_by_token(&self) {
        let counts = self.lookups_by_token.lock();
        counts.unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn count_lookup(&self, req: &Request<Incoming>) {
        // A request without a bearer token is counted under "".
        let token = presented_token(req).unwrap_or_default().to_owned();
        let counts = self.lookups_by_token.lock();
        *counts
            .unwrap_or_else(PoisonError::into_inner)
            .entry(token)
            .or_default() += 1;
    }
}

/// Returned to hyper so that it closes the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
pub(crate) struct DroppedConnection;

enum Route<'a> {
    UpgradePaths(&'a str),
    Provision,
    Cancel(&'a str),
    /// Jetpack's own `wp jetpack partner_provision`: the site in the path, `plan` in the body.
    PartnerProvision(&'a str),
    Status(&'a str),
    /// WordPress.com's public site lookup, `/rest/v1.1/sites/{site}`.
    SiteLookup(&'a str),
    Token,
    NotFound,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Self {
        // `{site}` of `/rest/v1.x/jpphp/{site}/<endpoint>`: one path segment.
        let site = |version: &str, endpoint: &str| {
            path.strip_prefix(version)
                .and_then(|rest| rest.strip_prefix("/jpphp/"))
                .and_then(|rest| rest.strip_suffix(endpoint))
                .and_then(|rest| rest.strip_suffix('/'))
                .filter(|site| !site.contains('/'))
        };
        match path {
            "/rest/v1.3/jpphp/provision" => Route::Provision,
            "/oauth2/token" => Route::Token,
            _ => {
                if let Some(site) = site("/rest/v1.3", "upgrade-paths") {
                    Route::UpgradePaths(site)
                } else if let Some(site) = site("/rest/v1.3", "partner-cancel") {
                    Route::Cancel(site)
                } else if let Some(site) = site("/rest/v1.3", "partner-provision") {
                    Route::PartnerProvision(site)
                } else if let Some(site) = site("/rest/v1.4", "status") {
                    Route::Status(site)
                } else if let Some(site) = path
                    .strip_prefix("/rest/v1.1/sites/")
                    .filter(|site| !site.is_empty() && !site.contains('/'))
                {
                    Route::SiteLookup(site)
                } else {
                    Route::NotFound
                }
            }
        }
    }

    fn endpoint(&self) -> Option<Endpoint> {
        match self {
            Route::UpgradePaths(_) => Some(Endpoint::UpgradePaths),
            Route::Provision | Route::PartnerProvision(_) => Some(Endpoint::Provision),
            Route::Cancel(_) => Some(Endpoint::Cancel),
            Route::Status(_) => Some(Endpoint::Status),
            Route::SiteLookup(_) => Some(Endpoint::SiteLookup),
            Route::Token => Some(Endpoint::Token),
            Route::NotFound => None,
        }
    }
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<http::Response<AnswerBody>, DroppedConnection> {
    let counters = &shared.counters;
    Counters::bump(&counters.requests);
    let path = req.uri().path().to_owned();
    let route = Route::of(&path);
    match route {
        Route::UpgradePaths(_) => {
            Counters::bump(&counters.lookups);
            shared.count_lookup(&req);
        }
        Route::Provision | Route::PartnerProvision(_) => Counters::bump(&counters.provisions),
        Route::Cancel(_) => Counters::bump(&counters.cancels),
        Route::Status(_) => Counters::bump(&counters.status_requests),
        Route::SiteLookup(_) => Counters::bump(&counters.site_lookups),
        Route::Token => Counters::bump(&counters.token_requests),
        Route::NotFound => {}
    }
    let mut slow = None;
    if let Some(fault) = shared.faults.take(route.endpoint()) {
        Counters::bump(&counters.faults);
        match fault {
            Fault::Status {
                status,
                headers,
                body,
            } => {
                let mut response = match body {
                    Some(body) => with_status(status, Full::new(body)),
                    None => error(status, &fault_code(status), "fault injected by the fake"),
                };
                // Replaces what the answer had under those names (a Content-Type, say).
                response.headers_mut().extend(headers);
                return Ok(response.map(faulty_body::whole));
            }
            Fault::Delay(duration) => tokio::time::sleep(duration).await,
            Fault::DropConnection => return Err(DroppedConnection),
            Fault::Trickle {
                body: None,
                chunk,
                every,
            } => slow = Some((chunk, every)),
            body_fault => {
                if let Some(response) = faulty_body::answer(&body_fault) {
                    return Ok(response);
                }
            }
        }
    }
    let answer = match route {
        Route::UpgradePaths(site) => upgrade_paths(&shared, &req, site),
        Route::Provision => provision(&shared, req, None).await,
        Route::PartnerProvision(site) => provision(&shared, req, Some(site)).await,
        Route::Cancel(site) => cancel(&shared, req, site).await,
        Route::Status(site) => status(&shared, &req, site),
        Route::SiteLookup(site) => site_lookup(&shared, &req, site),
        Route::Token => token(&shared, req).await,
        Route::NotFound => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint",
        )),
    };
    let answer = answer.unwrap_or_else(Refusal::into_response);
    Ok(match slow {
        Some((chunk, every)) => faulty_body::slowly(answer, chunk, every).await,
        None => answer.map(faulty_body::whole),
    })
}

fn upgrade_paths(
    shared: &Shared,
    req: &Request<Incoming>,
    site: &str,
) -> Result<Response, Refusal> {
    expect_method(req, Method::GET)?;
    authorize(shared, req)?;
    let held = Site::parse(site)
        .ok()
        .and_then(|site| shared.store.held(&site))
        .ok_or_else(invalid_blog)?;
    let mut offered = catalogue::offered(held);
    if let Some(families) = &shared.families {
        offered.retain(|family, _| families.iter().any(|f| f == family));
    }
    if offered.is_empty() && shared.empty_paths_as_array {
        // What PHP's json_encode makes of an empty array.
        return Ok(with_status(StatusCode::OK, Full::from("[]")));
    }
    Ok(json(StatusCode::OK, &offered))
}

fn invalid_blog() -> Refusal {
    Refusal::new(StatusCode::FORBIDDEN, "invalid_blog", "unknown blog")
}

#[derive(Serialize)]
struct Cancelled {
    success: bool,
}

/// `partner-cancel`: `plan` (a product; the site's plan when absent) or `cancel-all=true`.
async fn cancel(shared: &Shared, req: Request<Incoming>, site: &str) -> Result<Response, Refusal> {
    expect_method(&req, Method::POST)?;
    authorize(shared, &req)?;
    let site = Site::parse(site).map_err(|_| invalid_blog())?;
    let fields = read_fields(req).await?;
    let all = last_text(&fields, "cancel-all");
    let plan = last_text(&fields, "plan");
    let cancel = match (all.as_deref(), plan) {
        (Some("true" | "1"), None) => Cancel::All,
        (Some(_), _) => {
            let message = "send either plan or cancel-all=true";
            return Err(Refusal::bad_request("invalid_input", message));
        }
        (None, None) => Cancel::Plan,
        (None, Some(plan)) => Cancel::Product(Product::find(&plan).ok_or_else(|| {
            Refusal::bad_request("not_jps_plan", "plan is not a Jetpack product")
        })?),
    };
    let success = match shared.store.cancel(&site, cancel) {
        Ok(()) => {
            Counters::bump(&shared.counters.cancelled);
            true
        }
        Err(CancelError::NotHeld) => false,
        Err(CancelError::UnknownSite) => return Err(invalid_blog()),
    };
    Ok(json(StatusCode::OK, &Cancelled { success }))
}

#[derive(Serialize)]
struct Status {
    blog: BlogStatus,
    products: Vec<ProductStatus>,
}

#[derive(Serialize)]
struct BlogStatus {
    is_connected: bool,
    has_backups_credentials: bool,
}

#[derive(Serialize)]
struct ProductStatus {
    slug: &'static str,
    is_provisioned_by_partner: bool,
    is_provisioned_by_calling_partner: bool,
    is_pending: bool,
}

/// v1.4 `status`: whether the site is connected and what it holds (all of it provisioned by the
/// one partner the fake knows).
fn status(shared: &Shared, req: &Request<Incoming>, site: &str) -> Result<Response, Refusal> {
    expect_method(req, Method::GET)?;
    authorize(shared, req)?;
    let (connected, held) = Site::parse(site)
        .ok()
        .and_then(|site| shared.store.status(&site))
        .ok_or_else(invalid_blog)?;
    let answer = Status {
        blog: BlogStatus {
            is_connected: connected,
            has_backups_credentials: false,
        },
        products: held
            .into_iter()
            .map(|slug| ProductStatus {
                slug,
                is_provisioned_by_partner: true,
                is_provisioned_by_calling_partner: true,
                is_pending: false,
            })
            .collect(),
    };
    Ok(json(StatusCode::OK, &answer))
}

#[derive(Serialize)]
struct SiteInfo {
    #[serde(rename = "ID")]
    id: Option<u64>,
    #[serde(rename = "URL")]
    url: Option<String>,
}

/// v1.1 `sites/{site}`, WordPress.com's public site lookup: the blog ID and URL of a site named
/// by either, 404 `unknown_blog` for a site the fake does not know. Public: no token needed,
/// but one given must be valid.
fn site_lookup(shared: &Shared, req: &Request<Incoming>, site: &str) -> Result<Response, Refusal> {
    expect_method(req, Method::GET)?;
    if presented_token(req).is_some() {
        authorize(shared, req)?;
    }
    let (id, url) = Site::parse(site)
        .ok()
        .and_then(|site| shared.store.names(&site))
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "unknown_blog", "Unknown blog"))?;
    Ok(json(StatusCode::OK, &SiteInfo { id, url }))
}

#[derive(Serialize)]
struct Provisioned {
    success: bool,
    auth_required: bool,
    next_url: String,
}

/// `provision` (the site from `siteurl`), or Jetpack's `partner-provision` (the site from the
/// path: `in_path`, and no `local_user`, which that tool sends as `user_id`).
async fn provision(
    shared: &Shared,
    req: Request<Incoming>,
    in_path: Option<&str>,
) -> Result<Response, Refusal> {
    expect_method(&req, Method::POST)?;
    authorize(shared, &req)?;
    let fields = read_fields(req).await?;
    let site = in_path
        .map(str::to_owned)
        .or_else(|| last_text(&fields, "siteurl").map(Cow::into_owned))
        .and_then(|s| Site::parse(&s).ok())
        .ok_or_else(|| {
            Refusal::bad_request("invalid_siteurl", "siteurl must be a site URL or a blog ID")
        })?;
    // No plan, or `free`: the site is registered or connected and no product changes.
    let product =
        match last_text(&fields, "plan").as_deref() {
            None | Some("free") => None,
            Some(plan) => Some(Product::find(plan).ok_or_else(|| {
                Refusal::bad_request("invalid_plan", "plan is not a known product")
            })?),
        };
    if in_path.is_none() && last_text(&fields, "local_user").is_none() {
        return Err(Refusal::bad_request(
            "missing_local_user",
            "local_user is required",
        ));
    }
    match shared.store.provision(&site, product) {
        Ok(done) => {
            if done.registered {
                Counters::bump(&shared.counters.registered);
            }
            match product {
                Some(_) => Counters::bump(&shared.counters.provisioned),
                None => Counters::bump(&shared.counters.connected),
            }
            let home = done
                .blog_id
                .map_or_else(|| site.to_string(), |id| id.to_string());
            let answer = Provisioned {
                success: true,
                auth_required: false,
                next_url: format!("https://wordpress.com/home/{home}"),
            };
            Ok(json(StatusCode::OK, &answer))
        }
        Err(ProvisionError::UnknownBlogId) => Err(invalid_blog()),
        Err(ProvisionError::NotOffered) => {
            Counters::bump(&shared.counters.leaks);
            let message = "the site already has everything this plan gives";
            Err(Refusal::bad_request("plan_downgrade_disallowed", message))
        }
    }
}

#[derive(Serialize)]
struct Token<'a> {
    access_token: &'a str,
    token_type: &'a str,
    scope: &'a str,
}

async fn token(shared: &Shared, req: Request<Incoming>) -> Result<Response, Refusal> {
    expect_method(&req, Method::POST)?;
    let fields = read_fields(req).await?;
    if last_text(&fields, "grant_type").as_deref() != Some("client_credentials") {
        let message = "grant_type must be client_credentials";
        return Err(Refusal::bad_request("unsupported_grant_type", message));
    }
    if last_text(&fields, "client_id").as_deref() != Some(shared.client_id.as_str())
        || last_text(&fields, "client_secret").as_deref() != Some(shared.client_secret.as_str())
    {
        let message = "unknown client or wrong secret";
        return Err(Refusal::bad_request("invalid_client", message));
    }
    if last_text(&fields, "scope").as_deref() != Some(PARTNER_SCOPE) {
        return Err(Refusal::bad_request(
            "invalid_scope",
            "scope must be jetpack-partner",
        ));
    }
    let answer = Token {
        access_token: &shared.token(),
        token_type: "bearer",
        scope: PARTNER_SCOPE,
    };
    Ok(json(StatusCode::OK, &answer))
}

fn expect_method(req: &Request<Incoming>, method: Method) -> Result<(), Refusal> {
    if *req.method() == method {
        return Ok(());
    }
    let message = "this endpoint does not take that method";
    Err(Refusal {
        allow: Some(method),
        ..Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    })
}

fn presented_token(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

fn authorize(shared: &Shared, req: &Request<Incoming>) -> Result<(), Refusal> {
    let presented = presented_token(req);
    if presented == Some(shared.token().as_str())
        || presented.is_some_and(|token| shared.other_tokens.iter().any(|other| other == token))
    {
        return Ok(());
    }
    let message = "the bearer token is missing or not accepted";
    Err(Refusal::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        message,
    ))
}

async fn read_fields(req: Request<Incoming>) -> Result<Fields, Refusal> {
    // Read as WordPress.com's `input()` reads it (the guard's own reader follows the same rules),
    // so what the fake provisions, and counts as a leak, is what WordPress.com would.
    let unsupported = || {
        let message = "send a urlencoded form, a multipart form or JSON";
        Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    };
    let reading = content_type::reading(req.headers()).map_err(|_| unsupported())?;
    let body = read_body(req.into_body()).await?;
    let reading = reading.unwrap_or_else(|| Reading::sniff(&body));
    reading.read(body).await.map_err(|why| match why {
        Unreadable::MediaType => unsupported(),
        Unreadable::Body(message) => Refusal::bad_request("invalid_body", message),
    })
}

/// The body, if it is at most [`MAX_BODY`] long.
async fn read_body(mut body: Incoming) -> Result<Bytes, Refusal> {
    // A larger body is still read (up to DRAIN_LIMIT) before the 413 is sent: answering while the
    // client is still sending makes the kernel reset the connection, and the 413 may be lost.
    let too_large = || {
        let message = "the body is over 1 MiB";
        Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
    };
    if body.size_hint().lower() > DRAIN_LIMIT {
        return Err(too_large());
    }
    let mut buffer = BytesMut::new();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|_| Refusal::bad_request("invalid_body", "the body could not be read"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len() as u64;
        if seen > DRAIN_LIMIT {
            return Err(too_large());
        }
        if seen <= MAX_BODY {
            buffer.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY {
        return Err(too_large());
    }
    Ok(buffer.freeze())
}

/// The non-empty text value of `name` as PHP reads the form (the last of repeated fields, names
/// rewritten as PHP does): the fake must provision what WordPress.com would, not what a guard
/// checked.
fn last_text<'a>(fields: &'a Fields, name: &str) -> Option<Cow<'a, str>> {
    match fields.as_php_reads(name)? {
        Value::Text(text) if !text.is_empty() => Some(text),
        _ => None,
    }
}

/// `503` -> `service_unavailable`.
fn fault_code(status: StatusCode) -> String {
    status.canonical_reason().map_or_else(
        || "injected_fault".to_owned(),
        |reason| reason.to_ascii_lowercase().replace([' ', '-'], "_"),
    )
}

/// An error answer, `{"error":"<code>","message":"<text>"}`.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    /// For a 405, the method the endpoint takes.
    allow: Option<Method>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn into_response(self) -> Response {
        let mut response = error(self.status, self.code, &self.message);
        if let Some(method) = self
            .allow
            .and_then(|m| HeaderValue::from_str(m.as_str()).ok())
        {
            response.headers_mut().insert(ALLOW, method);
        }
        response
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json(
        status,
        &ErrorBody {
            error: code,
            message,
        },
    )
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    // Our answers are maps and structs of strings, which always serialise.
    let body = serde_json::to_vec(value).unwrap_or_default();
    with_status(status, Full::new(body.into()))
}

fn with_status(status: StatusCode, body: Full<Bytes>) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let site = |path| match Route::of(path) {
            Route::UpgradePaths(site) => Some(site),
            _ => None,
        };
        assert_eq!(
            site("/rest/v1.3/jpphp/example.com::blog/upgrade-paths"),
            Some("example.com::blog")
        );
        assert_eq!(site("/rest/v1.3/jpphp//upgrade-paths"), Some(""));
        assert_eq!(site("/rest/v1.3/jpphp/a/b/upgrade-paths"), None);
        assert_eq!(site("/rest/v1.3/jpphp/upgrade-paths"), None);
        assert!(matches!(
            Route::of("/rest/v1.3/jpphp/provision"),
            Route::Provision
        ));
        assert!(matches!(Route::of("/oauth2/token"), Route::Token));
        assert!(matches!(Route::of("/oauth2/token/"), Route::NotFound));
        assert!(matches!(
            Route::of("/rest/v1.3/jpphp/example.com::blog/partner-cancel"),
            Route::Cancel("example.com::blog")
        ));
        assert!(matches!(
            Route::of("/rest/v1.3/jpphp/1002/partner-provision"),
            Route::PartnerProvision("1002")
        ));
        assert!(matches!(
            Route::of("/rest/v1.4/jpphp/1002/status"),
            Route::Status("1002")
        ));
        assert!(matches!(
            Route::of("/rest/v1.3/jpphp/1002/status"),
            Route::NotFound
        ));
    }

    #[test]
    fn fault_codes_are_named_after_the_status() {
        assert_eq!(
            fault_code(StatusCode::SERVICE_UNAVAILABLE),
            "service_unavailable"
        );
        assert_eq!(
            fault_code(StatusCode::NON_AUTHORITATIVE_INFORMATION),
            "non_authoritative_information"
        );
        assert_eq!(
            fault_code(StatusCode::from_u16(599).unwrap()),
            "injected_fault"
        );
    }
}
