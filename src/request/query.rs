//! The query string, read as WordPress.com reads it, or refused.
//!
//! WordPress.com does not parse the query string it was sent: `WPCOM_JSON_API::setup_inputs()`
//! (Automattic/jetpack, `class.json-api.php`) parses the query of
//! `esc_url_raw('http://' . HTTP_HOST . REQUEST_URI)`, and WordPress core's `esc_url()` rewrites
//! the URL on the way. It removes every byte outside `a-z A-Z 0-9 - ~ + _ . ? # = ! & ; , / : %
//! @ $ | * ' ( ) [ ]` and 0x80-0xff (of those a query may hold: `\`, `^`, `{`, `}` and the
//! backtick), then removes `%0a`, `%0A`, `%0d` and `%0D` until none is left, then turns `;//`
//! into `://`. So `?force%0A=secure`, `?forc{e=secure` and `?forc%0%0aae=secure` are all
//! `force=secure` to WordPress.com, and `?pl%0Aan=x` is `plan=x`, while a plain reading of the
//! query sees other names.
//!
//! The guard refuses a query those rewrites would change rather than follow them: partner
//! tooling sends plain urlencoded queries, which they leave alone, and a refusal cannot get the
//! rewrites subtly wrong. (`esc_url()` also writes `[` and `]` as `%5B` and `%5D`, which
//! `parse_str` decodes back before it reads a name: what is read does not change.)

use super::fields::Fields;
use crate::rejection::{BodyError, Rejection};
use http::Uri;

/// The fields of `uri`'s query string, or a refusal when WordPress.com would read another query
/// than the one sent.
pub(crate) fn read(uri: &Uri) -> Result<Fields, Rejection> {
    let query = uri.query().unwrap_or_default();
    if let Some(found) = rewritten_by_esc_url(query) {
        return Err(Rejection::InvalidBody(BodyError::new(format!(
            "the query string holds {found}: WordPress.com reads the query through esc_url_raw(), so it would read other names or values than the guard checked; send the query plainly urlencoded"
        ))));
    }
    Ok(Fields::parse_query(query))
}

/// The first thing in `query` that `esc_url()` would change and what it does to it, for a
/// message; `None` when it leaves the query as it is. Only the query's own bytes matter: `?`
/// stands between it and the path, and no rewrite removes a `?` or matches across one.
fn rewritten_by_esc_url(query: &str) -> Option<String> {
    let bytes = query.as_bytes();
    if let Some(&byte) = bytes.iter().find(|&&b| !kept_by_esc_url(b)) {
        // Not kept, so ASCII: a whole character.
        let shown = char::from(byte).escape_default();
        return Some(format!("`{shown}`, which esc_url() removes"));
    }
    // Nothing is removed before, so these are the only `%0a`/`%0d` the repeated removal sees.
    for at in memchr::memchr_iter(b'%', bytes) {
        if let Some(&[b'0', digit]) = bytes.get(at + 1..at + 3)
            && matches!(digit, b'a' | b'A' | b'd' | b'D')
        {
            let digit = char::from(digit);
            return Some(format!("`%0{digit}`, which esc_url() removes"));
        }
    }
    memchr::memmem::find(bytes, b";//").map(|_| "`;//`, which esc_url() turns into `://`".into())
}

/// Whether `esc_url()` keeps `byte`: the character class of its `preg_replace`, which matches
/// bytes (no `/u`), in any case (`/i`).
fn kept_by_esc_url(byte: u8) -> bool {
    byte >= 0x80 || byte.is_ascii_alphanumeric() || b"-~+_.?#=!&;,/:%@$|*'()[]".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the message names as found.
    fn found(query: &str) -> Option<String> {
        let found = rewritten_by_esc_url(query)?;
        Some(found.split(", which").next().unwrap().to_owned())
    }

    #[test]
    fn queries_esc_url_leaves_alone_are_read() {
        for query in [
            "",
            "plan=professional&siteurl=https%3A%2F%2Fexample.com%2F",
            "siteurl=https://example.com/blog/&plan=jetpack-backup-realtime",
            "a[]=1&b[x]=2&c=!$'()*,;:@|~",
            "x=%0b%0c%0e%20%00",
            "x=%0",
            "x=%0g",
            "x=%a0",
            "x=caf\u{e9}",
        ] {
            assert_eq!(found(query), None, "{query}");
            assert!(read(&format!("/p?{query}").parse().unwrap()).is_ok());
        }
    }

    #[test]
    fn queries_esc_url_rewrites_are_refused() {
        for (query, what) in [
            ("force%0A=secure", "`%0A`"),
            ("force=sec%0aure", "`%0a`"),
            ("for%0Dce=secure", "`%0D`"),
            ("forc%0%0aae=secure", "`%0a`"),
            ("x=%0d", "`%0d`"),
            ("forc{e=secure", "`{`"),
            ("force=secure}", "`}`"),
            ("force=secur^e", "`^`"),
            ("force=sec`ure", "```"),
            ("force=sec\\ure", "`\\\\`"),
            ("forc\"e=secure", "`\\\"`"),
            ("x=<b>", "`<`"),
            ("a b", "` `"),
            ("x=\u{7f}", "`\\u{7f}`"),
            ("siteurl=https;//example.com/", "`;//`"),
        ] {
            assert_eq!(found(query).as_deref(), Some(what), "{query}");
        }
        let refused = read(&"/p?forc{e=secure".parse().unwrap()).unwrap_err();
        assert!(matches!(refused, Rejection::InvalidBody(_)));
        assert!(refused.to_string().contains("`{`"), "{refused}");
    }
}
