//! The proxy's `route()` on arbitrary path bytes, against fronts that normalise paths: whenever
//! one of them reads the path as a guarded route, `route()` gives that route or refuses the path
//! (`AmbiguousPath`), never `Passthrough`; a route `route()` guards is the one every front reads;
//! and the site a guarded path names is the one every front sends on.
//!
//! The fronts are this file's own, written apart from `proxy/src/path_reading.rs`: percent
//! decoding, `\` as `/`, `;` parameters dropped, white space and NUL trimmed, dot segments
//! resolved, case folded, slashes collapsed, each step in the variants fronts differ by (decode
//! not at all, once or until nothing is left; `;` per segment or for the rest of the path; `..`
//! eating an empty segment (RFC 3986) or not; the path cut at a decoded `?`, `#` or NUL or not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use upgrade_guard_proxy::routes::{Route, raw_segments, route};

/// How a front normalises a path; every combination is tried.
#[derive(Clone, Copy, Debug)]
struct Front {
    /// Rounds of percent decoding: none, once, or until none is left.
    decoding: Decoding,
    /// A decoded `?`, `#` or NUL ends the path (a front that decodes first, then parses).
    cut_at_query: bool,
    /// The first `;` drops the rest of the path, not only the rest of its segment.
    params_end_the_path: bool,
    /// `..` removes the segment before it even when that one is empty (RFC 3986's
    /// remove_dot_segments on `a//..`), rather than slashes being collapsed first.
    dots_see_empty_segments: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decoding {
    /// The path as sent: the next hop (WordPress.com) decodes.
    None,
    Once,
    Repeatedly,
}

const FRONTS: [Front; 24] = {
    let mut fronts = [Front {
        decoding: Decoding::None,
        cut_at_query: false,
        params_end_the_path: false,
        dots_see_empty_segments: false,
    }; 24];
    let mut i = 0;
    while i < 24 {
        fronts[i] = Front {
            decoding: match i / 8 {
                0 => Decoding::None,
                1 => Decoding::Once,
                _ => Decoding::Repeatedly,
            },
            cut_at_query: i & 1 != 0,
            params_end_the_path: i & 2 != 0,
            dots_see_empty_segments: i & 4 != 0,
        };
        i += 1;
    }
    fronts
};

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One round of percent decoding; a `%` without two hex digits stays as it is.
fn decode_once(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(high), Some(low)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

impl Front {
    /// The segments this front sends on, or `None` when it gives up decoding (past 64 rounds:
    /// the path is refused by any sane front, and the proxy refuses what it can't decode).
    fn read(self, path: &[u8]) -> Option<Vec<String>> {
        let mut bytes = match self.decoding {
            Decoding::None => path.to_vec(),
            Decoding::Once | Decoding::Repeatedly => decode_once(path),
        };
        if self.decoding == Decoding::Repeatedly {
            let mut rounds = 1;
            loop {
                let again = decode_once(&bytes);
                if again == bytes {
                    break;
                }
                rounds += 1;
                if rounds > 64 {
                    return None;
                }
                bytes = again;
            }
        }
        let mut text = String::from_utf8_lossy(&bytes).replace('\\', "/");
        if self.cut_at_query {
            if let Some(end) = text.find(['?', '#', '\0']) {
                text.truncate(end);
            }
        }
        if self.params_end_the_path {
            if let Some(end) = text.find(';') {
                text.truncate(end);
            }
        }
        let pieces = text.split('/').map(|segment| {
            let segment = segment.split(';').next().unwrap_or("");
            segment.trim_matches(|c: char| c.is_whitespace() || c.is_control())
        });
        let mut segments: Vec<&str> = Vec::new();
        for piece in pieces {
            if piece.is_empty() && !self.dots_see_empty_segments {
                continue;
            }
            match piece {
                "." => {}
                ".." => {
                    segments.pop();
                }
                _ => segments.push(piece),
            }
        }
        Some(
            segments
                .into_iter()
                .filter(|segment| !segment.is_empty())
                .map(str::to_lowercase)
                .collect(),
        )
    }
}

/// The guarded routes, as the proxy's docs state them: `rest`, a version
/// `v<digits>(.<digits>)*`, `jpphp`, then `provision`, or one segment or more and
/// `partner-provision` or `partner-cancel`.
fn guarded(segments: &[String]) -> Option<Route> {
    let is_version = |v: &str| {
        v.strip_prefix('v').is_some_and(|number| {
            number
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    if segments.len() < 4
        || segments[0] != "rest"
        || !is_version(&segments[1])
        || segments[2] != "jpphp"
    {
        return None;
    }
    match (segments.len(), segments.last().map(String::as_str)) {
        (4, Some("provision")) => Some(Route::Provision),
        (5.., Some("partner-provision")) => Some(Route::PartnerProvision),
        (5.., Some("partner-cancel")) => Some(Route::Cancel),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    // `route()` is handed `Uri::path()`, valid UTF-8 starting with `/`; any `&str` is taken here.
    let text = String::from_utf8_lossy(data);
    let path = if text.starts_with('/') {
        text.into_owned()
    } else {
        format!("/{text}")
    };
    let routed = route(&http::Method::POST, &path);
    let readings: Vec<(Front, Option<Vec<String>>)> = FRONTS
        .iter()
        .map(|front| (*front, front.read(path.as_bytes())))
        .collect();

    for (front, reading) in &readings {
        let Some(segments) = reading else {
            // A front that gives up decoding sends nothing on; the proxy must not pass such a
            // path through if it names a guarded endpoint, which the other fronts check.
            continue;
        };
        if let Some(read_as) = guarded(segments) {
            assert!(
                routed == read_as || routed == Route::AmbiguousPath,
                "{path:?}: {front:?} reads {segments:?} ({read_as:?}), route() gives {routed:?}"
            );
        }
    }

    if matches!(
        routed,
        Route::Provision | Route::PartnerProvision | Route::Cancel
    ) {
        // Guarded: a plain path, read alike by every front that decodes it (one that does not
        // reads `provisio%6E` as no route, and WordPress.com decodes it after).
        let decoding = readings
            .iter()
            .filter(|(front, _)| front.decoding != Decoding::None);
        for (front, reading) in decoding.clone() {
            let segments = reading
                .as_ref()
                .unwrap_or_else(|| panic!("{path:?}: guarded, and {front:?} gave up decoding"));
            assert_eq!(
                guarded(segments),
                Some(routed),
                "{path:?}: route() gives {routed:?}, {front:?} reads {segments:?}"
            );
        }
        // The site the guard checks (the raw segment at the site's place, decoded by the
        // upstream) is the one each front sends on.
        if routed != Route::Provision {
            if let Some(raw) = raw_segments(&path) {
                if raw.len() == 5 {
                    let site =
                        String::from_utf8_lossy(&decode_once(raw[3].as_bytes())).to_lowercase();
                    for (front, reading) in decoding {
                        let segments = reading.as_ref().unwrap();
                        assert_eq!(
                            segments.get(3),
                            Some(&site),
                            "{path:?}: the guard checks {:?}, {front:?} sends on {segments:?}",
                            raw[3]
                        );
                    }
                }
            }
        }
    }
});
