//! How WordPress.com will read a request's body, told by the request's head: the
//! `Content-Type` (and `Content-Encoding`) headers give a [`Reading`], a multipart one with its
//! boundary. Every rule of the guard about `Content-Type` is here.
//!
//! `WPCOM_JSON_API_Endpoint::input()` cuts the content type at the first `;`, trims it and
//! matches it **exactly**; with none (or an empty one, or `0`: PHP's `empty()`), the body is
//! sniffed ([`Reading::sniff`]). Any `multipart/*` type reads `$_POST` and `$_FILES`, which PHP
//! fills only for `multipart/form-data` (matched case-insensitively), finding the boundary by
//! searching the header for the text `boundary`.
//!
//! The guard follows it, and refuses (415) where following it would surprise the sender or
//! where parsers could read the body differently: a JSON or form type spelled in another case,
//! or with a `+json` suffix (PHP would read it as an urlencoded form), other `multipart/*` types,
//! a multipart header with the text `boundary` twice or a boundary PHP would cut elsewhere (PHP
//! reads nothing, or other parts), several `Content-Type` headers, and any `Content-Encoding`
//! but `identity`. It refuses (400) a `Content_Type` or `Content_Length` header: see
//! [`UNDERSCORED`].

use super::php::{Reading, Unreadable, is_php_trim};
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};

/// `Content-Type` and `Content-Length` spelled with `_` or `.` (as `HeaderMap` holds names:
/// lower case), each with the header it passes for.
///
/// A CGI-style server (PHP-FPM behind a front that passes such names, `php -S`) registers a
/// header `Content_Type` as `HTTP_CONTENT_TYPE`, the very variable `setup_inputs()` prefers to
/// `CONTENT_TYPE`: WordPress.com would read the body by it, the guard by `Content-Type`. PHP
/// turns a `.` in a variable's name into `_` too, so `Content.Type` is the same variable.
/// `Content_Length` becomes `HTTP_CONTENT_LENGTH`, which a reader of the real `Content-Length`
/// may take for it. nginx drops such names by default, not every front does: the guard refuses
/// them (400, with a message naming the header: unlike two `Content-Type`s, no media type is
/// at fault). A header name holds no space or `[`, PHP's other characters read as `_`.
const UNDERSCORED: [(&str, &str); 4] = [
    ("content_type", "Content-Type"),
    ("content.type", "Content-Type"),
    ("content_length", "Content-Length"),
    ("content.length", "Content-Length"),
];

/// How WordPress.com reads a body with these headers; `Ok(None)` when it names no content
/// type, and PHP sniffs the body ([`Reading::sniff`]).
pub(crate) fn reading(headers: &HeaderMap) -> Result<Option<Reading>, Unreadable> {
    // One pass over the names the request has (a handful), not a lookup of each refused name:
    // a lookup parses and hashes the name first, on every request the route reads.
    if let Some((name, real)) = headers
        .keys()
        .find_map(|header| UNDERSCORED.into_iter().find(|(n, _)| header.as_str() == *n))
    {
        return Err(Unreadable::Body(format!(
            "the request carries a `{name}` header, which WordPress.com's PHP may take for {real} (both become `HTTP_{}`): send {real} only",
            real.to_ascii_uppercase().replace('-', "_")
        )));
    }
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
            Some(boundary) => Ok(Some(Reading::Multipart { boundary })),
            None => Err(Unreadable::MediaType),
        };
    }
    if JSON_TYPES.contains(&essence) {
        Ok(Some(Reading::Json))
    } else if essence == FORM_TYPE {
        Ok(Some(Reading::JsonThenForm))
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
        Ok(Some(Reading::Form))
    }
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

/// A `multipart/form-data` header's boundary, when PHP and an RFC 2046 parser find the same one
/// in it; `None` when they do not, or find none. `value` is the whole header, `params` what
/// follows its first `;`.
fn multipart_boundary<'a>(value: &str, params: impl Iterator<Item = &'a str>) -> Option<String> {
    // PHP looks for the word `boundary` as it is, then in any case: in a header that has it once,
    // both find that one.
    let mut words = boundary_words(value, true);
    let (Some(at), None) = (words.next(), words.next()) else {
        return None;
    };
    let php = php_boundary_at(value, at)?;
    // curl turns a hand-set `multipart/form-data;` into `multipart/form-data;; boundary=…`:
    // empty parameters are skipped rather than refused.
    params
        .filter_map(|param| {
            let at = memchr::memchr(b'=', param.as_bytes())?;
            Some((&param[..at], &param[at + 1..]))
        })
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim())
        .map(|value| {
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
        .filter(|&boundary| boundary == php && is_plain_boundary(boundary))
        .map(str::to_owned)
}

/// A boundary every parser cuts at the same place: RFC 2046 characters, without the space,
/// comma, quote and semicolon on which PHP and the guard could disagree.
fn is_plain_boundary(boundary: &str) -> bool {
    (1..=70).contains(&boundary.len())
        && boundary.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'\'' | b'(' | b')' | b'+' | b'_' | b'-' | b'.' | b'/' | b':' | b'=' | b'?'
                )
        })
}

/// Where the word `boundary` starts in `header` (in any case when `any_case`). A plain scan
/// from each `b`: a header is short, and a string searcher costs more to set up.
fn boundary_words(header: &str, any_case: bool) -> impl Iterator<Item = usize> + '_ {
    const WORD: &[u8] = b"boundary";
    let bytes = header.as_bytes();
    let capital = if any_case { b'B' } else { b'b' };
    let starts = memchr::memchr2_iter(b'b', capital, bytes);
    starts.filter(move |&at| {
        bytes.get(at..at + WORD.len()).is_some_and(|word| {
            if any_case {
                word.eq_ignore_ascii_case(WORD)
            } else {
                word == WORD
            }
        })
    })
}

/// The boundary as PHP finds it in a `multipart/form-data` header: after the first `=` that
/// follows the first `boundary` (case-sensitive, then case-insensitive), quoted or up to `,`/`;`.
/// The guard takes only headers that name `boundary` once, where both searches find the same
/// word, so it needs only [`php_boundary_at`]; this is PHP's whole search, for the tests.
#[cfg(test)]
fn php_boundary(content_type: &str) -> Option<&str> {
    let at = boundary_words(content_type, false)
        .next()
        .or_else(|| boundary_words(content_type, true).next())?;
    php_boundary_at(content_type, at)
}

/// The boundary PHP reads after the word `boundary` found at `at` in `content_type`: after the
/// first `=`, quoted or up to `,`/`;`. The guard then takes it only when it is plain
/// ([`is_plain_boundary`]).
fn php_boundary_at(content_type: &str, at: usize) -> Option<&str> {
    let after = &content_type[at..];
    // Cut only at ASCII bytes, so every slice is at a character boundary.
    let value = &after[memchr::memchr(b'=', after.as_bytes())? + 1..];
    if let Some(quoted) = value.strip_prefix('"') {
        return memchr::memchr(b'"', quoted.as_bytes()).map(|end| &quoted[..end]);
    }
    let end = value
        .bytes()
        .position(|b| b == b',' || b == b';')
        .unwrap_or(value.len());
    Some(&value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn read_type(content_type: &str) -> Result<Option<Reading>, Unreadable> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        reading(&headers)
    }

    #[test]
    fn content_types_as_wordpress_com_matches_them() {
        assert_eq!(
            read_type("application/json; charset=utf-8"),
            Ok(Some(Reading::Json))
        );
        assert_eq!(read_type("text/x-json"), Ok(Some(Reading::Json)));
        assert_eq!(
            read_type("application/x-www-form-urlencoded ;x"),
            Ok(Some(Reading::JsonThenForm))
        );
        assert_eq!(read_type("text/plain"), Ok(Some(Reading::Form)));
        assert_eq!(read_type(""), Ok(None));
        assert_eq!(read_type("0"), Ok(None));
        assert_eq!(read_type("Application/JSON"), Err(Unreadable::MediaType));
        assert_eq!(
            read_type("application/vnd.api+json"),
            Err(Unreadable::MediaType)
        );
        assert_eq!(
            read_type("Multipart/Form-Data; boundary=b"),
            Ok(Some(Reading::Multipart {
                boundary: "b".into()
            }))
        );
        assert_eq!(
            read_type("multipart/mixed; boundary=b"),
            Err(Unreadable::MediaType)
        );
        assert_eq!(
            read_type("multipart/form-data; boundary= b"),
            Err(Unreadable::MediaType)
        );
        assert_eq!(
            read_type("multipart/form-data,x; boundary=b"),
            Err(Unreadable::MediaType)
        );
        // Nothing but the type before the `;`: refused rather than followed through PHP's
        // cut at a space.
        assert_eq!(
            read_type("multipart/form-data ; boundary=b"),
            Err(Unreadable::MediaType)
        );
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(reading(&headers), Err(Unreadable::MediaType));
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("Identity"));
        assert_eq!(reading(&headers), Ok(None));
        headers.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(reading(&headers), Err(Unreadable::MediaType));
    }

    #[test]
    fn content_type_and_length_spelled_with_an_underscore_or_a_dot_are_refused() {
        for name in [
            "Content_Type",
            "content_type",
            "CONTENT_LENGTH",
            "Content_length",
            "Content.Type",
            "content.length",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            headers.insert(name.clone(), HeaderValue::from_static("application/json"));
            match reading(&headers) {
                Err(Unreadable::Body(message)) => {
                    assert!(message.contains(&format!("`{name}`")), "{message}");
                    assert!(message.contains("`HTTP_CONTENT_"), "{message}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // Other names with `_` are no concern of the body's reading.
        let mut headers = HeaderMap::new();
        headers.insert(
            "x_content_type",
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(reading(&headers), Ok(None));
    }

    fn boundary(content_type: &str) -> Option<String> {
        let mut params = content_type.split(';');
        params.next();
        multipart_boundary(content_type, params)
    }

    #[test]
    fn multipart_boundaries() {
        assert_eq!(
            boundary("multipart/form-data; boundary=xyz").unwrap(),
            "xyz"
        );
        assert_eq!(
            boundary("multipart/form-data;; boundary=xyz").unwrap(),
            "xyz"
        );
        assert_eq!(
            boundary("multipart/form-data;boundary=\"xyz\"").unwrap(),
            "xyz"
        );
        assert!(boundary("multipart/form-data;").is_none());
        // PHP searches for the first `boundary` anywhere in the header and cuts at `,` or `;`.
        assert!(boundary("multipart/form-data; xboundary=A; boundary=B").is_none());
        assert!(boundary("multipart/form-data; boundary=B; charset=boundary").is_none());
        assert!(boundary("multipart/form-data; boundary=a,b").is_none());
        assert!(boundary("multipart/form-data; boundary=\"a;b\"").is_none());
        assert!(boundary("multipart/form-data; boundary=\"a b\"").is_none());
    }

    #[test]
    fn boundaries_as_php_finds_them() {
        assert_eq!(
            php_boundary("multipart/form-data; boundary=abc"),
            Some("abc")
        );
        assert_eq!(
            php_boundary("multipart/form-data;; boundary=\"a b\"; x"),
            Some("a b")
        );
        assert_eq!(php_boundary("multipart/form-data; BOUNDARY=x,y"), Some("x"));
        assert_eq!(php_boundary("multipart/form-data; boundary= x"), Some(" x"));
        assert_eq!(php_boundary("multipart/form-data"), None);
    }
}
