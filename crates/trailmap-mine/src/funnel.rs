//! Funnels: how far each journey gets through ordered steps within a window.
//!
//! The level of a journey (the deepest step it reaches) follows ClickHouse `windowFunnel`
//! exactly, mode by mode, so the level distribution equals ClickHouse's on the same events:
//!
//! - every event yields one entry per step it matches (a step may repeat, so an event can
//!   match several), and under `strict_order` an entry "no step" when it matches none;
//! - entries are ordered by (time, step index), so equal timestamps never depend on input
//!   order (ties of the same step keep arrival order);
//! - a first-step entry (re)starts the chain; step `k` extends the chain that reached step
//!   `k - 1` when it lies within `window` of that chain's first step (`<=`: an event exactly
//!   `window` later counts);
//! - `strict_deduplication`: a step (other than the first) seen again for a reached level
//!   ends the search; `strict_order`: a step whose previous step was not reached, or any
//!   non-step event after the first step, ends it (`allow_reentry` skips the former
//!   instead); `strict_increase`: consecutive steps need strictly increasing times;
//!   `strict_once`: one event counts for one step of a chain only (every chain is tracked).
//!
//! On top of ClickHouse: PostHog order types (`strict` = `strict_order`; `unordered` =
//! the most distinct steps seen within any window starting at a step event), per-step
//! minimum and maximum gaps, exclusion touchpoints (a journey whose counted chain has an
//! exclusion event between its first and last step is left out and counted as excluded),
//! counting by attempts (each attempt starts at a first-step event after the previous
//! attempt's window or completion), time to convert, what journeys did next after the
//! step they stopped at, breakdowns, trends by entry period, and `maturing` journeys (those
//! whose window has not elapsed by `as_of`: still able to convert, so not drop-offs).

use crate::fold::Aggregate;
use crate::hist::{DurationHistogram, HUMAN_BINS, human_bin};
use rustc_hash::FxHashMap;
use trailmap_model::config::{CountBy, FunnelMode, JourneyConfig, StepOrder};
use trailmap_sessionize::{Journey, Sifted};

/// Most steps a funnel has (as ClickHouse).
pub const MAX_STEPS: usize = 32;

/// ClickHouse `windowFunnel` modes, any combination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    pub strict_deduplication: bool,
    pub strict_order: bool,
    pub strict_increase: bool,
    pub strict_once: bool,
    pub allow_reentry: bool,
}

impl Modes {
    pub fn from_modes(modes: &[FunnelMode]) -> Result<Modes, String> {
        let mut m = Modes::default();
        for mode in modes {
            match mode {
                FunnelMode::StrictDeduplication => m.strict_deduplication = true,
                FunnelMode::StrictOrder => m.strict_order = true,
                FunnelMode::StrictIncrease => m.strict_increase = true,
                FunnelMode::StrictOnce => m.strict_once = true,
                FunnelMode::AllowReentry => m.allow_reentry = true,
            }
        }
        if m.allow_reentry && !m.strict_order {
            return Err(
                "mode allow_reentry needs strict_order too (as in ClickHouse); \
                        use --mode strict_order,allow_reentry"
                    .into(),
            );
        }
        Ok(m)
    }

    /// Comma-separated ClickHouse names; empty for the default mode.
    pub fn parse(text: &str) -> Result<Modes, String> {
        let modes = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "default")
            .map(|s| match s {
                "strict_deduplication" => Ok(FunnelMode::StrictDeduplication),
                "strict_order" => Ok(FunnelMode::StrictOrder),
                "strict_increase" => Ok(FunnelMode::StrictIncrease),
                "strict_once" => Ok(FunnelMode::StrictOnce),
                "allow_reentry" => Ok(FunnelMode::AllowReentry),
                other => Err(format!(
                    "`{other}` is not a funnel mode; use default, strict_deduplication, \
                     strict_order, strict_increase, strict_once or allow_reentry"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Modes::from_modes(&modes)
    }
}

/// Periods for funnel trends, by the time a journey entered the funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrendPeriod {
    Day,
    /// Weeks start on Monday (ISO).
    Week,
}

impl TrendPeriod {
    /// Start of the period holding `micros`, in days since the Unix epoch.
    pub fn period_day(self, micros: i64) -> i64 {
        let day = micros.div_euclid(86_400_000_000);
        match self {
            TrendPeriod::Day => day,
            // 1970-01-01 was a Thursday: Monday is three days before.
            TrendPeriod::Week => day - (day + 3).rem_euclid(7),
        }
    }
}

/// A funnel, resolved against a log's touchpoint ids.
#[derive(Debug, Clone)]
pub struct FunnelSpec {
    /// Touchpoint of each step (`u32::MAX` for a touchpoint the log never saw).
    pub steps: Vec<u32>,
    /// Bound on last step − first step, in microseconds.
    pub window: i64,
    pub modes: Modes,
    pub order: StepOrder,
    pub exclusions: Vec<u32>,
    pub count: CountBy,
    /// Per transition between consecutive steps, in microseconds; 0 = none.
    pub min_gap: Vec<i64>,
    pub max_gap: Vec<i64>,
    /// The data's "now": journeys whose window ends after it are maturing.
    pub as_of: i64,
    pub trend: Option<TrendPeriod>,
}

impl FunnelSpec {
    /// Resolves a configured funnel against touchpoint names. Returns the spec and the step
    /// or exclusion names no event has (they match nothing; likely a typo worth a warning).
    pub fn resolve(
        config: &JourneyConfig,
        touchpoints: &[String],
        as_of: i64,
    ) -> Result<(FunnelSpec, Vec<String>), String> {
        if config.steps.is_empty() || config.steps.len() > MAX_STEPS {
            return Err(format!(
                "a funnel has 1 to {MAX_STEPS} steps, not {}",
                config.steps.len()
            ));
        }
        let mut unknown = Vec::new();
        let mut id = |name: &String| match touchpoints.iter().position(|t| t == name) {
            Some(i) => i as u32,
            None => {
                if !unknown.contains(name) {
                    unknown.push(name.clone());
                }
                u32::MAX
            }
        };
        let steps: Vec<u32> = config.steps.iter().map(&mut id).collect();
        let exclusions: Vec<u32> = config.exclusions.iter().map(&mut id).collect();
        if let Some(name) = config.exclusions.iter().find(|e| config.steps.contains(e)) {
            return Err(format!(
                "`{name}` is both a step and an exclusion; an exclusion must be another touchpoint"
            ));
        }
        let gaps = |g: &Vec<trailmap_model::time::Span>| -> Vec<i64> {
            if g.is_empty() {
                vec![0; steps.len().saturating_sub(1)]
            } else {
                g.iter().map(|s| s.micros()).collect()
            }
        };
        let (min_gap, max_gap) = (gaps(&config.min_gap), gaps(&config.max_gap));
        for (name, g) in [("min_gap", &min_gap), ("max_gap", &max_gap)] {
            if g.len() != steps.len().saturating_sub(1) {
                return Err(format!(
                    "{name} has {} entries; give one per step after the first ({})",
                    g.len(),
                    steps.len() - 1
                ));
            }
        }
        let mut modes = Modes::from_modes(&config.mode)?;
        match config.order {
            StepOrder::Strict => modes.strict_order = true,
            StepOrder::Unordered if modes != Modes::default() => {
                return Err("an unordered funnel takes no windowFunnel mode".into());
            }
            _ => {}
        }
        Ok((
            FunnelSpec {
                steps,
                window: config.window.micros(),
                modes,
                order: config.order,
                exclusions,
                count: config.count,
                min_gap,
                max_gap,
                as_of,
                trend: None,
            },
            unknown,
        ))
    }

    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Whether the gap from step `k - 1` to step `k` (1-based `k`) is allowed.
    #[inline]
    fn gap_ok(&self, k: usize, gap: i64) -> bool {
        let (min, max) = (self.min_gap[k - 1], self.max_gap[k - 1]);
        gap >= min && (max == 0 || gap <= max)
    }
}

/// One entry of a journey for the level search: an event matching a step.
#[derive(Debug, Clone, Copy)]
struct Entry {
    ts: i64,
    /// 1-based step; 0 = the event matches no step (kept under `strict_order` only).
    step: u8,
    /// The event's position in the journey.
    event: u32,
}

const NO_PARENT: u32 = u32::MAX;

/// A chain's link: the event taken for a step and the link of the previous step. Links are
/// append-only, so a chain stays intact when a level is later overwritten.
#[derive(Debug, Clone, Copy)]
struct Link {
    event: u32,
    parent: u32,
}

#[derive(Debug, Clone, Copy)]
struct Reached {
    first: i64,
    last: i64,
    link: u32,
}

/// A journey as the funnel reads it: whole, or sifted to the funnel's steps and exclusions
/// (the only events a level, an exclusion or a time to convert depends on).
#[derive(Debug, Clone, Copy)]
struct Events<'j> {
    ts: &'j [i64],
    touchpoint: &'j [u32],
    /// The journey's first event in the log (breakdown values are the log's, per event).
    start: usize,
    /// Sifted: each event's place in the whole journey, and the touchpoint after it there.
    sifted: Option<(&'j [u32], &'j [u32])>,
}

impl<'j> Events<'j> {
    fn whole(journey: &Journey<'j>) -> Self {
        Events {
            ts: journey.ts,
            touchpoint: journey.touchpoint,
            start: journey.start,
            sifted: None,
        }
    }

    fn sifted(journey: &Sifted<'j>) -> Self {
        Events {
            ts: journey.ts,
            touchpoint: journey.touchpoint,
            start: journey.start,
            sifted: Some((journey.position, journey.next)),
        }
    }

    /// Event `i`'s place in the whole journey.
    fn position(&self, i: usize) -> usize {
        match self.sifted {
            Some((position, _)) => position[i] as usize,
            None => i,
        }
    }

    /// The touchpoint after event `i` in the whole journey (`u32::MAX`: it ended there).
    fn next(&self, i: usize) -> u32 {
        match self.sifted {
            Some((_, next)) => next[i],
            None => self.touchpoint.get(i + 1).copied().unwrap_or(u32::MAX),
        }
    }
}

/// Reused buffers: no allocation per journey once warm.
#[derive(Debug, Default, Clone)]
struct Scratch {
    entries: Vec<Entry>,
    links: Vec<Link>,
    levels: Vec<Option<Reached>>,
    sequences: Vec<Vec<Reached>>,
    chain: Vec<u32>,
    counts: Vec<u32>,
}

/// The deepest step of one journey (or attempt) and the events of the chain that got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    level: usize,
    /// Last link of the counted chain (`NO_PARENT` when the level is 0).
    link: u32,
    /// The latest first-step time the search saw, when it ran to the end of the events:
    /// a journey short of the last step can still go on until that time plus the window.
    /// `None` when the search stopped early (its answer is final).
    latest_start: Option<i64>,
}

impl Outcome {
    const NONE: Outcome = Outcome {
        level: 0,
        link: NO_PARENT,
        latest_start: None,
    };

    fn stopped(self) -> Outcome {
        Outcome {
            latest_start: None,
            ..self
        }
    }
}

/// Step-matching table: for each touchpoint id, the steps (bit `k` = step `k`) it matches.
#[derive(Debug, Clone)]
struct Matcher {
    masks: Vec<u32>,
    excluded: Vec<bool>,
}

impl Matcher {
    fn new(spec: &FunnelSpec) -> Matcher {
        let len = spec
            .steps
            .iter()
            .chain(&spec.exclusions)
            .filter(|&&t| t != u32::MAX)
            .map(|&t| t as usize + 1)
            .max()
            .unwrap_or(0);
        let mut masks = vec![0u32; len];
        for (k, &t) in spec.steps.iter().enumerate() {
            if t != u32::MAX {
                masks[t as usize] |= 1 << k;
            }
        }
        let mut excluded = vec![false; len];
        for &t in &spec.exclusions {
            if t != u32::MAX {
                excluded[t as usize] = true;
            }
        }
        Matcher { masks, excluded }
    }

    #[inline]
    fn mask(&self, tp: u32) -> u32 {
        self.masks.get(tp as usize).copied().unwrap_or(0)
    }

    fn is_excluded(&self, tp: u32) -> bool {
        self.excluded.get(tp as usize).copied().unwrap_or(false)
    }
}

/// Per-step tallies, all mergeable by addition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepTallies {
    /// Journeys (or attempts) by deepest step: `levels[k]` reached exactly `k` steps.
    pub levels: Vec<u64>,
    /// Of `levels[k]`, those still maturing.
    pub maturing: Vec<u64>,
}

impl StepTallies {
    fn new(steps: usize) -> Self {
        StepTallies {
            levels: vec![0; steps + 1],
            maturing: vec![0; steps + 1],
        }
    }

    fn add(&mut self, other: &StepTallies) {
        for (a, b) in self.levels.iter_mut().zip(&other.levels) {
            *a += b;
        }
        for (a, b) in self.maturing.iter_mut().zip(&other.maturing) {
            *a += b;
        }
    }

    /// Journeys whose deepest step is at least step `k` (0-based).
    pub fn reached(&self, k: usize) -> u64 {
        self.levels[k + 1..].iter().sum()
    }

    pub fn entered(&self) -> u64 {
        self.reached(0)
    }

    /// Maturing journeys that stopped at step `k` (0-based): they may still go on.
    pub fn maturing_at(&self, k: usize) -> u64 {
        self.maturing[k + 1]
    }
}

/// The funnel aggregate.
#[derive(Debug, Clone)]
pub struct Funnel<'a> {
    spec: FunnelSpec,
    matcher: Matcher,
    /// Per event of the log (journey order), the breakdown value id.
    attribute: Option<&'a [u32]>,
    scratch: Scratch,
    /// Journeys considered (customers or sessions); with attempts, still journeys.
    pub journeys: u64,
    /// Attempts counted (equals entered journeys when counting customers).
    pub attempts: u64,
    /// Journeys left out because an exclusion happened inside their counted chain.
    pub excluded: u64,
    pub tallies: StepTallies,
    /// Per step `k >= 1`: time from step `k - 1`, and from the first step.
    pub from_previous: Vec<DurationHistogram>,
    pub from_first: Vec<DurationHistogram>,
    /// Per step, time from the first step in human bins ([`HUMAN_BINS`]).
    pub bins: Vec<[u64; HUMAN_BINS.len()]>,
    /// What journeys that stopped at a step did next. Maturing journeys are left out.
    pub next_after: NextAfter,
    pub breakdown: FxHashMap<u32, StepTallies>,
    /// Period start (days since the epoch) → tallies of journeys that entered in it.
    pub trend: FxHashMap<i64, StepTallies>,
    /// When recording (see [`record_attempts`](Self::record_attempts)): every counted
    /// attempt, with when its window ends if it could still go on. Whoever keeps the tallies
    /// can then decide maturity when reading, for any "now", and break down by any value of
    /// the entering event (the live map does both).
    pub attempts_made: Option<Vec<Attempt>>,
    /// Only levels are counted (see [`levels_only`](Self::levels_only)).
    levels_only: bool,
    /// While "now" is not known yet (see [`defer_maturity`](Self::defer_maturity)): attempts
    /// whose window may still be open then, their maturity decided by [`settle`](Self::settle).
    open: Option<Vec<OpenAttempt>>,
    /// Windows ending at or before this time are over whatever "now" turns out to be.
    settled_until: i64,
}

/// `(step k, touchpoint)` → journeys that stopped at step `k` and did that next
/// (touchpoint [`NextAfter::ENDED`]: the journey ended there). Touchpoint ids are dense and
/// few, so the counts are a table per step, by id: a hash map's probe per stopped journey was
/// most of `conclude`'s 1.8% of a 20M-event funnel's CPU (a sixth of the funnel's own). Ids
/// past [`NextAfter::DENSE`] go to a map.
// No `PartialEq`: equal counts may sit in tables of different lengths; compare `iter()`.
#[derive(Debug, Clone, Default)]
pub struct NextAfter {
    /// Per step, counts by touchpoint id + 1 (0: the journey ended).
    dense: Vec<Vec<u64>>,
    sparse: FxHashMap<(u32, u32), u64>,
}

impl NextAfter {
    /// The touchpoint of journeys that ended at the step.
    pub const ENDED: u32 = u32::MAX;
    /// Touchpoint ids counted in the table; larger ones are counted in a map.
    const DENSE: u32 = 4096;

    pub fn add(&mut self, step: u32, touchpoint: u32, n: u64) {
        // ENDED wraps to slot 0.
        let slot = touchpoint.wrapping_add(1);
        if slot >= Self::DENSE {
            *self.sparse.entry((step, touchpoint)).or_default() += n;
            return;
        }
        let (step, slot) = (step as usize, slot as usize);
        if self.dense.len() <= step {
            self.dense.resize_with(step + 1, Vec::new);
        }
        let counts = &mut self.dense[step];
        if counts.len() <= slot {
            counts.resize(slot + 1, 0);
        }
        counts[slot] += n;
    }

    /// Journeys that stopped at `step` and did `touchpoint` next, when any did.
    pub fn get(&self, step: u32, touchpoint: u32) -> Option<u64> {
        let slot = touchpoint.wrapping_add(1);
        let n = if slot >= Self::DENSE {
            self.sparse.get(&(step, touchpoint)).copied()
        } else {
            (self.dense.get(step as usize)).and_then(|c| c.get(slot as usize).copied())
        };
        n.filter(|&n| n > 0)
    }

    /// Every `(step, touchpoint)` some journey did next, with how many did.
    pub fn iter(&self) -> impl Iterator<Item = ((u32, u32), u64)> + '_ {
        let dense = self.dense.iter().enumerate().flat_map(|(step, counts)| {
            (counts.iter().enumerate())
                .filter(|(_, n)| **n > 0)
                .map(move |(slot, &n)| ((step as u32, (slot as u32).wrapping_sub(1)), n))
        });
        dense.chain(self.sparse.iter().map(|(&k, &n)| (k, n)))
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// An attempt short of the last step whose maturity waits for "now": what its tallies and
/// next touchpoint need once it is known.
#[derive(Debug, Clone, Copy)]
struct OpenAttempt {
    window_end: i64,
    level: usize,
    /// The touchpoint after the step it stopped at (`u32::MAX`: the journey ended), when
    /// next touchpoints are counted.
    next: Option<u32>,
    period: Option<i64>,
    value: Option<u32>,
}

/// One counted attempt of a journey at a funnel, as [`Funnel::record_attempts`] keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Steps reached (1 ..= steps).
    pub level: usize,
    /// Index in the journey of the event that entered the first step: breakdowns take
    /// their value from it.
    pub entry: usize,
    /// Short of the last step: when its window ends. It is maturing while "now" is
    /// before that.
    pub window_end: Option<i64>,
}

impl<'a> Funnel<'a> {
    pub fn new(spec: FunnelSpec, attribute: Option<&'a [u32]>) -> Self {
        let n = spec.num_steps();
        Funnel {
            matcher: Matcher::new(&spec),
            spec,
            attribute,
            scratch: Scratch::default(),
            journeys: 0,
            attempts: 0,
            excluded: 0,
            tallies: StepTallies::new(n),
            from_previous: vec![DurationHistogram::new(); n],
            from_first: vec![DurationHistogram::new(); n],
            bins: vec![[0; HUMAN_BINS.len()]; n],
            next_after: NextAfter::default(),
            breakdown: FxHashMap::default(),
            trend: FxHashMap::default(),
            attempts_made: None,
            levels_only: false,
            open: None,
            settled_until: i64::MIN,
        }
    }

    /// A funnel asking the same question with the same options (deferred maturity,
    /// recorded attempts, levels only), nothing counted: for counting a part of the input
    /// apart, to [`merge`](Aggregate::merge) later.
    pub fn fresh(&self) -> Funnel<'a> {
        let mut fresh = Funnel::new(self.spec.clone(), self.attribute);
        fresh.levels_only = self.levels_only;
        if self.attempts_made.is_some() {
            fresh.record_attempts();
        }
        if self.open.is_some() {
            fresh.defer_maturity();
        }
        fresh
    }

    /// Renumbers the touchpoints this funnel counted as next touchpoints: id `t` becomes
    /// `ids[t]`. A part of the input numbered its touchpoints its own way; the steps and
    /// exclusions, given ahead, have the same ids everywhere.
    pub fn renumber_touchpoints(&mut self, ids: &[u32]) {
        let renumber = |t: u32| match ids.get(t as usize) {
            Some(&id) => id,
            // `u32::MAX`: the journey ended there.
            None => t,
        };
        let counted = std::mem::take(&mut self.next_after);
        for ((step, t), n) in counted.iter() {
            self.next_after.add(step, renumber(t), n);
        }
        for a in self.open.iter_mut().flatten() {
            a.next = a.next.map(renumber);
        }
    }

    /// Counts, from now on, without knowing the data's "now" (`spec.as_of` is ignored): a
    /// reader that streams journeys learns the last event's time only at the end. Attempts
    /// whose window ends after every time seen so far (see
    /// [`settled_until`](Self::settled_until)) wait, in a few bytes each, for
    /// [`settle`](Self::settle); the result is then the same as with `as_of` known up front.
    pub fn defer_maturity(&mut self) {
        self.open.get_or_insert_with(Vec::new);
    }

    /// Says that "now" will be at least `t` (the latest event time seen so far): attempts
    /// whose window ends by then are not maturing, and need not wait.
    pub fn settled_until(&mut self, t: i64) {
        self.settled_until = self.settled_until.max(t);
    }

    /// Decides the maturity of the attempts that waited, now that "now" is `as_of`, and
    /// counts from now on with it known. Does nothing unless maturity was deferred: "now"
    /// was known all along then.
    pub fn settle(&mut self, as_of: i64) {
        let Some(waited) = self.open.take() else {
            return;
        };
        self.spec.as_of = as_of;
        for a in waited {
            self.conclude(&a, a.window_end > as_of);
        }
    }

    /// What an attempt's maturity decides: a maturing attempt counts as maturing at its
    /// level (overall, for its breakdown value, for its entry period); one whose window is
    /// over counts what it did next.
    fn conclude(&mut self, a: &OpenAttempt, maturing: bool) {
        let n = self.spec.num_steps();
        if maturing {
            self.tallies.maturing[a.level] += 1;
            if let Some(v) = a.value {
                self.breakdown
                    .entry(v)
                    .or_insert_with(|| StepTallies::new(n))
                    .maturing[a.level] += 1;
            }
            if let Some(p) = a.period {
                self.trend
                    .entry(p)
                    .or_insert_with(|| StepTallies::new(n))
                    .maturing[a.level] += 1;
            }
        } else if let Some(next) = a.next {
            self.next_after.add(a.level as u32 - 1, next, 1);
        }
    }

    /// Records, from now on, every counted attempt into
    /// [`attempts_made`](Self::attempts_made).
    pub fn record_attempts(&mut self) {
        self.attempts_made.get_or_insert_with(Vec::new);
    }

    /// Counts, from now on, only levels (tallies and recorded attempts): no times to
    /// convert, next touchpoints, breakdowns or trends. The live map runs a funnel over a
    /// session every time the session changes and keeps only what the levels say.
    pub fn levels_only(&mut self) {
        self.levels_only = true;
    }

    pub fn spec(&self) -> &FunnelSpec {
        &self.spec
    }

    /// The deepest step a journey reaches, as ClickHouse `windowFunnel` computes it (no
    /// exclusions, whole journey). For tests and the SQL function.
    pub fn level_of(&mut self, ts: &[i64], touchpoint: &[u32]) -> usize {
        fill_entries(
            &self.spec,
            &self.matcher,
            ts,
            touchpoint,
            0..ts.len(),
            &mut self.scratch.entries,
        );
        level(&self.spec, &mut self.scratch).level
    }

    /// Counts a journey's (or attempt's) outcome; the level search left its links in the
    /// scratch.
    fn count(&mut self, journey: &Events<'_>, out: Outcome) {
        // The chain buffer is borrowed out of the scratch (not the whole scratch: moving six
        // vectors out and back per journey was a measurable share of a funnel's time).
        let mut chain = std::mem::take(&mut self.scratch.chain);
        self.count_chain(journey, out, &mut chain);
        self.scratch.chain = chain;
    }

    fn count_chain(&mut self, journey: &Events<'_>, out: Outcome, chain: &mut Vec<u32>) {
        let n = self.spec.num_steps();
        // The chain's events, first step first.
        chain.clear();
        let mut link = out.link;
        while link != NO_PARENT {
            let l = self.scratch.links[link as usize];
            chain.push(l.event);
            link = l.parent;
        }
        chain.reverse();
        if out.level == 0 {
            self.tallies.levels[0] += 1;
            return;
        }
        let (ts, tp) = (journey.ts, journey.touchpoint);
        let first = chain[0] as usize;
        // At equal times a later step's event may come before the first step's in the
        // journey, so the chain's span is its lowest to highest event.
        let (lo, hi) = chain[..out.level]
            .iter()
            .fold((usize::MAX, 0), |(lo, hi), &e| {
                (lo.min(e as usize), hi.max(e as usize))
            });
        if !self.spec.exclusions.is_empty()
            && tp[lo..=hi].iter().any(|&t| self.matcher.is_excluded(t))
        {
            self.excluded += 1;
            return;
        }
        self.attempts += 1;
        let start = ts[first];
        let window_end = out
            .latest_start
            .filter(|_| out.level < n)
            .map(|t| t.saturating_add(self.spec.window));
        if let Some(made) = &mut self.attempts_made {
            made.push(Attempt {
                level: out.level,
                entry: journey.position(first),
                window_end,
            });
        }
        // Deferred: the window may still be open at a "now" not known yet.
        let waits = self.open.is_some() && window_end.is_some_and(|end| end > self.settled_until);
        let maturing = self.open.is_none() && window_end.is_some_and(|end| end > self.spec.as_of);
        // Levels now; maturity (or what the attempt did next) when concluded below.
        let tally = |t: &mut StepTallies| t.levels[out.level] += 1;
        tally(&mut self.tallies);
        let mut open = OpenAttempt {
            window_end: window_end.unwrap_or(i64::MIN),
            level: out.level,
            next: None,
            period: None,
            value: None,
        };
        if !self.levels_only {
            for k in 1..out.level {
                let at = ts[chain[k] as usize];
                self.from_previous[k].record(at.saturating_sub(ts[chain[k - 1] as usize]));
                self.from_first[k].record(at.saturating_sub(start));
                self.bins[k][human_bin(at.saturating_sub(start))] += 1;
            }
            if out.level < n {
                open.next = Some(journey.next(hi));
            }
            if let Some(attr) = self.attribute {
                let value = attr[journey.start + journey.position(first)];
                open.value = Some(value);
                tally(
                    self.breakdown
                        .entry(value)
                        .or_insert_with(|| StepTallies::new(n)),
                );
            }
            if let Some(period) = self.spec.trend {
                let period = period.period_day(start);
                open.period = Some(period);
                tally(
                    self.trend
                        .entry(period)
                        .or_insert_with(|| StepTallies::new(n)),
                );
            }
        }
        match &mut self.open {
            Some(waiting) if waits => waiting.push(open),
            _ => self.conclude(&open, maturing),
        }
    }
}

/// ClickHouse `windowFunnel` over events given as (time, bitmask of the conditions the
/// event meets), in any order: the core of the SQL function, where conditions are
/// arbitrary predicates rather than touchpoints.
#[derive(Debug, Clone)]
pub struct WindowFunnel {
    spec: FunnelSpec,
    scratch: Scratch,
}

impl WindowFunnel {
    /// `conditions` steps (1 to 32), `window` in the events' time unit.
    pub fn new(conditions: usize, window: i64, modes: Modes) -> Result<Self, String> {
        if !(1..=MAX_STEPS).contains(&conditions) {
            return Err(format!(
                "window_funnel takes 1 to {MAX_STEPS} conditions, not {conditions}"
            ));
        }
        if window < 0 {
            return Err(format!("the window must not be negative, not {window}"));
        }
        Ok(WindowFunnel {
            spec: FunnelSpec {
                steps: (0..conditions as u32).collect(),
                window,
                modes,
                order: if modes.strict_order {
                    StepOrder::Strict
                } else {
                    StepOrder::Ordered
                },
                exclusions: Vec::new(),
                count: CountBy::Customers,
                min_gap: vec![0; conditions - 1],
                max_gap: vec![0; conditions - 1],
                as_of: i64::MAX,
                trend: None,
            },
            scratch: Scratch::default(),
        })
    }

    pub fn modes(&self) -> Modes {
        self.spec.modes
    }

    /// The deepest step the events reach. Sorts `events`; the answer never depends on
    /// their order.
    pub fn level(&mut self, events: &mut [(i64, u32)]) -> u8 {
        events.sort_unstable();
        let s = &mut self.scratch;
        s.entries.clear();
        let full = if self.spec.steps.len() == 32 {
            u32::MAX
        } else {
            (1u32 << self.spec.steps.len()) - 1
        };
        for (i, &(ts, mask)) in events.iter().enumerate() {
            let mut mask = mask & full;
            if mask == 0 {
                if self.spec.modes.strict_order {
                    s.entries.push(Entry {
                        ts,
                        step: 0,
                        event: i as u32,
                    });
                }
                continue;
            }
            while mask != 0 {
                let k = mask.trailing_zeros();
                mask &= mask - 1;
                s.entries.push(Entry {
                    ts,
                    step: k as u8 + 1,
                    event: i as u32,
                });
            }
        }
        s.entries.sort_by_key(|e| (e.ts, e.step));
        level(&self.spec, s).level as u8
    }
}

/// Entries of `range` of a journey, ordered by (time, step), ties of one step in event order.
fn fill_entries(
    spec: &FunnelSpec,
    matcher: &Matcher,
    ts: &[i64],
    touchpoint: &[u32],
    range: std::ops::Range<usize>,
    entries: &mut Vec<Entry>,
) {
    entries.clear();
    let keep_unmatched = spec.modes.strict_order;
    for i in range {
        let mut mask = matcher.mask(touchpoint[i]);
        if mask == 0 {
            if keep_unmatched {
                entries.push(Entry {
                    ts: ts[i],
                    step: 0,
                    event: i as u32,
                });
            }
            continue;
        }
        while mask != 0 {
            let k = mask.trailing_zeros();
            mask &= mask - 1;
            entries.push(Entry {
                ts: ts[i],
                step: k as u8 + 1,
                event: i as u32,
            });
        }
    }
    // Journeys are in time order already: this only reorders steps within equal times,
    // and the stable sort keeps event order among entries of one step.
    if entries
        .windows(2)
        .any(|w| (w[0].ts, w[0].step) > (w[1].ts, w[1].step))
    {
        entries.sort_by_key(|e| (e.ts, e.step));
    }
}

/// Keeps an attempt's first step at its anchor event: other first-step entries go (under
/// `strict_order` an event left with no step becomes a non-step entry, which ends a strict
/// chain as any other event would).
fn anchor_attempt(entries: &mut Vec<Entry>, anchor: u32, strict_order: bool) {
    let before = entries.len();
    let mut removed: Vec<Entry> = Vec::new();
    entries.retain(|e| {
        let keep = e.step != 1 || e.event == anchor;
        if !keep && strict_order {
            removed.push(*e);
        }
        keep
    });
    if entries.len() == before || !strict_order {
        return;
    }
    for e in removed {
        if !entries.iter().any(|x| x.event == e.event) {
            entries.push(Entry { step: 0, ..e });
        }
    }
    entries.sort_by_key(|e| (e.ts, e.step));
}

/// The level search over prepared entries.
fn level(spec: &FunnelSpec, s: &mut Scratch) -> Outcome {
    s.links.clear();
    if s.entries.is_empty() {
        return Outcome::NONE;
    }
    match spec.order {
        StepOrder::Unordered => unordered_level(spec, s),
        _ if !spec.modes.strict_order && spec.num_steps() == 1 => {
            s.links.push(Link {
                event: s.entries[0].event,
                parent: NO_PARENT,
            });
            Outcome {
                level: 1,
                link: 0,
                latest_start: s.entries.last().map(|e| e.ts),
            }
        }
        // A minimum gap prefers an earlier previous step, so keeping only the latest chain
        // per step (ClickHouse's way, right for the window and maximum gaps) could miss a
        // valid one: then every chain is kept.
        _ if spec.modes.strict_once || spec.min_gap.iter().any(|&g| g > 0) => {
            strict_once_level(spec, s)
        }
        _ => chain_level(spec, s),
    }
}

fn deepest(levels: &[Option<Reached>]) -> Outcome {
    match levels.iter().rposition(Option::is_some) {
        Some(k) => Outcome {
            level: k + 1,
            link: levels[k].map_or(NO_PARENT, |r| r.link),
            latest_start: levels[0].map(|r| r.first),
        },
        None => Outcome::NONE,
    }
}

/// ClickHouse's search for every mode but `strict_once`: per step, the latest chain that
/// reached it.
fn chain_level(spec: &FunnelSpec, s: &mut Scratch) -> Outcome {
    let n = spec.num_steps();
    let m = spec.modes;
    s.levels.clear();
    s.levels.resize(n, None);
    let mut first_event = false;
    for e in &s.entries {
        if e.step == 0 {
            // Only present under strict_order: anything else after the first step ends it.
            if first_event {
                return deepest(&s.levels).stopped();
            }
            continue;
        }
        let k = e.step as usize - 1;
        if k == 0 {
            s.links.push(Link {
                event: e.event,
                parent: NO_PARENT,
            });
            s.levels[0] = Some(Reached {
                first: e.ts,
                last: e.ts,
                link: s.links.len() as u32 - 1,
            });
            first_event = true;
        } else if m.strict_deduplication && s.levels[k].is_some() {
            return deepest(&s.levels).stopped();
        } else if m.strict_order && first_event && s.levels[k - 1].is_none() {
            if m.allow_reentry {
                continue;
            }
            let reached = s.levels.iter().position(Option::is_none).unwrap_or(n);
            return deepest(&s.levels[..reached]).stopped();
        } else if let Some(prev) = s.levels[k - 1] {
            let ok = e.ts <= prev.first.saturating_add(spec.window)
                && (!m.strict_increase || prev.last < e.ts)
                && spec.gap_ok(k, e.ts.saturating_sub(prev.last));
            if ok {
                s.links.push(Link {
                    event: e.event,
                    parent: prev.link,
                });
                s.levels[k] = Some(Reached {
                    first: prev.first,
                    last: e.ts,
                    link: s.links.len() as u32 - 1,
                });
                if k + 1 == n {
                    return deepest(&s.levels);
                }
            }
        }
    }
    deepest(&s.levels)
}

/// Whether a chain already used an event.
fn chain_has(links: &[Link], mut link: u32, event: u32) -> bool {
    while link != NO_PARENT {
        let l = links[link as usize];
        if l.event == event {
            return true;
        }
        link = l.parent;
    }
    false
}

fn deepest_sequence(sequences: &[Vec<Reached>]) -> Outcome {
    match sequences.iter().rposition(|l| !l.is_empty()) {
        Some(k) => Outcome {
            level: k + 1,
            link: sequences[k].last().map_or(NO_PARENT, |r| r.link),
            latest_start: sequences[0].iter().map(|r| r.first).max(),
        },
        None => Outcome::NONE,
    }
}

/// ClickHouse's `strict_once` search: every chain is kept (one event may match several
/// steps, and which chain it should extend is not known yet), and under `strict_once` an
/// event extends only chains that have not used it. Also the search for funnels with a
/// minimum gap.
fn strict_once_level(spec: &FunnelSpec, s: &mut Scratch) -> Outcome {
    let n = spec.num_steps();
    let m = spec.modes;
    s.sequences.resize_with(n.max(s.sequences.len()), Vec::new);
    for l in &mut s.sequences {
        l.clear();
    }
    let sequences = &mut s.sequences[..n];
    let mut has_first = false;
    for e in &s.entries {
        if e.step == 0 {
            if has_first {
                return deepest_sequence(sequences).stopped();
            }
            continue;
        }
        let k = e.step as usize - 1;
        if k == 0 {
            s.links.push(Link {
                event: e.event,
                parent: NO_PARENT,
            });
            sequences[0].push(Reached {
                first: e.ts,
                last: e.ts,
                link: s.links.len() as u32 - 1,
            });
            has_first = true;
        } else if m.strict_deduplication && !sequences[k].is_empty() {
            return deepest_sequence(sequences).stopped();
        } else if m.strict_order && has_first && sequences[k - 1].is_empty() {
            if m.allow_reentry {
                continue;
            }
            let reached = sequences.iter().position(Vec::is_empty).unwrap_or(n);
            return deepest_sequence(&sequences[..reached]).stopped();
        } else if !sequences[k - 1].is_empty() {
            let (before, after) = sequences.split_at_mut(k);
            let (prev_level, level) = (&mut before[k - 1], &mut after[0]);
            // Of the chains this entry extends that ended strictly before it, only the one
            // with the latest first step matters: they all end here, so later checks (window
            // from the first step; gaps and strict_increase from this time) favour the latest
            // start, and no later event can be one they used. Keeping just it stops repeated
            // steps in one window from multiplying the chains step after step.
            let mut best_before: Option<Reached> = None;
            let mut i = 0;
            while i < prev_level.len() {
                let prev = prev_level[i];
                let in_window = e.ts <= prev.first.saturating_add(spec.window);
                if !in_window && prev_level.len() > 1 {
                    // Out of the window for good (entries come in time order); keep one so
                    // the level still counts as reached.
                    prev_level.remove(i);
                    continue;
                }
                i += 1;
                let ok = in_window
                    && (!m.strict_once || !chain_has(&s.links, prev.link, e.event))
                    && (!m.strict_increase || prev.last < e.ts)
                    && spec.gap_ok(k, e.ts.saturating_sub(prev.last));
                if !ok {
                    continue;
                }
                if prev.last < e.ts {
                    if best_before.is_none_or(|b| prev.first > b.first) {
                        best_before = Some(prev);
                    }
                    continue;
                }
                s.links.push(Link {
                    event: e.event,
                    parent: prev.link,
                });
                level.push(Reached {
                    first: prev.first,
                    last: e.ts,
                    link: s.links.len() as u32 - 1,
                });
                if k + 1 == n {
                    return deepest_sequence(sequences);
                }
            }
            if let Some(prev) = best_before {
                s.links.push(Link {
                    event: e.event,
                    parent: prev.link,
                });
                level.push(Reached {
                    first: prev.first,
                    last: e.ts,
                    link: s.links.len() as u32 - 1,
                });
                if k + 1 == n {
                    return deepest_sequence(sequences);
                }
            }
        }
    }
    deepest_sequence(sequences)
}

/// Unordered funnels: the most steps matched by distinct events within any window that
/// starts at a step event. A step repeated in the funnel needs as many events.
fn unordered_level(spec: &FunnelSpec, s: &mut Scratch) -> Outcome {
    let n = spec.num_steps();
    // Distinct touchpoints of the steps and how many of each the funnel needs.
    let mut need: Vec<(u32, u32)> = Vec::new();
    for &t in &spec.steps {
        match need.iter_mut().find(|(x, _)| *x == t) {
            Some(e) => e.1 += 1,
            None => need.push((t, 1)),
        }
    }
    // Entries carry one entry per matching step; the lowest step stands for the event.
    // Journey order is time order; the stable sort leaves each event's lowest step first.
    let events: Vec<Entry> = {
        let mut v: Vec<Entry> = s.entries.iter().filter(|e| e.step > 0).copied().collect();
        v.sort_by_key(|e| e.event);
        v.dedup_by_key(|e| e.event);
        v
    };
    let slot = |e: &Entry| {
        let t = spec.steps[e.step as usize - 1];
        need.iter().position(|(x, _)| *x == t).unwrap_or(0)
    };
    s.counts.clear();
    s.counts.resize(need.len(), 0);
    let (mut best, mut best_start) = (0usize, 0usize);
    let mut matched = 0usize;
    let mut hi = 0;
    for lo in 0..events.len() {
        while hi < events.len() && events[hi].ts <= events[lo].ts.saturating_add(spec.window) {
            let j = slot(&events[hi]);
            if s.counts[j] < need[j].1 {
                matched += 1;
            }
            s.counts[j] += 1;
            hi += 1;
        }
        if matched > best {
            (best, best_start) = (matched, lo);
            if best == n {
                break;
            }
        }
        let j = slot(&events[lo]);
        s.counts[j] -= 1;
        if s.counts[j] < need[j].1 {
            matched -= 1;
        }
    }
    // The chain: in the best window, the first events that fill each need, in time order.
    s.counts.iter_mut().for_each(|c| *c = 0);
    let mut parent = NO_PARENT;
    let mut taken = 0;
    for e in &events[best_start..] {
        if taken == best {
            break;
        }
        let j = slot(e);
        if s.counts[j] < need[j].1 {
            s.counts[j] += 1;
            s.links.push(Link {
                event: e.event,
                parent,
            });
            parent = s.links.len() as u32 - 1;
            taken += 1;
        }
    }
    Outcome {
        level: best,
        link: parent,
        // Any step event can open a window: the last one may still be joined by others.
        latest_start: events.last().map(|e| e.ts),
    }
}

impl Funnel<'_> {
    /// Adds a journey sifted to [`kept_touchpoints`](Self::kept_touchpoints): counts as
    /// [`add`](Aggregate::add) of the whole journey does.
    pub fn add_sifted(&mut self, journey: &Sifted<'_>) {
        if journey.ts.is_empty() {
            // No step, no exclusion (40% of the bench's customers for three steps): level 0,
            // and nothing else to count.
            if journey.len > 0 {
                self.journeys += 1;
                self.tallies.levels[0] += 1;
            }
            return;
        }
        self.add_events(&Events::sifted(journey));
    }

    /// The touchpoints whose events decide this funnel's counts: its steps and exclusions.
    /// `None` under `strict_order`, where any event between two steps breaks the chain.
    pub fn kept_touchpoints(&self) -> Option<Vec<u32>> {
        if self.spec.modes.strict_order {
            return None;
        }
        let known = |t: &&u32| **t != u32::MAX;
        let steps = self.spec.steps.iter().chain(&self.spec.exclusions);
        Some(steps.filter(known).copied().collect())
    }

    /// Counts a journey with at least one event.
    fn add_events(&mut self, journey: &Events<'_>) {
        self.journeys += 1;
        let (ts, tp) = (journey.ts, journey.touchpoint);
        match self.spec.count {
            CountBy::Customers => {
                fill_entries(
                    &self.spec,
                    &self.matcher,
                    ts,
                    tp,
                    0..ts.len(),
                    &mut self.scratch.entries,
                );
                let out = level(&self.spec, &mut self.scratch);
                self.count(journey, out);
            }
            CountBy::Attempts => {
                // An attempt starts at a first-step event outside every earlier attempt (which
                // spans from its first step to the last step it reached), and is anchored
                // there: a repeated first step inside it does not restart it.
                let mut begin = 0;
                let mut any = false;
                while let Some(off) = tp[begin..]
                    .iter()
                    .position(|&t| self.matcher.mask(t) & 1 != 0)
                {
                    let start = begin + off;
                    let end_ts = ts[start].saturating_add(self.spec.window);
                    let end = start + ts[start..].partition_point(|&t| t <= end_ts);
                    fill_entries(
                        &self.spec,
                        &self.matcher,
                        ts,
                        tp,
                        start..end,
                        &mut self.scratch.entries,
                    );
                    if self.spec.order != StepOrder::Unordered {
                        anchor_attempt(
                            &mut self.scratch.entries,
                            start as u32,
                            self.spec.modes.strict_order,
                        );
                    }
                    let out = level(&self.spec, &mut self.scratch);
                    any = true;
                    let mut hi = start;
                    let mut link = out.link;
                    while link != NO_PARENT {
                        let l = self.scratch.links[link as usize];
                        hi = hi.max(l.event as usize);
                        link = l.parent;
                    }
                    self.count(journey, out);
                    begin = hi + 1;
                    if begin >= ts.len() {
                        break;
                    }
                }
                if !any {
                    self.tallies.levels[0] += 1;
                }
            }
        }
    }
}

impl Aggregate<'_> for Funnel<'_> {
    fn add(&mut self, journey: &Journey<'_>) {
        if !journey.ts.is_empty() {
            self.add_events(&Events::whole(journey));
        }
    }

    fn merge(&mut self, other: Self) {
        self.journeys += other.journeys;
        self.attempts += other.attempts;
        self.excluded += other.excluded;
        self.tallies.add(&other.tallies);
        for (a, b) in self.from_previous.iter_mut().zip(&other.from_previous) {
            a.merge(b);
        }
        for (a, b) in self.from_first.iter_mut().zip(&other.from_first) {
            a.merge(b);
        }
        for (a, b) in self.bins.iter_mut().zip(&other.bins) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        for ((step, t), n) in other.next_after.iter() {
            self.next_after.add(step, t, n);
        }
        let n = self.spec.num_steps();
        for (k, v) in other.breakdown {
            self.breakdown
                .entry(k)
                .or_insert_with(|| StepTallies::new(n))
                .add(&v);
        }
        for (k, v) in other.trend {
            self.trend
                .entry(k)
                .or_insert_with(|| StepTallies::new(n))
                .add(&v);
        }
        if let Some(theirs) = other.attempts_made {
            self.attempts_made
                .get_or_insert_with(Vec::new)
                .extend(theirs);
        }
        if let Some(theirs) = other.open {
            self.open.get_or_insert_with(Vec::new).extend(theirs);
        }
        self.settled_until = self.settled_until.max(other.settled_until);
    }
}

#[cfg(test)]
mod tests {
    use super::NextAfter;

    #[test]
    fn next_touchpoints_are_counted_by_step_wherever_their_id_is() {
        let mut next = NextAfter::default();
        assert!(next.is_empty());
        let big = 1_000_000;
        for (step, t, n) in [
            (0, 3, 2),
            (0, NextAfter::ENDED, 1),
            (2, 0, 5),
            (0, big, 4),
            (0, 3, 1),
            (2, NextAfter::DENSE - 1, 6),
            (2, NextAfter::DENSE, 7),
        ] {
            next.add(step, t, n);
        }
        assert_eq!(next.get(0, 3), Some(3));
        assert_eq!(next.get(0, NextAfter::ENDED), Some(1));
        assert_eq!(next.get(2, 0), Some(5));
        assert_eq!(next.get(0, big), Some(4));
        assert_eq!(next.get(2, NextAfter::DENSE - 1), Some(6));
        assert_eq!(next.get(2, NextAfter::DENSE), Some(7));
        // Nothing counted: none, whether the table reaches it or not.
        assert_eq!(next.get(0, 2), None);
        assert_eq!(next.get(1, 3), None);
        assert_eq!(next.get(7, NextAfter::ENDED), None);
        let mut all: Vec<_> = next.iter().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            vec![
                ((0, 3), 3),
                ((0, big), 4),
                ((0, NextAfter::ENDED), 1),
                ((2, 0), 5),
                ((2, NextAfter::DENSE - 1), 6),
                ((2, NextAfter::DENSE), 7),
            ]
        );
        assert!(!next.is_empty());
    }
}
