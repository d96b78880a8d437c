//! What both floors share: the flags and the runtime.

/// `--listen` and `--upstream` (without its `http://`); any other flag is skipped.
pub fn flags() -> (String, String) {
    let (mut listen, mut upstream) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next(),
            "--upstream" => upstream = args.next(),
            _ => {}
        }
    }
    let upstream = upstream.expect("--upstream http://HOST:PORT");
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/');
    (listen.expect("--listen ADDR"), upstream.to_owned())
}

/// Tokio's single-threaded scheduler, which both floors run on (as the proxy does with
/// `--workers 1`).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}
