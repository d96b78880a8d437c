//! `floor --listen ADDR --upstream http://HOST:PORT`: each client connection's requests go out
//! on one hyper client connection of its own (the passthrough variant tried for the proxy and not
//! kept, BENCHMARKS.md), `Host` set, on Tokio's single-threaded scheduler. Other flags are
//! ignored, so it takes the proxy's.

use http::{HeaderValue, Request, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::rc::Rc;
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let (listen, upstream) = floor::flags();
    let runtime = floor::runtime();
    tokio::task::LocalSet::new().block_on(&runtime, async move {
        let listener = TcpListener::bind(&listen).await.unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let upstream = upstream.clone();
            tokio::task::spawn_local(async move {
                let idle: Rc<RefCell<Option<http1::SendRequest<Incoming>>>> = Rc::default();
                let host = HeaderValue::from_str(&upstream).unwrap();
                let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    let (idle, upstream, host) = (idle.clone(), upstream.clone(), host.clone());
                    async move {
                        let taken = idle.borrow_mut().take();
                        let mut sender = match taken {
                            Some(sender) if !sender.is_closed() => sender,
                            _ => {
                                let stream = TcpStream::connect(&upstream).await.unwrap();
                                let _ = stream.set_nodelay(true);
                                let (sender, connection) =
                                    http1::handshake(TokioIo::new(stream)).await?;
                                tokio::task::spawn_local(connection);
                                sender
                            }
                        };
                        sender.ready().await?;
                        let path = request.uri().path_and_query().cloned().unwrap();
                        *request.uri_mut() = Uri::from(path);
                        request.headers_mut().insert(http::header::HOST, host);
                        let response = sender.send_request(request).await;
                        *idle.borrow_mut() = Some(sender);
                        response
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
