//! `floor-pool`: the same floor with hyper-util's pooled `Client`, which the proxy forwards
//! every request through, in place of a connection per client connection.

use http::{HeaderValue, Request, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn main() {
    let (listen, upstream) = floor::flags();
    let runtime = floor::runtime();
    runtime.block_on(async move {
        // As the proxy builds its pool.
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .set_host(false)
            .build_http();
        let host = HeaderValue::from_str(&upstream).unwrap();
        let listener = TcpListener::bind(&listen).await.unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let (client, upstream, host) = (client.clone(), upstream.clone(), host.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    let (client, upstream, host) = (client.clone(), upstream.clone(), host.clone());
                    async move {
                        let path = request.uri().path_and_query().cloned().unwrap();
                        *request.uri_mut() = Uri::builder()
                            .scheme("http")
                            .authority(upstream.as_str())
                            .path_and_query(path)
                            .build()
                            .unwrap();
                        request.headers_mut().insert(http::header::HOST, host);
                        client.request(request).await
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
