//! The admin listener (`--admin`): `GET /metrics` and `GET /healthz`, on an address of its own
//! so that nothing of it is reachable through the proxy's port (as Envoy's admin listener).

use crate::forward::{ProxyBody, error_response};
use crate::metrics::{self, Metrics};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use tower_service::Service;

/// Answers the admin endpoints.
#[derive(Clone, Debug)]
pub struct Admin {
    metrics: Metrics,
}

impl Admin {
    /// The admin endpoints, rendering `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }

    fn answer(&self, method: &Method, path: &str) -> Response<ProxyBody> {
        if method != Method::GET && method != Method::HEAD {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the admin endpoints answer GET only",
            );
        }
        let (content_type, body) = match path {
            "/metrics" => (metrics::CONTENT_TYPE, self.metrics.render()),
            // The process is up and serving; readiness of the upstream is the upstream's to say.
            "/healthz" => ("application/json", r#"{"status":"ok"}"#.to_owned()),
            _ => {
                return error_response(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "the admin listener serves /metrics and /healthz",
                );
            }
        };
        let mut response = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

impl<B> Service<Request<B>> for Admin {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.answer(request.method(), request.uri().path())))
    }
}
