//! `upgrade-guard-proxy`: flags → config → service stack → serve → graceful shutdown.

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;
use upgrade_guard_proxy::{Config, start};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Colours only for a person at a terminal, never in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let running = match start(config).await {
        Ok(running) => running,
        Err(error) => {
            // Start-up errors go to stderr as one readable line, whatever RUST_LOG says.
            eprintln!("upgrade-guard-proxy: {}", error.chain());
            return ExitCode::from(2);
        }
    };
    if let Err(error) = shutdown_signal().await {
        eprintln!("upgrade-guard-proxy: cannot listen for signals: {error}");
        return ExitCode::FAILURE;
    }
    tracing::info!("shutting down: no new connections, finishing the requests under way");
    running.shutdown().await;
    ExitCode::SUCCESS
}

/// SIGTERM (what an orchestrator sends) or SIGINT (Ctrl-C).
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            result = tokio::signal::ctrl_c() => result,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
