//! What a route decided for one request.

use super::hold::Hold;
use crate::decision::Admission;
use crate::rejection::Rejection;
use crate::request::Named;
use crate::site::Site;

/// What was read, the site held, and what was decided.
pub(super) struct Verdict {
    /// The site, when the request named a valid one.
    pub(super) site: Option<Site>,
    /// The product, when the request named one.
    pub(super) product: Option<String>,
    /// The site held, when the guard got that far.
    pub(super) hold: Option<Hold>,
    pub(super) decision: Decision,
}

/// Forward the request, for a reason; or stop it (unless the route's mode forwards it all the
/// same).
pub(super) enum Decision {
    Forward(Admission),
    Stop(Rejection),
}

impl Verdict {
    /// A request the guard could not read.
    pub(super) fn unread(why: Rejection) -> Self {
        Self {
            site: None,
            product: None,
            hold: None,
            decision: Decision::Stop(why),
        }
    }

    /// A request stopped for `why`.
    pub(super) fn stopped(why: Rejection, named: Named, hold: Option<Hold>) -> Self {
        Self::new(named, hold, Decision::Stop(why))
    }

    /// A request forwarded as `admission`, its site held.
    pub(super) fn forward(admission: Admission, named: Named, hold: Hold) -> Self {
        Self::new(named, Some(hold), Decision::Forward(admission))
    }

    fn new(named: Named, hold: Option<Hold>, decision: Decision) -> Self {
        Self {
            site: Some(named.site),
            product: named.product,
            hold,
            decision,
        }
    }

    /// Why the route lets the request through, when it does on its merits.
    pub(super) fn admission(&self) -> Option<Admission> {
        match self.decision {
            Decision::Forward(admission) => Some(admission),
            Decision::Stop(_) => None,
        }
    }

    /// Why the guard stops (or would stop) the request.
    pub(super) fn rejection(&self) -> Option<&Rejection> {
        match &self.decision {
            Decision::Forward(_) => None,
            Decision::Stop(why) => Some(why),
        }
    }
}
