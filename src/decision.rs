//! What the guard decided for a request, and what the route does about it.
//!
//! WordPress.com owns the rule; the guard only reads its answer. A product is an upgrade exactly
//! when the site's upgrade paths list it, in any family, and refused only when the answer speaks
//! about the product's family (`catalogue.rs`). A route's [`Mode`] says what happens to the
//! requests the guard would stop, and every decision is reported ([`DecisionReport`]).

use crate::lock::LockError;
use crate::rejection::Rejection;
use crate::site::Site;
use crate::upstream::LookupError;
use http::{HeaderValue, StatusCode};
use std::fmt;
use std::time::Duration;

/// What the guard checked, in the extensions of every request it forwards with a product: a
/// checked upgrade ([`Admission::Upgrade`]) or the first provision of a site WordPress.com does
/// not know yet ([`Admission::FirstProvision`]).
///
/// A handler should provision exactly this site and product rather than read the request again:
/// two parsers of one request can disagree, and then the guard would have checked something else
/// than what is provisioned. Connection requests and cancellations carry no `Checked` (no product
/// was checked): look at the [`Admission`] extension to tell them apart.
///
/// ```
/// use axum::Extension;
/// use upgrade_guard::Checked;
///
/// async fn provision(Extension(checked): Extension<Checked>) -> String {
///     format!("provisioning {} on {}", checked.product(), checked.site())
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub(crate) site: Site,
    pub(crate) product: String,
    pub(crate) admission: Admission,
}

impl Checked {
    /// The site, normalised as it was looked up.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The product: found in the site's upgrade paths, or the first product of a new site.
    pub fn product(&self) -> &str {
        &self.product
    }

    /// Why the guard let it through: [`Admission::Upgrade`] or [`Admission::FirstProvision`].
    pub fn admission(&self) -> Admission {
        self.admission
    }
}

/// Why the guard let a request through, by the route's own rules. In the extensions of every
/// request the guard forwards, beside the [`Site`] it held for it (not of those a
/// [`Mode::FailOpen`] or [`Mode::Shadow`] route forwards although the guard would have stopped
/// them: those carry a [`Bypass`]), and in the [`DecisionReport`]. A handler should relay that
/// `Site` (and, with a product, the [`Checked`] one) rather than read the request again.
///
/// ```
/// use axum::Extension;
/// use upgrade_guard::Admission;
///
/// async fn provision(admission: Option<Extension<Admission>>) -> &'static str {
///     match admission.map(|Extension(admission)| admission) {
///         Some(Admission::Upgrade) => "an upgrade, checked against the site's upgrade paths",
///         Some(Admission::FirstProvision) => "a site WordPress.com does not know yet",
///         Some(Admission::Connection) => "no product: connect or repair the site",
///         Some(Admission::Cancellation) => "a cancellation",
///         _ => "not checked by the guard",
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Admission {
    /// The product is in the site's upgrade paths.
    Upgrade,
    /// WordPress.com does not know the site (named by URL or domain) yet: it holds nothing, so
    /// any product is its first. The provision registers it.
    FirstProvision,
    /// The request names no product (absent or empty) or `free`: it connects or repairs the site
    /// and provisions no paid product.
    Connection,
    /// A route that changes a site's products other than by provisioning
    /// ([`cancels`](crate::UpgradeGuardLayer::cancels)): nothing to check, the site held and its
    /// cached paths dropped.
    Cancellation,
    /// The site's upgrade-paths answer does not judge the product: it does not list it, and
    /// WordPress.com's answers do not speak about its family (Scan and Anti-spam, where
    /// upgrade-paths answers only about plans and backups). Forwarded on a route whose
    /// [`UnjudgedProducts`](crate::UnjudgedProducts) is `Forward`, the default: WordPress.com's
    /// provision endpoint decides.
    Unjudged,
}

impl Admission {
    /// The admission's name, as the logs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upgrade => "upgrade",
            Self::FirstProvision => "first_provision",
            Self::Connection => "connection",
            Self::Cancellation => "cancellation",
            Self::Unjudged => "unjudged",
        }
    }

    /// Whether a request let through as this provisions a product (and so is remembered for
    /// the settling window, see [`settling_window`](crate::UpgradeGuardBuilder::settling_window)).
    pub fn provisions(self) -> bool {
        matches!(self, Self::Upgrade | Self::FirstProvision | Self::Unjudged)
    }
}

impl fmt::Display for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a route treats requests the guard would stop. Set per route with
/// [`UpgradeGuardLayer::mode`](crate::UpgradeGuardLayer::mode).
///
/// Roll a guard out in [`Shadow`](Self::Shadow) first: nothing changes for clients, and every
/// request it would have stopped is reported. Then switch to [`FailClosed`](Self::FailClosed).
///
/// A provision a mode forwards although the guard would have stopped it is remembered for the
/// [settling window](crate::UpgradeGuardBuilder::settling_window) like a checked one: it may
/// land all the same, and an answer that does not show it yet must not let a downgrade or a
/// repeat of it through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Forward only upgrades; answer everything else. The default: when the guard can't tell,
    /// nothing is forwarded.
    #[default]
    FailClosed,
    /// As `FailClosed`, except that a request is forwarded when WordPress.com could not answer
    /// (timeout, connection error, 5xx, 429, a malformed answer, a refused token) or the site lock
    /// could not be reached. Never when WordPress.com answered that the product is not an
    /// upgrade, and never a request the guard could not read.
    FailOpen,
    /// Never answer for the inner service: forward every request, and report what would have
    /// been stopped.
    Shadow,
}

impl Mode {
    /// The mode's name as the bypass header and the logs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailClosed => "fail-closed",
            Self::FailOpen => "fail-open",
            Self::Shadow => "shadow",
        }
    }

    /// Whether a request stopped for `why` is forwarded all the same in this mode.
    pub(crate) fn forwards(self, why: &Rejection) -> bool {
        match self {
            Self::FailClosed => false,
            Self::FailOpen => {
                matches!(
                    why,
                    Rejection::Upstream(error) if !matches!(error, LookupError::UnknownSite)
                ) || matches!(why, Rejection::SiteBusy(LockError::Unavailable(_)))
            }
            Self::Shadow => true,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The response header on answers to requests forwarded although the guard would have stopped
/// them: `<mode>; error=<code>`, e.g. `shadow; error=upgrade_not_allowed`.
pub const BYPASS_HEADER: &str = "x-upgrade-guard-bypass";

/// In the extensions of a request forwarded although the guard would have stopped it
/// ([`Mode::FailOpen`], [`Mode::Shadow`]): what it would have answered, so the handler can tell.
///
/// ```
/// use axum::Extension;
/// use upgrade_guard::Bypass;
///
/// async fn provision(bypass: Option<Extension<Bypass>>) -> String {
///     match bypass {
///         Some(Extension(bypass)) => format!("unchecked: the guard would have said {}", bypass.code()),
///         None => "checked".to_owned(),
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bypass {
    pub(crate) mode: Mode,
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) site: Option<Site>,
    pub(crate) product: Option<String>,
}

impl Bypass {
    /// The route's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The status the guard would have answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `error` code the guard would have answered.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message the guard would have answered.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The site, when the request named a valid one.
    pub fn site(&self) -> Option<&Site> {
        self.site.as_ref()
    }

    /// The product, when the request named one.
    pub fn product(&self) -> Option<&str> {
        self.product.as_deref()
    }

    /// The value of the [`BYPASS_HEADER`].
    pub(crate) fn header_value(&self) -> HeaderValue {
        HeaderValue::try_from(format!("{}; error={}", self.mode, self.code))
            .expect("mode names and error codes are plain ASCII")
    }
}

/// What became of a request, as [`DecisionReport`] tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Forwarded by the route's rules; the report's [`admission`](DecisionReport::admission)
    /// says why (an upgrade, a first provision, a connection request, a cancellation).
    Allowed,
    /// Answered by the guard; the report's rejection says why (409, 400, an upstream error…).
    Rejected,
    /// Would have been rejected, forwarded by a [`Mode::FailOpen`] route.
    FailedOpen,
    /// Would have been rejected, forwarded by a [`Mode::Shadow`] route.
    Shadowed,
    /// Forwarded (and reported then), after which its client went away: *detached*, the guard
    /// finished the inner service's work alone, holding the site meanwhile, and this is how it
    /// ended. The report's `latency` is then from forwarding to that end, and its `rejection` is
    /// `None`.
    Detached(DetachedEnd),
}

impl Outcome {
    /// The outcome's name, as the logs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Rejected => "rejected",
            Self::FailedOpen => "failed_open",
            Self::Shadowed => "shadowed",
            Self::Detached(_) => "detached",
        }
    }
}

/// How the inner service's work ended for a request whose client went away after it was
/// forwarded ([`Outcome::Detached`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DetachedEnd {
    /// The inner service answered with this status; the answer went nowhere, its client had
    /// gone. A provision that landed for a client that left shows here.
    Answered(StatusCode),
    /// The inner service returned an error.
    Failed,
    /// The route's [`detached_ceiling`](crate::UpgradeGuardLayer::detached_ceiling) passed
    /// first: the guard dropped the inner service's future and freed the site, though a
    /// provision it had sent may still land.
    CeilingPassed,
}

/// One decision, as `tracing` logs it and an
/// [`on_decision`](crate::UpgradeGuardLayer::on_decision) callback receives it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct DecisionReport<'a> {
    /// What became of the request.
    pub outcome: Outcome,
    /// Why the route let it through, when [`Outcome::Allowed`].
    pub admission: Option<Admission>,
    /// The route's mode.
    pub mode: Mode,
    /// The site, when the request named a valid one.
    pub site: Option<&'a Site>,
    /// The product, when the request named one.
    pub product: Option<&'a str>,
    /// Why the guard stopped (or would have stopped) the request.
    pub rejection: Option<&'a Rejection>,
    /// How long the request waited for its site's lock (zero when it was free at once), when it
    /// took the lock: `None` for a refusal known without it, or a request stopped before.
    pub lock_wait: Option<Duration>,
    /// From the request's arrival to the decision: reading, waiting for the site, the lookup.
    pub latency: Duration,
}

/// What a route does with a site WordPress.com does not know: its upgrade-paths lookup answers
/// `invalid_blog`. Set per route with [`UpgradeGuardLayer::unknown_sites`](crate::UpgradeGuardLayer::unknown_sites).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnknownSites {
    /// A site named by URL or domain that WordPress.com does not know yet holds nothing: the
    /// request is forwarded as its first provision (which registers it), held per site like any
    /// provision, so a second first provision of the same site waits and is then checked
    /// against what the first left. Since it is forwarded unchecked, "unknown" must be true: the
    /// guard asks WordPress.com's v1.4 `status` endpoint too, and forwards only when it also
    /// answers `invalid_blog` (otherwise 503 `upgrade_paths_unavailable`). Marked
    /// [`Admission::FirstProvision`](crate::Admission::FirstProvision). A blog ID WordPress.com
    /// does not know is 404 `unknown_site` all the same: a blog ID exists only once the site
    /// is registered.
    #[default]
    FirstProvision,
    /// Every site WordPress.com does not know is 404 `unknown_site`: for routes that only ever
    /// change existing sites.
    Refuse,
}
