//! The check pipeline: what one route does with one request, in the order of the contract.
//!
//! [`Config::check`] reads the request, [`judge`](Config::judge)s it into a [`Verdict`], lets
//! the route's [`Mode`] settle what is stopped, reports the decision, and hands the future a
//! [`Forward`] or a [`Rejection`].

use super::detached::DetachedRoute;
use super::hold::{Cancel, Hold, Provides};
use super::report::{Forwarded, Reporter};
use super::shared::Shared;
use super::verdict::{Decision, Verdict};
use crate::body::GuardBody;
use crate::catalogue::{Judgement, UnjudgedProducts};
use crate::decision::{Admission, Bypass, Checked, DecisionReport, Mode, Outcome, UnknownSites};
use crate::lock::LockError;
use crate::recent::Seen;
use crate::rejection::Rejection;
use crate::request::{Named, Read, RequestReader};
use crate::site::{Site, SiteKind};
use crate::upstream::{LookupError, Token, UpgradePaths};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Body;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The product slug WordPress.com's provision takes for "no paid product": it connects the site.
const FREE: &str = "free";

/// One route's configuration, around the shared state: the route's engine.
#[derive(Clone)]
pub(super) struct Config {
    pub(super) shared: Arc<Shared>,
    pub(super) reader: RequestReader,
    pub(super) lock_wait: Duration,
    pub(super) mode: Mode,
    pub(super) reporter: Reporter,
    /// Whether a request naming no product is 400 `missing_product` rather than a connection
    /// request.
    pub(super) require_product: bool,
    pub(super) unknown_sites: UnknownSites,
    /// What the route does with a product the site's answer does not judge.
    pub(super) unjudged: UnjudgedProducts,
    /// Whether the route changes a site's products other than by provisioning (a cancel).
    pub(super) cancels: bool,
    /// How a forwarded request whose client went away is finished.
    pub(super) detached: DetachedRoute,
}

/// A request to forward, with its site held until the inner service has answered, what the
/// guard would have answered had the route not let it through, and what the report of its end
/// names should its client go away.
pub(crate) struct Forward<B> {
    pub(super) request: Request<GuardBody<B>>,
    /// Boxed: the response future carries it while the inner service works, and a hold is
    /// larger than everything else the future keeps.
    pub(super) hold: Option<Box<Hold>>,
    pub(super) bypass: Option<Bypass>,
    pub(super) forwarded: Forwarded,
}

impl Config {
    /// The contract, in order: read the request (400, 408, 413, 415); judge it (see
    /// [`judge`](Self::judge)); let the route's mode settle what is stopped; report the decision;
    /// forward what is not rejected, its site held.
    pub(super) async fn check<B>(
        self: Arc<Self>,
        request: Request<B>,
    ) -> Result<Forward<B>, Rejection>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let Read { request, named } = self.reader.read(request).await;
        // A client with no token of its own looks the site up with the caller's.
        let caller = self.shared.lookups.caller_token(request.headers());
        let verdict = match named {
            Ok(named) => self.judge(named, caller.as_ref()).await,
            Err(why) => Verdict::unread(why),
        };
        let outcome = self.settle(&verdict);
        self.reporter.report(&DecisionReport {
            outcome,
            admission: verdict.admission(),
            mode: self.mode,
            site: verdict.site.as_ref(),
            product: verdict.product.as_deref(),
            rejection: verdict.rejection(),
            lock_wait: verdict.hold.as_ref().and_then(Hold::lock_wait),
            latency: started.elapsed(),
        });
        match (outcome, verdict.decision) {
            (Outcome::Rejected, Decision::Stop(why)) => Err(why),
            (_, decision) => Ok(self.forward(
                request,
                verdict.site,
                verdict.product,
                verdict.hold,
                decision,
            )),
        }
    }

    /// The route's verdict on a request it could read: hold the site (503 `site_busy`) and, for a
    /// product, look the site up (404, 502, 503) and decide (409, or forward as an upgrade, a
    /// product the answer does not judge, or a first provision).
    async fn judge(&self, named: Named, caller: Option<&Token>) -> Verdict {
        // A request that cannot be looked up (or relayed: the route passes the caller's token
        // on) holds nothing, whatever kind it is.
        if caller.is_none() && self.shared.lookups.client().uses_caller_token() {
            return Verdict::stopped(Rejection::Upstream(LookupError::MissingToken), named, None);
        }
        if self.cancels {
            return self.hold_for(named, Admission::Cancellation).await;
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
            return self.hold_for(named, Admission::Connection).await;
        };
        // A refusal already known (cached, or the answer of a lookup under way) needs no lock: it
        // never forwards, and what could make it untrue (a cancel) forgets the site when it ends.
        match self
            .shared
            .lookups
            .known_refusal(&named.site, &product, caller)
            .await
        {
            Ok(Some(paths)) => {
                if let Some(why) = self.refusal(&named.site, &product, paths) {
                    return Verdict::stopped(why, named, None);
                }
            }
            // The request lacks the bearer token its lookup needs, or that token was refused a
            // moment ago.
            Err(why) => return Verdict::stopped(Rejection::Upstream(why), named, None),
            Ok(None) => {}
        }
        let hold = match self.hold(&named.site, Provides::Product).await {
            Ok(hold) => hold,
            Err(why) => return Verdict::stopped(why, named, None),
        };
        // What the other processes remember of the site is read with the site held.
        if let Err(error) = self.shared.recent.recall(hold.names()).await {
            let why = Rejection::SiteBusy(LockError::Unavailable(Box::new(error)));
            return Verdict::stopped(why, named, Some(hold));
        }
        // The same provision again while the last one settles: done already, not a downgrade.
        if self.shared.recent.provisioned(hold.names(), &product) {
            let why = Rejection::AlreadyProvisioned {
                site: named.site.clone(),
                product,
            };
            return Verdict::stopped(why, named, Some(hold));
        }
        match self
            .settled_lookup(&hold, &named.site, &product, caller)
            .await
        {
            Ok(Ok(paths)) => self.decide(named, &product, paths, hold),
            Ok(Err(LookupError::UnknownSite)) => self.unknown_site(named, caller, hold).await,
            Ok(Err(error)) => Verdict::stopped(Rejection::Upstream(error), named, Some(hold)),
            Err(why) => Verdict::stopped(why, named, Some(hold)),
        }
    }

    /// Holds the site of a request that provisions nothing, to forward it as `admission`.
    async fn hold_for(&self, named: Named, admission: Admission) -> Verdict {
        match self.hold(&named.site, Provides::Nothing).await {
            Ok(hold) => Verdict::forward(admission, named, hold),
            Err(why) => Verdict::stopped(why, named, None),
        }
    }

    /// Holds `site` within the route's lock wait.
    async fn hold(&self, site: &Site, provides: Provides) -> Result<Hold, Rejection> {
        Hold::take(&self.shared, site, provides, self.lock_wait).await
    }

    /// The decision on `product` from the held site's current `paths`.
    fn decide(&self, named: Named, product: &str, paths: Arc<UpgradePaths>, hold: Hold) -> Verdict {
        let catalogue = &self.shared.catalogue;
        catalogue.learn(&paths);
        match (catalogue.judge(&paths, product), self.unjudged) {
            (Judgement::Listed, _) => Verdict::forward(Admission::Upgrade, named, hold),
            (Judgement::NotJudged, UnjudgedProducts::Forward) => {
                Verdict::forward(Admission::Unjudged, named, hold)
            }
            (Judgement::Refused | Judgement::NotJudged, _) => {
                let why = self
                    .refusal(&named.site, product, paths)
                    .expect("a product not listed, judged or refused unjudged");
                Verdict::stopped(why, named, Some(hold))
            }
        }
    }

    /// A held site WordPress.com does not know. Named by URL, on a route that lets first
    /// provisions through, the provision registers it: forwarded unchecked, so only once a
    /// second endpoint agrees that the site is unknown (see `upstream/status.rs`), and held like
    /// any provision, so a second first provision waits and is checked against what this one
    /// left. A blog ID exists only once WordPress.com knows the site: 404.
    async fn unknown_site(&self, named: Named, caller: Option<&Token>, hold: Hold) -> Verdict {
        if named.site.kind() != SiteKind::Url || self.unknown_sites != UnknownSites::FirstProvision
        {
            let why = Rejection::UnknownSite {
                site: named.site.clone(),
            };
            return Verdict::stopped(why, named, Some(hold));
        }
        // Boxed: a first provision's second call is rare, and inline its future (a whole GET and
        // read) would double the judging's, which every check carries.
        let client = self.shared.lookups.client();
        let why = match Box::pin(client.confirms_unknown(&named.site, caller)).await {
            Ok(true) => return Verdict::forward(Admission::FirstProvision, named, hold),
            Ok(false) => {
                log_unknown_but_known(&named.site);
                LookupError::Status {
                    status: StatusCode::FORBIDDEN,
                    retry_after: None,
                }
            }
            Err(error) => error,
        };
        Verdict::stopped(Rejection::Upstream(why), named, Some(hold))
    }

    /// What becomes of `verdict` on this route: a stop is rejected, or forwarded all the same by
    /// the route's mode.
    fn settle(&self, verdict: &Verdict) -> Outcome {
        match &verdict.decision {
            Decision::Forward(_) => Outcome::Allowed,
            Decision::Stop(why) if !self.mode.forwards(why) => Outcome::Rejected,
            Decision::Stop(_) if self.mode == Mode::Shadow => Outcome::Shadowed,
            Decision::Stop(_) => Outcome::FailedOpen,
        }
    }

    /// The request as the inner service gets it: marked with what the guard held and decided
    /// (a handler relays that, never its own reading), its site held until it ends.
    fn forward<B>(
        &self,
        mut request: Request<GuardBody<B>>,
        site: Option<Site>,
        product: Option<String>,
        hold: Option<Hold>,
        decision: Decision,
    ) -> Forward<B> {
        let extensions = request.extensions_mut();
        let (admission, bypass) = match decision {
            Decision::Forward(admission) => {
                if let Some(site) = &site {
                    extensions.insert(site.clone());
                }
                extensions.insert(admission);
                (Some(admission), None)
            }
            Decision::Stop(why) => {
                let bypass = Bypass {
                    mode: self.mode,
                    status: why.status(),
                    code: why.code(),
                    message: why.to_string(),
                    site: site.clone(),
                    product: product.clone(),
                };
                extensions.insert(bypass.clone());
                (None, Some(bypass))
            }
        };
        let provision = match (admission, &site, &product) {
            (Some(admission), Some(site), Some(product)) if admission.provisions() => {
                extensions.insert(Checked {
                    site: site.clone(),
                    product: product.clone(),
                    admission,
                });
                Some(product.clone())
            }
            // Let through unchecked by the route's mode: the guard could not tell, yet the
            // provision may land all the same. Remembered like a checked one, so that an answer
            // that does not show it yet cannot let a downgrade or a repeat of it through.
            (None, Some(_), Some(product))
                if !self.cancels && (self.require_product || product != FREE) =>
            {
                Some(product.clone())
            }
            _ => None,
        };
        // What is forwarded may change the site's paths: nobody may reuse what was read of them,
        // under any of its names, now and when it ends (see `Hold`).
        let cancel = self.cancels.then(|| Cancel {
            answer_in_body: asks_for_an_envelope(request.uri()),
        });
        let hold = site.as_ref().map(|site| {
            let mut hold = hold.unwrap_or_else(|| Hold::unlocked(site));
            hold.forwarded(&self.shared, cancel, provision);
            Box::new(hold)
        });
        let forwarded = Forwarded {
            product: if admission.is_some_and(|admission| !admission.provisions()) {
                None
            } else {
                product
            },
            site,
            admission,
            mode: self.mode,
            at: Instant::now(),
            ceiling: self.detached.ceiling,
        };
        Forward {
            request,
            hold,
            bypass,
            forwarded,
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
        hold: &Hold,
        site: &Site,
        product: &str,
        caller: Option<&Token>,
    ) -> Result<Result<Arc<UpgradePaths>, LookupError>, Rejection> {
        let lookups = &self.shared.lookups;
        let waited = hold.lock_wait().unwrap_or_default();
        let deadline = Instant::now() + self.lock_wait.saturating_sub(waited);
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
            if !self.shared.recent.stale(hold.names(), seen) {
                return Ok(answer);
            }
            if Instant::now() + pause > deadline {
                log_settling(site, product, None);
                return Err(Rejection::ProvisionSettling { site: site.clone() });
            }
            log_settling(site, product, Some(pause));
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

/// Whether a request's query could ask WordPress.com for its envelope (`http_envelope`, see
/// DESIGN): then WordPress.com answers 200 whatever happened, the status inside the body.
/// Any mention of it, or any escape that could spell it, counts.
fn asks_for_an_envelope(uri: &http::Uri) -> bool {
    uri.query()
        .is_some_and(|query| query.contains('%') || query.to_ascii_lowercase().contains("envelope"))
}

// The logs of the check's futures are out of line: a `tracing` macro expanded in an `async fn`
// grows its future, which every request carries (see `log_lookup` in `cache.rs`).

#[cold]
fn log_unknown_but_known(site: &Site) {
    tracing::warn!(
        %site,
        "upgrade-paths answered invalid_blog for a site WordPress.com's status knows: not \
         forwarded as a first provision"
    );
}

/// A stale answer: asked again after `pause`, or past the lock wait (`None`).
#[cold]
fn log_settling(site: &Site, product: &str, pause: Option<Duration>) {
    match pause {
        Some(pause) => tracing::debug!(%site, product, ?pause, "a stale answer: asking again"),
        None => tracing::info!(
            %site,
            product,
            "the site's answers do not show a provision just made yet"
        ),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("shared", &self.shared)
            .field("reader", &self.reader)
            .field("lock_wait", &self.lock_wait)
            .field("mode", &self.mode)
            .field(
                "on_decision",
                &self.reporter.on_decision.as_ref().map(|_| ".."),
            )
            .field("require_product", &self.require_product)
            .field("unknown_sites", &self.unknown_sites)
            .field("unjudged", &self.unjudged)
            .field("cancels", &self.cancels)
            .field("detached", &self.detached)
            .finish()
    }
}
