//! Reading WordPress.com's answers: bodies within a cap, and what a status and body mean.

use super::error::LookupError;
use super::paths::{UpgradePaths, parse_shared};
use super::token::Token;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use std::{sync::Arc, time::Duration};

/// WordPress.com's answer to a GET, its body read whole.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) retry_after: Option<Duration>,
    pub(super) www_authenticate: Option<HeaderValue>,
    pub(super) body: Bytes,
}

/// GETs `url` with `token` (none: a public endpoint) and reads the answer, if its body is at
/// most `limit` bytes long.
pub(super) async fn get(
    http: &reqwest::Client,
    url: reqwest::Url,
    token: Option<&Token>,
    limit: usize,
) -> Result<Answer, LookupError> {
    let mut request = http.get(url).header(header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, token.authorization());
    }
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let www_authenticate = response.headers().get(header::WWW_AUTHENTICATE).cloned();
    let body = read_capped(response, limit)
        .await
        .map_err(|error| match error {
            ReadError::TooLarge => LookupError::AnswerTooLarge { limit },
            ReadError::Transport(error) => transport(error),
        })?;
    Ok(Answer {
        status,
        retry_after,
        www_authenticate,
        body,
    })
}

/// Whether an error answer is WordPress.com's own word that it does not know the site: a JSON
/// object whose `error` is `invalid_blog`.
pub(super) fn says_invalid_blog(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct ErrorAnswer {
        error: String,
    }
    serde_json::from_slice::<ErrorAnswer>(body).is_ok_and(|answer| answer.error == "invalid_blog")
}

/// Why an answer's body could not be read.
pub(super) enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

/// The body of `response`, if it is at most `limit` bytes long.
pub(super) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, ReadError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(ReadError::TooLarge);
    }
    // An answer usually comes in one chunk: kept as it came, copied only when a second follows.
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        let read = joined.as_ref().map_or(first.len(), BytesMut::len);
        if read + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        match &mut joined {
            Some(body) => body.extend_from_slice(&chunk),
            None if first.is_empty() => first = chunk,
            None => {
                let mut body = BytesMut::with_capacity(first.len() + chunk.len());
                body.extend_from_slice(&first);
                body.extend_from_slice(&chunk);
                joined = Some(body);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

pub(super) fn transport(error: reqwest::Error) -> LookupError {
    if error.is_timeout() {
        LookupError::Timeout
    } else {
        LookupError::Transport(Arc::new(error.without_url()))
    }
}

pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    seconds.trim().parse().ok().map(Duration::from_secs)
}

/// Maps an upstream answer to the paths or to the error the contract names.
/// An answer seen a moment ago for another site is not parsed again ([`parse_shared`]).
pub(super) fn classify(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<Arc<UpgradePaths>, LookupError> {
    if status.is_success() {
        return parse_shared(body).map_err(|e| LookupError::InvalidAnswer(Arc::new(e)));
    }
    // Only WordPress.com's own word makes a site unknown: an unknown site may be forwarded as its
    // first provision, so a bare 404 (a wrong base URL, a proxy's page) must not pass for one.
    if says_invalid_blog(body) {
        return Err(LookupError::UnknownSite);
    }
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err(LookupError::Unauthorized { status })
        }
        _ => Err(LookupError::Status {
            status,
            retry_after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response whose body comes in these chunks, without a length.
    fn chunked(chunks: &[&'static str]) -> reqwest::Response {
        let frames = chunks
            .iter()
            .map(|chunk| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(*chunk))))
            .collect::<Vec<_>>();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        http::Response::new(reqwest::Body::wrap(body)).into()
    }

    #[tokio::test]
    async fn bodies_are_read_whole_in_one_chunk_or_many_within_the_cap() {
        for (chunks, limit, expected) in [
            (&[][..], 0, Some("")),
            (&["abc"][..], 3, Some("abc")),
            (&["abc"][..], 2, None),
            (&["ab", "cd", "ef"][..], 6, Some("abcdef")),
            (&["ab", "cd", "ef"][..], 5, None),
            (&["ab", "cd"][..], 3, None),
            (&["", "ab", "", "cd"][..], 4, Some("abcd")),
        ] {
            let read = read_capped(chunked(chunks), limit).await;
            match (read, expected) {
                (Ok(body), Some(expected)) => assert_eq!(body, expected, "{chunks:?}"),
                (Err(ReadError::TooLarge), None) => {}
                (Ok(body), None) => panic!("{chunks:?} within {limit}: read {body:?}"),
                (Err(_), _) => panic!("{chunks:?} within {limit}: not read"),
            }
        }
    }

    #[test]
    fn answers_are_classified_as_the_contract_says() {
        let ok = classify(
            StatusCode::OK,
            br#"{"jetpack-scan":["jetpack-scan"]}"#,
            None,
        )
        .unwrap();
        assert!(ok.allows("jetpack-scan"));
        // PHP's `[]` is "no upgrade paths"; any other array fails closed.
        assert!(classify(StatusCode::OK, b"[]", None).unwrap().is_empty());
        assert!(matches!(
            classify(StatusCode::OK, br#"["jetpack-scan"]"#, None),
            Err(LookupError::InvalidAnswer(_))
        ));
        assert!(matches!(
            classify(
                StatusCode::FORBIDDEN,
                br#"{"error":"invalid_blog","message":"x"}"#,
                None
            ),
            Err(LookupError::UnknownSite)
        ));
        // A bare 404 (a wrong base URL) is not WordPress.com saying the site is unknown.
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, b"", None),
            Err(LookupError::Status { .. })
        ));
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, br#"{"error":"invalid_token"}"#, None),
            Err(LookupError::Unauthorized { .. })
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, b"", None),
            Err(LookupError::Unauthorized { .. })
        ));
        let throttled = classify(
            StatusCode::TOO_MANY_REQUESTS,
            b"",
            Some(Duration::from_secs(7)),
        )
        .unwrap_err();
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, b"<html>", None),
            Err(LookupError::Status { .. })
        ));
    }
}
