//! The guard's request reading on its own, for tests that compare it with another reader.

use crate::body::GuardBody;
use crate::rejection::Rejection;
use crate::request::{Read, RequestReader, Source};
use crate::site::Site;
use bytes::Bytes;
use http::Request;
use http_body::Body;

/// Reads `request` as a guarded route with these sources and body limit would, without the rest
/// of the guard (no lookup, no lock): the same code the guard runs, not a fake of it.
///
/// Gives back the request as the guard would forward it (its body byte for byte as it arrived)
/// and the site and product it names, `None` for a request naming no product, or the
/// [`Rejection`] the guard would answer. For tests that hold the guard's reading against
/// another reader: this crate's differential test against PHP (`tests/php_differential.rs`) and
/// its fuzz targets.
///
/// ```
/// use http::Request;
/// use http_body_util::Full;
/// use upgrade_guard::{Source, fake::read_request};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let request = Request::post("/provision")
///     .header("content-type", "application/x-www-form-urlencoded")
///     .body(Full::from("siteurl=example.com&plan=jetpack-scan"))
///     .unwrap();
/// let (_, named) =
///     read_request(Source::field("siteurl"), Source::field("plan"), 64 * 1024, request).await;
/// let (site, product) = named.unwrap();
/// assert_eq!((site.as_str(), product.as_deref()), ("example.com", Some("jetpack-scan")));
/// # }
/// ```
pub async fn read_request<B>(
    site: Source,
    product: Source,
    body_limit: usize,
    request: Request<B>,
) -> (
    Request<GuardBody<B>>,
    Result<(Site, Option<String>), Rejection>,
)
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let reader = RequestReader {
        site,
        product,
        body_limit,
        ..RequestReader::default()
    };
    let Read { request, named } = reader.read(request).await;
    (request, named.map(|named| (named.site, named.product)))
}
