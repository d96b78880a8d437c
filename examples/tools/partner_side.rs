//! What both measuring tools (`loadtest`, `bench_server`) put on the partner's side: the
//! provision handler, and the check a partner would write by hand without this crate.

use axum::{
    Form,
    body::Body,
    extract::{FromRequest, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use std::collections::HashMap;
use std::time::Duration;

/// The partner's handler: reads the form (urlencoded, or multipart with `multer`, what axum's
/// `Multipart` uses), answers 200, calls nothing upstream.
pub async fn provision(request: Request) -> StatusCode {
    let multipart = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once("boundary="))
        .map(|(_, boundary)| boundary.to_owned());
    let has_plan = match multipart {
        Some(boundary) => {
            let stream = request.into_body().into_data_stream();
            let mut form = multer::Multipart::new(stream, boundary);
            let mut has_plan = false;
            while let Ok(Some(field)) = form.next_field().await {
                has_plan |= field.name() == Some("plan");
                if field.bytes().await.is_err() {
                    return StatusCode::BAD_REQUEST;
                }
            }
            has_plan
        }
        None => match Form::<HashMap<String, String>>::from_request(request, &()).await {
            Ok(Form(form)) => form.contains_key("plan"),
            Err(_) => false,
        },
    };
    if has_plan {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// The hand-written check: what it asks and how.
#[derive(Clone)]
pub struct Check {
    pub http: reqwest::Client,
    pub base: String,
    pub authorization: String,
}

impl Check {
    /// A check against the upstream at `base` with `token`, its reqwest call bounded by
    /// `timeout` as the guard bounds its lookups (zero: none, and an upstream that never
    /// answers holds the request for ever).
    pub fn new(base: &str, token: &str, timeout: Duration) -> reqwest::Result<Self> {
        let http = if timeout.is_zero() {
            reqwest::Client::new()
        } else {
            reqwest::Client::builder().timeout(timeout).build()?
        };
        Ok(Self {
            http,
            base: base.to_owned(),
            authorization: format!("Bearer {token}"),
        })
    }

    /// Buffers the form, asks upgrade-paths, decides.
    pub async fn decide(&self, request: Request) -> Result<Request, Response> {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, 64 * 1024)
            .await
            .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE.into_response())?;
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| StatusCode::BAD_REQUEST.into_response())?;
        let (Some(site), Some(plan)) = (form.get("siteurl"), form.get("plan")) else {
            return Err(StatusCode::BAD_REQUEST.into_response());
        };
        let answer = self
            .http
            .get(format!(
                "{}/rest/v1.3/jpphp/{site}/upgrade-paths",
                self.base
            ))
            .header("authorization", &self.authorization)
            .send()
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())?;
        let paths: HashMap<String, Vec<String>> = serde_json::from_slice(
            &answer
                .bytes()
                .await
                .map_err(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())?,
        )
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())?;
        if paths.values().flatten().any(|p| p == plan) {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        } else {
            Err((StatusCode::CONFLICT, r#"{"error":"upgrade_not_allowed"}"#).into_response())
        }
    }
}

/// The check as `axum::middleware::from_fn`.
pub async fn from_fn_check(State(check): State<Check>, request: Request, next: Next) -> Response {
    match check.decide(request).await {
        Ok(request) => next.run(request).await,
        Err(response) => response,
    }
}
