//! The `Connection` header: what the next hop may drop from a request the guard has read.
//!
//! A proxy removes every header the `Connection` header names before it forwards a request
//! (RFC 9110 section 7.6.1), and so may a partner's own relay behind the guard. When such a
//! header is one the guard's reading depended on (`Content-Type`, say), WordPress.com reads the
//! same bytes another way than the guard did: a multipart form becomes an urlencoded one, and a
//! site and plan hidden in a field's value are what gets provisioned. So the guard refuses a
//! request whose `Connection` header names a header it carries, unless that header is one that
//! only ever concerns the connection and never the reading of the body: what the guard read is
//! then what the next hop gets.

use crate::rejection::Rejection;
use http::HeaderMap;
use http::header::CONNECTION;

/// Tokens a `Connection` header may carry whatever the request holds: the connection's own
/// options and the hop-by-hop headers that say nothing of the request's content. A header named
/// here is dropped by the next hop without changing how the body reads.
const CONNECTION_ONLY: [&str; 8] = [
    "close",
    "keep-alive",
    "upgrade",
    "te",
    "http2-settings",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

/// `Ok` unless a `Connection` header names a header of the request that the next hop would
/// drop and that is not [connection-only](CONNECTION_ONLY): `Content-Type`, `Content-Length`,
/// `Transfer-Encoding`, `Content-Encoding`, or any other the request carries (a route's own
/// [`Source::from_fn`](super::Source::from_fn) may read any header). A name of a header the
/// request does not carry changes nothing and is let be.
pub(crate) fn check(headers: &HeaderMap) -> Result<(), Rejection> {
    for value in headers.get_all(CONNECTION) {
        // A value that is not visible ASCII names no header hyper would have parsed: the next
        // hop cannot drop what it cannot name. Read it lossily all the same, and refuse it if a
        // name in it matches.
        let text = String::from_utf8_lossy(value.as_bytes());
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if CONNECTION_ONLY
                .iter()
                .any(|only| token.eq_ignore_ascii_case(only))
            {
                continue;
            }
            if headers.contains_key(token) || token.eq_ignore_ascii_case("connection") {
                return Err(Rejection::ConnectionHeader {
                    name: token.to_ascii_lowercase(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn refused(pairs: &[(&'static str, &'static str)]) -> Option<String> {
        match check(&headers(pairs)) {
            Ok(()) => None,
            Err(Rejection::ConnectionHeader { name }) => Some(name),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_header_the_reading_depends_on_may_not_be_named() {
        let ct = ("content-type", "multipart/form-data; boundary=x");
        assert_eq!(
            refused(&[ct, ("connection", "Content-Type")]).as_deref(),
            Some("content-type")
        );
        assert_eq!(
            refused(&[ct, ("connection", "keep-alive, CONTENT-TYPE ")]).as_deref(),
            Some("content-type")
        );
        // Two Connection headers are one list.
        assert_eq!(
            refused(&[ct, ("connection", "close"), ("connection", "content-type")]).as_deref(),
            Some("content-type")
        );
        for (name, value) in [
            ("content-length", "12"),
            ("transfer-encoding", "chunked"),
            ("content-encoding", "identity"),
            ("x-site", "1002"),
            ("authorization", "Bearer t"),
        ] {
            assert_eq!(
                refused(&[(name, value), ("connection", name)]).as_deref(),
                Some(name)
            );
        }
    }

    #[test]
    fn connection_options_and_absent_headers_are_let_be() {
        let ct = ("content-type", "application/x-www-form-urlencoded");
        for value in [
            "close",
            "keep-alive",
            "Keep-Alive",
            "Upgrade, HTTP2-Settings",
            "TE",
            " , ,close",
            // Names a header this request does not carry.
            "x-not-here",
        ] {
            assert_eq!(refused(&[ct, ("connection", value)]), None, "{value}");
        }
        assert_eq!(
            refused(&[
                ct,
                ("keep-alive", "timeout=5"),
                ("connection", "keep-alive")
            ]),
            None
        );
        assert_eq!(refused(&[ct]), None);
    }
}
