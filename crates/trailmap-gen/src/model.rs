//! The journey model: a stage-structured Markov chain over touchpoints, and the ground truth
//! it publishes.
//!
//! The chain is first-order on purpose: its transition probabilities are then exactly what a
//! directly-follows graph mined from the generated data estimates, so tests and benchmarks
//! can compare mined results with [`Truth`] directly.
//!
//! Identity consistency is enforced by the shape of the graph rather than by rejecting
//! samples (rejection would skew the observed frequencies away from the published ones):
//! - the *prospect* touchpoints (anonymous browsing) lead only to each other or to a touchpoint
//!   that reveals who the customer is (`signup`, `demo_requested`);
//! - every ticket and CRM touchpoint is reachable only through such a revealing touchpoint, so
//!   an email exists before any ticket or CRM record is written;
//! - ticket updates are reachable only through `ticket_opened`, so an update always has a
//!   ticket to refer to.
//!
//! [`JourneyModel::new`] checks these properties, so the generator can rely on them.

use crate::journey::GenOptions;
use serde::Serialize;
use std::path::Path;
use trailmap_model::config::SourceKind;
use trailmap_model::{Error, Result};

/// What a touchpoint teaches the sources about who the customer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveals {
    Nothing,
    /// The customer types an email (a demo request form): clickstream carries `traits.email`.
    Email,
    /// The customer creates an account: they get a `userId` and an `identify` call ties the
    /// device, the account and the email together.
    Account,
}

/// Where a path's dynamic tail comes from (`/blog/<slug>`, `/product/<id>`).
#[derive(Debug, Clone, Copy)]
pub enum PathTail {
    None,
    /// One of these segments, uniformly.
    Pick(&'static [&'static str]),
    /// A numeric id in `1..=max`.
    Number(u32),
}

/// The raw record a touchpoint produces, in the shape of its source.
#[derive(Debug, Clone, Copy)]
pub enum Emit {
    /// A Segment `track` call with this event name.
    Track {
        event: &'static str,
        channel: &'static str,
    },
    /// A Segment `page` call; the path is `path` followed by `/<tail>` when there is one.
    Page {
        name: &'static str,
        path: &'static str,
        tail: PathTail,
    },
    /// A help-desk ticket update with this status. `opens` starts a new ticket (with a channel
    /// drawn from [`TICKET_CHANNELS`]); other updates refer to the customer's latest ticket.
    Ticket { status: &'static str, opens: bool },
    /// A CRM stage change on a contact or a deal.
    Crm {
        stage: &'static str,
        object: CrmObject,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CrmObject {
    Contact,
    Deal,
}

impl CrmObject {
    pub fn as_str(self) -> &'static str {
        match self {
            CrmObject::Contact => "contact",
            CrmObject::Deal => "deal",
        }
    }
}

/// Channels a ticket can arrive through; drawn uniformly per ticket.
pub const TICKET_CHANNELS: [&str; 3] = ["email", "chat", "phone"];

impl Emit {
    pub fn source(&self) -> SourceKind {
        match self {
            Emit::Track { .. } | Emit::Page { .. } => SourceKind::Clickstream,
            Emit::Ticket { .. } => SourceKind::Ticket,
            Emit::Crm { .. } => SourceKind::Crm,
        }
    }

    /// The channel as the truth file states it; ticket channels vary per ticket.
    pub fn channel_label(&self) -> String {
        match self {
            Emit::Track { channel, .. } => (*channel).to_string(),
            Emit::Page { .. } => "web".to_string(),
            Emit::Ticket { .. } => TICKET_CHANNELS.join("|"),
            Emit::Crm { .. } => "sales".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Touchpoint {
    pub name: &'static str,
    pub stage: &'static str,
    pub emit: Emit,
    pub reveals: Reveals,
}

/// A first-order Markov chain over touchpoints with an explicit exit probability per
/// touchpoint. Each row (transitions plus exit) sums to one.
#[derive(Debug, Clone)]
pub struct JourneyModel {
    touchpoints: Vec<Touchpoint>,
    start: Vec<f64>,
    /// `transitions[from][to]`, dense: 28 touchpoints make a tiny matrix.
    transitions: Vec<Vec<f64>>,
    exit: Vec<f64>,
    /// Cumulative rows for sampling: `start_cdf[k]` and `next_cdf[from][k]` are running sums
    /// in touchpoint order; anything beyond the last entry of a row means exit.
    start_cdf: Vec<f64>,
    next_cdf: Vec<Vec<f64>>,
    /// Steps taken from an event in `[starts, ends)` (µs) are drawn from this model instead:
    /// a known change of behaviour, for testing what should notice it (alerts).
    dip: Option<Box<Dip>>,
}

#[derive(Debug, Clone)]
struct Dip {
    starts: i64,
    ends: i64,
    /// Only steps taken on this kind of device, when set.
    device: Option<String>,
    model: JourneyModel,
}

/// How far a row may stray from summing to one (hand-written decimals).
const SUM_TOLERANCE: f64 = 1e-9;

impl JourneyModel {
    /// Builds a model and checks it: probabilities in `[0, 1]`, every row (with exit) and the
    /// start distribution summing to one, and the identity rules described in the module docs.
    pub fn new(
        touchpoints: Vec<Touchpoint>,
        start: Vec<f64>,
        transitions: Vec<Vec<f64>>,
        exit: Vec<f64>,
    ) -> Result<JourneyModel> {
        let n = touchpoints.len();
        if start.len() != n || exit.len() != n || transitions.len() != n {
            return Err(Error::Other(format!(
                "journey model: {n} touchpoints but {} start, {} exit and {} transition rows",
                start.len(),
                exit.len(),
                transitions.len()
            )));
        }
        let check_row = |what: &str, row: &[f64], extra: f64| -> Result<()> {
            if row.len() != n || row.iter().chain([&extra]).any(|p| !(0.0..=1.0).contains(p)) {
                return Err(Error::Other(format!(
                    "journey model: {what} needs {n} probabilities in [0, 1]"
                )));
            }
            let sum: f64 = row.iter().sum::<f64>() + extra;
            if (sum - 1.0).abs() > SUM_TOLERANCE {
                return Err(Error::Other(format!(
                    "journey model: {what} sums to {sum}, not 1"
                )));
            }
            Ok(())
        };
        check_row("the start distribution", &start, 0.0)?;
        for (i, row) in transitions.iter().enumerate() {
            check_row(&format!("row `{}`", touchpoints[i].name), row, exit[i])?;
        }

        let cdf = |row: &[f64]| {
            row.iter()
                .scan(0.0, |acc, p| {
                    *acc += p;
                    Some(*acc)
                })
                .collect::<Vec<f64>>()
        };
        let model = JourneyModel {
            start_cdf: cdf(&start),
            next_cdf: transitions.iter().map(|r| cdf(r)).collect(),
            touchpoints,
            start,
            transitions,
            exit,
            dip: None,
        };
        model.check_identity_rules()?;
        Ok(model)
    }

    /// Touchpoints reachable from the start without passing through any touchpoint for which
    /// `gate` holds (gated touchpoints themselves are reachable, but not expanded).
    fn reachable_without(&self, gate: impl Fn(&Touchpoint) -> bool) -> Vec<bool> {
        let n = self.touchpoints.len();
        let mut seen = vec![false; n];
        let mut stack: Vec<usize> = (0..n).filter(|&i| self.start[i] > 0.0).collect();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) || gate(&self.touchpoints[i]) {
                continue;
            }
            stack.extend((0..n).filter(|&j| self.transitions[i][j] > 0.0 && !seen[j]));
        }
        seen
    }

    fn check_identity_rules(&self) -> Result<()> {
        for t in &self.touchpoints {
            if t.reveals != Reveals::Nothing && t.emit.source() != SourceKind::Clickstream {
                return Err(Error::Other(format!(
                    "journey model: `{}` reveals the customer but is not a clickstream touchpoint, \
                     so nothing would tie the visitor's device to the email",
                    t.name
                )));
            }
        }
        let anonymous = self.reachable_without(|t| t.reveals != Reveals::Nothing);
        for (t, &reached) in self.touchpoints.iter().zip(&anonymous) {
            if reached
                && t.reveals == Reveals::Nothing
                && t.emit.source() != SourceKind::Clickstream
            {
                return Err(Error::Other(format!(
                    "journey model: `{}` can happen before the customer is known",
                    t.name
                )));
            }
        }
        let opens = |t: &Touchpoint| matches!(t.emit, Emit::Ticket { opens: true, .. });
        let ticketless = self.reachable_without(opens);
        for (t, &reached) in self.touchpoints.iter().zip(&ticketless) {
            if reached && matches!(t.emit, Emit::Ticket { opens: false, .. }) {
                return Err(Error::Other(format!(
                    "journey model: `{}` can happen before any ticket was opened",
                    t.name
                )));
            }
        }
        Ok(())
    }

    /// This model, except that from `starts` until `ends` (µs, the time of the step's
    /// event) customers go from `from` to `to` `factor` times as often; the difference goes
    /// to exiting.
    /// The ground truth ([`truth`](Self::truth)) stays the undipped model's.
    pub fn with_dip(
        self,
        from: &str,
        to: &str,
        factor: f64,
        starts: i64,
        ends: i64,
    ) -> Result<JourneyModel> {
        self.with_dip_on(from, to, factor, starts, ends, None)
    }

    /// [`with_dip`](Self::with_dip), only for steps taken on one kind of device
    /// ([`DEVICE_TYPES`](crate::journey::DEVICE_TYPES)): a dip a breakdown should find.
    pub fn with_dip_on(
        mut self,
        from: &str,
        to: &str,
        factor: f64,
        starts: i64,
        ends: i64,
        device: Option<&str>,
    ) -> Result<JourneyModel> {
        if let Some(d) = device
            && !crate::journey::DEVICE_TYPES.iter().any(|(k, _)| *k == d)
        {
            return Err(Error::Other(format!(
                "dip: `{d}` is not a device kind (kinds: {})",
                crate::journey::DEVICE_TYPES
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let index = |name: &str| {
            self.index_of(name).ok_or_else(|| {
                Error::Other(format!(
                    "dip: `{name}` is not a touchpoint of the journey model"
                ))
            })
        };
        let (a, b) = (index(from)?, index(to)?);
        if self.transitions[a][b] <= 0.0 {
            return Err(Error::Other(format!(
                "dip: the model never goes from `{from}` to `{to}`"
            )));
        }
        if !(0.0..=1.0).contains(&factor) {
            return Err(Error::Other(format!(
                "dip: the factor {factor} must be between 0 and 1"
            )));
        }
        let mut transitions = self.transitions.clone();
        let mut exit = self.exit.clone();
        let lost = transitions[a][b] * (1.0 - factor);
        transitions[a][b] -= lost;
        exit[a] += lost;
        let dipped = JourneyModel::new(
            self.touchpoints.clone(),
            self.start.clone(),
            transitions,
            exit,
        )?;
        self.dip = Some(Box::new(Dip {
            starts,
            ends,
            device: device.map(str::to_string),
            model: dipped,
        }));
        Ok(self)
    }

    /// The model a step from an event at `ts` (µs) on a `device` is drawn from.
    pub(crate) fn at(&self, ts: i64, device: &str) -> &JourneyModel {
        match &self.dip {
            Some(d)
                if (d.starts..d.ends).contains(&ts)
                    && d.device.as_deref().is_none_or(|k| k == device) =>
            {
                &d.model
            }
            _ => self,
        }
    }

    pub fn touchpoints(&self) -> &[Touchpoint] {
        &self.touchpoints
    }

    pub fn start(&self) -> &[f64] {
        &self.start
    }

    /// `p(from → to)`; the exit probability is [`JourneyModel::exit`].
    pub fn transition(&self, from: usize, to: usize) -> f64 {
        self.transitions[from][to]
    }

    pub fn exit(&self, from: usize) -> f64 {
        self.exit[from]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.touchpoints.iter().position(|t| t.name == name)
    }

    /// Draws a touchpoint from a cumulative row given a uniform `u` in `[0, 1)`; `None` when
    /// `u` falls past the row's total (the exit, or rounding slack on the start row).
    fn pick(cdf: &[f64], u: f64) -> Option<usize> {
        let k = cdf.partition_point(|&c| c <= u);
        (k < cdf.len()).then_some(k)
    }

    /// The first touchpoint for a uniform draw `u` in `[0, 1)`.
    pub(crate) fn first(&self, u: f64) -> usize {
        // Rounding can leave the start row's total a hair below one; such a draw belongs to
        // the last touchpoint with a positive start probability.
        Self::pick(&self.start_cdf, u).unwrap_or_else(|| {
            self.start
                .iter()
                .rposition(|&p| p > 0.0)
                .unwrap_or_default()
        })
    }

    /// The touchpoint after `from` for a uniform draw `u` in `[0, 1)`, or `None` to exit.
    pub(crate) fn next(&self, from: usize, u: f64) -> Option<usize> {
        Self::pick(&self.next_cdf[from], u)
    }

    /// The ground truth of a run with these options.
    pub fn truth(&self, opts: &GenOptions) -> Truth {
        let name = |i: usize| self.touchpoints[i].name.to_string();
        let n = self.touchpoints.len();
        Truth {
            seed: opts.seed,
            customers: opts.customers,
            max_steps: opts.max_steps,
            touchpoints: self
                .touchpoints
                .iter()
                .map(|t| TruthTouchpoint {
                    name: t.name.to_string(),
                    stage: t.stage.to_string(),
                    source: t.emit.source().as_str().to_string(),
                    channel: t.emit.channel_label(),
                })
                .collect(),
            start: (0..n)
                .filter(|&i| self.start[i] > 0.0)
                .map(|i| TruthStart {
                    touchpoint: name(i),
                    p: self.start[i],
                })
                .collect(),
            transitions: (0..n)
                .flat_map(|from| (0..n).map(move |to| (from, to)))
                .filter(|&(from, to)| self.transitions[from][to] > 0.0)
                .map(|(from, to)| TruthTransition {
                    from: name(from),
                    to: name(to),
                    p: self.transitions[from][to],
                })
                .collect(),
            exit: (0..n)
                .map(|i| TruthExit {
                    touchpoint: name(i),
                    p: self.exit[i],
                })
                .collect(),
        }
    }
}

/// The chain that produced a run, as JSON for tests, benchmarks and people.
///
/// `max_steps` is part of the truth because journeys are cut after that many touchpoints
/// without drawing the next step: the last touchpoint of a journey that long is censored,
/// not an exit.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    pub seed: u64,
    pub customers: u64,
    pub max_steps: u32,
    pub touchpoints: Vec<TruthTouchpoint>,
    pub start: Vec<TruthStart>,
    pub transitions: Vec<TruthTransition>,
    pub exit: Vec<TruthExit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TruthTouchpoint {
    pub name: String,
    pub stage: String,
    pub source: String,
    /// A channel, or alternatives separated by `|` when drawn per record (tickets).
    pub channel: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TruthStart {
    pub touchpoint: String,
    pub p: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TruthTransition {
    pub from: String,
    pub to: String,
    pub p: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TruthExit {
    pub touchpoint: String,
    pub p: f64,
}

impl Truth {
    /// Writes the truth as pretty JSON.
    pub fn write_truth(&self, path: &Path) -> Result<()> {
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| Error::Other(format!("truth: {e}")))?;
        text.push('\n');
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }
}

// ---------------------------------------------------------------------------------------------
// The built-in model. Raw values match the catalog in config/trailmap.toml exactly, so reading
// the generated sources with the default config gives back these touchpoint names.

const BLOG_SLUGS: &[&str] = &[
    "journey-mapping-101",
    "reduce-churn",
    "funnel-metrics",
    "customer-stories",
    "release-notes",
    "support-sla",
];
const DOCS_TOPICS: &[&str] = &["quickstart", "api", "sdk", "integrations", "billing", "sso"];
const HELP_ARTICLES: &[&str] = &[
    "reset-password",
    "invite-teammates",
    "export-data",
    "billing-faq",
    "connect-crm",
    "cancel-subscription",
];

const fn track(event: &'static str, channel: &'static str) -> Emit {
    Emit::Track { event, channel }
}

const fn crm(stage: &'static str, object: CrmObject) -> Emit {
    Emit::Crm { stage, object }
}

const fn ticket(status: &'static str, opens: bool) -> Emit {
    Emit::Ticket { status, opens }
}

const fn page(name: &'static str, path: &'static str, tail: PathTail) -> Emit {
    Emit::Page { name, path, tail }
}

/// `(name, stage, emit, reveals)` in the order the truth lists them.
#[rustfmt::skip]
const TOUCHPOINTS: &[(&str, &str, Emit, Reveals)] = {
    use PathTail::{None as NoTail, Number, Pick};
    use Reveals::{Account, Email, Nothing};
    use CrmObject::{Contact, Deal};
    &[
        ("ad_click",        "awareness",     track("Ad Clicked", "web"),                    Nothing),
        ("email_click",     "awareness",     track("Email Link Clicked", "email"),          Nothing),
        ("home_view",       "awareness",     page("Home", "/", NoTail),                     Nothing),
        ("blog_view",       "awareness",     page("Blog", "/blog", Pick(BLOG_SLUGS)),       Nothing),
        ("pricing_view",    "consideration", page("Pricing", "/pricing", NoTail),           Nothing),
        ("product_view",    "consideration", page("Product", "/product", Number(40)),       Nothing),
        ("docs_view",       "consideration", page("Docs", "/docs", Pick(DOCS_TOPICS)),      Nothing),
        ("demo_requested",  "consideration", track("Demo Requested", "web"),                Email),
        ("became_lead",     "consideration", crm("lead", Contact),                          Nothing),
        ("mql",             "consideration", crm("marketingqualifiedlead", Contact),        Nothing),
        ("signup",          "purchase",      track("Signed Up", "web"),                     Account),
        ("trial_start",     "purchase",      track("Trial Started", "web"),                 Nothing),
        ("quote_requested", "purchase",      track("Quote Requested", "web"),               Nothing),
        ("quote_sent",      "purchase",      crm("contractsent", Deal),                     Nothing),
        ("checkout_view",   "purchase",      page("Checkout", "/checkout", NoTail),         Nothing),
        ("purchase",        "purchase",      track("Order Completed", "web"),               Nothing),
        ("deal_won",        "purchase",      crm("closedwon", Deal),                        Nothing),
        ("deal_lost",       "purchase",      crm("closedlost", Deal),                       Nothing),
        ("onboarding_step", "onboarding",    track("Onboarding Step Completed", "app"),     Nothing),
        ("invite_sent",     "onboarding",    track("Invite Sent", "app"),                   Nothing),
        ("ticket_opened",   "support",       ticket("new", true),                           Nothing),
        ("ticket_pending",  "support",       ticket("pending", false),                      Nothing),
        ("ticket_resolved", "support",       ticket("solved", false),                       Nothing),
        ("help_view",       "support",       page("Help", "/help", Pick(HELP_ARTICLES)),    Nothing),
        ("feature_used",    "retention",     track("Feature Used", "app"),                  Nothing),
        ("cancel_view",     "retention",     page("Cancel", "/account/cancel", NoTail),     Nothing),
        ("churned",         "retention",     track("Subscription Cancelled", "web"),        Nothing),
    ]
};

const START: &[(&str, f64)] = &[
    ("ad_click", 0.30),
    ("home_view", 0.25),
    ("blog_view", 0.22),
    ("email_click", 0.15),
    ("pricing_view", 0.05),
    ("product_view", 0.03),
];

/// `(from, [(to, p)], exit)`. Two phases: prospects browse anonymously (awareness and the
/// public consideration pages) until they request a demo or sign up; from then on the journey
/// stays among the touchpoints of known customers (sales, purchase, onboarding, support,
/// retention) and never returns to anonymous browsing.
#[rustfmt::skip]
#[allow(clippy::type_complexity)]
const ROWS: &[(&str, &[(&str, f64)], f64)] = &[
    // Prospects.
    ("ad_click",        &[("home_view", 0.15), ("product_view", 0.30), ("pricing_view", 0.25), ("blog_view", 0.07), ("signup", 0.12), ("demo_requested", 0.06)], 0.05),
    ("email_click",     &[("blog_view", 0.25), ("product_view", 0.25), ("pricing_view", 0.20), ("home_view", 0.10), ("signup", 0.15)], 0.05),
    ("home_view",       &[("product_view", 0.28), ("pricing_view", 0.20), ("blog_view", 0.12), ("docs_view", 0.12), ("signup", 0.15), ("demo_requested", 0.06)], 0.07),
    ("blog_view",       &[("blog_view", 0.35), ("home_view", 0.12), ("product_view", 0.15), ("pricing_view", 0.08), ("docs_view", 0.07), ("signup", 0.10)], 0.13),
    ("pricing_view",    &[("product_view", 0.30), ("pricing_view", 0.05), ("docs_view", 0.08), ("home_view", 0.05), ("signup", 0.28), ("demo_requested", 0.12)], 0.12),
    ("product_view",    &[("pricing_view", 0.28), ("product_view", 0.22), ("docs_view", 0.12), ("home_view", 0.05), ("signup", 0.17), ("demo_requested", 0.06)], 0.10),
    ("docs_view",       &[("docs_view", 0.35), ("product_view", 0.15), ("pricing_view", 0.12), ("signup", 0.20)], 0.18),
    // Revealing touchpoints.
    ("demo_requested",  &[("became_lead", 0.55), ("signup", 0.25), ("quote_requested", 0.10), ("help_view", 0.05)], 0.05),
    ("signup",          &[("trial_start", 0.45), ("onboarding_step", 0.25), ("became_lead", 0.10), ("checkout_view", 0.10), ("help_view", 0.05)], 0.05),
    // Sales.
    ("became_lead",     &[("mql", 0.55), ("quote_requested", 0.15), ("trial_start", 0.15), ("help_view", 0.05)], 0.10),
    ("mql",             &[("quote_requested", 0.50), ("trial_start", 0.25), ("help_view", 0.05)], 0.20),
    ("quote_requested", &[("quote_sent", 0.75), ("help_view", 0.05)], 0.20),
    ("quote_sent",      &[("deal_won", 0.50), ("deal_lost", 0.25), ("quote_requested", 0.10)], 0.15),
    ("deal_won",        &[("onboarding_step", 0.55), ("feature_used", 0.30), ("ticket_opened", 0.05)], 0.10),
    ("deal_lost",       &[("trial_start", 0.20), ("quote_requested", 0.10)], 0.70),
    // Self-serve purchase.
    ("trial_start",     &[("onboarding_step", 0.45), ("feature_used", 0.27), ("checkout_view", 0.15), ("help_view", 0.05), ("quote_requested", 0.05)], 0.03),
    ("checkout_view",   &[("purchase", 0.65), ("checkout_view", 0.05), ("help_view", 0.08), ("ticket_opened", 0.04)], 0.18),
    ("purchase",        &[("onboarding_step", 0.50), ("feature_used", 0.37), ("invite_sent", 0.05), ("ticket_opened", 0.05)], 0.03),
    // Onboarding and use.
    ("onboarding_step", &[("onboarding_step", 0.35), ("invite_sent", 0.15), ("feature_used", 0.31), ("help_view", 0.07), ("ticket_opened", 0.05), ("checkout_view", 0.05)], 0.02),
    ("invite_sent",     &[("feature_used", 0.60), ("onboarding_step", 0.20), ("invite_sent", 0.10)], 0.10),
    ("feature_used",    &[("feature_used", 0.855), ("help_view", 0.04), ("invite_sent", 0.03), ("ticket_opened", 0.02), ("cancel_view", 0.02), ("checkout_view", 0.02)], 0.015),
    // Support loops.
    ("help_view",       &[("help_view", 0.15), ("ticket_opened", 0.30), ("feature_used", 0.40), ("onboarding_step", 0.05)], 0.10),
    ("ticket_opened",   &[("ticket_pending", 0.45), ("ticket_resolved", 0.42), ("help_view", 0.05)], 0.08),
    ("ticket_pending",  &[("ticket_pending", 0.15), ("ticket_resolved", 0.65), ("feature_used", 0.10)], 0.10),
    ("ticket_resolved", &[("feature_used", 0.65), ("ticket_pending", 0.08), ("help_view", 0.07), ("cancel_view", 0.05)], 0.15),
    // Leaving.
    ("cancel_view",     &[("churned", 0.45), ("feature_used", 0.30), ("ticket_opened", 0.10), ("help_view", 0.05)], 0.10),
    ("churned",         &[], 1.0),
];

impl Default for JourneyModel {
    fn default() -> JourneyModel {
        let touchpoints: Vec<Touchpoint> = TOUCHPOINTS
            .iter()
            .map(|&(name, stage, emit, reveals)| Touchpoint {
                name,
                stage,
                emit,
                reveals,
            })
            .collect();
        let n = touchpoints.len();
        // The tables above use names; a typo must fail loudly (the unit tests build this).
        let idx = |name: &str| {
            touchpoints
                .iter()
                .position(|t| t.name == name)
                .unwrap_or_else(|| panic!("built-in journey model names unknown `{name}`"))
        };
        let mut start = vec![0.0; n];
        for &(name, p) in START {
            start[idx(name)] = p;
        }
        let mut transitions = vec![vec![0.0; n]; n];
        let mut exit = vec![f64::NAN; n];
        for &(from, row, p_exit) in ROWS {
            let f = idx(from);
            exit[f] = p_exit;
            for &(to, p) in row {
                transitions[f][idx(to)] = p;
            }
        }
        JourneyModel::new(touchpoints, start, transitions, exit)
            .unwrap_or_else(|e| panic!("the built-in journey model is invalid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_model_is_valid_and_complete() {
        let m = JourneyModel::default();
        assert_eq!(m.touchpoints().len(), 27);
        assert_eq!(ROWS.len(), 27, "every touchpoint has exactly one row");
        let t = m.truth(&GenOptions::default());
        assert!(t.exit.iter().all(|e| e.p.is_finite()));
    }

    #[test]
    fn a_ticket_reachable_while_anonymous_is_rejected() {
        let m = JourneyModel::default();
        let home = m.index_of("home_view").unwrap();
        let ticket = m.index_of("ticket_opened").unwrap();
        let mut transitions = m.transitions.clone();
        transitions[home][ticket] = m.exit[home];
        let mut exit = m.exit.clone();
        exit[home] = 0.0;
        let err = JourneyModel::new(m.touchpoints.clone(), m.start.clone(), transitions, exit)
            .unwrap_err();
        assert!(
            err.to_string().contains("before the customer is known"),
            "{err}"
        );
    }

    #[test]
    fn an_update_without_an_open_ticket_is_rejected() {
        let m = JourneyModel::default();
        let help = m.index_of("help_view").unwrap();
        let pending = m.index_of("ticket_pending").unwrap();
        let mut transitions = m.transitions.clone();
        transitions[help][pending] = m.exit[help];
        let mut exit = m.exit.clone();
        exit[help] = 0.0;
        let err = JourneyModel::new(m.touchpoints.clone(), m.start.clone(), transitions, exit)
            .unwrap_err();
        assert!(err.to_string().contains("before any ticket"), "{err}");
    }

    #[test]
    fn rows_must_sum_to_one() {
        let m = JourneyModel::default();
        let mut exit = m.exit.clone();
        exit[0] += 0.01;
        let err = JourneyModel::new(
            m.touchpoints.clone(),
            m.start.clone(),
            m.transitions.clone(),
            exit,
        )
        .unwrap_err();
        assert!(err.to_string().contains("sums to"), "{err}");
    }

    #[test]
    fn sampling_follows_the_cumulative_rows() {
        let m = JourneyModel::default();
        let ad = m.index_of("ad_click").unwrap();
        assert_eq!(m.first(0.0), ad);
        assert_eq!(m.next(ad, 0.9999), None, "the top of the row is the exit");
        let churned = m.index_of("churned").unwrap();
        assert_eq!(m.next(churned, 0.0), None);
    }
}
