//! `Site::parse` on arbitrary text: whatever it accepts can never steer the upstream URL, and
//! parsing its output again gives the same site.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upgrade_guard::{Site, SiteKind};

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 never reaches `Site::parse` (sources hand it `&str`), but lossy decoding
    // keeps the bytes' shape for the parser to chew on.
    let input = String::from_utf8_lossy(data);
    let Ok(site) = Site::parse(&input) else {
        return;
    };
    let id = site.as_str();

    assert!(!id.is_empty() && id.len() <= 512, "{input:?} -> {id:?}");
    for forbidden in ['/', '?', '#', '%', '@', '\\', ' ', '[', ']'] {
        assert!(
            !id.contains(forbidden),
            "{input:?} -> {id:?} holds {forbidden:?}"
        );
    }
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':')),
        "{input:?} -> {id:?}"
    );
    // `:` only as the `::` separator, and every segment plain.
    for segment in id.split("::") {
        assert!(!segment.is_empty(), "{input:?} -> {id:?}: empty segment");
        assert!(!segment.contains(':'), "{input:?} -> {id:?}: lone ':'");
        assert!(
            segment != "." && segment != "..",
            "{input:?} -> {id:?}: dot segment"
        );
    }
    match site.kind() {
        SiteKind::BlogId => assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id:?}"),
        _ => {
            let host = id.split("::").next().unwrap();
            assert_eq!(
                host,
                host.to_ascii_lowercase(),
                "{input:?}: host not lower-cased"
            );
        }
    }

    // Idempotent: the normalised form is its own normal form.
    let again = Site::parse(id).unwrap_or_else(|e| panic!("{input:?} -> {id:?} refused: {e}"));
    assert_eq!(again, site, "{input:?}");
    assert_eq!(again.kind(), site.kind(), "{input:?}");

    // And in the URL the client builds, it stays one path segment of the same host.
    let base = "https://public-api.wordpress.com";
    let url = url::Url::parse(&format!("{base}/rest/v1.3/jpphp/{id}/upgrade-paths"))
        .unwrap_or_else(|e| panic!("{input:?} -> {id:?}: {e}"));
    assert_eq!(url.host_str(), Some("public-api.wordpress.com"));
    assert_eq!(url.query(), None);
    assert_eq!(url.fragment(), None);
    let segments: Vec<&str> = url.path_segments().unwrap().collect();
    assert_eq!(
        segments,
        ["rest", "v1.3", "jpphp", id, "upgrade-paths"],
        "{input:?}"
    );
});
