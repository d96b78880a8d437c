//! The check pipeline: what one route does with one request, in the order of the contract.
//!
//! [`Config::check`] reads the request, reaches a [`Verdict`], lets the route's [`Mode`] settle
//! what is stopped, reports the decision, and hands the future a [`Forward`] or a [`Rejection`].

use super::UnknownSites;
use crate::Site;
use crate::body::GuardBody;
use crate::cache::Lookups;
use crate::catalogue::{Catalogue, Judgement, UnjudgedProducts};
use crate::decision::{Admission, Bypass, Checked, DecisionReport, Mode, Outcome};
use crate::lock::{HeldNames, LockError, SiteLocks, SiteNames, SitePermit};
use crate::recent::{RecentProvisions, Seen};
use crate::rejection::Rejection;
use crate::request::{Named, Read, RequestReader};
use crate::site::SiteKind;
use crate::stats::GuardStats;
use crate::upstream::{LookupError, Token, UpgradePaths};
use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, StatusCode};
use http_body::Body;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The product slug WordPress.com's provision takes for "no paid product": it connects the site.
const FREE: &str = "free";

/// What every route of one guard shares: the lookups and their cache, the site locks and the
/// names they are taken under, what the answers can judge, the stats.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) lookups: Lookups,
    pub(super) locks: Arc<dyn SiteLocks>,
    pub(super) names: SiteNames,
    pub(super) catalogue: Catalogue,
    /// The provisions forwarded within the settling window.
    pub(super) recent: Arc<RecentProvisions>,
    pub(super) stats: GuardStats,
}

impl Shared {
    /// Forgets the site's cached paths, and the provisions remembered of it, here and in every
    /// process sharing the locks: the site changed in a way the guard did not see, or a cancel
    /// gave products back.
    pub(super) fn forget(&self, site: &Site) {
        self.lookups.forget(site);
        self.recent.forget_site(Some(site));
        self.locks.announce_forget(site);
    }

    /// Forgets the cached paths of every name in `names`: here only, or `everywhere` (in every
    /// process sharing the locks).
    fn forget_names(&self, names: &HeldNames, everywhere: bool) {
        for site in names.iter() {
            if everywhere {
                self.forget(site);
            } else {
                self.lookups.forget(site);
            }
        }
    }
}

/// One route's configuration, around the shared state: the route's engine.
#[derive(Clone)]
pub(super) struct Config {
    pub(super) shared: Arc<Shared>,
    pub(super) reader: RequestReader,
    pub(super) lock_wait: Duration,
    pub(super) mode: Mode,
    pub(super) on_decision: Option<Arc<OnDecision>>,
    /// Whether a request naming no product is 400 `missing_product` rather than a connection
    /// request.
    pub(super) require_product: bool,
    pub(super) unknown_sites: UnknownSites,
    /// What the route does with a product the site's answer does not judge.
    pub(super) unjudged: UnjudgedProducts,
    /// Whether the route changes a site's products other than by provisioning (a cancel).
    pub(super) cancels: bool,
    /// How a forwarded request whose client went away is finished.
    pub(super) after_drop: super::detached::Hold,
}

/// A partner's callback for every decision.
pub(super) type OnDecision = dyn Fn(&DecisionReport<'_>) + Send + Sync;

/// A request to forward: with its site held until the inner service has answered (when the
/// guard could take the lock), and what the guard would have answered had the route not let it
/// through.
pub(crate) struct Forward<B> {
    pub(super) request: Request<GuardBody<B>>,
    /// Boxed: the response future carries it while the inner service works, and a held site
    /// is larger than everything else the future keeps.
    pub(super) permit: Option<Box<SiteHold>>,
    pub(super) bypass: Option<Bypass>,
}

/// A held site, for as long as the inner service works on the request. Once the request is
/// forwarded, dropping it first forgets the site's cached paths, then frees the site: what was
/// forwarded may have changed what the site may get, and nothing this process read while it was
/// under way (a dashboard's lookup, say) may outlive it. (Another process sharing the locks is
/// not told of a provision: there, the next check under the lock never joins a lookup started
/// before it took the lock; see `Lookups::upgrade_paths`.) A cancel's forget is told to every process sharing
/// the locks too; a provision's need not be: it only takes products off a site's paths, so the
/// others' cached refusals stay true. (A request that a fail-open route forwards without its
/// lock still forgets at its end: then there is no permit.)
pub(crate) struct SiteHold {
    /// Every name the site is held under (see `lock/names.rs`), whose cached paths are
    /// forgotten.
    names: HeldNames,
    forget: Option<Forget>,
    /// How long taking the site's locks took.
    waited: Duration,
    permit: Option<SitePermit>,
    /// The product of a forwarded provision: remembered for the settling window when the
    /// request ends, unless its answer says it failed.
    provision: Option<String>,
    /// The status the inner service answered the forwarded request with; `None` while unknown
    /// (not answered yet, or the inner service failed or was given up on).
    answered: Option<StatusCode>,
}

/// Whether a request the guard holds a site for can provision a product.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Provides {
    /// A provision of a product: held under every name of the site, or not at all.
    Product,
    /// A connection request or a cancel: held under the name given when the site's other names
    /// cannot be learned.
    Nothing,
}

/// What a forwarded request's [`SiteHold`] forgets when it ends.
struct Forget {
    shared: Arc<Shared>,
    /// Whether every process sharing the locks is told (a cancel), or only this one.
    everywhere: bool,
}

impl SiteHold {
    /// Forget the site's cached paths, under every name it is held by, when this hold ends.
    fn forgetting(hold: Option<Self>, shared: &Arc<Shared>, site: &Site, everywhere: bool) -> Self {
        let mut hold = hold.unwrap_or_else(|| Self {
            names: HeldNames::only(site),
            forget: None,
            waited: Duration::ZERO,
            permit: None,
            provision: None,
            answered: None,
        });
        hold.forget = Some(Forget {
            shared: shared.clone(),
            everywhere,
        });
        hold
    }

    /// The inner service answered the forwarded request with `status`.
    pub(super) fn answered(&mut self, status: StatusCode) {
        self.answered = Some(status);
    }
}

impl Drop for SiteHold {
    fn drop(&mut self) {
        // Runs before the fields drop: the site is forgotten while it is still held.
        if let Some(Forget { shared, everywhere }) = self.forget.take() {
            // A provision that may have been made is remembered before anyone can check the
            // site again: what this hold frees is its lock.
            if let Some(product) = self.provision.take()
                && self.answered.is_none_or(|status| status.is_success())
            {
                shared.recent.remember(&self.names, &product);
            }
            shared.forget_names(&self.names, everywhere);
        }
    }
}

impl std::fmt::Debug for SiteHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteHold")
            .field("names", &self.names)
            .field("forgets", &self.forget.is_some())
            .finish_non_exhaustive()
    }
}

/// What the route decided for one request.
enum Verdict {
    /// The product is in the site's upgrade paths.
    Upgrade {
        site: Site,
        product: String,
        hold: SiteHold,
    },
    /// The site's answer does not judge the product, and the route forwards such products.
    Unjudged {
        site: Site,
        product: String,
        hold: SiteHold,
    },
    /// WordPress.com does not know the site, named by URL: the provision registers it.
    FirstProvision {
        site: Site,
        product: String,
        hold: SiteHold,
    },
    /// No product (`None`), or `free`: the request connects or repairs the site.
    Connection {
        site: Site,
        product: Option<String>,
        hold: SiteHold,
    },
    /// A cancel route: nothing to check.
    Cancellation { site: Site, hold: SiteHold },
    /// The guard stops the request (unless the route's mode forwards it all the same), holding
    /// the site when it got that far.
    Stopped {
        why: Rejection,
        site: Option<Site>,
        product: Option<String>,
        hold: Option<SiteHold>,
    },
}

impl Verdict {
    fn stopped(why: Rejection, named: Named, hold: Option<SiteHold>) -> Self {
        Self::Stopped {
            why,
            site: Some(named.site),
            product: named.product,
            hold,
        }
    }

    /// The site held, when the guard got that far.
    fn hold(&self) -> Option<&SiteHold> {
        match self {
            Self::Upgrade { hold, .. }
            | Self::Unjudged { hold, .. }
            | Self::FirstProvision { hold, .. }
            | Self::Connection { hold, .. }
            | Self::Cancellation { hold, .. } => Some(hold),
            Self::Stopped { hold, .. } => hold.as_ref(),
        }
    }

    fn admission(&self) -> Option<Admission> {
        match self {
            Self::Upgrade { .. } => Some(Admission::Upgrade),
            Self::Unjudged { .. } => Some(Admission::Unjudged),
            Self::FirstProvision { .. } => Some(Admission::FirstProvision),
            Self::Connection { .. } => Some(Admission::Connection),
            Self::Cancellation { .. } => Some(Admission::Cancellation),
            Self::Stopped { .. } => None,
        }
    }

    fn site(&self) -> Option<&Site> {
        match self {
            Self::Upgrade { site, .. }
            | Self::Unjudged { site, .. }
            | Self::FirstProvision { site, .. }
            | Self::Connection { site, .. }
            | Self::Cancellation { site, .. } => Some(site),
            Self::Stopped { site, .. } => site.as_ref(),
        }
    }

    fn product(&self) -> Option<&str> {
        match self {
            Self::Upgrade { product, .. }
            | Self::Unjudged { product, .. }
            | Self::FirstProvision { product, .. } => Some(product),
            Self::Connection { product, .. } | Self::Stopped { product, .. } => product.as_deref(),
            Self::Cancellation { .. } => None,
        }
    }
}

impl Config {
    /// The contract, in order: read the request (400, 413, 415); then by the route's kind, hold
    /// the site (503 `site_busy`) and, for a product, look the site up (404, 502, 503) and
    /// decide (409, or forward as an upgrade or a first provision). Then the route's mode
    /// settles what is stopped, and the decision is reported.
    pub(super) async fn check<B>(&self, request: Request<B>) -> Result<Forward<B>, Rejection>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let Read { mut request, named } = self.reader.read(request).await;
        // A client with no token of its own looks the site up with the caller's.
        let caller = self.shared.lookups.caller_token(request.headers());
        let verdict = match named {
            Ok(named) => self.judge(named, caller.as_ref()).await,
            Err(why) => Verdict::Stopped {
                why,
                site: None,
                product: None,
                hold: None,
            },
        };
        let outcome = match &verdict {
            Verdict::Stopped { why, .. } if !self.mode.forwards(why) => Outcome::Rejected,
            Verdict::Stopped { .. } if self.mode == Mode::Shadow => Outcome::Shadowed,
            Verdict::Stopped { .. } => Outcome::FailedOpen,
            _ => Outcome::Allowed,
        };
        self.report(&DecisionReport {
            outcome,
            admission: verdict.admission(),
            mode: self.mode,
            site: verdict.site(),
            product: verdict.product(),
            rejection: match &verdict {
                Verdict::Stopped { why, .. } => Some(why),
                _ => None,
            },
            lock_wait: verdict
                .hold()
                .filter(|hold| hold.permit.is_some())
                .map(|hold| hold.waited),
            latency: started.elapsed(),
        });
        if let Some(site) = verdict.site().filter(|_| outcome != Outcome::Rejected) {
            // What is forwarded may change the site's paths: nobody here may reuse these, under
            // any of its names, whatever it answers (and again when it ends: see `SiteHold`).
            // Other processes need telling only of a cancel: a provision only takes products
            // off a site's paths, so their cached refusals stay true.
            let only;
            let names = match verdict.hold() {
                Some(hold) => &hold.names,
                None => {
                    only = HeldNames::only(site);
                    &only
                }
            };
            // A cancel's forget, told everywhere, also forgets the provisions remembered of the
            // site: what it gives back is an upgrade again at once.
            self.shared.forget_names(names, self.cancels);
        }
        let admission = verdict.admission();
        if let (Some(admission), Some(site)) = (admission, verdict.site()) {
            // A handler relays what was held, never its own reading of the request.
            request.extensions_mut().insert(site.clone());
            request.extensions_mut().insert(admission);
        }
        let forwarded_site = verdict.site().cloned();
        let (hold, bypass) = match verdict {
            Verdict::Stopped { why, .. } if outcome == Outcome::Rejected => return Err(why),
            Verdict::Upgrade {
                site,
                product,
                mut hold,
            }
            | Verdict::Unjudged {
                site,
                product,
                mut hold,
            }
            | Verdict::FirstProvision {
                site,
                product,
                mut hold,
            } => {
                // Remembered when it ends, unless its answer says it failed (see `recent.rs`).
                hold.provision = Some(product.clone());
                request.extensions_mut().insert(Checked {
                    site,
                    product,
                    admission: admission.unwrap_or(Admission::Upgrade),
                });
                (Some(hold), None)
            }
            Verdict::Connection { hold, .. } | Verdict::Cancellation { hold, .. } => {
                (Some(hold), None)
            }
            Verdict::Stopped {
                why,
                site,
                product,
                hold,
            } => {
                let bypass = Bypass {
                    mode: self.mode,
                    status: why.status(),
                    code: why.code(),
                    message: why.to_string(),
                    site,
                    product,
                };
                request.extensions_mut().insert(bypass.clone());
                (hold, Some(bypass))
            }
        };
        let hold = match forwarded_site {
            Some(site) => Some(SiteHold::forgetting(
                hold,
                &self.shared,
                &site,
                self.cancels,
            )),
            None => hold,
        };
        Ok(Forward {
            request,
            permit: hold.map(Box::new),
            bypass,
        })
    }

    /// The route's verdict on a request it could read.
    /// `caller` is the request's bearer token when the client uses the caller's token.
    async fn judge(&self, named: Named, caller: Option<&Token>) -> Verdict {
        // A request that cannot be looked up (or relayed: the route passes the caller's token
        // on) holds nothing, whatever kind it is.
        if caller.is_none() && self.shared.lookups.client().uses_caller_token() {
            return Verdict::stopped(Rejection::Upstream(LookupError::MissingToken), named, None);
        }
        if self.cancels {
            return match self.hold(&named.site, Provides::Nothing).await {
                Ok(hold) => Verdict::Cancellation {
                    site: named.site,
                    hold,
                },
                Err(why) => Verdict::stopped(why, named, None),
            };
        }
        let product = match named.product.as_deref() {
            None if self.require_product => {
                return Verdict::stopped(Rejection::MissingProduct, named, None);
            }
            // `free` is never in any upgrade paths, yet provisions nothing: on a route that
            // requires a product it is checked (and refused) like any other.
            None => None,
            Some(FREE) if !self.require_product => None,
            Some(product) => Some(product.to_owned()),
        };
        let Some(product) = product else {
            return match self.hold(&named.site, Provides::Nothing).await {
                Ok(hold) => Verdict::Connection {
                    site: named.site,
                    product: named.product,
                    hold,
                },
                Err(why) => Verdict::stopped(why, named, None),
            };
        };
        // A refusal already known (cached, or the answer of a lookup under way) needs no lock: it
        // never forwards, and what could make it untrue (a cancel) forgets the site when it ends.
        let lookups = &self.shared.lookups;
        // `Err`: the request lacks the bearer token its lookup needs, or that token was refused
        // a moment ago.
        match lookups.known_refusal(&named.site, &product, caller).await {
            Ok(Some(paths)) => {
                if let Some(why) = self.refusal(&named.site, &product, paths) {
                    return Verdict::stopped(why, named, None);
                }
            }
            Err(why) => return Verdict::stopped(Rejection::Upstream(why), named, None),
            Ok(None) => {}
        }
        let hold = match self.hold(&named.site, Provides::Product).await {
            Ok(hold) => hold,
            Err(why) => return Verdict::stopped(why, named, None),
        };
        // The same provision again while the last one settles: done already, not a downgrade.
        if self.shared.recent.provisioned(&hold.names, &product) {
            let why = Rejection::AlreadyProvisioned {
                site: named.site.clone(),
                product: product.clone(),
            };
            return Verdict::stopped(why, named, Some(hold));
        }
        let site = named.site;
        let paths = match self.settled_lookup(&hold, &site, &product, caller).await {
            Ok(paths) => paths,
            Err(why) => {
                return Verdict::Stopped {
                    why,
                    site: Some(site),
                    product: Some(product),
                    hold: Some(hold),
                };
            }
        };
        match paths {
            Ok(paths) => {
                let catalogue = &self.shared.catalogue;
                catalogue.learn(&paths);
                match (catalogue.judge(&paths, &product), self.unjudged) {
                    (Judgement::Listed, _) => Verdict::Upgrade {
                        site,
                        product,
                        hold,
                    },
                    (Judgement::NotJudged, UnjudgedProducts::Forward) => Verdict::Unjudged {
                        site,
                        product,
                        hold,
                    },
                    (Judgement::Refused | Judgement::NotJudged, _) => Verdict::Stopped {
                        why: self
                            .refusal(&site, &product, paths)
                            .expect("a product not listed, judged or refused unjudged"),
                        site: Some(site),
                        product: Some(product),
                        hold: Some(hold),
                    },
                }
            }
            // A site named by URL that WordPress.com does not know holds nothing: this provision
            // is its first, and registers it. Held like any provision, so a second first
            // provision waits and is checked against what this one left. Forwarded unchecked, so
            // only once a second endpoint agrees that the site is unknown (see `upstream/status.rs`).
            Err(LookupError::UnknownSite)
                if site.kind() == SiteKind::Url
                    && self.unknown_sites == UnknownSites::FirstProvision =>
            {
                // Boxed: a first provision's second call is rare, and inline its future (a whole
                // GET and read) would double the judging's, which every check carries.
                let confirmed = Box::pin(lookups.client().confirms_unknown(&site, caller)).await;
                let why = match confirmed {
                    Ok(true) => {
                        return Verdict::FirstProvision {
                            site,
                            product,
                            hold,
                        };
                    }
                    Ok(false) => {
                        tracing::warn!(
                            %site,
                            "upgrade-paths answered invalid_blog for a site WordPress.com's status \
                             knows: not forwarded as a first provision"
                        );
                        LookupError::Status {
                            status: StatusCode::FORBIDDEN,
                            retry_after: None,
                        }
                    }
                    Err(error) => error,
                };
                Verdict::Stopped {
                    why: Rejection::Upstream(why),
                    site: Some(site),
                    product: Some(product),
                    hold: Some(hold),
                }
            }
            // A blog ID exists only once WordPress.com knows the site.
            Err(LookupError::UnknownSite) => Verdict::Stopped {
                why: Rejection::UnknownSite { site: site.clone() },
                site: Some(site),
                product: Some(product),
                hold: Some(hold),
            },
            Err(error) => Verdict::Stopped {
                why: Rejection::Upstream(error),
                site: Some(site),
                product: Some(product),
                hold: Some(hold),
            },
        }
    }

    /// Counts, logs and hands the decision to the partner's callback.
    fn report(&self, report: &DecisionReport<'_>) {
        let stats = &self.shared.stats;
        match report.outcome {
            Outcome::Rejected => stats.rejected(),
            _ => stats.forwarded(),
        }
        let site = report.site.map(Site::as_str);
        let code = report.rejection.map(Rejection::code);
        let latency_ms = report.latency.as_secs_f64() * 1000.0;
        let (outcome, mode) = (report.outcome.as_str(), report.mode.as_str());
        match (report.outcome, report.rejection) {
            (Outcome::Allowed, _) => {
                let admission = report.admission.map(Admission::as_str);
                let message = match report.admission {
                    Some(Admission::FirstProvision) => "first provision of a new site forwarded",
                    Some(Admission::Connection) => "connection request forwarded (no product)",
                    Some(Admission::Cancellation) => "cancellation forwarded",
                    Some(Admission::Unjudged) => {
                        "product not judged by the site's upgrade paths forwarded"
                    }
                    _ => "upgrade allowed",
                };
                tracing::info!(
                    site,
                    product = report.product,
                    outcome,
                    admission,
                    mode,
                    latency_ms,
                    "{message}"
                );
            }
            (Outcome::Rejected, Some(why)) if why.status().is_client_error() => {
                tracing::info!(site, product = report.product, outcome, mode, code, latency_ms, reason = %why, "request stopped");
            }
            (outcome_kind, _) => {
                let message = match outcome_kind {
                    Outcome::Rejected => "request stopped: the guard could not check it",
                    _ => "forwarded although the guard would have stopped it",
                };
                tracing::warn!(
                    site,
                    product = report.product,
                    outcome,
                    mode,
                    code,
                    latency_ms,
                    reason = report.rejection.map(tracing::field::display),
                    "{message}"
                );
            }
        }
        if let Some(callback) = &self.on_decision {
            callback(report);
        }
    }

    /// Looks the held site up until the answer shows every provision of it forwarded within the
    /// settling window (see `recent.rs`), where the answer would forward the request: nothing is
    /// forwarded on an answer that does not show the provision just made. A refusal needs no
    /// such answer (a provision only takes products off a site's paths). Asks again after a
    /// short pause, doubling, within what is left of the route's lock wait; past it, 503
    /// `provision_settling`.
    async fn settled_lookup(
        &self,
        hold: &SiteHold,
        site: &Site,
        product: &str,
        caller: Option<&Token>,
    ) -> Result<Result<Arc<UpgradePaths>, LookupError>, Rejection> {
        let lookups = &self.shared.lookups;
        let deadline = Instant::now() + self.lock_wait.saturating_sub(hold.waited);
        let mut pause = Duration::from_millis(50);
        loop {
            // Only a lookup that read the site after the previous provision ended. The cache is
            // read again under the lock, whether the lock was free or not: between the read
            // before it and the lock, another request may have finished a lookup and cached its
            // refusal, which then costs no second upstream call.
            let fresh_from = lookups.mark();
            let answer = lookups
                .upgrade_paths(site, product, caller, fresh_from)
                .await;
            let seen = match &answer {
                Ok(paths) if self.forwards_on(paths, product) => Seen::Paths(paths),
                Err(LookupError::UnknownSite) => Seen::UnknownSite,
                _ => return Ok(answer),
            };
            if !self.shared.recent.stale(&hold.names, seen) {
                return Ok(answer);
            }
            if Instant::now() + pause > deadline {
                tracing::info!(%site, product, "the site's answers do not show a provision just made yet");
                return Err(Rejection::ProvisionSettling { site: site.clone() });
            }
            tracing::debug!(%site, product, ?pause, "a stale answer: asking again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Whether this route forwards `product` on `paths`: listed, or not judged and forwarded.
    fn forwards_on(&self, paths: &UpgradePaths, product: &str) -> bool {
        match self.shared.catalogue.judge(paths, product) {
            Judgement::Listed => true,
            Judgement::NotJudged => self.unjudged == UnjudgedProducts::Forward,
            Judgement::Refused => false,
        }
    }

    /// Holds the site under every name it goes by (a lookup until a name is known), counting the
    /// requests that had to wait.
    async fn hold(&self, site: &Site, provides: Provides) -> Result<SiteHold, Rejection> {
        let shared = &self.shared;
        let names = match shared.names.of(site, shared.lookups.client()).await {
            Ok(names) => names,
            // Nothing is provisioned: the name given is enough to hold (a cancel, a repair,
            // which a failing site lookup must not block).
            Err(error) if provides == Provides::Nothing => {
                tracing::warn!(%site, error = %crate::rejection::Chain(&error), "the site lookup failed; held under the name given");
                SiteNames::given(site)
            }
            Err(error) => return Err(Rejection::Upstream(error)),
        };
        let mut permit: Option<SitePermit> = None;
        let mut waited = Duration::ZERO;
        for name in names.iter() {
            let (taken, wait) = self.lock(name, self.lock_wait.saturating_sub(waited)).await;
            waited += wait;
            let taken = match taken {
                Ok(taken) => taken,
                Err(error) => {
                    shared.stats.site_busy();
                    return Err(Rejection::SiteBusy(error));
                }
            };
            // Freed together, in the order they were taken.
            permit = Some(match permit {
                None => taken,
                Some(held) => SitePermit::new((held, taken)),
            });
        }
        if !waited.is_zero() {
            shared.stats.lock_waited(waited);
        }
        Ok(SiteHold {
            names,
            forget: None,
            waited,
            permit,
            provision: None,
            answered: None,
        })
    }

    /// Takes one name's lock, waiting at most `wait`; says how long it waited.
    async fn lock(&self, site: &Site, wait: Duration) -> (Result<SitePermit, LockError>, Duration) {
        // Bounded here too, so a lock implementation that overstays its wait cannot hang requests;
        // the margin leaves a shared lock time to finish its last attempt and report it.
        let bound = wait.saturating_add(Duration::from_secs(5));
        let mut acquire = self.shared.locks.acquire(site, wait);
        // A free site's lock is taken on the first poll: no timer for that (registering one and
        // taking it off the timer wheel again costs more than taking the lock). Only a wait is
        // bounded, from its start.
        if let Some(acquired) = (&mut acquire).now_or_never() {
            return (acquired, Duration::ZERO);
        }
        let started = Instant::now();
        let acquired = tokio::time::timeout(bound, acquire)
            .await
            .unwrap_or(Err(LockError::Busy));
        let waited = started.elapsed();
        tracing::debug!(%site, ?waited, ok = acquired.is_ok(), "waited for the site's lock");
        (acquired, waited)
    }
}

impl Config {
    /// Why the route refuses `product` on `site`, given an answer that does not list it: 409
    /// when the answer judges it, or when the route takes only judged products; `None` when the
    /// route forwards what the answer does not judge.
    fn refusal(&self, site: &Site, product: &str, paths: Arc<UpgradePaths>) -> Option<Rejection> {
        match (self.shared.catalogue.judge(&paths, product), self.unjudged) {
            (Judgement::Listed, _) | (Judgement::NotJudged, UnjudgedProducts::Forward) => None,
            (Judgement::Refused, _) => Some(Rejection::NotAnUpgrade {
                site: site.clone(),
                product: product.to_owned(),
                upgrade_paths: paths,
            }),
            (Judgement::NotJudged, UnjudgedProducts::Refuse) => Some(Rejection::NotJudged {
                site: site.clone(),
                product: product.to_owned(),
            }),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("shared", &self.shared)
            .field("reader", &self.reader)
            .field("lock_wait", &self.lock_wait)
            .field("mode", &self.mode)
            .field("on_decision", &self.on_decision.as_ref().map(|_| ".."))
            .field("require_product", &self.require_product)
            .field("unknown_sites", &self.unknown_sites)
            .field("unjudged", &self.unjudged)
            .field("cancels", &self.cancels)
            .field("after_drop", &self.after_drop)
            .finish()
    }
}
