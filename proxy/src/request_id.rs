//! Request IDs: `X-Request-Id` names each request on every log line written while it is served
//! (the `request` span's `request_id`), on the answer, and on the request passed upstream, so a
//! partner's report, the proxy's logs and the upstream's can be matched.
//!
//! An incoming ID is kept when it is one header of 1 to 128 visible ASCII characters (`!` to
//! `~`, no space); any other is dropped and replaced, so that a caller can't write what it likes
//! into the logs. A request without one gets a random UUID (tower-http's `SetRequestId` with
//! `MakeRequestUuid`). The answer carries the ID the proxy used even when the upstream answered
//! with an ID of its own ([`Telemetry`](crate::telemetry::Telemetry) sets it; tower-http's
//! `PropagateRequestId` would keep the upstream's).

use http::{HeaderValue, Request};

pub(crate) use tower_http::request_id::{MakeRequestUuid, RequestId, SetRequestIdLayer};

/// The longest request ID kept, in bytes.
pub(crate) const MAX_LEN: usize = 128;

/// Whether `value` is kept as the request's ID.
pub(crate) fn is_valid(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_LEN).contains(&bytes.len()) && bytes.iter().all(|byte| byte.is_ascii_graphic())
}

/// Drops the request's `X-Request-Id` unless it is exactly one valid value ([`is_valid`]), so
/// that the next layer (`SetRequestId`) makes a new one.
pub(crate) fn drop_invalid<B>(mut request: Request<B>) -> Request<B> {
    let headers = request.headers_mut();
    let mut values = headers.get_all(X_REQUEST_ID).iter();
    let keep = match (values.next(), values.next()) {
        (Some(value), None) => is_valid(value),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !keep {
        headers.remove(X_REQUEST_ID);
    }
    request
}

/// `x-request-id`.
pub(crate) const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_short_visible_ascii_id_is_kept() {
        let kept = |values: &[&[u8]]| {
            let mut request = Request::new(());
            for value in values {
                request
                    .headers_mut()
                    .append(X_REQUEST_ID, HeaderValue::from_bytes(value).unwrap());
            }
            drop_invalid(request)
                .headers()
                .get(X_REQUEST_ID)
                .map(|value| value.as_bytes().to_vec())
        };
        assert_eq!(kept(&[b"abc-123"]), Some(b"abc-123".to_vec()));
        let longest = vec![b'x'; MAX_LEN];
        assert_eq!(kept(&[&longest]), Some(longest.clone()));
        assert_eq!(kept(&[&[b'x'; MAX_LEN + 1]]), None);
        assert_eq!(kept(&[b"a b"]), None);
        assert_eq!(kept(&[b"a\tb"]), None);
        assert_eq!(kept(&["é".as_bytes()]), None);
        assert_eq!(kept(&[b""]), None);
        assert_eq!(kept(&[b"one", b"two"]), None);
        assert_eq!(kept(&[]), None);
    }
}
