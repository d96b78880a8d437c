//! A request body read as WordPress.com reads it.
//!
//! WordPress.com's REST API v1.x reads an endpoint's input with `WPCOM_JSON_API::setup_inputs()`
//! and `WPCOM_JSON_API_Endpoint::input()` (public copy: Automattic/jetpack,
//! `projects/plugins/jetpack/class.json-api.php` and `class.json-api-endpoints.php`):
//!
//! - the content type is the `Content-Type` header; when there is none (or it is empty, or `0`:
//!   PHP's `empty()`), a body starting with `{` is JSON and any other an urlencoded form;
//! - any `multipart/*` type reads `$_POST` and `$_FILES`, which PHP fills only for
//!   `multipart/form-data` (matched case-insensitively): see [`super::multipart`];
//! - otherwise the body is trimmed (`trim()`), the type cut at the first `;`, trimmed and matched
//!   **exactly**: six JSON types are decoded as JSON (an error reads nothing);
//!   `application/x-www-form-urlencoded` is decoded as JSON first, and read with `parse_str`
//!   when that gives `null`; any other type is read with `parse_str`.
//!
//! The guard follows it, and refuses where following it would cost too much or surprise the
//! sender: a JSON or form type spelled in another case, or with a `+json` suffix (PHP would
//! read it as an urlencoded form), other `multipart/*` types and malformed multipart headers
//! (PHP reads nothing), several `Content-Type` headers, and JSON PHP could read but serde_json
//! cannot (past 128 levels of nesting, numbers past `f64`).

use super::fields::{Fields, Json, multipart_boundary};
use super::multipart::{self, MAX_FIELDS};
use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};

/// Why a body cannot be read as WordPress.com would read it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// 415: a `Content-Type` or `Content-Encoding` the guard does not read.
    MediaType,
    /// 400: the body, with a message for the client.
    Body(String),
}

/// How PHP will read the body, from the request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reading {
    /// `json_decode`; an error reads nothing.
    Json,
    /// `json_decode`, then `parse_str` when that gives `null`.
    JsonThenForm,
    /// `parse_str`.
    Form,
    /// `$_POST` and `$_FILES`.
    Multipart { boundary: String },
}

const JSON_TYPES: [&str; 6] = [
    "application/json",
    "application/x-javascript",
    "text/javascript",
    "text/x-javascript",
    "text/x-json",
    "text/json",
];
const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// `text` cut at every `separator`, an ASCII byte (so each piece is whole characters): what
/// `str::split` gives, without decoding characters on the way.
fn split_ascii(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(separator, current.as_bytes()) {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// `fields`, unless PHP would stop reading them before the end (`max_input_vars`).
fn checked(fields: Fields) -> Result<Fields, Unreadable> {
    if fields.len() > MAX_FIELDS {
        return Err(Unreadable::Body(format!(
            "the form has more than {MAX_FIELDS} fields; WordPress.com (PHP's max_input_vars) reads only the first {MAX_FIELDS}"
        )));
    }
    Ok(fields)
}

/// Whether a trimmed body starts as some JSON value does: one that does not is no JSON at all.
fn may_be_json(body: &[u8]) -> bool {
    match body.first() {
        Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9') => true,
        Some(b'n') => body.starts_with(b"null"),
        Some(b't') => body.starts_with(b"true"),
        Some(b'f') => body.starts_with(b"false"),
        _ => false,
    }
}

/// Whether `text` starts with `prefix` (ASCII), in any case.
fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Whether `text` ends with `suffix` (ASCII), in any case.
fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && text.as_bytes()[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// PHP's `trim()` characters.
fn is_php_trim(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\0' | 0x0b)
}

/// `body` without what PHP's `trim()` takes off either end.
fn php_trim(body: &Bytes) -> Bytes {
    let start = body.iter().take_while(|&&b| is_php_trim(b)).count();
    let end = body.len()
        - body[start..]
            .iter()
            .rev()
            .take_while(|&&b| is_php_trim(b))
            .count();
    body.slice(start..end)
}

/// PHP's `parse_str`, which reads its input as a C string: nothing after a NUL byte (found by
/// the differential test).
fn parse_str(body: Bytes) -> Fields {
    let end = memchr::memchr(0, &body).unwrap_or(body.len());
    Fields::form(body.slice(..end))
}

impl Reading {
    /// How WordPress.com reads a body with these headers; `Ok(None)` when it names no content
    /// type, and PHP sniffs the body ([`Reading::sniff`]).
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, Unreadable> {
        // PHP does not decode a body; what it would read of gzip is not what was sent.
        for encoding in headers.get_all(CONTENT_ENCODING) {
            let identity = encoding.to_str().is_ok_and(|v| {
                v.split(',')
                    .all(|v| v.trim().eq_ignore_ascii_case("identity"))
            });
            if !identity {
                return Err(Unreadable::MediaType);
            }
        }
        let mut types = headers.get_all(CONTENT_TYPE).iter();
        let (Some(value), None) = (types.next(), types.next()) else {
            // None, or several: which one PHP sees depends on the web server.
            return if headers.contains_key(CONTENT_TYPE) {
                Err(Unreadable::MediaType)
            } else {
                Ok(None)
            };
        };
        // HTTP servers strip white space around a header value before PHP sees it.
        let value = value
            .to_str()
            .map_err(|_| Unreadable::MediaType)?
            .trim_matches([' ', '\t']);
        if value.is_empty() || value == "0" {
            return Ok(None);
        }
        let mut params = split_ascii(value, b';');
        let first = params.next().unwrap_or_default();
        let essence = first.trim_matches(|c: char| c.is_ascii() && is_php_trim(c as u8));
        if starts_with_ignore_case(essence, "multipart/") {
            // PHP fills `$_POST` only when the type, lower-cased and cut at `;`, `,` or a space,
            // is `multipart/form-data`; the guard also wants nothing else before the `;`.
            if first != essence || !essence.eq_ignore_ascii_case("multipart/form-data") {
                return Err(Unreadable::MediaType);
            }
            return match multipart_boundary(value, params) {
                Ok(boundary) => Ok(Some(Self::Multipart { boundary })),
                Err(_) => Err(Unreadable::MediaType),
            };
        }
        if JSON_TYPES.contains(&essence) {
            Ok(Some(Self::Json))
        } else if essence == FORM_TYPE {
            Ok(Some(Self::JsonThenForm))
        } else if JSON_TYPES
            .iter()
            .chain([&FORM_TYPE])
            .any(|t| t.eq_ignore_ascii_case(essence))
            || ends_with_ignore_case(essence, "+json")
        {
            // WordPress.com would read this as an urlencoded form, which is surely not what the
            // sender meant.
            Err(Unreadable::MediaType)
        } else {
            Ok(Some(Self::Form))
        }
    }

    /// How PHP reads a body sent without a content type: JSON when its first byte is `{`.
    pub(crate) fn sniff(body: &[u8]) -> Self {
        if body.first() == Some(&b'{') {
            Self::Json
        } else {
            Self::JsonThenForm
        }
    }

    /// The fields PHP reads from `body`.
    pub(crate) async fn read(&self, body: Bytes) -> Result<Fields, Unreadable> {
        let fields = match self {
            Self::Multipart { boundary } => multipart::read(boundary, body).await.map_err(|e| {
                Unreadable::Body(format!("the multipart form could not be read: {e}"))
            })?,
            Self::Json => {
                let body = php_trim(&body);
                if body.is_empty() {
                    return Ok(Fields::default());
                }
                match Json::parse(&body) {
                    Ok(Json::Object(fields)) => fields,
                    Ok(Json::Nothing) => Fields::default(),
                    Ok(Json::Other) => {
                        return Err(Unreadable::Body("the JSON body is not an object".into()));
                    }
                    Err(e) => {
                        return Err(Unreadable::Body(format!(
                            "the body is not JSON that can be read ({e})"
                        )));
                    }
                }
            }
            Self::JsonThenForm => {
                let body = php_trim(&body);
                if !may_be_json(&body) {
                    // Most forms (`siteurl=…`): no JSON value starts so, `json_decode` gives
                    // `null` and PHP reads the form, without serde_json building an error first.
                    return checked(parse_str(body));
                }
                match Json::parse(&body) {
                    Ok(Json::Object(fields)) => fields,
                    // `json_decode` gives `null` for `null` itself: PHP then reads the form.
                    Ok(Json::Nothing) if &body[..] == b"null" => parse_str(body),
                    Ok(Json::Nothing) => Fields::default(),
                    Ok(Json::Other) => {
                        return Err(Unreadable::Body(
                            "the body is JSON but not an object: WordPress.com reads no fields from it"
                                .into(),
                        ));
                    }
                    // Starts like JSON but serde_json refuses it: PHP may still decode it, and
                    // reading it as a form would read what PHP does not.
                    Err(_) if matches!(body.first(), Some(b'{' | b'[' | b'"')) => {
                        return Err(Unreadable::Body(
                            "the body starts like JSON but is not JSON that can be read; \
                             WordPress.com tries JSON first for urlencoded bodies"
                                .into(),
                        ));
                    }
                    Err(_) => parse_str(body),
                }
            }
            Self::Form => parse_str(php_trim(&body)),
        };
        checked(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn reading(content_type: &str) -> Result<Option<Reading>, Unreadable> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        Reading::from_headers(&headers)
    }

    #[test]
    fn content_types_as_wordpress_com_matches_them() {
        assert_eq!(
            reading("application/json; charset=utf-8"),
            Ok(Some(Reading::Json))
        );
        assert_eq!(reading("text/x-json"), Ok(Some(Reading::Json)));
        assert_eq!(
            reading("application/x-www-form-urlencoded ;x"),
            Ok(Some(Reading::JsonThenForm))
        );
        assert_eq!(reading("text/plain"), Ok(Some(Reading::Form)));
        assert_eq!(reading(""), Ok(None));
        assert_eq!(reading("0"), Ok(None));
        assert_eq!(reading("Application/JSON"), Err(Unreadable::MediaType));
        assert_eq!(
            reading("application/vnd.api+json"),
            Err(Unreadable::MediaType)
        );
        assert_eq!(
            reading("Multipart/Form-Data; boundary=b"),
            Ok(Some(Reading::Multipart {
                boundary: "b".into()
            }))
        );
        assert_eq!(
            reading("multipart/mixed; boundary=b"),
            Err(Unreadable::MediaType)
        );
        assert_eq!(
            reading("multipart/form-data; boundary= b"),
            Err(Unreadable::MediaType)
        );
        assert_eq!(
            reading("multipart/form-data,x; boundary=b"),
            Err(Unreadable::MediaType)
        );
        // Nothing but the type before the `;`: refused rather than followed through PHP's
        // cut at a space.
        assert_eq!(
            reading("multipart/form-data ; boundary=b"),
            Err(Unreadable::MediaType)
        );
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(Reading::from_headers(&headers), Err(Unreadable::MediaType));
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("Identity"));
        assert_eq!(Reading::from_headers(&headers), Ok(None));
        headers.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(Reading::from_headers(&headers), Err(Unreadable::MediaType));
    }

    #[tokio::test]
    async fn urlencoded_bodies_are_json_first() {
        let body = r#" {"plan":"a","x":"&plan=b"} "#;
        let fields = Reading::JsonThenForm.read(body.into()).await.unwrap();
        assert_eq!(fields.get("plan"), Ok(Some("a".into())));
        let fields = Reading::Form.read(body.into()).await.unwrap();
        assert_eq!(fields.get("plan"), Ok(Some("b\"}".into())));
        assert!(
            Reading::JsonThenForm
                .read(r#"{"plan":1e400}"#.into())
                .await
                .is_err()
        );
        let fields = Reading::JsonThenForm.read("null".into()).await.unwrap();
        assert_eq!(fields.get("null"), Ok(Some("".into())));
        assert_eq!(fields.len(), 1);
        let fields = Reading::JsonThenForm.read("plan=a\n".into()).await.unwrap();
        assert_eq!(fields.get("plan"), Ok(Some("a".into())));
        let fields = Reading::Form
            .read("plan=a&x=\0&siteurl=1".into())
            .await
            .unwrap();
        assert_eq!(fields.get("siteurl"), Ok(None));
    }

    #[tokio::test]
    async fn json_nothing_and_null() {
        for body in ["", "  ", "{}", "[]", "null", r#"{"plan":null}"#] {
            let fields = Reading::Json.read(body.into()).await.unwrap();
            assert_eq!(fields.get("plan"), Ok(None), "{body}");
        }
        let repeated = Reading::Json
            .read(r#"{"plan":"premium","plan":null}"#.into())
            .await
            .unwrap();
        assert!(repeated.get("plan").is_err());
        for body in ["[1]", "\"x\"", "1", "{", "true"] {
            assert!(Reading::Json.read(body.into()).await.is_err(), "{body}");
        }
    }
}
