//! Named fields of a buffered body: urlencoded form, multipart form or JSON object.
//!
//! The provision endpoint behind the guard is PHP, and the guard must read a form exactly as PHP
//! will, or it checks another value than the one provisioned:
//!
//! - PHP keeps the *last* of two fields with one name, a naive reader the first: a field the guard
//!   reads must appear once, and [`Fields::get`] reports a repeated one instead of picking.
//! - PHP rewrites field names: leading spaces are dropped, the name ends at a NUL byte, ` ` and `.`
//!   become `_`, and a `[` starts an array index when a `]` follows it and becomes `_` otherwise.
//!   So `+plan`, `plan%00x`, `plan[]` are all `plan` to PHP, and `local[user` is `local_user`. A
//!   form field whose name PHP reads as the one the guard wants, but which is spelled
//!   differently, is refused rather than ignored.
//! - PHP decodes `%XX` to bytes: a value that is not UTF-8 once decoded is not text.
//! - A JSON value is cast to a string as PHP casts it: `null` is no value at all, an integer is
//!   its digits; booleans, floats, integers past 64 bits, arrays and objects are refused.

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// One field's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FieldValue {
    /// Text, or a JSON integer written as text.
    Text(String),
    /// JSON `null`: PHP's `isset` says the field is not there.
    Null,
    /// A JSON value PHP would not cast to the same text (a boolean, a float, an array, an
    /// object), or a value that is not UTF-8.
    NotText,
}

/// Why a field could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FieldError {
    #[error("field `{0}` appears more than once (counting the names WordPress.com reads as `{0}`)")]
    Repeated(String),
    #[error("field `{0}` is not text (WordPress.com reads a string: send the value as one)")]
    NotText(String),
    #[error(
        "field `{0}` is a file upload; WordPress.com reads no value from it: send it as a plain field"
    )]
    File(String),
    #[error("field `{found}` would be read as `{name}` by WordPress.com; send it as `{name}`")]
    Disguised { found: String, name: String },
}

/// The fields of a body, in the order they came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fields {
    stored: Stored,
    /// Whether names are read as PHP reads form fields (forms and query strings, not JSON).
    php_names: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stored {
    /// An urlencoded form, decoded as it is read: only the fields asked for are copied, which
    /// keeps a large form with one or two fields of interest cheap.
    Form {
        body: Bytes,
        pairs: Vec<PairAt>,
    },
    Pairs(Vec<(String, FieldValue)>),
    /// A multipart form: where each part's name and value lie in the body. Names and values
    /// are decoded only when asked for.
    Multipart {
        body: Bytes,
        parts: Vec<PartAt>,
    },
}

/// One part of a multipart form, by where it lies in the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartAt {
    pub(crate) name: PartName,
    /// Where the value lies; `None`: a file, whose value PHP puts in `$_FILES`.
    pub(crate) value: Option<Range<usize>>,
}

/// A multipart part's name as PHP reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PartName {
    /// As it is in the body, the common case.
    At(Range<usize>),
    /// A copy: PHP unescaped it (`\"` in a quoted name) or put it together from folded lines.
    Unescaped(Box<[u8]>),
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            stored: Stored::Pairs(Vec::new()),
            php_names: false,
        }
    }
}

/// A field's value as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Text(Cow<'a, str>),
    Null,
    NotText,
    File,
    /// The value of one `name=value` pair of an urlencoded form, not decoded yet.
    Encoded(&'a [u8]),
    /// A multipart value's bytes, not checked for UTF-8 yet.
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    /// The value, decoded.
    fn decoded(self) -> Self {
        match self {
            Self::Encoded(raw) => match php_url_decode(raw) {
                Cow::Borrowed(bytes) => {
                    std::str::from_utf8(bytes).map_or(Self::NotText, |t| Self::Text(t.into()))
                }
                Cow::Owned(bytes) => {
                    String::from_utf8(bytes).map_or(Self::NotText, |t| Self::Text(t.into()))
                }
            },
            Self::Bytes(raw) => {
                std::str::from_utf8(raw).map_or(Self::NotText, |t| Self::Text(t.into()))
            }
            decoded => decoded,
        }
    }
}

/// The fields of a body one by one, with their names as sent (see [`Fields::entries_where`]).
enum Entries<'s, F> {
    Form {
        body: &'s Bytes,
        pairs: std::slice::Iter<'s, PairAt>,
        maybe: F,
    },
    Pairs(std::slice::Iter<'s, (String, FieldValue)>),
    Multipart {
        body: &'s Bytes,
        parts: std::slice::Iter<'s, PartAt>,
        maybe: F,
    },
}

impl<'s, F: Fn(&[u8]) -> bool> Iterator for Entries<'s, F> {
    type Item = (Cow<'s, str>, Value<'s>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Form { body, pairs, maybe } => {
                let body: &'s [u8] = body;
                let at = pairs.find(|at| maybe(&body[at.start..at.name_end]))?;
                let name = decode_name(&body[at.start..at.name_end]);
                let value = body.get(at.name_end + 1..at.end).unwrap_or_default();
                Some((name, Value::Encoded(value)))
            }
            Self::Pairs(pairs) => {
                let (name, value) = pairs.next()?;
                let value = match value {
                    FieldValue::Text(text) => Value::Text(Cow::Borrowed(text)),
                    FieldValue::Null => Value::Null,
                    FieldValue::NotText => Value::NotText,
                };
                Some((Cow::Borrowed(name.as_str()), value))
            }
            Self::Multipart { body, parts, maybe } => {
                let body: &'s [u8] = body;
                let (name, part) = parts
                    .map(|part| {
                        let name: &'s [u8] = match &part.name {
                            PartName::At(range) => &body[range.clone()],
                            PartName::Unescaped(name) => name,
                        };
                        (name, part)
                    })
                    .find(|(name, _)| maybe(name))?;
                let value = match &part.value {
                    Some(range) => Value::Bytes(&body[range.clone()]),
                    None => Value::File,
                };
                // Bytes that are not UTF-8 become U+FFFD, which no name the guard reads contains.
                Some((String::from_utf8_lossy(name), value))
            }
        }
    }
}

/// PHP's `urldecode`: `+` is a space, `%` and two hex digits a byte, any other `%` itself.
fn php_url_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr2(b'%', b'+', raw).is_none() {
        return Cow::Borrowed(raw);
    }
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    while at < raw.len() {
        let byte = match raw[at] {
            b'+' => b' ',
            b'%' => match (
                raw.get(at + 1).and_then(|&b| hex(b)),
                raw.get(at + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => {
                    at += 2;
                    (high * 16 + low) as u8
                }
                _ => b'%',
            },
            other => other,
        };
        out.push(byte);
        at += 1;
    }
    Cow::Owned(out)
}

/// Where each `name=value` pair of an urlencoded form lies, found in one pass: a form with a
/// kilobyte of fields nobody asks for costs a scan, not a copy.
fn locate_pairs(body: &[u8]) -> Vec<PairAt> {
    let mut pairs = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'&', body).chain([body.len()]) {
        if end > start {
            let pair = &body[start..end];
            let name_len = memchr::memchr(b'=', pair).unwrap_or(pair.len());
            pairs.push(PairAt {
                start,
                name_end: start + name_len,
                end,
            });
        }
        start = end + 1;
    }
    pairs
}

/// One pair of an urlencoded form: `body[start..name_end]` is its name, `body[start..end]` all of
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PairAt {
    start: usize,
    name_end: usize,
    end: usize,
}

/// Whether a name is made only of letters, digits, `_` and `-`: then it is its own decoding and
/// its own PHP key.
fn is_plain(name: &[u8]) -> bool {
    name.iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// A form field's name decoded as PHP decodes it; most names need no decoding. Bytes that are
/// not UTF-8 become U+FFFD, which no name the guard reads contains.
fn decode_name(raw: &[u8]) -> Cow<'_, str> {
    // The common case, `siteurl` or `local_user`: the name is its own decoding.
    if is_plain(raw)
        && let Ok(name) = std::str::from_utf8(raw)
    {
        return Cow::Borrowed(name);
    }
    match php_url_decode(raw) {
        Cow::Borrowed(bytes) => String::from_utf8_lossy(bytes),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

impl Fields {
    /// A query string (or any urlencoded text).
    pub(crate) fn parse_query(query: &str) -> Self {
        Self::form(Bytes::copy_from_slice(query.as_bytes()))
    }

    /// An urlencoded form. Any bytes are one: like PHP, invalid escapes are kept as they are.
    pub(crate) fn form(body: Bytes) -> Self {
        Self {
            stored: Stored::Form {
                pairs: locate_pairs(&body),
                body,
            },
            php_names: true,
        }
    }

    /// A multipart form's parts, by where they lie in `body`.
    pub(crate) fn multipart(body: Bytes, parts: Vec<PartAt>) -> Self {
        Self {
            stored: Stored::Multipart { body, parts },
            php_names: true,
        }
    }

    pub(crate) fn pairs(pairs: Vec<(String, FieldValue)>, php_names: bool) -> Self {
        Self {
            stored: Stored::Pairs(pairs),
            php_names,
        }
    }

    /// The fields PHP registers under `key` (a key as [`key`](Self::key) gives it), in order,
    /// with their names as sent.
    fn registered_as<'s, 'k>(
        &'s self,
        key: &'k str,
    ) -> impl Iterator<Item = (Cow<'s, str>, Value<'s>)> + use<'s, 'k> {
        // A plain name is its own decoding and its own key: a plain form or part name other than
        // a plain key is not it, and needs no decoding to tell.
        let plain_key = is_plain(key.as_bytes());
        let maybe = move |raw: &[u8]| !plain_key || raw == key.as_bytes() || !is_plain(raw);
        self.entries_where(maybe)
            .filter(move |(field, _)| self.key(field) == key)
    }

    /// Every field, in order, with its name as sent, leaving out the urlencoded and multipart
    /// fields whose raw (undecoded) name `maybe` rules out.
    fn entries_where<'s, F: Fn(&[u8]) -> bool>(&'s self, maybe: F) -> Entries<'s, F> {
        match &self.stored {
            Stored::Form { body, pairs } => Entries::Form {
                body,
                pairs: pairs.iter(),
                maybe,
            },
            Stored::Pairs(pairs) => Entries::Pairs(pairs.iter()),
            Stored::Multipart { body, parts } => Entries::Multipart {
                body,
                parts: parts.iter(),
                maybe,
            },
        }
    }

    /// How many fields there are (PHP stops reading past `max_input_vars`).
    pub(crate) fn len(&self) -> usize {
        match &self.stored {
            Stored::Form { pairs, .. } => pairs.len(),
            Stored::Pairs(pairs) => pairs.len(),
            Stored::Multipart { parts, .. } => parts.len(),
        }
    }

    /// The key the upstream registers a field called `name` under.
    fn key<'n>(&self, name: &'n str) -> Cow<'n, str> {
        if self.php_names {
            php_name(name)
        } else {
            Cow::Borrowed(name)
        }
    }

    /// The text of the field called `name`, `Ok(None)` when absent.
    pub(crate) fn get(&self, name: &str) -> Result<Option<Cow<'_, str>>, FieldError> {
        let key = self.key(name);
        let mut found = self.registered_as(&key);
        let Some((found_name, value)) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() {
            return Err(FieldError::Repeated(name.to_owned()));
        }
        if found_name != name {
            return Err(FieldError::Disguised {
                found: found_name.escape_debug().to_string(),
                name: name.to_owned(),
            });
        }
        match value.decoded() {
            Value::Text(text) => Ok(Some(text)),
            Value::Null => Ok(None),
            Value::File => Err(FieldError::File(name.to_owned())),
            _ => Err(FieldError::NotText(name.to_owned())),
        }
    }

    /// The value PHP would see for `name`: the last field whose name PHP reads as `name`. This
    /// is how the fake upstream reads forms, so tests against it see what WordPress.com would.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn as_php_reads(&self, name: &str) -> Option<Value<'_>> {
        let key = self.key(name);
        self.registered_as(&key)
            .last()
            .map(|(_, value)| value.decoded())
    }
}

/// The top-level key PHP registers a form field's name under (`php_register_variable_ex`):
/// leading spaces dropped, cut at NUL, ` ` and `.` turned into `_`; at the first `[`, the key
/// ends when a `]` follows (an array), else that `[` and every later ` `, `.` and `[` become `_`.
fn php_name(raw: &str) -> Cow<'_, str> {
    // Most names are their own key: one pass over the bytes tells.
    if !raw.bytes().any(|b| matches!(b, b' ' | b'\0' | b'.' | b'[')) {
        return Cow::Borrowed(raw);
    }
    let raw = raw.trim_start_matches(' ');
    let raw = raw.split('\0').next().unwrap_or_default();
    if !raw.contains([' ', '.', '[']) {
        return Cow::Borrowed(raw);
    }
    let underscore = |c: char| if c == ' ' || c == '.' { '_' } else { c };
    match raw.find('[') {
        // An empty key: PHP ignores the field, so it is no name at all.
        Some(0) => Cow::Borrowed("\0"),
        Some(at) if raw[at + 1..].contains(']') => raw[..at].chars().map(underscore).collect(),
        Some(at) => {
            let mut key: String = raw[..at].chars().map(underscore).collect();
            key.push('_');
            key.extend(
                raw[at + 1..]
                    .chars()
                    .map(|c| if c == '[' { '_' } else { underscore(c) }),
            );
            Cow::Owned(key)
        }
        None => raw.chars().map(underscore).collect(),
    }
}

/// A JSON body as PHP's `json_decode($body, true)` sees it.
pub(crate) enum Json {
    /// An object: its keys, repeated ones kept (PHP keeps the last, the guard refuses them).
    Object(Fields),
    /// `[]` or `null`: PHP reads no field from it.
    Nothing,
    /// A scalar or a non-empty list: no form at all.
    Other,
}

impl Json {
    /// Parses `body` (already trimmed as PHP trims it). serde_json accepts a subset of what
    /// PHP's parser does (it stops nesting at 128 levels, PHP at 512, and refuses numbers past
    /// f64), so an error here may still be JSON to PHP: callers must not read such a body as a
    /// form.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let json = de.deserialize_any(JsonVisitor)?;
        de.end()?;
        Ok(json)
    }
}

/// Reads a JSON object keeping repeated keys, which `serde_json::Map` would collapse.
struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut pairs = Vec::new();
        while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
            let value = match value {
                serde_json::Value::String(text) => FieldValue::Text(text),
                // PHP reads integers as 64-bit ints and anything else as a float, whose text
                // ("1.0E+20", "100") differs from the JSON's.
                serde_json::Value::Number(number) => number
                    .as_i64()
                    .map_or(FieldValue::NotText, |n| FieldValue::Text(n.to_string())),
                serde_json::Value::Null => FieldValue::Null,
                _ => FieldValue::NotText,
            };
            pairs.push((name, value));
        }
        Ok(Json::Object(Fields::pairs(pairs, false)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut empty = true;
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            empty = false;
        }
        Ok(if empty { Json::Nothing } else { Json::Other })
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Nothing)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Json, E> {
        Ok(Json::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a test's body is encoded.
    enum Kind {
        Form,
        Json,
    }

    /// The fields of `body` read as `kind`; the error is a message for the client.
    async fn parse(kind: Kind, body: Bytes) -> Result<Fields, String> {
        match kind {
            Kind::Form => Ok(Fields::form(body)),
            Kind::Json => match Json::parse(&body) {
                Ok(Json::Object(fields)) => Ok(fields),
                Ok(Json::Nothing) => Ok(Fields::default()),
                Ok(Json::Other) => Err("the JSON body is not an object".into()),
                Err(e) => Err(format!("the JSON body is not an object: {e}")),
            },
        }
    }

    #[tokio::test]
    async fn repeated_fields_are_reported_not_picked() {
        let fields = parse(Kind::Form, "plan=a&plan=b&site=x".into())
            .await
            .unwrap();
        assert_eq!(fields.get("site"), Ok(Some("x".into())));
        assert_eq!(fields.get("plan"), Err(FieldError::Repeated("plan".into())));
        assert_eq!(fields.get("other"), Ok(None));

        let json = parse(Kind::Json, r#"{"plan":"a","plan":"b"}"#.into())
            .await
            .unwrap();
        assert_eq!(json.get("plan"), Err(FieldError::Repeated("plan".into())));
    }

    #[tokio::test]
    async fn forms_decode_as_form_urlencoded_does() {
        let body = "a=1&&plan=jetpack%2Dscan+x&site%5Furl=%E2%82%AC&empty=&bare&bad=%zz%ff";
        let fields = parse(Kind::Form, body.into()).await.unwrap();
        for (name, value) in form_urlencoded::parse(body.as_bytes()) {
            if name == "plan" || name == "site_url" || name == "empty" || name == "bare" {
                assert_eq!(
                    fields.get(&name).unwrap().as_deref(),
                    Some(&*value),
                    "{name}"
                );
            }
        }
        assert_eq!(
            fields.get("plan").unwrap().as_deref(),
            Some("jetpack-scan x")
        );
        // PHP decodes `%ff` to a byte: not UTF-8, so not a value the guard can compare.
        assert_eq!(fields.get("bad"), Err(FieldError::NotText("bad".into())));
    }

    #[tokio::test]
    async fn names_php_reads_as_the_field_are_refused() {
        let form = |body: &'static str| parse(Kind::Form, body.into());
        for body in [
            "plan=jetpack-scan&+plan=premium",
            "plan=jetpack-scan&plan%00x=premium",
            "plan=jetpack-scan&plan[]=premium",
            "plan=jetpack-scan&plan[x]=premium",
            "local_user=a&plan=x&local.user=b",
        ] {
            let fields = form(body).await.unwrap();
            let name = if body.starts_with("local") {
                "local_user"
            } else {
                "plan"
            };
            assert!(
                matches!(fields.get(name), Err(FieldError::Repeated(_))),
                "{body}"
            );
        }
        for body in [
            "+plan=premium",
            "plan%00=premium",
            "plan[]=premium",
            "%20plan=premium",
        ] {
            let fields = form(body).await.unwrap();
            assert!(
                matches!(fields.get("plan"), Err(FieldError::Disguised { .. })),
                "{body}"
            );
        }
        let fields = form("planet=x&my_plan=y&plan=ok").await.unwrap();
        assert_eq!(fields.get("plan"), Ok(Some("ok".into())));
        // JSON keys are taken as they are: PHP's json_decode does not rewrite them.
        let json = parse(Kind::Json, r#"{"plan":"a"," plan":"b"}"#.into())
            .await
            .unwrap();
        assert_eq!(json.get("plan"), Ok(Some("a".into())));
    }

    #[tokio::test]
    async fn json_values() {
        let fields = parse(
            Kind::Json,
            r#"{"site": 12345, "plan": "personal", "x": [1]}"#.into(),
        )
        .await
        .unwrap();
        assert_eq!(fields.get("site"), Ok(Some("12345".into())));
        assert_eq!(fields.get("plan"), Ok(Some("personal".into())));
        assert_eq!(fields.get("x"), Err(FieldError::NotText("x".into())));
        for bad in ["[1]", "\"x\"", "{", "{} {}", ""] {
            assert!(parse(Kind::Json, bad.into()).await.is_err(), "{bad}");
        }
    }
}
