//! How a request path is read before it is routed: its one plain reading, or, when it has none,
//! whether some reading of it could name a guarded endpoint.
//!
//! A path is *plain* when, its percent escapes decoded once, every segment is made of ASCII
//! letters, digits and `-~+_.=!&,:@$|*'()[]`, and is neither `.` nor `..`. Every reader agrees on
//! a plain path: WordPress.com, the proxy, and any front that normalises paths (decoding escapes
//! again, turning `\` into `/`, dropping `;` parameters, trimming white space and NUL, resolving
//! dot segments, folding case, collapsing slashes) all see the same segments, so the proxy routes
//! it on that one reading, [`PlainPath`].
//!
//! On any other path they part: `/rest/v1.3/jpphp/x/../provision` is a 404 at WordPress.com but a
//! provision behind a front that resolves dot segments (nginx does, when `proxy_pass` names a
//! URI), and `/rest/v1.3/jpphp/1002;x/partner-cancel` names the site `1002;x` to one reader and
//! `1002` to another. Such a path is never routed on a guess: when any reading could name a
//! guarded endpoint ([`could_name`]) the proxy refuses it, and otherwise it is passed through.
//! Asking "could it name one" instead of modelling each normaliser keeps the rule independent
//! of the order a front applies its steps in (decoding before or after resolving dot segments,
//! `..` eating an empty segment or not, parameters cut per segment or for the whole path).
//!
//! WordPress.com does not route on the path as sent: `WPCOM_JSON_API::setup_inputs()` reads the
//! request target through `esc_url_raw('http://' . HTTP_HOST . REQUEST_URI)`, and WordPress
//! core's `esc_url()` removes every ASCII character outside `a-z A-Z 0-9 - ~ + _ . ? # = ! & ; ,
//! / : % @ $ | * ' ( ) [ ]` (`"`, `{`, `}`, `^`, `` ` ``, `<`, `>`, `\`, white space, control
//! characters), then removes `%0a` and `%0d`, either case, until none is left: `provi"sion`,
//! `provi{sion` and `provi%0%0aasion` are `provision` there. So the plain characters are those
//! `esc_url()` keeps, less the ones another reader gives a meaning to (`;`, `%`, `?`, `#`), and
//! [`could_name`] reads a path as `esc_url()` does. Before `esc_url_raw()`, WordPress.com
//! unslashes the target (`wp_unslash()`): `pro\0vision` is `provision` there, so a path that is
//! not plain and holds a `\` is taken to name anything.

use percent_encoding::{percent_decode, percent_decode_str};

/// How many rounds of percent decoding [`could_name`] reads through (`%252e` is `.` after two).
/// A path still holding escapes after them is taken to name anything: no front decodes that
/// often, and stopping bounds the work a long path of `%25%25...` costs to a few passes over it.
const DECODING_ROUNDS: usize = 8;

/// A plain path's one reading: its percent escapes decoded once, lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PlainPath(String);

impl PlainPath {
    /// The plain reading of `path`, or `None` when `path` is not plain (see the
    /// [module docs](self)).
    pub(crate) fn read(path: &str) -> Option<Self> {
        let decoded = percent_decode_str(path).decode_utf8_lossy();
        let plain = PlainPath(decoded.to_ascii_lowercase());
        let is_plain = plain.segments().all(is_plain_segment);
        is_plain.then_some(plain)
    }

    /// The segments, empty ones dropped: repeated and trailing slashes, and encoded ones
    /// (`%2F`), only separate segments.
    pub(crate) fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|segment| !segment.is_empty())
    }
}

/// What `esc_url()` keeps without the characters some reader gives a meaning to, and not a dot
/// segment. After one decoding, so `%2E%2E` is `..`, `%22` is a `"` WordPress.com's reading
/// removes once a front decodes it, and `%252e` or `%250a` holds a `%`.
fn is_plain_segment(segment: &str) -> bool {
    segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| esc_url_keeps(b) && !matches!(b, b';' | b'%' | b'?' | b'#'))
}

/// The segments of `path` as sent, empty ones dropped, when each is the spelling of one segment
/// of its plain reading (same number, same order): `None` when the path is not plain, or when a
/// segment holds an encoded `/`, which makes it two segments once decoded.
///
/// For reading a value (a site) out of a path at the place its route matched: taken from these,
/// it is the segment the route was matched on, spelled as the upstream will receive it.
pub fn raw_segments(path: &str) -> Option<Vec<&str>> {
    PlainPath::read(path)?;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // A non-empty segment never decodes to an empty one, so without an encoded `/` the two
    // readings have one segment for one.
    let splits = |segment: &&str| percent_decode_str(segment).any(|b| b == b'/');
    (!segments.iter().any(splits)).then_some(segments)
}

/// Whether some reading of `path` could contain one of `names` (lower-case ASCII, nothing
/// `esc_url()` removes): `path` as sent, or after one to eight rounds of percent decoding, each
/// lower-cased and read as WordPress.com reads it ([`wpcom_reading`]), which removes white space
/// and control characters among others, wherever they are. A path still holding escapes after
/// the last round could name anything, and does.
///
/// A normaliser only decodes, folds case, replaces `\` and removes (parameters, white space,
/// dot segments and the segments they eat): a name it ends up with was already one run of
/// characters in some decoding of the path, unless a removed character stood inside it, and
/// WordPress.com's removals stand for that. Each round decodes the text as WordPress.com reads
/// it rather than as sent: that keeps every escape the text holds and can close up another
/// (`%6%0aE` reads `%6E`), so a name either order of decoding and reading yields is found.
pub(crate) fn could_name(path: &str, names: &[&str]) -> bool {
    let mut text = path.as_bytes().to_vec();
    for _ in 0..=DECODING_ROUNDS {
        // WordPress.com unslashes the target (`wp_unslash()`, PHP's `stripslashes()`) before
        // `esc_url_raw()`: `\0` becomes a NUL, which `esc_url()` then removes, and `\x` becomes
        // `x`; a front may also decode `\%30` into `\0` first. A backslash, at any depth, could
        // close up any name.
        if text.contains(&b'\\') {
            return true;
        }
        let read = wpcom_reading(&text);
        if names.iter().any(|name| {
            read.windows(name.len())
                .any(|window| window == name.as_bytes())
        }) {
            return true;
        }
        let decoded: Vec<u8> = percent_decode(&read).collect();
        if decoded == read {
            return false;
        }
        text = decoded;
    }
    true
}

/// `text` lower-cased and read as `esc_url()` reads it: every byte it removes removed, then
/// `%0a` and `%0d` removed until none is left (`_deep_replace()`).
fn wpcom_reading(text: &[u8]) -> Vec<u8> {
    let mut read = Vec::with_capacity(text.len());
    for &b in text.iter().filter(|&&b| esc_url_keeps(b)) {
        read.push(b.to_ascii_lowercase());
        // Checked at each byte, as removing one can close up another (`%0%0aa`); `%0a` and
        // `%0d` never overlap, so this ends where PHP's repeated `str_replace()` does.
        if read.ends_with(b"%0a") || read.ends_with(b"%0d") {
            read.truncate(read.len() - 3);
        }
    }
    read
}

/// Whether WordPress core's `esc_url()` keeps the byte `b`, bytes 0x80-0xff taken as removed:
/// `esc_url()` keeps them, but no plain path holds one, and in [`could_name`] removing more only
/// refuses more (a front may drop them as it drops white space).
fn esc_url_keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-~+_.?#=!&;,/:%@$|*'()[]".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_have_one_reading() {
        let segments = |path: &str| {
            PlainPath::read(path)
                .map(|plain| plain.segments().map(str::to_owned).collect::<Vec<_>>())
        };
        assert_eq!(
            segments("//REST/v1%2E3//jpphp/provisio%6E/").unwrap(),
            ["rest", "v1.3", "jpphp", "provision"]
        );
        assert_eq!(
            segments("/rest/v1.3/jpphp/a%2Fb/partner-cancel").unwrap(),
            ["rest", "v1.3", "jpphp", "a", "b", "partner-cancel"]
        );
        assert_eq!(segments("/").unwrap(), Vec::<String>::new());
        // What esc_url() keeps but `;`, `%`, `?` and `#` is plain.
        assert_eq!(
            segments("/rest/v1.3/jpphp/example.com::blog/-~+_=!&,@$|*'()[]").unwrap(),
            [
                "rest",
                "v1.3",
                "jpphp",
                "example.com::blog",
                "-~+_=!&,@$|*'()[]"
            ]
        );
        for path in [
            "/rest/v1.3/jpphp/./provision",
            "/rest/v1.3/jpphp/x/../provision",
            "/rest/v1.3/jpphp/x/%2E%2e/provision",
            "/rest/v1.3/jpphp/x/.%2e/provision",
            "/rest/v1.3/jpphp/x%2F..%2Fprovision",
            "/rest/v1.3/jpphp/x/%252e%252e/provision",
            "/rest/v1.3/jpphp/provision;x",
            "/rest/v1.3/jpphp%3Bx/provision",
            "/rest/v1.3/jpphp\\provision",
            "/rest/v1.3/jpphp%5Cprovision",
            "/rest/v1.3/jpphp/provision%20",
            "/rest/v1.3/jpphp/provision%09",
            "/rest/v1.3/jpphp/provision%00",
            "/rest/v1.3/jpphp/provision%3F",
            "/rest/v1.3/jpphp/provision%23x",
            "/rest/v1.3/jpphp/provision%zz",
            "/rest/v1.3/jpphp/provision%C2%A0",
            "/rest/v1.3/jpphp/provision%FF",
            // What WordPress.com's esc_url_raw() removes, as sent or once decoded.
            "/rest/v1.3/jpphp/provi\"sion",
            "/rest/v1.3/jpphp/provi{sion",
            "/rest/v1.3/jpphp/provi}sion",
            "/rest/v1.3/jpphp/provi^sion",
            "/rest/v1.3/jpphp/provi`sion",
            "/rest/v1.3/jpphp/provi<>sion",
            "/rest/v1.3/jpphp/provi%22sion",
            "/rest/v1.3/jpphp/provi%7Bsion",
            "/rest/v1.3/jpphp/provi%0%0aasion",
            "/rest/v1.3/jpphp/provi%0Dsion",
            "/rest/v1.3/jpphp/provision%250a",
        ] {
            assert_eq!(segments(path), None, "{path}");
        }
    }

    #[test]
    fn raw_segments_are_one_for_one_with_the_plain_reading() {
        assert_eq!(
            raw_segments("//rest/v1.3/jpphp/10%302/partner-cancel/").unwrap(),
            ["rest", "v1.3", "jpphp", "10%302", "partner-cancel"]
        );
        // Decoded, `jpphp%2F1002` is two segments, so `x` would be read at the site's place
        // although the route matched `1002` and `x` there.
        assert_eq!(
            raw_segments("/rest/v1.3/jpphp%2F1002/x/partner-cancel"),
            None
        );
        assert_eq!(raw_segments("/rest/v1.3/jpphp/1002;x/partner-cancel"), None);
    }

    #[test]
    fn a_name_is_found_through_every_decoding_and_removal() {
        let names = ["provision", "partner-cancel"];
        for path in [
            "/x/provision",
            "/x/PROVISION;x",
            "/x/provisio%6E",
            "/x/provisio%256E",
            "/x/provisio%25256e",
            "/x/provi%00sion",
            "/x/provi%2509sion",
            "/x/partner-%2563ancel",
            // WordPress.com's reading: what esc_url() removes removed, `%0a` and `%0d` until
            // none is left, before and after decoding.
            "/x/provi\"sion",
            "/x/provi{}^`<>sion",
            "/x/partner-can\"cel",
            "/x/provi%22sion",
            "/x/provi%257Bsion",
            "/x/provi%0%0aasion",
            "/x/provi%0%0D%0Aasion",
            "/x/provi%%0a0asion",
            "/x/provisio%6%0aE",
            "/x/provi%C3%A9sion",
            // Past the rounds: taken to name anything.
            "/x/%25252525252525252525",
        ] {
            assert!(could_name(path, &names), "{path}");
        }
        for path in [
            "/x/status",
            "/x/partner-keys/verify",
            "/x/cancel",
            "/x/provi-sion",
            "/x/%2525252525252525",
            "/x/%zz",
        ] {
            assert!(!could_name(path, &names), "{path}");
        }
    }

    #[test]
    fn a_long_path_of_escapes_costs_a_few_passes() {
        let path = format!("/%{}", "25".repeat(20_000));
        let started = std::time::Instant::now();
        assert!(could_name(&path, &["provision"]));
        // Generous for a debug build on a loaded machine; quadratic work would take seconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
