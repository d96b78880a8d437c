//! The library's fake WordPress.com partner API on a loopback port, seeded with its demo sites,
//! for trying the proxy (and the installed package, `proxy/debian/ci-check.sh`) without
//! WordPress.com:
//!
//! ```text
//! cargo run -p upgrade-guard-proxy --example fake_upstream
//! ```
//!
//! Prints `WPCOM_API_URL=<url>` and `WPCOM_TOKEN=<a token it accepts>`, one per line, then
//! serves until SIGTERM or Ctrl-C. Not a part of the package: the fake is for tests only.
//!
//! Its upgrade-paths answers speak of `jetpack-plans` and `jetpack-backup` only, as
//! WordPress.com's partner docs describe them (and as `partner_api`'s embedded fake answers), so
//! a Scan or Anti-spam provision through the proxy is forwarded unjudged.

use upgrade_guard::fake::FakeUpstream;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let fake = FakeUpstream::builder()
        .demo_sites()
        .answer_families(["jetpack-plans", "jetpack-backup"])
        .start()
        .await?;
    println!("WPCOM_API_URL={}", fake.url());
    println!("WPCOM_TOKEN={}", fake.token());
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
