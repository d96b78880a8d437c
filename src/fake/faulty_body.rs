//! Answers whose body goes wrong on the wire: stalled, cut short, reset, or trickled.

use super::faults::Fault;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use std::convert::Infallible;
use std::time::Duration;

/// Why an answer's body stopped; hyper hands it back from the connection.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;
/// Every answer's body: whole, or going wrong as a fault says.
pub(crate) type AnswerBody = UnsyncBoxBody<Bytes, BodyError>;

/// The body error that asks the accept loop to reset the connection rather than close it.
#[derive(Debug, thiserror::Error)]
#[error("connection reset by an injected fault")]
pub(crate) struct ResetConnection;

/// Whether `error` (from serving a connection) was caused by [`ResetConnection`].
pub(crate) fn asks_for_reset(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<ResetConnection>() {
            return true;
        }
        cause = error.source();
    }
    false
}

pub(crate) fn whole(body: Full<Bytes>) -> AnswerBody {
    body.map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// The answer for a body fault, `None` for the faults that are not about the body or that
/// slow down the real answer ([`slowly`]).
pub(crate) fn answer(fault: &Fault) -> Option<http::Response<AnswerBody>> {
    type Chunks = stream::BoxStream<'static, Result<Frame<Bytes>, BodyError>>;
    let data = |bytes: Bytes| Ok(Frame::data(bytes));
    let head = |body: &Bytes, sent: usize| {
        let sent = body.slice(..sent.min(body.len()));
        stream::iter((!sent.is_empty()).then(|| data(sent)))
    };
    let (declared, chunks): (Option<usize>, Chunks) = match fault {
        Fault::StallBody { body, sent } => (
            Some(body.len()),
            head(body, *sent).chain(stream::pending()).boxed(),
        ),
        Fault::TruncateBody { body, sent } => (
            Some(body.len()),
            head(body, *sent).chain(after_a_flush(None)).boxed(),
        ),
        Fault::ResetBody { body, sent } => (
            Some(body.len()),
            head(body, *sent)
                .chain(after_a_flush(Some(Box::new(ResetConnection))))
                .boxed(),
        ),
        Fault::Trickle {
            body: Some(body),
            chunk,
            every,
        } => (None, trickle(body.clone(), *chunk, *every)),
        _ => return None,
    };
    let mut response = http::Response::new(StreamBody::new(chunks).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(len) = declared {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    Some(response)
}

/// Ends the body (`None`) or fails it with `error`, once hyper has sent what came before: it
/// writes buffered bytes out when the body is not ready, and would drop them on an error.
fn after_a_flush(
    error: Option<BodyError>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BodyError>> + Send {
    stream::once(async move {
        tokio::task::yield_now().await;
        error
    })
    .filter_map(|error| async move { error.map(Err) })
}

fn trickle(
    body: Bytes,
    chunk: usize,
    every: Duration,
) -> stream::BoxStream<'static, Result<Frame<Bytes>, BodyError>> {
    let chunk = chunk.max(1);
    stream::unfold(body, move |mut rest| async move {
        if rest.is_empty() {
            return None;
        }
        if !every.is_zero() {
            tokio::time::sleep(every).await;
        }
        let next = rest.split_to(chunk.min(rest.len()));
        Some((Ok(Frame::data(next)), rest))
    })
    .boxed()
}

/// `answer`, its body trickled `chunk` bytes after each wait of `every` (a [`Fault::Trickle`]
/// without a body of its own: the real answer, slowly).
pub(crate) async fn slowly(
    answer: http::Response<Full<Bytes>>,
    chunk: usize,
    every: Duration,
) -> http::Response<AnswerBody> {
    let (mut parts, body) = answer.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    http::Response::from_parts(
        parts,
        StreamBody::new(trickle(bytes, chunk, every)).boxed_unsync(),
    )
}

#[cfg(test)]
mod tests {
    use crate::fake::faults::{Endpoint, Fault};
    use crate::fake::server::FakeUpstream;
    use crate::fake::store::FakeSite;
    use std::io::ErrorKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Asks for a site's paths over a raw connection; returns what arrived and how it ended.
    async fn raw_lookup(fake: &FakeUpstream) -> (Vec<u8>, std::io::Result<()>) {
        let mut stream = TcpStream::connect(fake.addr()).await.unwrap();
        let request = format!(
            "GET /rest/v1.3/jpphp/1/upgrade-paths HTTP/1.1\r\nhost: fake\r\nconnection: close\r\nauthorization: Bearer {}\r\n\r\n",
            fake.token()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let mut buffer = [0; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return (received, Ok(())),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
                Err(error) => return (received, Err(error)),
            }
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[tokio::test]
    async fn a_truncated_body_ends_cleanly_and_a_reset_one_with_rst() {
        let fake = FakeUpstream::builder()
            .site(FakeSite::new(1))
            .start()
            .await
            .unwrap();
        let body = r#"{"jetpack-plans":["professional"]}"#;

        fake.inject(Endpoint::UpgradePaths, Fault::truncate_body(body, 10))
            .once();
        let (received, end) = raw_lookup(&fake).await;
        let received = text(&received);
        assert!(received.starts_with("HTTP/1.1 200 OK\r\n"), "{received}");
        assert!(received.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(received.ends_with("\r\n\r\n{\"jetpack-"), "{received}");
        assert!(end.is_ok(), "closed with FIN: {end:?}");

        fake.inject(Endpoint::UpgradePaths, Fault::reset_body(body, 10))
            .once();
        let (received, end) = raw_lookup(&fake).await;
        assert!(text(&received).starts_with("HTTP/1.1 200 OK\r\n"));
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(ErrorKind::ConnectionReset),
            "reset with RST"
        );
    }

    #[tokio::test]
    async fn a_slow_answer_is_the_real_one_chunked() {
        let fake = FakeUpstream::builder()
            .site(FakeSite::new(1).holding(["professional"]))
            .start()
            .await
            .unwrap();
        fake.inject(
            Endpoint::UpgradePaths,
            Fault::slow_answer(3, std::time::Duration::from_millis(1)),
        )
        .once();
        let (received, _) = raw_lookup(&fake).await;
        let received = text(&received);
        assert!(
            received.contains("transfer-encoding: chunked\r\n"),
            "{received}"
        );
        assert!(!received.contains("content-length"), "{received}");
        // The catalogue offers nothing beside Professional, in chunks of 3 bytes: `{}`.
        assert!(received.ends_with("\r\n2\r\n{}\r\n0\r\n\r\n"), "{received}");
    }
}
