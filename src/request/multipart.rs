//! `multipart/form-data` read as PHP reads it, taken only in the plain form every parser reads
//! alike.
//!
//! PHP's own multipart parser (`main/rfc1867.c`) fills `$_POST` and `$_FILES`, which is what
//! WordPress.com's `input()` reads. It is line based and lenient where RFC 7578 parsers are
//! strict, so a body can hold fields that one reads and the other does not:
//!
//! - a part starts at any line that is exactly `--boundary` (cut at a NUL byte), so a part after
//!   the closing `--boundary--` (in the "epilogue") is read too, and lines may end in LF alone;
//! - a value ends at the first `\n--boundary`, even when more text follows (`--boundaryX`), and
//!   everything up to the next `--boundary` line is then skipped;
//! - the part's name comes from the *last* `name=` parameter of `Content-Disposition`, matched
//!   case-insensitively, with PHP's own quoting; any `filename=` (even empty) makes it a file,
//!   and a file shadows a field of the same name (`array_merge($_POST, $_FILES)`);
//! - a part without `Content-Disposition` is skipped; one with neither name nor file name stops
//!   the parsing there.
//!
//! The guard reads the body with a copy of that algorithm, so it sees the fields PHP sees. It
//! then takes the body only in its *plain* form (see [`read_plain`]): CRLF line ends, nothing
//! before the first boundary or after the closing one, each part a few `Name: value` headers with
//! one `Content-Disposition: form-data; name="…"` (and maybe `; filename="…"`), quoted names of
//! plain characters, and no value holding a line that starts with the boundary. Every corner
//! above lies outside that form, where RFC 7578 parsers (`multer`, what axum's `Multipart` uses)
//! read the same parts as PHP: a partner handler that reads the form itself, and any corner of
//! PHP's parser this copy might get wrong, then meet a refusal rather than another reading.
//!
//! A body outside the plain form is not refused for that alone: it is read a second time with
//! `multer` and taken when both read the same parts. That second reading costs more than the rest
//! of the guard's work on a form, so only bodies outside the plain form pay it (figures in
//! BENCHMARKS.md). The tests here and the `request_reader` fuzz target check that whatever the
//! plain reading accepts, `multer` reads part for part the same.

use super::fields::{Fields, PartAt, PartName};
use bytes::Bytes;
use std::borrow::Cow;

/// PHP reads at most this many variables from a form (`max_input_vars`) and drops the rest; a
/// body with more is refused rather than read past the point PHP stops.
pub(crate) const MAX_FIELDS: usize = 1000;

/// PHP reads lines through a 5 KiB buffer and splits longer ones; lines that long are refused
/// (values are not read by line, only the preamble, headers and skipped parts are).
const MAX_LINE: usize = 4096;

/// The most headers a plain part has (`multer` refuses a part with more than 32).
const MAX_PART_HEADERS: usize = 8;

/// One part as read, borrowed from the body (a name PHP unescapes is a copy).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Part<'a> {
    /// The `name` parameter as PHP reads it (`None`: an anonymous file).
    name: Option<Cow<'a, [u8]>>,
    /// Whether a `filename` parameter was given: then PHP puts the part in `$_FILES`.
    file: bool,
    value: &'a [u8],
}

/// One part of a plain body, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PlainPart<'a> {
    name: &'a [u8],
    file: bool,
    value: &'a [u8],
}

impl PartialEq<PlainPart<'_>> for Part<'_> {
    fn eq(&self, plain: &PlainPart<'_>) -> bool {
        self.name.as_deref() == Some(plain.name)
            && self.file == plain.file
            && self.value == plain.value
    }
}

/// The message for a body that is not a plain form.
const NOT_PLAIN: &str = "the multipart body is not a plain form: parsers read it differently (send \
                         CRLF line ends, quoted names, no text after the closing boundary, and values \
                         without the boundary in them)";

/// Reads a multipart body with boundary `boundary` (as PHP extracts it from the header).
pub(crate) async fn read(boundary: &str, body: Bytes) -> Result<Fields, String> {
    let parts = read_as_php(boundary.as_bytes(), &body)?;
    if parts.len() > MAX_FIELDS {
        return Err(format!(
            "the form has more than {MAX_FIELDS} parts; WordPress.com (PHP) reads only the first {MAX_FIELDS}"
        ));
    }
    match read_plain(boundary.as_bytes(), &body) {
        // Both readings, compared: the plain form is where they must agree, so a difference is
        // a mistake in one of them, and refused rather than guessed at.
        Some(plain) => {
            if parts.len() != plain.len()
                || parts.iter().zip(&plain).any(|(php, plain)| php != plain)
            {
                return Err(NOT_PLAIN.into());
            }
        }
        // Outside the plain form (an unquoted name, a tab in a header, a name in capitals), a
        // legitimate client's form is still taken when an RFC 7578 parser reads the same parts
        // as PHP: the slower reading, paid only by such bodies. Boxed, so that `multer`'s state
        // does not make every request's reading future (and the check's, which holds it) too
        // large for the allocator's fast path.
        None => {
            if !Box::pin(multer_reads_alike(boundary, &body, &parts)).await {
                return Err(NOT_PLAIN.into());
            }
        }
    }
    // Names and values stay in the body: only the one or two asked for are ever decoded.
    let fields = parts
        .into_iter()
        .filter_map(|part| {
            let name = match part.name? {
                Cow::Borrowed(name) if within(&body, name) => PartName::At(offset(&body, name)),
                name => PartName::Unescaped(name.into_owned().into()),
            };
            let value = (!part.file).then(|| offset(&body, part.value));
            Some(PartAt { name, value })
        })
        .collect();
    Ok(Fields::multipart(body, fields))
}

/// Whether `multer` (what axum's `Multipart` uses) reads `body` as the same parts as PHP's copy:
/// same names, same file flags, same values, in the same order.
async fn multer_reads_alike(boundary: &str, body: &Bytes, php: &[Part<'_>]) -> bool {
    let body = body.clone();
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut php = php.iter();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return php.next().is_none(),
            Err(_) => return false,
        };
        let Some(expected) = php.next() else {
            return false;
        };
        let name = field.name().map(str::as_bytes);
        let file = field.file_name().is_some();
        if name != expected.name.as_deref() || file != expected.file {
            return false;
        }
        match field.bytes().await {
            Ok(value) if value == expected.value => {}
            _ => return false,
        }
    }
}

/// Whether `part` is a slice of `body` (a name PHP's reading gives is one unless copied).
fn within(body: &[u8], part: &[u8]) -> bool {
    body.as_ptr_range().start <= part.as_ptr_range().start
        && part.as_ptr_range().end <= body.as_ptr_range().end
}

/// Where `part` lies in `body`, which it is a slice of.
fn offset(body: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - body.as_ptr() as usize;
    start..start + part.len()
}

/// The parts of a body in the plain form, or `None` when it is not in it:
///
/// ```text
/// body    = "--" boundary *( CRLF part-headers CRLF value CRLF "--" boundary ) "--" [ CRLF ]
/// header  = token ": " VCHAR *( VCHAR / SP )  CRLF      ; at most 8, CRLF-terminated
/// disposition = "form-data; name=\"" 1*name-char "\"" [ "; filename=\"" *file-char "\"" ]
/// ```
///
/// with exactly one `Content-Disposition` header per part (its name in any case), `name-char`
/// a visible ASCII character other than `"`, `'`, `\`, `;`, `=` and `,`; `file-char` the same
/// or a space; and no value holding `\n--boundary`. On such a body PHP and RFC 7578 parsers cut
/// the same parts at the same places and read the same names: no text outside the parts, no line
/// end but CRLF, no value a lenient parser would end early, no parameter a parser searching for
/// `name` or `filename` by text could find anywhere else.
fn read_plain<'a>(boundary: &[u8], body: &'a [u8]) -> Option<Vec<PlainPart<'a>>> {
    let mut rest = body.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let mut parts = Vec::with_capacity(8);
    loop {
        if let Some(after) = rest.strip_prefix(b"--") {
            return (after.is_empty() || after == b"\r\n").then_some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let mut disposition = None;
        let mut headers = 0;
        loop {
            // A line ends at its first LF, which must follow a CR (a bare CR is no text either).
            let end = memchr::memchr(b'\n', &rest[..rest.len().min(MAX_LINE + 1)])?;
            let line = rest[..end].strip_suffix(b"\r")?;
            rest = &rest[end + 1..];
            if line.is_empty() {
                break;
            }
            headers += 1;
            let (name, value) = plain_header(line)?;
            if headers > MAX_PART_HEADERS {
                return None;
            }
            if name.eq_ignore_ascii_case(b"content-disposition") {
                if disposition.is_some() {
                    return None;
                }
                disposition = Some(plain_disposition(value)?);
            }
        }
        let (name, file) = disposition?;
        // The value ends at the first line that starts with the boundary: it must be the next
        // delimiter, after a CR.
        let end = memchr::memchr_iter(b'\n', rest).find(|&at| {
            let line = &rest[at + 1..];
            line.strip_prefix(b"--")
                .is_some_and(|line| line.starts_with(boundary))
        })?;
        let value = rest[..end].strip_suffix(b"\r")?;
        rest = &rest[end + 3 + boundary.len()..];
        if !rest.starts_with(b"\r\n") && !rest.starts_with(b"--") {
            return None;
        }
        parts.push(PlainPart { name, file, value });
    }
}

/// A plain header line: a token, `": "`, then visible ASCII and spaces, not starting with one.
fn plain_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    // The name runs up to the first byte not of a token, which must be its `:`.
    let colon = line.iter().position(|&b| !is(b, TOKEN))?;
    if colon == 0 || line[colon] != b':' {
        return None;
    }
    let value = line[colon + 1..].strip_prefix(b" ")?;
    (value.first().is_some_and(|&b| b != b' ') && value.iter().all(|&b| is(b, TEXT)))
        .then_some((&line[..colon], value))
}

/// A plain `Content-Disposition` value: its name, and whether it names a file.
fn plain_disposition(value: &[u8]) -> Option<(&[u8], bool)> {
    let rest = value.strip_prefix(b"form-data; name=\"")?;
    // The name runs up to the first byte not of a name, which must be its closing quote.
    let end = rest.iter().position(|&b| !is(b, NAME))?;
    let (name, rest) = (&rest[..end], rest[end..].strip_prefix(b"\"")?);
    if name.is_empty() {
        return None;
    }
    if rest.is_empty() {
        return Some((name, false));
    }
    let file = rest.strip_prefix(b"; filename=\"")?.strip_suffix(b"\"")?;
    file.iter()
        .all(|&b| is(b, FILE_NAME))
        .then_some((name, true))
}

/// Bytes of a header name: letters, digits and `-`.
const TOKEN: u8 = 1;
/// Bytes of a plain header value: visible ASCII and the space.
const TEXT: u8 = 2;
/// Bytes of a plain part name: visible ASCII other than `"`, `'`, `\`, `;`, `=` and `,`.
const NAME: u8 = 4;
/// Bytes of a plain file name: those of a name, and the space.
const FILE_NAME: u8 = 8;

/// The bytes PHP's `get_word` stops at when cutting parameters: `;` and the quotes.
const SEMICOLON_OR_QUOTE: u8 = 16;
/// The bytes PHP's `get_word` stops at when cutting a parameter's name: `=` and the quotes.
const EQUALS_OR_QUOTE: u8 = 32;

/// The classes each byte is in, so that a check costs one look-up per byte.
static CLASSES: [u8; 256] = {
    let mut classes = [0; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let mut class = 0;
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            class |= TOKEN;
        }
        if byte >= 0x20 && byte < 0x7f {
            class |= TEXT;
        }
        let name =
            byte.is_ascii_graphic() && !matches!(byte, b'"' | b'\'' | b'\\' | b';' | b'=' | b',');
        if name {
            class |= NAME;
        }
        if name || byte == b' ' {
            class |= FILE_NAME;
        }
        if matches!(byte, b';' | b'"' | b'\'') {
            class |= SEMICOLON_OR_QUOTE;
        }
        if matches!(byte, b'=' | b'"' | b'\'') {
            class |= EQUALS_OR_QUOTE;
        }
        classes[b] = class;
        b += 1;
    }
    classes
};

/// Whether `byte` is in `class`.
fn is(byte: u8, class: u8) -> bool {
    CLASSES[usize::from(byte)] & class != 0
}

/// The parts PHP registers, in order. A body PHP would only partly read (garbled headers,
/// over-long lines) is an error.
fn read_as_php<'a>(boundary: &[u8], body: &'a [u8]) -> Result<Vec<Part<'a>>, String> {
    let mut reader = Reader { body, at: 0 };
    // Most forms have a handful of parts: one allocation for all of them.
    let mut parts = Vec::with_capacity(8);
    while reader.at < body.len() {
        // Each part begins with a line that is the delimiter, whatever came before it.
        loop {
            match reader.line()? {
                None => return Ok(parts),
                Some(line) if is_delimiter_line(line, boundary) => break,
                Some(_) => {}
            }
        }
        let Some(disposition) = reader.disposition()? else {
            // PHP skips the part; its lines are read while looking for the next delimiter.
            continue;
        };
        let (name, filename) = match &disposition {
            // Borrowed from the body, unless the header was folded over several lines.
            Cow::Borrowed(value) => disposition_params(value),
            Cow::Owned(value) => {
                let (name, filename) = disposition_params(value);
                let owned = |word: Cow<'_, [u8]>| Cow::Owned(word.into_owned());
                (name.map(owned), filename.map(owned))
            }
        };
        if name.is_none() && filename.is_none() {
            return Err(
                "a multipart part has no name: WordPress.com (PHP) stops reading the form there"
                    .into(),
            );
        }
        let value = reader.value(boundary);
        parts.push(Part {
            name,
            file: filename.is_some(),
            value,
        });
    }
    Ok(parts)
}

/// Whether a line is the delimiter `--boundary` as PHP compares it (`strcmp`: up to a NUL).
fn is_delimiter_line(line: &[u8], boundary: &[u8]) -> bool {
    line.strip_prefix(b"--")
        .and_then(|line| line.strip_prefix(boundary))
        .is_some_and(|rest| rest.first().is_none_or(|&b| b == 0))
}

/// Whether `rest` starts with `--boundary`, or is the start of it cut off by the end of the body.
fn starts_delimiter(rest: &[u8], boundary: &[u8]) -> bool {
    let (dashes, rest) = rest.split_at(rest.len().min(2));
    b"--".starts_with(dashes) && boundary.starts_with(&rest[..rest.len().min(boundary.len())])
}

/// A C string's bytes: PHP compares lines and header text with `strcmp`, up to a NUL.
fn c_str(bytes: &[u8]) -> &[u8] {
    memchr::memchr(0, bytes).map_or(bytes, |end| &bytes[..end])
}

/// C's `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `bytes` without the C white space it starts with.
fn skip_space(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next line without its LF or CRLF; `None` when no LF is left (PHP does not return a
    /// last line without one).
    fn line(&mut self) -> Result<Option<&'a [u8]>, String> {
        let rest = &self.body[self.at..];
        let Some(end) = memchr::memchr(b'\n', rest) else {
            if rest.len() > MAX_LINE {
                return Err("a line of the multipart body is too long".into());
            }
            return Ok(None);
        };
        if end > MAX_LINE {
            return Err("a line of the multipart body is too long".into());
        }
        self.at += end + 1;
        let line = &rest[..end];
        Ok(Some(line.strip_suffix(b"\r").unwrap_or(line)))
    }

    /// Reads a part's headers, up to the first empty line (or one starting with NUL), and gives
    /// the value of the first `Content-Disposition` among them (its key in any case), as PHP's
    /// `php_mime_get_hdr_value` finds it: a copy only when the header goes on over more lines.
    fn disposition(&mut self) -> Result<Option<Cow<'a, [u8]>>, String> {
        let mut found: Option<Cow<'a, [u8]>> = None;
        // Whether the header being read is the one found: the lines that continue it are its.
        let mut reading_found = false;
        while let Some(line) = self.line()? {
            let line = c_str(line);
            let Some(&first) = line.first() else {
                break;
            };
            // A line starting with white space, or without a `:`, continues the previous header.
            let colon = if is_space(first) {
                None
            } else {
                memchr::memchr(b':', line)
            };
            match colon {
                Some(colon) => {
                    reading_found = found.is_none()
                        && line[..colon].eq_ignore_ascii_case(b"content-disposition");
                    if reading_found {
                        found = Some(Cow::Borrowed(skip_space(&line[colon + 1..])));
                    }
                }
                None => {
                    if let (true, Some(value)) = (reading_found, &mut found) {
                        value.to_mut().extend_from_slice(line);
                    }
                }
            }
        }
        Ok(found)
    }

    /// A part's value: everything up to the next `\n--boundary` (or up to a start of it that
    /// reaches the end of the body), without the `\r` before it. The reader then stands on the
    /// line after that `\n`, as PHP's does after reading the empty rest of the value's line.
    fn value(&mut self, boundary: &[u8]) -> &'a [u8] {
        let rest = &self.body[self.at..];
        // Only a line end can start the next delimiter.
        let end = memchr::memchr_iter(b'\n', rest)
            .find(|&at| starts_delimiter(&rest[at + 1..], boundary))
            .unwrap_or(rest.len());
        self.at = (self.at + end + 1).min(self.body.len());
        let mut value = &rest[..end];
        if end < rest.len() {
            value = value.strip_suffix(b"\r").unwrap_or(value);
        }
        value
    }
}

/// The `name` and `filename` parameters of a `Content-Disposition` value, as PHP reads them:
/// `;`-separated pairs (quotes protect separators), keys matched case-insensitively, the last of
/// each kept.
fn disposition_params(value: &[u8]) -> (Option<Word<'_>>, Option<Word<'_>>) {
    let mut rest = skip_space(c_str(value));
    let (mut name, mut filename) = (None, None);
    while !rest.is_empty() {
        let mut pair = get_word(&mut rest, b';');
        rest = skip_space(rest);
        if pair.contains(&b'=') {
            let key = get_word(&mut pair, b'=');
            if key.eq_ignore_ascii_case(b"name") {
                name = Some(get_word_conf(pair));
            } else if key.eq_ignore_ascii_case(b"filename") {
                filename = Some(get_word_conf(pair));
            }
        }
    }
    (name, filename)
}

/// A parameter's value as PHP reads it: borrowed unless unescaped.
type Word<'a> = Cow<'a, [u8]>;

/// PHP's `php_ap_getword`: up to `stop` (`;` or `=`) outside quotes, then past every `stop`.
fn get_word<'a>(line: &mut &'a [u8], stop: u8) -> &'a [u8] {
    debug_assert!(matches!(stop, b';' | b'='));
    let stop_or_quote = if stop == b';' {
        SEMICOLON_OR_QUOTE
    } else {
        EQUALS_OR_QUOTE
    };
    let bytes = *line;
    let mut at = 0;
    // The next `stop` or quote; a quoted run ends at the same quote not escaped with `\`.
    while let Some(found) = bytes[at..].iter().position(|&b| is(b, stop_or_quote)) {
        at += found;
        let quote = bytes[at];
        if quote == stop {
            break;
        }
        at += 1;
        loop {
            match bytes[at..].iter().position(|&b| b == quote) {
                // An escaped quote: `\` is read as escaping only a quote, so the byte before
                // the quote tells (the opening quote is never that byte).
                Some(found) if found > 0 && bytes[at + found - 1] == b'\\' => at += found + 1,
                Some(found) => {
                    at += found + 1;
                    break;
                }
                None => {
                    at = bytes.len();
                    break;
                }
            }
        }
    }
    if at >= bytes.len() || bytes[at] != stop {
        at = bytes.len();
    }
    let word = &bytes[..at];
    let end = bytes[at..]
        .iter()
        .position(|&b| b != stop)
        .map_or(bytes.len(), |skip| at + skip);
    *line = &bytes[end..];
    word
}

/// PHP's `php_ap_getword_conf`: a quoted or unquoted value, with `\\` and `\"` unescaped.
fn get_word_conf(bytes: &[u8]) -> Cow<'_, [u8]> {
    let bytes = skip_space(bytes);
    match bytes.first() {
        None => Cow::Borrowed(bytes),
        Some(&quote) if quote == b'"' || quote == b'\'' => {
            let inner = &bytes[1..];
            substring_conf(inner, inner.len(), Some(quote))
        }
        Some(_) => {
            let len = bytes
                .iter()
                .position(|&b| is_space(b))
                .unwrap_or(bytes.len());
            substring_conf(bytes, len, None)
        }
    }
}

/// The first `len` bytes up to `quote`, unescaped; borrowed when there is no `\\` to remove.
fn substring_conf(bytes: &[u8], len: usize, quote: Option<u8>) -> Cow<'_, [u8]> {
    // Parameter values are short: a plain scan costs less than setting up a `memchr`.
    let end = bytes[..len]
        .iter()
        .position(|&b| Some(b) == quote || b == b'\\')
        .unwrap_or(len);
    if bytes.get(end) != Some(&b'\\') || end == len {
        return Cow::Borrowed(&bytes[..end]);
    }
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while i < len && Some(bytes[i]) != quote {
        let escaped = bytes
            .get(i + 1)
            .is_some_and(|&b| b == b'\\' || Some(b) == quote);
        if bytes[i] == b'\\' && escaped {
            i += 1;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::fields::FieldError;

    /// The oracle: the parts `multer` reads (what axum's `Multipart` uses).
    /// A part as an owned `(name, file, value)`.
    type Owned = (Option<Vec<u8>>, bool, Vec<u8>);

    fn owned(part: Part<'_>) -> Owned {
        (
            part.name.map(Cow::into_owned),
            part.file,
            part.value.to_vec(),
        )
    }

    async fn read_as_multer(boundary: &str, body: &[u8]) -> Result<Vec<Owned>, multer::Error> {
        let body = Bytes::copy_from_slice(body);
        let stream =
            futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut parts = Vec::new();
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().map(|n| n.as_bytes().to_vec());
            let file = field.file_name().is_some();
            let value = field.bytes().await?.to_vec();
            parts.push((name, file, value));
        }
        Ok(parts)
    }

    /// Whatever the guard takes, PHP's copy and `multer` read part for part the same.
    async fn agrees(boundary: &str, body: &[u8]) -> bool {
        let Ok(fields) = read(boundary, Bytes::copy_from_slice(body)).await else {
            return false;
        };
        let php: Vec<Owned> = read_as_php(boundary.as_bytes(), body)
            .expect("accepted, so PHP reads it")
            .into_iter()
            .map(owned)
            .collect();
        let strict = read_as_multer(boundary, body).await;
        assert_eq!(
            strict.as_ref().ok(),
            Some(&php),
            "multer reads {:?} otherwise",
            String::from_utf8_lossy(body)
        );
        assert_eq!(fields.len(), php.iter().filter(|p| p.0.is_some()).count());
        true
    }

    /// Plain forms, the partner tooling's among them.
    const PLAIN: [&str; 5] = [
        "--b\r\nContent-Disposition: form-data; name=\"siteurl\"\r\n\r\nhttps://a.example/\r\n\
         --b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\njetpack-scan\r\n--b--\r\n",
        "--b\r\nContent-Disposition: form-data; name=\"plan\"\r\nContent-Type: text/plain\r\n\r\n\
         p\r\n--b\r\ncontent-disposition: form-data; name=\"key\"; filename=\"k 1.bin\"\r\n\r\n\
         \r\n--\r\n-b\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name=\"a[b]\"\r\n\r\n\r\n--b--\r\n",
        "--b--\r\n",
        "--b\r\nContent-Disposition: form-data; name=\"x\"; filename=\"\"\r\n\r\n--b\r\n\r\n--b--",
    ];

    #[tokio::test]
    async fn plain_forms_are_read_alike_by_php_and_multer() {
        for body in PLAIN {
            assert!(agrees("b", body.as_bytes()).await, "{body:?}");
        }
    }

    /// Every body one byte away from a plain form (each byte dropped, doubled, or replaced with
    /// one that matters to some parser) is either refused or read alike by PHP and `multer`.
    #[tokio::test]
    async fn near_plain_forms_are_refused_or_read_alike() {
        const BYTES: &[u8] = b"\r\n\0 \t-b\"';=\\,:aN";
        let (mut taken, mut tried) = (0, 0);
        for body in PLAIN {
            let body = body.as_bytes();
            for at in 0..=body.len() {
                let mut variants = Vec::new();
                if at < body.len() {
                    variants.push([&body[..at], &body[at + 1..]].concat());
                    variants.push([&body[..=at], &body[at..]].concat());
                }
                for &b in BYTES {
                    variants.push([&body[..at], &[b], &body[at..]].concat());
                    if at < body.len() {
                        variants.push([&body[..at], &[b], &body[at + 1..]].concat());
                    }
                }
                for variant in variants {
                    tried += 1;
                    taken += usize::from(agrees("b", &variant).await);
                }
            }
        }
        // Both ways are exercised: many variants are still plain, many are not.
        assert!(taken > 100 && tried - taken > 100, "{taken} of {tried}");
    }

    #[tokio::test]
    async fn what_parsers_read_differently_is_refused() {
        for body in [
            // LF line ends: PHP reads them, multer does not.
            "--b\nContent-Disposition: form-data; name=\"plan\"\n\np\n--b--\n",
            // A part in the epilogue: PHP reads it.
            "--b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\np\r\n--b--\r\n\
             --b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\nq\r\n--b--\r\n",
            // A value holding a longer boundary: PHP ends it there.
            "--b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\np\r\n--bc\r\n--b--\r\n",
            // Upper-case and repeated names.
            "--b\r\nContent-Disposition: form-data; NAME=\"plan\"\r\n\r\np\r\n--b--\r\n",
            "--b\r\nContent-Disposition: form-data; name=\"a\"; name=\"plan\"\r\n\r\np\r\n--b--\r\n",
            // A name a text search for `filename` would misread.
            "--b\r\nContent-Disposition: form-data; name=\"a filename\"; filename=\"f\"\r\n\r\np\r\n--b--\r\n",
            // A truncated body.
            "--b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\np",
        ] {
            assert!(!agrees("b", body.as_bytes()).await, "{body:?}");
        }
    }

    /// Outside the plain form is not refused for that alone: a form PHP and `multer` read alike
    /// is taken (the second reading's job), as a legitimate client may send it.
    #[tokio::test]
    async fn forms_outside_the_plain_form_that_parsers_read_alike_are_taken() {
        for (body, value) in [
            // A preamble, which RFC 2046 allows and both parsers skip.
            (
                "x\r\n--b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\np\r\n--b--\r\n",
                "p",
            ),
            // An unquoted name.
            (
                "--b\r\nContent-Disposition: form-data; name=plan\r\n\r\njetpack-scan\r\n--b--\r\n",
                "jetpack-scan",
            ),
            // A header with a tab in it.
            (
                "--b\r\nContent-Disposition: form-data; name=\"plan\"\r\nContent-Type: text/plain;\tcharset=utf-8\r\n\r\npersonal\r\n--b--\r\n",
                "personal",
            ),
        ] {
            assert!(read_plain(b"b", body.as_bytes()).is_none(), "{body:?}");
            assert!(agrees("b", body.as_bytes()).await, "{body:?}");
            let fields = read("b", Bytes::from(body)).await.unwrap();
            assert_eq!(
                fields.get("plan").unwrap().as_deref(),
                Some(value),
                "{body:?}"
            );
        }
    }

    fn php(body: &str) -> Vec<(String, bool, String)> {
        read_as_php(b"b", body.as_bytes())
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    String::from_utf8(p.name.unwrap_or_default().into_owned()).unwrap(),
                    p.file,
                    String::from_utf8(p.value.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn php_reads_parts_after_the_closing_boundary() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\nprofessional\r\n--b--\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\njetpack-scan\r\n--b--\r\n";
        assert_eq!(
            php(body),
            [
                ("plan".into(), false, "professional".into()),
                ("plan".into(), false, "jetpack-scan".into())
            ]
        );
    }

    #[test]
    fn php_ends_a_value_at_a_longer_boundary_and_skips_to_the_next_line() {
        let body = "--b\nContent-Disposition: form-data; NAME=plan\n\np\n--bc\nContent-Disposition: form-data; name=siteurl\n\nq\n--b--\n";
        assert_eq!(php(body), [("plan".into(), false, "p".into())]);
    }

    #[test]
    fn disposition_parameters_as_php_reads_them() {
        let params = |v: &str| {
            let (name, file) = disposition_params(v.as_bytes());
            (
                name.map(|n| String::from_utf8(n.into_owned()).unwrap()),
                file.is_some(),
            )
        };
        assert_eq!(
            params("form-data; name=\"plan\""),
            (Some("plan".into()), false)
        );
        assert_eq!(params("form-data; NAME=plan"), (Some("plan".into()), false));
        assert_eq!(
            params("attachment; name=\"a\"; name='plan'; filename=\"\""),
            (Some("plan".into()), true)
        );
        assert_eq!(
            params("form-data; name=\"pl\\\"an\""),
            (Some("pl\"an".into()), false)
        );
        assert_eq!(params("form-data; name =plan"), (None, false));
        assert_eq!(
            params("form-data; name=\"a;b\"; x=1"),
            (Some("a;b".into()), false)
        );
    }

    #[tokio::test]
    async fn multipart_parts_the_guard_cannot_name_are_refused() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\njetpack-scan\r\n\
                    --b\r\nContent-Disposition: form-data; NAME=\"plan\"\r\n\r\npremium\r\n--b--\r\n";
        assert!(read("b", body.into()).await.is_err());
        let repeated = "--b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\njetpack-scan\r\n\
                        --b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\npremium\r\n--b--\r\n";
        let fields = read("b", repeated.into()).await.unwrap();
        assert_eq!(fields.get("plan"), Err(FieldError::Repeated("plan".into())));
    }

    #[tokio::test]
    async fn multipart_text_and_binary_parts() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\npersonal\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"key\"; filename=\"k.bin\"\r\n\
                    Content-Type: application/octet-stream\r\n\r\n\u{0}\u{1}\r\n--b--\r\n";
        let mut bytes = body.as_bytes().to_vec();
        // Make the file part invalid UTF-8.
        let at = bytes.iter().position(|&b| b == 0).unwrap();
        bytes[at] = 0xff;
        let fields = read("b", bytes.into()).await.unwrap();
        assert_eq!(fields.get("plan"), Ok(Some("personal".into())));
        // A file part is in `$_FILES` for PHP, so no value of the field.
        assert_eq!(fields.get("key"), Err(FieldError::File("key".into())));

        let truncated = read(
            "b",
            "--b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\nperso".into(),
        )
        .await;
        assert!(truncated.is_err());
    }
}
