//! The proxy's log lines: `--log-format text` (one readable line per event, the default) or
//! `--log-format json` (one JSON object per line, for a log shipper), both on stdout and both
//! filtered by `RUST_LOG` (default `info`).
//!
//! Every line written while a request is served carries the request's span, `request` with
//! `request_id`, `route` and `token` (a fingerprint of the caller's bearer token, see
//! [`token_fingerprint`]); in JSON it is the object under `"span"`. Each request on a guarded
//! route ends with one `request answered` line, at `info`, with what the guard decided and what
//! the upstream answered (see [`Telemetry`](crate::telemetry::Telemetry)):
//!
//! ```json
//! {"timestamp":"2026-12-07T05:32:33.927605Z","level":"INFO","message":"request answered",
//!  "status":409,"site":"professional.example.com","product":"personal","outcome":"rejected",
//!  "code":"upgrade_not_allowed","decision_ms":2.97,"total_ms":3.56,
//!  "target":"upgrade_guard_proxy::telemetry",
//!  "span":{"request_id":"0b6f…","route":"provision","token":"d70c8204","name":"request"}}
//! ```
//!
//! (one line in the output). A field without a value is left out: `upstream_status` when the
//! guard or the proxy answered itself, `code` when nothing was refused, `admission` when nothing
//! was let through. No token, secret, query string or body is ever logged.
//!
//! A proxy that cannot start once its flags are read (a taken port, an unreadable certificate,
//! Redis unreachable) says why on stderr; under `json` also as an `ERROR` object on stdout
//! (`"message":"upgrade-guard-proxy did not start"`, the error and its causes in `error`). A flag
//! clap refuses gets clap's usage message on stderr only: the log format is one of the flags.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, coloured only at a terminal.
    #[default]
    Text,
    /// One JSON object per line, event fields at the top level, the request's under `span`.
    Json,
}

/// Installs the process's log subscriber; `RUST_LOG` filters (default `info`).
///
/// # Panics
///
/// If a global subscriber was installed already.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            // Colours only for a person at a terminal, never in a log file or a pipe.
            .with_ansi(std::io::stdout().is_terminal())
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            // The request's span is the only one: `span` says it all, a list would repeat it.
            .with_span_list(false)
            .init(),
    }
}

/// Who called, without saying with what: the first 8 hex digits of the SHA-256 of the request's
/// bearer token, so that an operator can tell callers apart and match a line with a partner's
/// own record of its token, while the line holds nothing that authenticates. `None` when the
/// request carries no bearer token.
pub(crate) fn token_fingerprint(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    if token.is_empty() {
        return None;
    }
    let digest = Sha256::digest(token);
    Some(
        digest[..4]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_tokens_have_a_fingerprint() {
        let fingerprint = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            token_fingerprint(&headers)
        };
        assert_eq!(fingerprint("Bearer password").as_deref(), Some("5e884898"));
        assert_eq!(
            fingerprint("bearer  password ").as_deref(),
            Some("5e884898")
        );
        assert_eq!(fingerprint("Basic cGFzc3dvcmQ="), None);
        assert_eq!(fingerprint("Bearer "), None);
        assert_eq!(token_fingerprint(&HeaderMap::new()), None);
    }
}
