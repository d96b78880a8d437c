//! Site identifiers: what a request names, validated before anything goes upstream (the rules
//! are on [`Site`]).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, LazyLock};

/// Longest host name DNS allows.
const MAX_HOST_LEN: usize = 253;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;
/// Longest identifier accepted at all; real site URLs are far shorter.
const MAX_SITE_LEN: usize = 512;

/// A validated site identifier, as WordPress.com's upgrade-paths URL takes it.
///
/// WordPress.com names a site in the upgrade-paths URL either by its numeric blog ID or by its
/// domain and path with `/` written as `::` (`https://example.com/demo/wp/` becomes
/// `example.com::demo::wp`). [`Site::parse`] accepts what partners send (a blog ID, a URL with or
/// without a scheme, a bare domain, or the `::` form itself) and yields that identifier, or refuses
/// it. A `Site` can never steer the upstream URL: it holds only ASCII letters, digits, `-`, `.`,
/// `_`, `~` and the `::` separators, never `/`, `..`, `?`, `#`, `%`, `@` or `:` alone.
///
/// ```
/// use upgrade_guard::Site;
///
/// assert_eq!(Site::parse("12345").unwrap().as_str(), "12345");
/// assert_eq!(Site::parse("https://Example.com/demo/wp/").unwrap().as_str(), "example.com::demo::wp");
/// assert_eq!(Site::parse("example.com::blog").unwrap().as_str(), "example.com::blog");
/// assert!(Site::parse("example.com/../admin").is_err());
/// assert!(Site::parse("example.com:8080").is_err());
/// ```
///
/// A blog ID and the URL of the same site are different identifiers; the guard learns that they
/// name one site from WordPress.com and holds the site under both (see
/// [`SiteAliases`](crate::SiteAliases)).
///
/// Cloning a `Site` is cheap: clones share one string.
#[derive(Clone)]
pub struct Site {
    // Shared, not owned: one request's site goes into the lock table, the table of lookups in
    // flight, the lookup, the request's extensions and the hold, and a clone is then a count.
    id: Arc<str>,
    /// `id` hashed once, with a key random per process: the guard's tables (the site locks, the
    /// lookups in flight, the cache) find a site by it without hashing the string again.
    hash: u64,
}

/// Which of the two identifier forms a [`Site`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SiteKind {
    /// A numeric WordPress.com blog ID.
    BlogId,
    /// A domain with optional path segments, `host[::segment]*`.
    Url,
}

/// Why a site identifier was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSite {
    /// Empty, or white space alone.
    #[error("the site identifier is empty")]
    Empty,
    /// White space around the identifier: WordPress.com reads a value as it is sent, so the
    /// guard does not guess which site ` 1003` or `example.com ` means there.
    #[error("the site identifier has white space around it; send it alone")]
    WhiteSpace,
    /// Longer than any real site identifier.
    #[error("the site identifier is longer than {MAX_SITE_LEN} bytes")]
    TooLong,
    /// A scheme other than `http` or `https`.
    #[error("only http and https site URLs are accepted")]
    Scheme,
    /// User name or password before the host.
    #[error("a site URL must not carry user information")]
    UserInfo,
    /// An explicit port.
    #[error("a site URL must not carry a port")]
    Port,
    /// An IPv4 or IPv6 address instead of a host name.
    #[error("a site is named by its domain, not by an IP address")]
    IpLiteral,
    /// Digits that are no blog ID: `0`, a leading zero, or past 64 bits.
    #[error(
        "a blog ID is a whole number from 1 up without leading zeros (such as 12345), and a site URL names a host; this is neither"
    )]
    BlogId,
    /// A host that is not a valid DNS name.
    #[error("the host name is not a valid domain name")]
    Host,
    /// A query string or a fragment.
    #[error("a site URL must not carry a query or a fragment")]
    QueryOrFragment,
    /// A path segment with characters outside the unreserved set, or `.`/`..`.
    #[error("the site path may only hold plain segments (letters, digits, '-', '.', '_', '~')")]
    PathSegment,
}

impl Site {
    /// Parses and normalises a site identifier.
    ///
    /// Accepted: a blog ID (ASCII digits, no leading zero), or `[http[s]://]host[/segment]*[/]`,
    /// or `host[::segment]*`. The host is lower-cased; path segments keep their case. Surrounding
    /// white space is refused. Everything else is an [`InvalidSite`].
    pub fn parse(input: &str) -> Result<Self, InvalidSite> {
        if input.trim().is_empty() {
            return Err(InvalidSite::Empty);
        }
        if input.trim() != input {
            return Err(InvalidSite::WhiteSpace);
        }
        if input.len() > MAX_SITE_LEN {
            return Err(InvalidSite::TooLong);
        }
        if input.bytes().all(|b| b.is_ascii_digit()) {
            return parse_blog_id(input);
        }
        if input.contains("::") && !input.contains('/') {
            let mut parts = input.split("::");
            let host = parse_host(parts.next().unwrap_or_default())?;
            return Self::url(host, parts);
        }
        parse_url(input)
    }

    /// The identifier as it goes into the upgrade-paths URL.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// Whether this is a blog ID or a domain.
    pub fn kind(&self) -> SiteKind {
        // Not kept: digits alone are a blog ID, and a domain's last label is never all digits
        // (`parse_host` refuses it as an IP address), so every other identifier has a non-digit.
        if self.id.bytes().all(|b| b.is_ascii_digit()) {
            SiteKind::BlogId
        } else {
            SiteKind::Url
        }
    }

    fn url<'a>(host: String, segments: impl Iterator<Item = &'a str>) -> Result<Self, InvalidSite> {
        let mut id = host;
        for segment in segments.filter(|s| !s.is_empty()) {
            if !is_plain_segment(segment) {
                return Err(InvalidSite::PathSegment);
            }
            id.push_str("::");
            id.push_str(segment);
        }
        // Each `/` becomes `::`: the normalised form can outgrow an input within the limit, and
        // must itself parse.
        if id.len() > MAX_SITE_LEN {
            return Err(InvalidSite::TooLong);
        }
        Ok(Self::new(id.into()))
    }

    fn new(id: Arc<str>) -> Self {
        Self {
            hash: HASH_KEY.hash_one(&*id),
            id,
        }
    }
}

fn parse_blog_id(digits: &str) -> Result<Site, InvalidSite> {
    // A leading zero would make two spellings of one blog; u64 bounds the length.
    if digits.starts_with('0') || digits.parse::<u64>().is_err() {
        return Err(InvalidSite::BlogId);
    }
    Ok(Site::new(digits.into()))
}

fn parse_url(input: &str) -> Result<Site, InvalidSite> {
    let rest = match input.find("://") {
        Some(at) => {
            let scheme = &input[..at];
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(InvalidSite::Scheme);
            }
            &input[at + 3..]
        }
        None => input,
    };
    if rest.contains(['?', '#']) {
        return Err(InvalidSite::QueryOrFragment);
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(InvalidSite::UserInfo);
    }
    if authority.starts_with('[') {
        return Err(InvalidSite::IpLiteral);
    }
    if authority.contains(':') {
        return Err(InvalidSite::Port);
    }
    let host = parse_host(authority)?;
    Site::url(host, path.split('/'))
}

fn parse_host(host: &str) -> Result<String, InvalidSite> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return Err(InvalidSite::Host);
    }
    if host.contains(':') || host.starts_with('[') {
        return Err(InvalidSite::IpLiteral);
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !labels_ok {
        return Err(InvalidSite::Host);
    }
    // A top-level label of digits only is an IPv4 address (or a shorthand of one).
    let tld = host.rsplit('.').next().unwrap_or_default();
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidSite::IpLiteral);
    }
    Ok(host.to_ascii_lowercase())
}

/// A path segment made of RFC 3986 unreserved characters, and not `.` or `..`.
fn is_plain_segment(segment: &str) -> bool {
    segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The key of every [`Site`]'s hash: SipHash keyed at random once per process, as a `HashMap`'s
/// own is per map, so the identifiers a client sends cannot be chosen to collide.
static HASH_KEY: LazyLock<RandomState> = LazyLock::new(RandomState::new);

// `hash` follows from `id` in one process.
impl PartialEq for Site {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.id == other.id
    }
}

impl Eq for Site {}

/// Writes the identifier's hash, computed once: equal sites write equal values.
impl Hash for Site {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// By identifier.
impl Ord for Site {
    fn cmp(&self, other: &Self) -> Ordering {
        self.id.cmp(&other.id)
    }
}

impl PartialOrd for Site {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Hashes a [`Site`] as the value it carries, already a keyed SipHash of its identifier: what the
/// guard's own tables of sites hash with, so a look-up costs no second SipHash.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SiteHashing;

impl BuildHasher for SiteHashing {
    type Hasher = SiteHasher;

    fn build_hasher(&self) -> SiteHasher {
        SiteHasher(0)
    }
}

/// See [`SiteHashing`].
pub(crate) struct SiteHasher(u64);

impl Hasher for SiteHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, value: u64) {
        // A site writes one value, which then is the hash; anything more is mixed in.
        self.0 = self.0.rotate_left(29) ^ value;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only sites are hashed this way; any other key still gets a hash (FNV-1a), if a weak one.
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Site").field(&self.id).finish()
    }
}

impl std::str::FromStr for Site {
    type Err = InvalidSite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for Site {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

/// Serialized as its identifier string.
impl serde::Serialize for Site {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        Site::parse(input)
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
            .to_string()
    }

    fn err(input: &str) -> InvalidSite {
        Site::parse(input).expect_err(input)
    }

    #[test]
    fn blog_ids() {
        assert_eq!(ok("12345"), "12345");
        assert_eq!(err(" 42\n"), InvalidSite::WhiteSpace);
        assert_eq!(Site::parse("42").unwrap().kind(), SiteKind::BlogId);
        assert_eq!(err("0123"), InvalidSite::BlogId);
        assert_eq!(err("0"), InvalidSite::BlogId);
        assert_eq!(err("99999999999999999999999"), InvalidSite::BlogId);
        // What a new user sent: the message must not talk about domain names.
        assert!(!err("0").to_string().contains("domain"));
    }

    #[test]
    fn urls_follow_the_doc() {
        assert_eq!(ok("https://example.com/demo/wp/"), "example.com::demo::wp");
        assert_eq!(ok("http://EXAMPLE.com"), "example.com");
        assert_eq!(ok("example.com/blog"), "example.com::blog");
        assert_eq!(ok("example.com//blog//"), "example.com::blog");
        assert_eq!(
            ok("HTTPS://www.example.co.uk/Blog"),
            "www.example.co.uk::Blog"
        );
        assert_eq!(ok("example.com."), "example.com");
        assert_eq!(ok("localhost"), "localhost");
        assert_eq!(Site::parse("example.com").unwrap().kind(), SiteKind::Url);
        // The kind is read off the identifier: a domain always has a non-digit somewhere.
        for url in [
            "1example.com",
            "123.example::456",
            "42.x",
            "123-456.example",
        ] {
            assert_eq!(Site::parse(url).unwrap().kind(), SiteKind::Url, "{url}");
        }
        for refused in ["123.456", "1.2.3.4", "42::7", "10.0.0.1/wp"] {
            assert!(Site::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_double_colon_form_is_accepted_as_is() {
        assert_eq!(ok("example.com::blog"), "example.com::blog");
        assert_eq!(ok("Example.com::a::b"), "example.com::a::b");
        assert_eq!(err("example.com::.."), InvalidSite::PathSegment);
        assert_eq!(err("::blog"), InvalidSite::Host);
    }

    #[test]
    fn nothing_can_steer_the_upstream_url() {
        assert_eq!(err(""), InvalidSite::Empty);
        assert_eq!(err("   "), InvalidSite::Empty);
        assert_eq!(err(" 1003"), InvalidSite::WhiteSpace);
        assert_eq!(err("example.com\u{a0}"), InvalidSite::WhiteSpace);
        assert_eq!(err("example.com/../admin"), InvalidSite::PathSegment);
        assert_eq!(err("example.com/./x"), InvalidSite::PathSegment);
        assert_eq!(err("example.com%2F..%2Fadmin"), InvalidSite::Host);
        assert_eq!(err("example.com/a%2Fb"), InvalidSite::PathSegment);
        assert_eq!(err("example.com?x=1"), InvalidSite::QueryOrFragment);
        assert_eq!(err("example.com/#frag"), InvalidSite::QueryOrFragment);
        assert_eq!(err("example.com:8080"), InvalidSite::Port);
        assert_eq!(err("https://user:pw@example.com"), InvalidSite::UserInfo);
        assert_eq!(err("127.0.0.1"), InvalidSite::IpLiteral);
        assert_eq!(err("http://[::1]/"), InvalidSite::IpLiteral);
        assert_eq!(err("ftp://example.com"), InvalidSite::Scheme);
        assert_eq!(err("javascript:alert(1)"), InvalidSite::Port);
        assert_eq!(err("exa mple.com"), InvalidSite::Host);
        assert_eq!(err("-bad.example.com"), InvalidSite::Host);
        assert_eq!(err("exämple.com"), InvalidSite::Host);
        assert_eq!(err("example.com/a b"), InvalidSite::PathSegment);
        assert_eq!(err("example.com\\..\\x"), InvalidSite::Host);
        assert_eq!(err(&"a".repeat(600)), InvalidSite::TooLong);
    }

    /// `/` separators become `::`, so a URL within the length limit can normalise to an
    /// identifier past it: that URL is refused, and every identifier accepted parses again.
    #[test]
    fn the_normalised_form_is_within_the_limit_and_parses_again() {
        let input = format!("example.com{}", "/a".repeat(250));
        assert_eq!(input.len(), 511);
        assert_eq!(err(&input), InvalidSite::TooLong);
        let input = format!("example.com{}", "/a".repeat(166));
        let site = ok(&input);
        assert_eq!(site.len(), 11 + 3 * 166);
        assert_eq!(ok(&site), site);
    }

    #[test]
    fn sites_compare_hash_and_sort_by_their_identifier() {
        use std::collections::{BTreeSet, HashSet};
        let parse = |s: &str| Site::parse(s).unwrap();
        let spellings = [
            "https://Example.com/demo/",
            "example.com/demo",
            "example.com::demo",
        ];
        let sites: Vec<Site> = spellings.iter().map(|s| parse(s)).collect();
        // Three spellings of one site, the same path in another case, and a blog ID.
        fn distinct(sites: &[Site], hasher: impl BuildHasher) -> usize {
            let mut seen = HashSet::with_hasher(hasher);
            seen.extend(sites.iter().cloned());
            seen.len()
        }
        let mut all = sites.clone();
        all.extend([parse("example.com::Demo"), parse("12345")]);
        assert!(sites.windows(2).all(|pair| pair[0] == pair[1]));
        assert_eq!(distinct(&all, SiteHashing), 3);
        assert_eq!(distinct(&all, RandomState::new()), 3);
        assert_ne!(parse("example.com::demo"), parse("example.com::Demo"));
        let sorted: Vec<String> = ["b.example", "12345", "a.example::z", "a.example"]
            .into_iter()
            .map(parse)
            .collect::<BTreeSet<_>>()
            .iter()
            .map(Site::to_string)
            .collect();
        assert_eq!(sorted, ["12345", "a.example", "a.example::z", "b.example"]);
    }
}
