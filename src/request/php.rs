//! A request body read as WordPress.com reads it, the way its head says ([`Reading`], told by
//! [`super::content_type`]).
//!
//! WordPress.com's REST API v1.x reads an endpoint's input with `WPCOM_JSON_API::setup_inputs()`
//! and `WPCOM_JSON_API_Endpoint::input()` (public copy: Automattic/jetpack,
//! `projects/plugins/jetpack/class.json-api.php` and `class.json-api-endpoints.php`):
//!
//! - when there is no content type, a body starting with `{` is JSON and any other an urlencoded
//!   form;
//! - `multipart/form-data` reads `$_POST` and `$_FILES`: see [`super::multipart`];
//! - otherwise the body is trimmed (`trim()`): six JSON types are decoded as JSON (an error reads
//!   nothing); `application/x-www-form-urlencoded` is decoded as JSON first, and read with
//!   `parse_str` when that gives `null`; any other type is read with `parse_str`.
//!
//! The guard follows it, and refuses where following it would cost too much or surprise the
//! sender: JSON PHP could read but serde_json cannot (past 128 levels of nesting, numbers past
//! `f64`), and a form with more fields than PHP reads.

use super::fields::{Fields, Json};
use super::multipart::{self, MAX_FIELDS};
use bytes::Bytes;

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

/// PHP's `trim()` characters.
pub(crate) fn is_php_trim(b: u8) -> bool {
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

/// PHP's `parse_str`, which reads its input as a C string: nothing after a NUL byte.
fn parse_str(body: Bytes) -> Fields {
    let end = memchr::memchr(0, &body).unwrap_or(body.len());
    Fields::form(body.slice(..end))
}

impl Reading {
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
