//! Alerts when a stage's conversion dips: detection, lifecycle, notifications.
//!
//! - [`detect`]: one evaluation of one rule ([`Detector`]): settled cohorts of the current
//!   window against the baseline, a one-sided two-proportion test, a minimum sample and a
//!   minimum relative drop.
//! - this module: [`Alerts`], every rule's [`AlertStatus`] stepped through the lifecycle
//!   inactive → pending → firing → (resolved) inactive, as Prometheus does with `for`, and
//!   the notifications each change leaves in an outbox. The state (outbox included) is
//!   written to a file on every change, atomically, so a restart neither forgets a firing
//!   alert nor announces it twice.
//! - [`notify`]: delivers the outbox to webhooks as Alertmanager does (`"version": "4"`),
//!   retrying with backoff.
//! - [`run`]: the live evaluator, a task that evaluates each rule at every interval of
//!   event time the pipeline has passed.
//!
//! Evaluation times are event time, not wall time: a replay, a backtest (`trailmap alerts
//! test`) and the live run evaluate at the same instants and agree.

pub mod detect;
pub mod notify;
pub mod run;

pub use detect::{Detector, Evaluation, StageCounts, Verdict};
pub use notify::Webhooks;
pub use run::{AlertsHandle, spawn};

use crate::counts::{ByValue, LiveMap, WHOLE, bucket_of};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trailmap_mine::report::micros_string;
use trailmap_model::config::Config;
use trailmap_model::{Error, Result};

/// Intervals a backtest evaluates at most per rule (a year of minutes); a longer span is
/// its latest part.
pub const MAX_BACKTEST: usize = 527_040;

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition does not hold.
    #[default]
    Inactive,
    /// It holds, for less than the rule's `for`.
    Pending,
    /// It has held for `for`: notified.
    Firing,
}

impl AlertState {
    /// The value of the `trailmap_alert_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            AlertState::Inactive => 0,
            AlertState::Pending => 1,
            AlertState::Firing => 2,
        }
    }
}

/// One rule's state, as `/api/alerts` shows it and the state file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertStatus {
    pub name: String,
    pub journey: String,
    /// The stage watched: step names.
    pub from: String,
    pub to: String,
    /// For a rule with a breakdown: the attribute (`breakdown.by`) and the value of it this
    /// alert watches (one alert per value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub state: AlertState,
    /// Pending or firing since (event time, Unix µs).
    pub active_since: Option<i64>,
    /// When it last fired and last resolved (event time, Unix µs).
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// The latest evaluation.
    pub last: Option<Evaluation>,
}

/// A change worth telling people about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Firing,
    Resolved,
}

/// A notification: an alert fired or resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notice {
    pub alert: String,
    /// The breakdown value, for a rule with a breakdown (also a label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub change: Change,
    /// When the alert started firing and, once resolved, when it ended (Unix µs).
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    /// Labels: `alertname`, `journey`, `from`, `to`, and the rule's own.
    pub labels: BTreeMap<String, String>,
    /// `summary` and `description` for people.
    pub annotations: BTreeMap<String, String>,
}

impl AlertStatus {
    fn new(d: &Detector, value: Option<&str>) -> AlertStatus {
        AlertStatus {
            name: d.name.clone(),
            journey: d.rule.journey.clone(),
            from: d.from.clone(),
            to: d.to.clone(),
            by: value.and(d.rule.breakdown.as_ref().map(|b| b.by.clone())),
            value: value.map(str::to_string),
            state: AlertState::Inactive,
            active_since: None,
            fired_at: None,
            resolved_at: None,
            last: None,
        }
    }

    /// Steps the lifecycle with an evaluation; returns the change to notify, if any. An
    /// evaluation with too few journeys to tell changes nothing: pending stays pending
    /// (it fires only on an evaluation that says dipping, though the time since it became
    /// pending counts towards `for`), firing stays firing.
    pub fn step(&mut self, e: Evaluation, hold: i64) -> Option<Change> {
        let at = e.at;
        let verdict = e.verdict;
        self.last = Some(e);
        match (self.state, verdict) {
            (_, Verdict::TooFew) => None,
            (AlertState::Inactive, Verdict::Dipping) => {
                self.state = AlertState::Pending;
                self.active_since = Some(at);
                self.promote(at, hold)
            }
            (AlertState::Pending, Verdict::Dipping) => self.promote(at, hold),
            (AlertState::Pending, Verdict::Steady) => {
                self.state = AlertState::Inactive;
                self.active_since = None;
                None
            }
            (AlertState::Firing, Verdict::Steady) => {
                self.state = AlertState::Inactive;
                self.active_since = None;
                self.resolved_at = Some(at);
                Some(Change::Resolved)
            }
            (AlertState::Firing, Verdict::Dipping) | (AlertState::Inactive, Verdict::Steady) => {
                None
            }
        }
    }

    fn promote(&mut self, at: i64, hold: i64) -> Option<Change> {
        let since = self.active_since.unwrap_or(at);
        if at.saturating_sub(since) >= hold {
            self.state = AlertState::Firing;
            self.fired_at = Some(at);
            Some(Change::Firing)
        } else {
            None
        }
    }
}

/// What the state file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    alerts: Vec<AlertStatus>,
    outbox: Vec<Notice>,
}

/// Every configured rule with its state and the notifications not yet delivered.
#[derive(Debug)]
pub struct Alerts {
    detectors: Vec<Detector>,
    /// One per rule without a breakdown; one per watched value of a rule with one (made
    /// when the value first makes the top).
    statuses: Vec<AlertStatus>,
    /// Per rule, the latest instant it was evaluated at.
    evaluated: Vec<Option<i64>>,
    outbox: Vec<Notice>,
    /// Where the state is kept across restarts; `None`: in memory only.
    path: Option<PathBuf>,
}

impl Alerts {
    /// The config's rules, all inactive. Journeys are numbered as the live pipeline's
    /// funnels are (config order).
    pub fn new(config: &Config) -> Result<Alerts> {
        let mut detectors = Vec::new();
        for (name, rule) in &config.alerts {
            let stage = rule
                .validate(&config.journeys)
                .map_err(|(field, message)| {
                    Error::config(format!("alerts.{name}.{field}"), message)
                })?;
            let (funnel, journey) = config
                .journeys
                .iter()
                .enumerate()
                .find(|(_, (j, _))| **j == rule.journey)
                .map(|(i, (_, journey))| (i, journey))
                .ok_or_else(|| Error::config(format!("alerts.{name}.journey"), "not configured"))?;
            detectors.push(Detector::new(name, rule, funnel, stage, journey));
        }
        let statuses = detectors
            .iter()
            .filter(|d| d.rule.breakdown.is_none())
            .map(|d| AlertStatus::new(d, None))
            .collect();
        Ok(Alerts {
            evaluated: vec![None; detectors.len()],
            detectors,
            statuses,
            outbox: Vec::new(),
            path: None,
        })
    }

    /// Keeps the state in `path`, taking up what a previous run left there (rules no longer
    /// configured are forgotten; a rule's watched stage that changed starts over).
    pub fn kept_in(mut self, path: &Path) -> Result<Alerts> {
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let saved: Saved = serde_json::from_str(&text).map_err(|e| {
                Error::input(
                    path,
                    format!("not an alert state file ({e}); move it away to start over"),
                )
            })?;
            for old in saved.alerts {
                let Some(i) = self.detectors.iter().position(|d| {
                    d.name == old.name
                        && d.rule.journey == old.journey
                        && d.from == old.from
                        && d.to == old.to
                        && d.rule.breakdown.as_ref().map(|b| &b.by) == old.by.as_ref()
                        && old.by.is_some() == old.value.is_some()
                }) else {
                    continue;
                };
                let at = old.last.as_ref().map(|e| e.at);
                self.evaluated[i] = self.evaluated[i].max(at);
                match self.status_of(i, old.value.as_deref()) {
                    Some(k) => self.statuses[k] = old,
                    None => self.statuses.push(old),
                }
            }
            self.outbox = saved
                .outbox
                .into_iter()
                .filter(|n| self.detectors.iter().any(|d| d.name == n.alert))
                .collect();
        }
        self.path = Some(path.to_path_buf());
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// Only the rules named (all when `names` is empty); an unknown name is an error that
    /// lists the configured ones.
    pub fn only(mut self, names: &[String]) -> Result<Alerts> {
        if names.is_empty() {
            return Ok(self);
        }
        if let Some(unknown) = names
            .iter()
            .find(|n| !self.detectors.iter().any(|d| &d.name == *n))
        {
            return Err(Error::Other(format!(
                "no alert rule `{unknown}`; configured: {}",
                if self.detectors.is_empty() {
                    "none (add [alerts.NAME] to the config)".to_string()
                } else {
                    self.detectors
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
        let keep: Vec<bool> = self
            .detectors
            .iter()
            .map(|d| names.contains(&d.name))
            .collect();
        let mut k = keep.iter();
        self.detectors.retain(|_| *k.next().unwrap_or(&false));
        let mut k = keep.iter();
        self.evaluated.retain(|_| *k.next().unwrap_or(&false));
        self.statuses.retain(|s| names.contains(&s.name));
        Ok(self)
    }

    pub fn statuses(&self) -> &[AlertStatus] {
        &self.statuses
    }

    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// Notifications not yet delivered, oldest first.
    pub fn outbox(&self) -> &[Notice] {
        &self.outbox
    }

    /// The earliest `limit` evaluations due once event time has reached `newest` (µs):
    /// `(rule, at)`, in time order. A rule never evaluated starts at the latest instant
    /// due; one behind evaluates every instant it missed, in order (a lagging evaluator
    /// catches up; it never skips what would change an alert).
    pub fn due(&self, newest: i64, limit: usize) -> Vec<(usize, i64)> {
        let mut due = Vec::new();
        for (i, d) in self.detectors.iter().enumerate() {
            let after = self.evaluated[i];
            due.extend(d.due(after, newest, None).take(limit).map(|at| (i, at)));
        }
        due.sort_by_key(|&(i, at)| (at, i));
        due.truncate(limit);
        due
    }

    /// The status of rule `i` for breakdown `value` (`None`: the rule has none).
    fn status_of(&self, i: usize, value: Option<&str>) -> Option<usize> {
        let name = &self.detectors[i].name;
        self.statuses
            .iter()
            .position(|s| &s.name == name && s.value.as_deref() == value)
    }

    /// Rule `i` at `at`, from its journey's levels in the current window and the
    /// baseline (by breakdown value for a rule with a breakdown, value names in
    /// `values`): evaluates, steps each alert's lifecycle, and on a change queues the
    /// notification and saves the state. Returns each evaluation with the notification it
    /// caused, which is to be sent even when the state could not be saved (that is logged:
    /// a restart would then not know of the change).
    pub fn apply(
        &mut self,
        i: usize,
        at: i64,
        current: &ByValue,
        baseline: &ByValue,
        values: &[String],
    ) -> Vec<(Evaluation, Option<Notice>)> {
        let d = &self.detectors[i];
        let judged: Vec<(Option<String>, Evaluation)> = match &d.rule.breakdown {
            None => {
                let whole = |by: &ByValue| by.get(&WHOLE).cloned().unwrap_or_default();
                vec![(None, d.evaluate(at, &whole(current), &whole(baseline)))]
            }
            Some(b) => {
                let known: Vec<(String, bool)> = self
                    .statuses
                    .iter()
                    .filter(|s| s.name == d.name)
                    .filter_map(|s| Some((s.value.clone()?, s.state != AlertState::Inactive)))
                    .collect();
                d.evaluate_values(at, current, baseline, values, b.top, &known)
                    .into_iter()
                    .map(|(value, e)| (Some(value), e))
                    .collect()
            }
        };
        self.evaluated[i] = self.evaluated[i].max(Some(at));
        let mut changed = false;
        let mut out = Vec::with_capacity(judged.len());
        for (value, e) in judged {
            let k = match self.status_of(i, value.as_deref()) {
                Some(k) => k,
                None => {
                    self.statuses
                        .push(AlertStatus::new(&self.detectors[i], value.as_deref()));
                    self.statuses.len() - 1
                }
            };
            let hold = self.detectors[i].rule.hold.micros();
            let before = self.statuses[k].state;
            let notice = self.statuses[k]
                .step(e.clone(), hold)
                .map(|c| self.notice(i, k, c));
            if let Some(n) = &notice {
                self.outbox.push(n.clone());
            }
            changed |= before != self.statuses[k].state;
            out.push((e, notice));
        }
        // Values that left the top and whose alert is over are no longer watched.
        if self.detectors[i].rule.breakdown.is_some() {
            let name = &self.detectors[i].name;
            self.statuses.retain(|s| {
                &s.name != name
                    || s.state != AlertState::Inactive
                    || s.last.as_ref().is_some_and(|e| e.at == at)
            });
        }
        if changed && let Err(e) = self.save() {
            eprintln!("alerts: cannot save the alert state: {e}");
        }
        out
    }

    /// Takes a delivered (or given up) notification out of the outbox.
    pub fn delivered(&mut self, notice: &Notice) -> Result<()> {
        if let Some(k) = self.outbox.iter().position(|n| n == notice) {
            self.outbox.remove(k);
            self.save()?;
        }
        Ok(())
    }

    fn notice(&self, i: usize, k: usize, change: Change) -> Notice {
        let (d, s) = (&self.detectors[i], &self.statuses[k]);
        let mut labels = d.rule.labels.clone();
        labels.insert("alertname".into(), d.name.clone());
        labels.insert("journey".into(), s.journey.clone());
        labels.insert("from".into(), s.from.clone());
        labels.insert("to".into(), s.to.clone());
        let mut segment = String::new();
        // Fixed names, as /metrics has them: an attribute's own name could collide with
        // the labels above or the rule's.
        if let (Some(b), Some(value)) = (&d.rule.breakdown, &s.value) {
            labels.insert("breakdown".into(), b.by.clone());
            labels.insert("value".into(), value.clone());
            segment = format!(" for {} {value}", b.by);
        }
        let reason = s.last.as_ref().map_or(String::new(), |e| e.reason.clone());
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".into(),
            match change {
                Change::Firing => format!(
                    "{} → {} conversion of journey {}{segment} dipped",
                    s.from, s.to, s.journey
                ),
                Change::Resolved => format!(
                    "{} → {} conversion of journey {}{segment} recovered",
                    s.from, s.to, s.journey
                ),
            },
        );
        annotations.insert("description".into(), reason);
        let starts_at = s.fired_at.unwrap_or_default();
        Notice {
            alert: d.name.clone(),
            value: s.value.clone(),
            change,
            starts_at,
            ends_at: match change {
                Change::Firing => None,
                Change::Resolved => s.resolved_at,
            },
            labels,
            annotations,
        }
    }

    fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let saved = Saved {
            alerts: self.statuses.clone(),
            outbox: self.outbox.clone(),
        };
        let text = serde_json::to_string_pretty(&saved)
            .map_err(|e| Error::Other(format!("cannot encode the alert state: {e}")))?;
        // The data dir is made when there is first something to keep in it.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        // Written whole beside it and synced, then renamed over it: a crash (or a power
        // cut) leaves the old or the new. Changes are rare, so the sync costs nothing.
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            file.sync_all()
        };
        write().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// Replays the rules over `map` from its first minute to `newest` (µs): every
    /// evaluation a live run reading these events would have made, and the changes.
    /// `values` names the breakdown values of the map.
    pub fn backtest(&mut self, map: &LiveMap, values: &[String], newest: i64) -> Result<Backtest> {
        let mut out = Backtest::default();
        let Some(first) = map
            .buckets()
            .next()
            .map(|(m, _)| m * crate::counts::BUCKET_MICROS)
        else {
            return Ok(out);
        };
        for i in 0..self.detectors.len() {
            let every = self.detectors[i].rule.every.micros().max(1);
            let before_first = first.div_euclid(every) * every - every;
            for at in self.detectors[i].due(Some(before_first), newest, Some(MAX_BACKTEST)) {
                let d = &self.detectors[i];
                let (current, baseline) = d.windows(at);
                let (as_of, by_value) = (bucket_of(at), d.rule.breakdown.is_some());
                let current = map.funnel_levels_by(d.funnel, &[current], as_of, by_value);
                let baseline = map.funnel_levels_by(d.funnel, &baseline, as_of, by_value);
                for (e, notice) in self.apply(i, at, &current, &baseline, values) {
                    out.evaluations += 1;
                    match e.verdict {
                        Verdict::Dipping => out.dipping += 1,
                        Verdict::Steady => out.steady += 1,
                        Verdict::TooFew => out.too_few += 1,
                    }
                    if let Some(n) = notice {
                        out.changes.push(BacktestChange {
                            alert: n.alert,
                            value: n.value,
                            change: n.change,
                            evaluation: e,
                        });
                    }
                }
                let name = &self.detectors[i].name;
                out.firing += self
                    .statuses
                    .iter()
                    .filter(|s| &s.name == name && s.state == AlertState::Firing)
                    .count();
            }
        }
        out.changes
            .sort_by(|a, b| (a.evaluation.at, &a.alert).cmp(&(b.evaluation.at, &b.alert)));
        Ok(out)
    }
}

/// What a backtest found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backtest {
    pub evaluations: usize,
    /// Evaluations by verdict.
    pub dipping: usize,
    pub steady: usize,
    pub too_few: usize,
    /// Evaluations after which an alert was firing (per breakdown value: a rule with two
    /// values firing counts two).
    pub firing: usize,
    /// Every time an alert would have fired or resolved, in time order.
    pub changes: Vec<BacktestChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BacktestChange {
    pub alert: String,
    /// The breakdown value, for a rule with a breakdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub change: Change,
    /// The evaluation that made the change.
    pub evaluation: Evaluation,
}

/// Where alert states are kept for a data dir (`[storage] data_dir` or a flag):
/// `[alerting] state_file` in it, or that path when absolute. `None` for data dirs that
/// are not local (memory, object stores): the states then live in memory only.
pub fn state_path(config: &Config, data_dir: &str) -> Option<PathBuf> {
    let file = Path::new(&config.alerting.state_file);
    if file.is_absolute() {
        return Some(file.to_path_buf());
    }
    let dir = match data_dir.split_once("://") {
        None => PathBuf::from(data_dir),
        Some(("file", path)) => PathBuf::from(path),
        Some(_) => return None,
    };
    Some(dir.join(file))
}

/// An instant for people (RFC 3339).
pub fn when(micros: i64) -> String {
    micros_string(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(at: i64, verdict: Verdict) -> Evaluation {
        Evaluation {
            at,
            current: StageCounts::default(),
            baseline: StageCounts::default(),
            current_conversion: None,
            baseline_conversion: None,
            relative_drop: None,
            p_value: None,
            verdict,
            reason: String::new(),
        }
    }

    fn status() -> AlertStatus {
        AlertStatus {
            name: "r".into(),
            journey: "j".into(),
            from: "a".into(),
            to: "b".into(),
            by: None,
            value: None,
            state: AlertState::Inactive,
            active_since: None,
            fired_at: None,
            resolved_at: None,
            last: None,
        }
    }

    #[test]
    fn a_saved_value_alert_is_taken_up_only_under_the_same_breakdown() {
        const RULE: &str = "checkout_conversion_by_device";
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("alerts.json");
        let saved = serde_json::json!({
            "alerts": [{
                "name": RULE, "journey": "checkout", "from": "checkout_view", "to": "purchase",
                "by": "device", "value": "mobile", "state": "firing",
                "active_since": 1, "fired_at": 2, "resolved_at": null, "last": null
            }],
            "outbox": []
        });
        std::fs::write(&path, saved.to_string()).expect("write");
        let firing = |config: &Config| -> Vec<(Option<String>, AlertState)> {
            Alerts::new(config)
                .expect("rules")
                .kept_in(&path)
                .expect("state")
                .statuses()
                .iter()
                .filter(|s| s.name == RULE)
                .map(|s| (s.value.clone(), s.state))
                .collect()
        };
        let config = Config::builtin();
        assert_eq!(
            firing(&config),
            [(Some("mobile".to_string()), AlertState::Firing)]
        );
        // Broken down by something else now: "mobile" means nothing there.
        let mut by_channel = config.clone();
        by_channel.segments.by = "channel".into();
        for rule in by_channel.alerts.values_mut() {
            if let Some(b) = &mut rule.breakdown {
                b.by = "channel".into();
            }
        }
        assert!(firing(&by_channel).is_empty());
    }

    #[test]
    fn state_files_live_in_local_data_dirs() {
        let config = Config::default();
        assert_eq!(
            state_path(&config, "./data"),
            Some(PathBuf::from("./data/alerts.json"))
        );
        assert_eq!(
            state_path(&config, "file:///var/trailmap"),
            Some(PathBuf::from("/var/trailmap/alerts.json"))
        );
        assert_eq!(state_path(&config, "memory://x"), None);
    }

    #[test]
    fn the_lifecycle_waits_for_the_hold_and_resolves_once() {
        use Verdict::{Dipping, Steady, TooFew};
        let mut s = status();
        assert_eq!(s.step(eval(0, Dipping), 10), None);
        assert_eq!(s.state, AlertState::Pending);
        assert_eq!(s.step(eval(5, Dipping), 10), None);
        // Too few to tell: still pending, and not fired by the hold elapsing on it.
        assert_eq!(s.step(eval(12, TooFew), 10), None);
        assert_eq!(s.state, AlertState::Pending);
        assert_eq!(s.step(eval(14, Dipping), 10), Some(Change::Firing));
        assert_eq!(
            (s.state, s.fired_at, s.active_since),
            (AlertState::Firing, Some(14), Some(0))
        );
        assert_eq!(s.step(eval(15, Dipping), 10), None);
        // Traffic drying up is no recovery.
        assert_eq!(s.step(eval(18, TooFew), 10), None);
        assert_eq!(s.state, AlertState::Firing);
        assert_eq!(s.step(eval(20, Steady), 10), Some(Change::Resolved));
        assert_eq!((s.state, s.resolved_at), (AlertState::Inactive, Some(20)));
        assert_eq!(s.step(eval(25, Steady), 10), None);
        // Pending that stops holding goes back without a word.
        assert_eq!(s.step(eval(30, Dipping), 10), None);
        assert_eq!(s.step(eval(35, Steady), 10), None);
        assert_eq!(s.state, AlertState::Inactive);
        assert_eq!(s.step(eval(36, TooFew), 10), None);
        assert_eq!(s.state, AlertState::Inactive);
        // No hold: fires on the first evaluation that holds.
        assert_eq!(s.step(eval(40, Dipping), 0), Some(Change::Firing));
    }
}
