//! `upgrade-guard-proxy`: flags → config → service stack → serve (SIGHUP: reload the
//! certificate) → graceful shutdown (SIGTERM, SIGINT).

use clap::Parser;

use std::num::NonZeroUsize;
use std::process::ExitCode;
use upgrade_guard_proxy::{Config, LogFormat, init_logs, start};

fn main() -> ExitCode {
    let config = Config::parse();
    // Before anything can fail: a start-up error is a log line too (see `start_up_failed`).
    init_logs(config.log_format);
    // One thread: Tokio's single-threaded scheduler, which does without work stealing and
    // cross-thread wake-ups (about a tenth less CPU per proxied request than one worker of the
    // multi-threaded one; BENCHMARKS.md). Several: the multi-threaded one.
    let mut runtime = match config.workers.map(NonZeroUsize::get) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(workers);
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(config)),
        Err(error) => {
            let error = anyhow::Error::new(error).context("cannot start the runtime");
            start_up_failed(config.log_format, &error, ExitCode::FAILURE)
        }
    }
}

async fn run(config: Config) -> ExitCode {
    let format = config.log_format;
    // Listening for the signals before serving: one that comes right after the start-up log
    // line must shut down gracefully, not kill the process.
    let signals = match ShutdownSignals::new() {
        Ok(signals) => signals,
        Err(error) => {
            let error = anyhow::Error::new(error).context("cannot listen for signals");
            return start_up_failed(format, &error, ExitCode::FAILURE);
        }
    };
    // SIGHUP reloads the certificate; listened for before serving, as its default action is to
    // end the process.
    #[cfg(unix)]
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            let error = anyhow::Error::new(error).context("cannot listen for SIGHUP");
            return start_up_failed(format, &error, ExitCode::FAILURE);
        }
    };
    let running = match start(config).await {
        Ok(running) => running,
        Err(error) => {
            return start_up_failed(format, &anyhow::Error::new(error), ExitCode::from(2));
        }
    };
    #[cfg(unix)]
    tokio::spawn({
        let reloader = running.reloader();
        async move {
            while hangups.recv().await.is_some() {
                reloader.reload();
            }
        }
    });
    signals.recv().await;
    tracing::info!("shutting down: no new connections, finishing the requests under way");
    running.shutdown().await;
    ExitCode::SUCCESS
}

/// Says why the proxy did not start, and exits with `code`.
///
/// On stderr always, as one readable line (the error and its [`causes`]), whatever `RUST_LOG`
/// says: what a person starting it by hand or `systemctl
/// status` shows. With `--log-format json` also as an `ERROR` object on stdout, where a log
/// shipper reads every other line: a proxy that could not start is the event it must not miss.
fn start_up_failed(format: LogFormat, error: &anyhow::Error, code: ExitCode) -> ExitCode {
    let error = causes(error);
    eprintln!("upgrade-guard-proxy: {error}");
    if format == LogFormat::Json {
        tracing::error!(error, "upgrade-guard-proxy did not start");
    }
    code
}

/// The error and its causes, `: `-separated, leaving out a cause whose words the one before it
/// already ended with: some errors (redis's, around an `io::Error`) say their source's message
/// and name it as their source too, which would print it twice.
fn causes(error: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut last = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.is_empty() && last.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        last = text;
    }
    line
}

/// SIGTERM (what an orchestrator sends) or SIGINT (Ctrl-C).
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
