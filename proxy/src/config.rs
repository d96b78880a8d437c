//! The proxy's settings: flags, each of which an environment variable may stand in for.

use crate::logs::LogFormat;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// WordPress.com's public API, where the proxy forwards and looks sites up by default.
const WORDPRESS_COM: &str = "https://public-api.wordpress.com";

/// The command line of `upgrade-guard-proxy`.
///
/// Tests and embedders build it the way the binary does:
///
/// ```
/// use clap::Parser;
/// use upgrade_guard_proxy::Config;
///
/// let config = Config::try_parse_from([
///     "upgrade-guard-proxy",
///     "--listen", "127.0.0.1:0",
///     "--upstream", "http://127.0.0.1:8000",
///     "--token", "partner-token",
/// ])?;
/// assert_eq!(config.request_timeout(), std::time::Duration::from_secs(60));
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Clone, Parser)]
#[command(
    name = "upgrade-guard-proxy",
    version,
    about = "A reverse proxy for WordPress.com's partner API that refuses Jetpack downgrades",
    long_about = "A reverse proxy for WordPress.com's partner API. POST /rest/v1.3/jpphp/provision \
                  (and Jetpack's {site}/partner-provision) goes through upgrade-guard (a product that is not in the site's upgrade paths is \
                  answered 409 and never reaches WordPress.com); {site}/partner-cancel is held per site \
                  like a provision, and the guard forgets the site's cached paths when it ends; every other \
                  request is passed through untouched. Point partner tooling at it with \
                  JETPACK_START_API_HOST."
)]
pub struct Config {
    /// Where the proxy listens.
    #[arg(
        long,
        env = "UPGRADE_GUARD_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// The certificate chain (PEM) to serve HTTPS with; needs --tls-key. Both files are read
    /// again on SIGHUP: new connections get the new pair, open ones keep theirs, and a pair
    /// that can't be served is logged and the old one kept.
    #[arg(
        long,
        env = "UPGRADE_GUARD_TLS_CERT",
        requires = "tls_key",
        value_name = "PEM"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "UPGRADE_GUARD_TLS_KEY",
        requires = "tls_cert",
        value_name = "PEM"
    )]
    pub tls_key: Option<PathBuf>,

    /// The partner API requests are forwarded to.
    #[arg(long, env = "WPCOM_API_URL", default_value = WORDPRESS_COM, value_name = "URL")]
    pub upstream: String,

    /// Redis shared by several proxy replicas: provisions of one site are serialized across all
    /// of them (the library's `RedisLocks`).
    #[arg(
        long,
        env = "UPGRADE_GUARD_REDIS",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis: Option<String>,

    /// Where `GET /metrics` (Prometheus text), `GET /healthz` (liveness) and `GET /readyz`
    /// (readiness) are served; never on --listen.
    #[arg(
        long,
        env = "UPGRADE_GUARD_ADMIN",
        default_value = "127.0.0.1:9090",
        value_name = "ADDR"
    )]
    pub admin: SocketAddr,

    /// The partner token for the guard's upgrade-paths lookups.
    #[arg(
        long,
        env = "WPCOM_TOKEN",
        hide_env_values = true,
        conflicts_with = "client_id",
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// The partner's OAuth2 client ID, exchanged for a token for the lookups; needs
    /// --client-secret.
    #[arg(
        long,
        env = "WPCOM_CLIENT_ID",
        requires = "client_secret",
        value_name = "ID"
    )]
    pub client_id: Option<String>,

    /// The partner's OAuth2 client secret.
    #[arg(
        long,
        env = "WPCOM_CLIENT_SECRET",
        hide_env_values = true,
        requires = "client_id",
        value_name = "SECRET"
    )]
    pub client_secret: Option<String>,

    /// How long the upstream may take to start answering a forwarded request; past it the
    /// answer is 504 `upstream_timeout`. On the guarded routes it bounds the whole request, the
    /// guard's check included, and a provision already sent is still finished by the guard,
    /// its site held until it lands (at most 60 s).
    #[arg(long = "request-timeout", env = "UPGRADE_GUARD_REQUEST_TIMEOUT", default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,

    /// How long a site's upgrade paths are reused by the guard (0: no cache; concurrent lookups
    /// are still coalesced). A cached answer only ever refuses: an upgrade is always confirmed
    /// by a fresh lookup.
    #[arg(
        long = "cache-ttl",
        env = "UPGRADE_GUARD_CACHE_TTL",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub cache_ttl_secs: u64,

    /// How long requests under way may take to finish after SIGTERM/SIGINT; then their
    /// connections are closed, and provisions already sent are finished by the guard (at most
    /// 60 s more) before the process exits.
    #[arg(
        long = "shutdown-grace",
        env = "UPGRADE_GUARD_SHUTDOWN_GRACE",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub shutdown_grace_secs: u64,

    /// How long a guarded request waits while another provision of its site is under way;
    /// past it the answer is 503 `site_busy`.
    #[arg(long = "lock-wait", env = "UPGRADE_GUARD_LOCK_WAIT", default_value_t = 20, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub lock_wait_secs: u64,

    /// How long a guarded request's body may take to arrive; past it the answer is 408
    /// `body_timeout`. No site is held while a body is on its way.
    #[arg(long = "body-timeout", env = "UPGRADE_GUARD_BODY_TIMEOUT", default_value_t = 10, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_secs: u64,

    /// Threads serving requests (Tokio workers); default: one per core. Set it to the cores the
    /// proxy may have, not more: where other busy processes share the machine (a local
    /// upstream, a load generator), threads beyond the free cores only take turns with them,
    /// and each request then costs more in wake-ups and context switches. `1` serves on one
    /// thread with Tokio's single-threaded scheduler, the cheapest per request.
    #[arg(long, env = "UPGRADE_GUARD_WORKERS", value_name = "THREADS")]
    pub workers: Option<std::num::NonZeroUsize>,

    /// How log lines are written on stdout: `text`, one readable line per event, or `json`, one
    /// JSON object per line for a log shipper. `RUST_LOG` sets what is logged (default `info`).
    #[arg(
        long,
        env = "UPGRADE_GUARD_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    /// What the guard does with a product the site's upgrade-paths answer does not judge (one
    /// it does not list, of a family WordPress.com's answers do not speak about: Scan and
    /// Anti-spam, where they cover plans and backups only): `forward` it (WordPress.com's
    /// provision endpoint decides) or `refuse` it (409 `product_not_judged`).
    #[arg(
        long = "unjudged-products",
        env = "UPGRADE_GUARD_UNJUDGED_PRODUCTS",
        value_enum,
        default_value_t = Unjudged::Forward,
        value_name = "CHOICE"
    )]
    pub unjudged_products: Unjudged,

    /// Product families WordPress.com's upgrade-paths answers speak about, besides
    /// `jetpack-plans` and `jetpack-backup` (always) and those an answer has listed: a product
    /// of one is refused when an answer does not list it. Comma-separated, or the flag repeated.
    #[arg(
        long = "covered-family",
        env = "UPGRADE_GUARD_COVERED_FAMILIES",
        value_delimiter = ',',
        value_name = "FAMILY"
    )]
    pub covered_families: Vec<String>,

    /// Products of families the guard cannot know from WordPress.com's docs, as `SLUG=FAMILY`
    /// (the documented ones are known, and every answer teaches more). Comma-separated, or the
    /// flag repeated.
    #[arg(
        long = "product-family",
        env = "UPGRADE_GUARD_PRODUCT_FAMILIES",
        value_delimiter = ',',
        value_name = "SLUG=FAMILY",
        value_parser = parse_product_family
    )]
    pub product_families: Vec<(String, String)>,
}

/// `--unjudged-products`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Unjudged {
    /// Forward it, marked `unjudged` in logs and metrics.
    #[default]
    Forward,
    /// Answer 409 `product_not_judged`.
    Refuse,
}

impl From<Unjudged> for upgrade_guard::UnjudgedProducts {
    fn from(unjudged: Unjudged) -> Self {
        match unjudged {
            Unjudged::Forward => Self::Forward,
            Unjudged::Refuse => Self::Refuse,
        }
    }
}

/// `SLUG=FAMILY`, both non-empty.
fn parse_product_family(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((slug, family)) if !slug.trim().is_empty() && !family.trim().is_empty() => {
            Ok((slug.trim().to_owned(), family.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not SLUG=FAMILY")),
    }
}

/// Whose token the guard's upgrade-paths lookups carry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A fixed partner token (`--token`).
    Token(String),
    /// OAuth2 client credentials (`--client-id`, `--client-secret`), exchanged for a token.
    ClientCredentials {
        /// The client ID.
        id: String,
        /// The client secret.
        secret: String,
    },
    /// None configured: each lookup should carry the bearer token of the request it checks, so
    /// the tooling needs no change.
    Caller,
}

impl Config {
    /// Whose token the lookups carry.
    pub fn credentials(&self) -> Credentials {
        match (&self.token, &self.client_id, &self.client_secret) {
            (Some(token), _, _) => Credentials::Token(token.clone()),
            (None, Some(id), Some(secret)) => Credentials::ClientCredentials {
                id: id.clone(),
                secret: secret.clone(),
            },
            _ => Credentials::Caller,
        }
    }

    /// `--request-timeout` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// `--cache-ttl` as a duration.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    /// `--lock-wait` as a duration.
    pub fn lock_wait(&self) -> Duration {
        Duration::from_secs(self.lock_wait_secs)
    }

    /// `--body-timeout` as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    /// `--shutdown-grace` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Secrets never show: the config is logged at start-up.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("tls", &self.tls_cert.is_some())
            .field("upstream", &self.upstream)
            .field("redis", &self.redis.as_deref().map(redacted_url))
            .field("admin", &self.admin)
            .field("credentials", &self.credentials())
            .field("request_timeout", &self.request_timeout())
            .field("cache_ttl", &self.cache_ttl())
            .field("shutdown_grace", &self.shutdown_grace())
            .field("lock_wait", &self.lock_wait())
            .field("body_timeout", &self.body_timeout())
            .field("unjudged_products", &self.unjudged_products)
            .field("covered_families", &self.covered_families)
            .field("product_families", &self.product_families)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Token(_) => "Token(..)",
            Self::ClientCredentials { .. } => "ClientCredentials(..)",
            Self::Caller => "Caller",
        })
    }
}

/// A URL with any user and password taken out, for logs and errors.
pub(crate) fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("upgrade-guard-proxy").chain(args.iter().copied()))
    }

    #[test]
    fn credentials_follow_the_flags() {
        assert_eq!(
            parse(&["--token", "t"]).unwrap().credentials(),
            Credentials::Token("t".into())
        );
        assert_eq!(
            parse(&["--client-id", "i", "--client-secret", "s"])
                .unwrap()
                .credentials(),
            Credentials::ClientCredentials {
                id: "i".into(),
                secret: "s".into()
            }
        );
        assert_eq!(parse(&[]).unwrap().credentials(), Credentials::Caller);
    }

    #[test]
    fn half_given_pairs_are_refused() {
        assert!(parse(&["--client-id", "i"]).is_err());
        assert!(parse(&["--tls-cert", "cert.pem"]).is_err());
        assert!(parse(&["--token", "t", "--client-id", "i", "--client-secret", "s"]).is_err());
        assert!(parse(&["--listen", "not-an-address"]).is_err());
        assert!(parse(&["--request-timeout", "0"]).is_err());
        assert!(parse(&["--log-format", "yaml"]).is_err());
    }

    #[test]
    fn logs_are_text_unless_json_is_asked_for() {
        assert_eq!(parse(&[]).unwrap().log_format, LogFormat::Text);
        assert_eq!(
            parse(&["--log-format", "json"]).unwrap().log_format,
            LogFormat::Json
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let config = parse(&[
            "--token",
            "sekrit-token",
            "--redis",
            "redis://:sekrit-pass@127.0.0.1:6379/0",
        ])
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("127.0.0.1:6379/0"), "{shown}");
    }
}
