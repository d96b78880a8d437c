//! The request reader on arbitrary requests: `Content-Type`, URI and body -> site and product, or
//! a rejection. Whatever the input, reading ends at once (the body is all there), the request
//! to forward carries the body byte for byte, what is read is what a plain form, JSON or
//! multipart parser reads (after WordPress.com's choice between them: `multer`, what axum's
//! `Multipart` uses, for multipart bodies, which the guard itself no longer runs), and a
//! rejection is one of the contract's.
//! The comparison with PHP itself is `tests/php_differential.rs`; its cases are seeds here.
//!
//! Input layout, so seeds can be written by hand (see `fuzz/seeds/request_reader/`):
//! `<flags byte><content-type>\n<uri>\n<body>`. The flags pick the route's sources (bits 0-1),
//! how the body arrives in chunks (bits 2-4), the `Content-Length` header (bits 5-6) and a small
//! body limit (bit 7). The content-type line may go on with `\r<name>:<value>` headers of any
//! kind (a `Connection` header, say): an accepted request must reach the next hop with the
//! headers it was read with, once that hop has dropped what `Connection` names.
#![no_main]

use bytes::Bytes;
use futures_util::stream;
use http::{Request, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::fuzz_target;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use upgrade_guard::fake::read_request;
use upgrade_guard::{Site, Source};

const CHUNK_SIZES: [usize; 8] = [usize::MAX, 1, 2, 3, 7, 16, 64, 513];
const SMALL_LIMIT: usize = 256;
const DEFAULT_LIMIT: usize = 64 * 1024;

/// Polls `future` once: every body here is ready, so reading must not wait for anything.
fn now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the reader waited although the whole body was there"),
    }
}

fn sources(which: u8) -> (Source, Source) {
    match which & 3 {
        0 => (Source::field("siteurl"), Source::field("plan")),
        1 => (
            Source::path("/sites/{site}/plans", "site"),
            Source::field("plan"),
        ),
        2 => (Source::query("site"), Source::query("plan")),
        _ => (
            Source::field("siteurl").or(Source::query("site")),
            Source::field("plan").or(Source::query("plan")),
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut lines = rest.splitn(3, |&b| b == b'\n');
    let mut head = lines.next().unwrap_or_default().split(|&b| b == b'\r');
    let content_type = head.next().unwrap_or_default();
    let uri = lines.next().unwrap_or_default();
    let body = Bytes::copy_from_slice(lines.next().unwrap_or_default());

    let (site_source, product_source) = sources(flags);
    let chunk = CHUNK_SIZES[usize::from((flags >> 2) & 7)];
    let limit = if flags & 0x80 != 0 {
        SMALL_LIMIT
    } else {
        DEFAULT_LIMIT
    };

    let mut request = Request::post("/provision");
    if let Ok(uri) = http::Uri::try_from(uri) {
        request = request.uri(uri);
    }
    if !content_type.is_empty() {
        if let Ok(value) = http::HeaderValue::from_bytes(content_type) {
            request = request.header(header::CONTENT_TYPE, value);
        }
    }
    for header in head {
        let Some(colon) = header.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&header[..colon]),
            http::HeaderValue::from_bytes(&header[colon + 1..]),
        ) {
            request = request.header(name, value);
        }
    }
    let declared = match (flags >> 5) & 3 {
        0 => None,
        1 => Some(body.len().to_string()),
        2 => Some("18446744073709551615".to_owned()),
        _ => Some("not a number".to_owned()),
    };
    if let Some(declared) = &declared {
        request = request.header(header::CONTENT_LENGTH, declared.as_str());
    }
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = body
        .chunks(chunk.min(body.len().max(1)))
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let request = request
        .body(StreamBody::new(stream::iter(chunks)))
        .expect("a valid request");
    let headers = request.headers().clone();
    let query = request.uri().query().map(str::to_owned);

    let (forwarded, named) = now(read_request(
        site_source,
        product_source,
        limit,
        request,
    ));

    // Byte for byte, whatever the reader decided.
    let forwarded_body = now(forwarded.into_body().collect())
        .expect("an infallible body")
        .to_bytes();
    assert_eq!(
        forwarded_body, body,
        "the body to forward differs from the one that came"
    );

    match named {
        Ok((site, product)) => {
            // What a proxy behind the guard forwards (RFC 9110 section 7.6.1), read as the
            // proxy reads `Connection`: the guard must have read the request with these.
            let dropped = named_by_connection(&headers);
            for name in &dropped {
                assert!(
                    CONNECTION_ONLY.contains(&name.as_str()),
                    "accepted a request whose next hop drops its {name} header"
                );
            }
            let content_type = headers.get(header::CONTENT_TYPE).cloned();
            assert_eq!(Site::parse(site.as_str()).as_ref(), Ok(&site));
            if let Some(product) = product {
                assert!(
                    !product.is_empty(),
                    "an empty product was read as a product"
                );
                if flags & 3 == 0 {
                    check_against_plain_parsers(
                        content_type.as_ref(),
                        query.as_deref(),
                        &body,
                        &site,
                        &product,
                    );
                }
            }
        }
        Err(rejection) => {
            let expected_status = match rejection.code() {
                "missing_site"
                | "missing_product"
                | "invalid_site"
                | "invalid_body"
                | "invalid_connection_header" => StatusCode::BAD_REQUEST,
                "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "body_too_large" => {
                    let declared_too_large = declared
                        .as_deref()
                        .and_then(|d| d.parse::<u64>().ok())
                        .is_some_and(|d| d > limit as u64);
                    assert!(
                        body.len() > limit || declared_too_large,
                        "413 for {} bytes under a limit of {limit}",
                        body.len()
                    );
                    StatusCode::PAYLOAD_TOO_LARGE
                }
                other => panic!("the reader answered {other}, which is not a reading error"),
            };
            assert_eq!(rejection.status(), expected_status);
        }
    }
});

/// Hop-by-hop headers that say nothing of how a body reads: a `Connection` header may name them.
const CONNECTION_ONLY: [&str; 8] = [
    "close",
    "keep-alive",
    "upgrade",
    "te",
    "http2-settings",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

/// The headers of `headers` a proxy drops because `Connection` names them, as
/// `upgrade-guard-proxy` reads it (lower-cased names, the header itself left out).
fn named_by_connection(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| headers.contains_key(name) && *name != header::CONNECTION)
        .map(|name| name.as_str().to_owned())
        .collect()
}

/// With the default sources, an accepted request with one of WordPress.com's exact content types
/// names one `siteurl` and one `plan`, as plain parsers read them from the body after PHP's
/// `trim()` (serde_json for JSON, and for urlencoded bodies that are a JSON object, which
/// WordPress.com tries first; serde_urlencoded for other urlencoded bodies) and from the query
/// string (which the guard reads too): every value found in either place is the one read.
fn check_against_plain_parsers(
    content_type: Option<&http::HeaderValue>,
    query: Option<&str>,
    body: &[u8],
    site: &Site,
    product: &str,
) {
    let essence = content_type
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
    let Ok(query) = serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or_default())
    else {
        return;
    };
    // PHP's trim(): ASCII white space less the form feed, plus NUL and the vertical tab.
    let php_trim = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\0' | 0x0b);
    let start = body.iter().take_while(|b| php_trim(b)).count();
    let end = body.len()
        - body[start..]
            .iter()
            .rev()
            .take_while(|b| php_trim(b))
            .count();
    let raw = body;
    let body = &body[start..end];
    let json = || match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    };
    let from_json = |map: &serde_json::Map<String, serde_json::Value>| {
        let mut pairs = Vec::new();
        for name in ["plan", "siteurl"] {
            match map.get(name) {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(s)) => pairs.push((name.to_owned(), s.clone())),
                Some(serde_json::Value::Number(n)) if n.is_i64() => {
                    pairs.push((name.to_owned(), n.to_string()))
                }
                other => panic!("{name} read from {other:?}"),
            }
        }
        pairs
    };
    let pairs = match essence.as_deref() {
        Some("application/x-www-form-urlencoded") => match json() {
            Some(map) => from_json(&map),
            None => {
                if body.contains(&0) || matches!(body.first(), Some(b'{' | b'[' | b'"')) {
                    return;
                }
                let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) else {
                    return;
                };
                pairs
            }
        },
        Some("application/json") => {
            from_json(&json().expect("accepted a JSON body that is not an object"))
        }
        Some(essence) if essence.eq_ignore_ascii_case("multipart/form-data") => {
            let header = content_type.and_then(|v| v.to_str().ok()).unwrap_or_default();
            let boundary = header
                .split(';')
                .skip(1)
                .filter_map(|param| param.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
                .map(|(_, value)| value.trim().trim_matches('"').to_owned())
                .expect("an accepted multipart body names its boundary");
            multipart_fields(&boundary, raw)
        }
        _ => return,
    };
    // An empty value names nothing (`Source::field`): `plan=` in the body beside `plan=pr` in
    // the query is the plan `pr`.
    let values = |name: &str| -> Vec<&str> {
        pairs
            .iter()
            .chain(&query)
            .filter(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let plans = values("plan");
    assert!(
        !plans.is_empty(),
        "a plan read where plain parsers see none"
    );
    assert!(
        plans.iter().all(|p| *p == product),
        "plan {plans:?} read as {product:?}"
    );
    let sites = values("siteurl");
    assert!(
        !sites.is_empty(),
        "a site read where plain parsers see none"
    );
    for found in sites {
        assert_eq!(Site::parse(found).as_ref(), Ok(site), "siteurl {found:?}");
    }
}

/// The text fields `multer` reads from a multipart body the guard accepted: it must read it all.
fn multipart_fields(boundary: &str, body: &[u8]) -> Vec<(String, String)> {
    let body = Bytes::copy_from_slice(body);
    let stream = stream::once(async move { Ok::<_, Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary.to_owned());
    now(async {
        let mut pairs = Vec::new();
        while let Some(field) = form
            .next_field()
            .await
            .expect("multer reads a multipart body the guard accepted")
        {
            let name = field.name().map(str::to_owned);
            let file = field.file_name().is_some();
            let value = field.bytes().await.expect("multer reads every value");
            if let (Some(name), false, Ok(text)) = (name, file, String::from_utf8(value.to_vec())) {
                pairs.push((name, text));
            }
        }
        pairs
    })
}
