//! ClickHouse `sequenceMatch`, `sequenceCount` and `retention` over events given as (time,
//! bitmask of the conditions the event meets): the cores of the SQL functions
//! `sequence_match(pattern, ts, cond1, …)`, `sequence_count(…)` and `retention(cond1, …)`.
//!
//! Semantics, as ClickHouse 26.9 computes them (checked against chdb on a recorded corpus,
//! tests/fixtures/peers/random_sequence.json.gz; the source read is
//! `src/AggregateFunctions/AggregateFunctionSequenceMatch.h`):
//!
//! **Pattern.** A sequence of `(?N)` (an event meeting condition N, numbered from 1), `.` (any
//! one stored event), `.*` (any number of stored events) and `(?t OP SECONDS)` with OP one of
//! `<=`, `<`, `>=`, `>`, `==`, and nothing else: no spaces, no alternation. A number is
//! `+`? then decimal digits (leading zeros allowed) and must fit in 64 bits. N runs from 1 to the
//! number of conditions, which is 2 to 32 (ClickHouse refuses one condition). A time constraint
//! must follow `(?N)`, `.`, `.*` or the start of the pattern, never another time constraint.
//! ClickHouse's time unit is the timestamp column's; here timestamps are microseconds and the
//! numbers in `(?t…)` seconds, so `(?t<=3600)` means an hour.
//!
//! **Events.** Rows meeting no condition are dropped before anything else (ClickHouse never
//! stores them): `.` and `.*` only ever match events meeting some condition, and `(?1).(?2)`
//! does not match "1, nothing, 2". Condition bits at or above the condition count are ignored.
//! If a condition the pattern names is met by no event, the answer is false / 0 at once.
//!
//! **Order.** The stored events are sorted by timestamp alone, with an unstable but
//! deterministic sort, so the order of equal timestamps depends on the order the events come
//! in, and ClickHouse's answer does too: `(?1)(?2)` over `[(5, 1), (5, 2)]` matches, over
//! `[(5, 2), (5, 1)]` it does not. Up to 20 stored events the sort is an insertion sort, that
//! is stable: equal timestamps keep arrival order (trailmap's own order for ties). Above 20 it
//! is not pdqsort, as the source's `::sort` would suggest, but an ipnsort (probed, see
//! [`clickhouse_sort`], which repeats it move for move), so for the same arrival order the
//! answers are ClickHouse's for any number of events. One event meeting several conditions is
//! still one event: it serves one step of a match.
//!
//! **Matching.** The pattern is compiled to actions with an implicit leading `.*`, as ClickHouse
//! does. `sequenceMatch` without time constraints runs a bit-parallel NFA over the events (no
//! step limit): true when some run of consecutive stored events matches the pattern.
//! `sequenceMatch` with time constraints and every `sequenceCount` run ClickHouse's
//! backtracking matcher, step for step:
//! - `(?N)` and `.` consume an event; the matched event becomes the *base* of the next time
//!   constraint. `.*` records a backtrack point and makes the first event it leaves the base:
//!   a constraint after `.*` measures from there, not from the event before the `.*`, so
//!   `(?1).*(?t<=5)(?2)` matches as `(?1).*(?2)` does (the base may be the `(?2)` event).
//! - `(?t OP d)` compares the *next unconsumed* event's time with base + d, without consuming
//!   it. When it holds it records a backtrack point, so on failure later the constraint is
//!   retried on the following event with the same base: events may pass between `(?1)` and
//!   `(?2)` in `(?1)(?t<=5)(?2)`, as the ClickHouse docs say. When `<=`/`<` fail the matcher
//!   backtracks; when `>=`/`>`/`==` fail it moves on to the next event (backtracking at the
//!   end).
//! - Running out of events with actions left still matches if every action left is `.*`, `<=`,
//!   `<` or `>=0`: a trailing `(?1)(?t<=5)` or `(?1)(?t<0)` holds with no event after the
//!   `(?1)` one, a trailing `(?1)(?t>5)` or `(?1)(?t==0)` does not. ClickHouse bug: its loop
//!   over those actions does not stop at the end of its action list and reads the slot after
//!   it, uninitialized memory; when that happens to hold one of those action types the match
//!   fails. So there, and only there, ClickHouse's answer is not a function of the input: the
//!   same query gave `sequenceCount('(?1).*')` over one event 1 in one run and 0 in another.
//!   Here the list ends where it ends (the usual ClickHouse answer), and
//!   [`SequencePattern::ran_past_pattern_end`] tells when an answer depended on it.
//! - base + d is computed on ClickHouse's unsigned 64-bit seconds and wraps:
//!   `(?1)(?t<=18446744073709551615)(?2)` does not match from timestamp 1 (1 + d = 0), and
//!   `(?t>18446744073709551615)` holds there. Mirrored for timestamps at or after 1970.
//!
//! `sequenceCount` counts non-overlapping matches: each search starts where the previous match
//! stopped (after its last consumed event; a match ending on a time constraint leaves the event
//! it tested for the next search, so `.(?t<=1)` counts 2 over two events a second apart), and
//! moves one event on when it consumed none (`sequenceCount('')` counts the stored events).
//! Matching is lazy: `.*` first tries to match nothing.
//!
//! **Step limit.** Each backtracking search gives up after 1,000,000 steps with ClickHouse's
//! TOO_SLOW error ([`TooSlow`]), counted as ClickHouse counts them: `sequenceCount('(?2)')`
//! over 500,000 events with condition 2 on the last one answers 1, over 500,001 it fails. Long
//! histories hit it (a failing search costs at least two steps per event);
//! [`SequencePattern::set_max_iterations`] lifts it. The NFA has no limit. ClickHouse's
//! pre-check `couldMatchDeterministicParts` captures its iterators by value and so never
//! rejects anything nor counts steps: not repeated here.
//!
//! **retention(cond1, …, condN)** (2 to 32 conditions): `r[0]` = cond1 met on some row, `r[i]` =
//! cond1 met on some row and cond(i+1) met on some (possibly other) row: [`Retention`].

use std::fmt;

/// The most conditions ClickHouse takes.
pub const MAX_CONDITIONS: usize = 32;
/// ClickHouse's `sequence_match_max_iterations`.
pub const MAX_ITERATIONS: u64 = 1_000_000;

const MICROS: i128 = 1_000_000;
/// 2^64 seconds in microseconds: where ClickHouse's unsigned base + d wraps.
const WRAP: i128 = (1i128 << 64) * MICROS;

/// ClickHouse's TOO_SLOW: a backtracking search took more steps than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSlow {
    pub max_iterations: u64,
}

impl fmt::Display for TooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pattern application proves too difficult, exceeding max iterations ({}), as in \
             ClickHouse; use a simpler pattern or fewer events per group",
            self.max_iterations
        )
    }
}

impl std::error::Error for TooSlow {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeOp {
    Le,
    Lt,
    Ge,
    Gt,
    Eq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// An event meeting condition `.0` (0-based).
    Event(u8),
    Any,
    Star,
    /// Time since the base event against `us` (the seconds in microseconds); `zero` when the
    /// seconds are 0 (a trailing `>=0` still matches at the end).
    Time {
        op: TimeOp,
        us: i128,
        zero: bool,
    },
}

/// The outcome of one backtracking search.
#[derive(Debug, Clone, Copy)]
struct Search {
    matched: bool,
    /// Where the next search starts.
    next: usize,
    /// Matched by skipping the actions left once the events ran out, to the end of the list.
    past_end: bool,
}

/// A backtrack point: action, event, base.
#[derive(Debug, Clone, Copy)]
struct Frame {
    action: usize,
    event: usize,
    base: usize,
}

/// The NFA of a pattern without time constraints, one bit per state, `words` words per set.
#[derive(Debug, Clone, Default)]
struct Nfa {
    words: usize,
    /// States with a `.*` loop.
    star: Vec<u64>,
    /// States left by `.`.
    any: Vec<u64>,
    /// `on[c * words..][..words]`: states left by `(?c+1)`.
    on: Vec<u64>,
    /// The accepting state.
    last: usize,
}

#[derive(Debug, Clone, Default)]
struct Scratch {
    events: Vec<(i64, u32)>,
    stack: Vec<Frame>,
    active: Vec<u64>,
    next: Vec<u64>,
    step: Vec<u64>,
}

/// A compiled `sequenceMatch` / `sequenceCount` pattern with its scratch space: one per
/// aggregate, reused for every group (no allocation per group once warm).
#[derive(Debug, Clone)]
pub struct SequencePattern {
    pattern: String,
    conditions: usize,
    actions: Vec<Action>,
    has_time: bool,
    /// Conditions the pattern names.
    used: u32,
    nfa: Nfa,
    max_iterations: Option<u64>,
    /// Whether the last answer counted a match that ran past the end of the actions.
    ran_past_end: bool,
    scratch: Scratch,
}

impl SequencePattern {
    /// Compiles `pattern` for `conditions` conditions (2 to 32, as ClickHouse). Accepts exactly
    /// the patterns ClickHouse accepts; the error says what is wrong and where (byte offset).
    pub fn parse(pattern: &str, conditions: usize) -> Result<Self, String> {
        if !(2..=MAX_CONDITIONS).contains(&conditions) {
            return Err(format!(
                "sequence_match and sequence_count take 2 to {MAX_CONDITIONS} conditions (as \
                 ClickHouse), not {conditions}"
            ));
        }
        let actions = parse_actions(pattern, conditions)?;
        let has_time = actions.iter().any(|a| matches!(a, Action::Time { .. }));
        let used = actions.iter().fold(0u32, |m, a| match a {
            Action::Event(c) => m | 1 << c,
            _ => m,
        });
        Ok(SequencePattern {
            pattern: pattern.to_string(),
            conditions,
            nfa: if has_time {
                Nfa::default()
            } else {
                Nfa::new(&actions)
            },
            actions,
            has_time,
            used,
            max_iterations: Some(MAX_ITERATIONS),
            ran_past_end: false,
            scratch: Scratch::default(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn conditions(&self) -> usize {
        self.conditions
    }

    /// Whether the pattern has `(?t…)` constraints (then `matches` backtracks, and may hit the
    /// step limit).
    pub fn has_time(&self) -> bool {
        self.has_time
    }

    /// The step limit of one backtracking search: ClickHouse's 1,000,000 by default, `None`
    /// for none.
    pub fn set_max_iterations(&mut self, limit: Option<u64>) {
        self.max_iterations = limit;
    }

    /// Whether the last answer of [`matches`](Self::matches) or [`count`](Self::count) counted
    /// a match that ended with the events while only `.*`, `(?t<=…)`, `(?t<…)` or `(?t>=0)`
    /// were left of the pattern: where ClickHouse reads past the end of its action list, so
    /// that it answers as here (a match) or, depending on that memory, without it.
    pub fn ran_past_pattern_end(&self) -> bool {
        self.ran_past_end
    }

    /// `sequenceMatch`: whether the events match. `events` in arrival order (the order of equal
    /// timestamps matters, as in ClickHouse); left untouched.
    pub fn matches(&mut self, events: &[(i64, u32)]) -> Result<bool, TooSlow> {
        self.ran_past_end = false;
        if !self.prepare(events) {
            return Ok(false);
        }
        if !self.has_time {
            return Ok(self.nfa_match());
        }
        let found = self.backtrack(0)?;
        self.ran_past_end = found.matched && found.past_end;
        Ok(found.matched)
    }

    /// `sequenceCount`: how many non-overlapping matches the events hold. `events` in arrival
    /// order; left untouched.
    pub fn count(&mut self, events: &[(i64, u32)]) -> Result<u64, TooSlow> {
        self.ran_past_end = false;
        if !self.prepare(events) {
            return Ok(0);
        }
        let mut count = 0;
        let mut at = 0;
        while at < self.scratch.events.len() {
            let found = self.backtrack(at)?;
            if !found.matched {
                break;
            }
            count += 1;
            // Running past the end means the events ran out: this is the last search.
            self.ran_past_end = found.past_end;
            at = found.next;
        }
        Ok(count)
    }

    /// Stores the events meeting some condition in ClickHouse's order; false when a condition
    /// the pattern names is never met.
    fn prepare(&mut self, events: &[(i64, u32)]) -> bool {
        let full = full_mask(self.conditions);
        let stored = &mut self.scratch.events;
        stored.clear();
        let mut met = 0;
        for &(ts, mask) in events {
            let mask = mask & full;
            if mask != 0 {
                stored.push((ts, mask));
                met |= mask;
            }
        }
        if met & self.used != self.used {
            return false;
        }
        clickhouse_sort(stored);
        true
    }

    fn nfa_match(&mut self) -> bool {
        let nfa = &self.nfa;
        let s = &mut self.scratch;
        let w = nfa.words;
        let (last_word, last_bit) = (nfa.last / 64, 1u64 << (nfa.last % 64));
        s.active.clear();
        s.active.resize(w, 0);
        s.active[0] = 1;
        if s.active[last_word] & last_bit != 0 {
            return true;
        }
        s.next.resize(w, 0);
        s.step.resize(w, 0);
        for &(_, mask) in &s.events {
            s.step.copy_from_slice(&nfa.any);
            let mut m = mask;
            while m != 0 {
                let c = m.trailing_zeros() as usize;
                m &= m - 1;
                for (t, on) in s.step.iter_mut().zip(&nfa.on[c * w..(c + 1) * w]) {
                    *t |= on;
                }
            }
            let mut carry = 0;
            let mut any = 0;
            for i in 0..w {
                let moved = s.active[i] & s.step[i];
                let next = (s.active[i] & nfa.star[i]) | (moved << 1) | carry;
                carry = moved >> 63;
                s.next[i] = next;
                any |= next;
            }
            std::mem::swap(&mut s.active, &mut s.next);
            if any == 0 {
                return false;
            }
            if s.active[last_word] & last_bit != 0 {
                return true;
            }
        }
        false
    }

    /// ClickHouse's `backtrackingMatch` from stored event `start`: whether a match starts there
    /// or later, and where the next search starts.
    fn backtrack(&mut self, start: usize) -> Result<Search, TooSlow> {
        let actions = &self.actions;
        let s = &mut self.scratch;
        let ev = &s.events;
        let end = ev.len();
        let stack = &mut s.stack;
        stack.clear();
        let (mut a, mut e, mut base) = (0usize, start, start);
        // Pops backtrack points until one has an event after it.
        let back = |stack: &mut Vec<Frame>, a: &mut usize, e: &mut usize, base: &mut usize| {
            while let Some(f) = stack.pop() {
                *a = f.action;
                *e = f.event + 1;
                *base = f.base;
                if *e != end {
                    return true;
                }
            }
            false
        };
        let mut steps: u64 = 0;
        while a < actions.len() && e < end {
            match actions[a] {
                Action::Event(c) => {
                    if ev[e].1 >> c & 1 != 0 {
                        base = e;
                        a += 1;
                        e += 1;
                    } else if !back(stack, &mut a, &mut e, &mut base) {
                        break;
                    }
                }
                Action::Any => {
                    base = e;
                    a += 1;
                    e += 1;
                }
                Action::Star => {
                    stack.push(Frame {
                        action: a,
                        event: e,
                        base,
                    });
                    base = e;
                    a += 1;
                }
                Action::Time { op, us, .. } => {
                    let t = ev[e].0 as i128;
                    let mut limit = ev[base].0 as i128 + us;
                    if limit >= WRAP {
                        limit -= WRAP;
                    }
                    let holds = match op {
                        TimeOp::Le => t <= limit,
                        TimeOp::Lt => t < limit,
                        TimeOp::Ge => t >= limit,
                        TimeOp::Gt => t > limit,
                        TimeOp::Eq => t == limit,
                    };
                    if holds {
                        stack.push(Frame {
                            action: a,
                            event: e,
                            base,
                        });
                        base = e;
                        a += 1;
                    } else if matches!(op, TimeOp::Le | TimeOp::Lt) {
                        if !back(stack, &mut a, &mut e, &mut base) {
                            break;
                        }
                    } else {
                        e += 1;
                        if e == end && !back(stack, &mut a, &mut e, &mut base) {
                            break;
                        }
                    }
                }
            }
            steps += 1;
            if let Some(max) = self.max_iterations
                && steps > max
            {
                return Err(TooSlow {
                    max_iterations: max,
                });
            }
        }
        // Actions left that can match nothing at the end.
        let left = a;
        while a < actions.len()
            && matches!(
                actions[a],
                Action::Star
                    | Action::Time {
                        op: TimeOp::Le | TimeOp::Lt,
                        ..
                    }
                    | Action::Time {
                        op: TimeOp::Ge,
                        zero: true,
                        ..
                    }
            )
        {
            a += 1;
        }
        if e == start {
            e += 1;
        }
        Ok(Search {
            matched: a == actions.len(),
            next: e,
            past_end: a == actions.len() && left < a,
        })
    }
}

fn full_mask(conditions: usize) -> u32 {
    if conditions >= 32 {
        u32::MAX
    } else {
        (1u32 << conditions) - 1
    }
}

/// The parser: ClickHouse's grammar, clearer messages.
fn parse_actions(pattern: &str, conditions: usize) -> Result<Vec<Action>, String> {
    let bytes = pattern.as_bytes();
    let rest = |at: usize| -> String {
        let tail = pattern.get(at..).unwrap_or("");
        let mut t: String = tail.chars().take(12).collect();
        if tail.chars().count() > 12 {
            t.push('…');
        }
        if t.is_empty() {
            "the end of the pattern".to_string()
        } else {
            format!("{t:?}")
        }
    };
    let err = |at: usize, what: &str| -> String {
        format!(
            "sequence pattern {pattern:?}: {what} at position {at} (found {})",
            rest(at)
        )
    };
    // `+`? digits, fitting in 64 bits.
    let number = |at: &mut usize| -> Result<u64, String> {
        let start = *at;
        if bytes.get(*at) == Some(&b'+') {
            *at += 1;
        }
        let digits = *at;
        let mut value: u64 = 0;
        while let Some(d) = bytes.get(*at).filter(|b| b.is_ascii_digit()) {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| err(start, "this number does not fit in 64 bits"))?;
            *at += 1;
        }
        if *at == digits {
            return Err(err(start, "expected a whole number of digits"));
        }
        Ok(value)
    };
    let mut actions = vec![Action::Star];
    let mut at = 0;
    while at < bytes.len() {
        let here = at;
        if bytes[at..].starts_with(b"(?") {
            at += 2;
            if bytes.get(at) == Some(&b't') {
                at += 1;
                let op_at = at;
                let op = [
                    ("<=", TimeOp::Le),
                    ("<", TimeOp::Lt),
                    (">=", TimeOp::Ge),
                    (">", TimeOp::Gt),
                    ("==", TimeOp::Eq),
                ]
                .into_iter()
                .find(|(s, _)| bytes[at..].starts_with(s.as_bytes()))
                .map(|(s, op)| {
                    at += s.len();
                    op
                })
                .ok_or_else(|| {
                    err(
                        op_at,
                        "unknown time comparison, expected one of <=, <, >=, >, == (no spaces)",
                    )
                })?;
                let secs = number(&mut at)?;
                if matches!(actions.last(), Some(Action::Time { .. })) {
                    return Err(err(
                        here,
                        "a time constraint must follow an event ((?N), . or .*), not another \
                         time constraint",
                    ));
                }
                actions.push(Action::Time {
                    op,
                    us: i128::from(secs) * MICROS,
                    zero: secs == 0,
                });
            } else {
                let n = number(&mut at)?;
                if n == 0 || n > conditions as u64 {
                    return Err(format!(
                        "sequence pattern {pattern:?}: (?{n}) at position {here} names no \
                         condition: conditions are numbered 1 to {conditions}"
                    ));
                }
                actions.push(Action::Event(n as u8 - 1));
            }
            if bytes.get(at) != Some(&b')') {
                return Err(err(at, "expected ')'"));
            }
            at += 1;
        } else if bytes[at..].starts_with(b".*") {
            actions.push(Action::Star);
            at += 2;
        } else if bytes[at] == b'.' {
            actions.push(Action::Any);
            at += 1;
        } else {
            return Err(err(
                at,
                "unexpected text, expected (?N), (?t<=SECONDS) (or <, >=, >, ==), . or .* \
                 with no spaces",
            ));
        }
    }
    Ok(actions)
}

impl Nfa {
    /// State 0 (with the implicit `.*` loop) and one state after each `(?N)` and `.`.
    fn new(actions: &[Action]) -> Nfa {
        let states = 1 + actions
            .iter()
            .filter(|a| matches!(a, Action::Event(_) | Action::Any))
            .count();
        let words = states.div_ceil(64);
        let mut nfa = Nfa {
            words,
            star: vec![0; words],
            any: vec![0; words],
            on: vec![0; MAX_CONDITIONS * words],
            last: states - 1,
        };
        let mut state = 0;
        for a in actions {
            let (w, bit) = (state / 64, 1u64 << (state % 64));
            match *a {
                Action::Star => nfa.star[w] |= bit,
                Action::Any => {
                    nfa.any[w] |= bit;
                    state += 1;
                }
                Action::Event(c) => {
                    nfa.on[c as usize * words + w] |= bit;
                    state += 1;
                }
                Action::Time { .. } => {}
            }
        }
        nfa
    }
}

/// ClickHouse `retention(cond1, …, condN)`: the state is the OR of the rows' condition masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    conditions: usize,
}

impl Retention {
    /// 2 to 32 conditions, as ClickHouse.
    pub fn new(conditions: usize) -> Result<Self, String> {
        if !(2..=MAX_CONDITIONS).contains(&conditions) {
            return Err(format!(
                "retention takes 2 to {MAX_CONDITIONS} conditions (as ClickHouse), not \
                 {conditions}"
            ));
        }
        Ok(Retention { conditions })
    }

    pub fn conditions(&self) -> usize {
        self.conditions
    }

    /// The answer as a bitmask, bit i = `r[i]`, from `met`, the OR of the rows' masks.
    pub fn answer(&self, met: u32) -> u32 {
        if met & 1 == 0 {
            0
        } else {
            met & full_mask(self.conditions)
        }
    }

    /// The answer as ClickHouse's array of 0/1.
    pub fn values(&self, met: u32) -> impl Iterator<Item = u8> + use<> {
        let answer = self.answer(met);
        (0..self.conditions).map(move |i| (answer >> i & 1) as u8)
    }
}

/// Sorts `events` by timestamp exactly as ClickHouse 26.9 does in `sequenceMatch` (not
/// stable, but deterministic), so that equal timestamps end in ClickHouse's order.
pub fn clickhouse_sort(events: &mut [(i64, u32)]) {
    ipnsort::sort_by(events, &|a: &(i64, u32), b: &(i64, u32)| a.0 < b.0);
}

/// The unstable sort ClickHouse 26.9 applies to `sequenceMatch` events, found by probing chdb
/// (the order of equal timestamps read back through `sequenceMatch('(?i)(?j)')` on events
/// meeting one condition each) rather than from its source: it is not the pdqsort of
/// `contrib/pdqsort` but behaves move for move as ipnsort (Lukas Bergdoll and Orson Peters,
/// the algorithm of Rust's `slice::sort_unstable`) with a branchy cyclic Hoare partition:
/// insertion sort up to 20 elements; a slice that is one non-descending or strictly
/// descending run is kept or reversed; otherwise quicksort with the median of 3 (recursive
/// from 64 elements) at n/8 x {0, 4, 7} as pivot, partitions of elements equal to an ancestor
/// pivot skipped, insertion sort at 16 elements or fewer, heapsort past 2 log2 n levels (the
/// heapsort is not checked against ClickHouse: random data does not reach it). Written here
/// from the algorithm's description, on indices.
mod ipnsort {
    const ALWAYS_INSERTION: usize = 20;
    const SMALL_SORT: usize = 16;
    const PSEUDO_MEDIAN_REC: usize = 64;

    pub fn sort_by<T: Copy, F: Fn(&T, &T) -> bool>(v: &mut [T], less: &F) {
        let len = v.len();
        if len < 2 {
            return;
        }
        if len <= ALWAYS_INSERTION {
            insertion(v, less);
            return;
        }
        // One run already: sorted (ties kept) or strictly descending (reversed).
        let descending = less(&v[1], &v[0]);
        let mut run = 2;
        while run < len && less(&v[run], &v[run - 1]) == descending {
            run += 1;
        }
        if run == len {
            if descending {
                v.reverse();
            }
            return;
        }
        let limit = 2 * (len | 1).ilog2();
        quicksort(v, None, limit, less);
    }

    /// Stable insertion sort.
    fn insertion<T: Copy, F: Fn(&T, &T) -> bool>(v: &mut [T], less: &F) {
        for i in 1..v.len() {
            if less(&v[i], &v[i - 1]) {
                let tmp = v[i];
                let mut j = i;
                loop {
                    v[j] = v[j - 1];
                    j -= 1;
                    if j == 0 || !less(&tmp, &v[j - 1]) {
                        break;
                    }
                }
                v[j] = tmp;
            }
        }
    }

    fn median3<T, F: Fn(&T, &T) -> bool>(v: &[T], a: usize, b: usize, c: usize, less: &F) -> usize {
        let x = less(&v[a], &v[b]);
        let y = less(&v[a], &v[c]);
        if x == y {
            // a is the smallest or the largest: the median is max(b, c) or min(b, c).
            if less(&v[b], &v[c]) ^ x { c } else { b }
        } else {
            a
        }
    }

    fn median3_rec<T, F: Fn(&T, &T) -> bool>(
        v: &[T],
        mut a: usize,
        mut b: usize,
        mut c: usize,
        n: usize,
        less: &F,
    ) -> usize {
        if n * 8 >= PSEUDO_MEDIAN_REC {
            let n8 = n / 8;
            a = median3_rec(v, a, a + n8 * 4, a + n8 * 7, n8, less);
            b = median3_rec(v, b, b + n8 * 4, b + n8 * 7, n8, less);
            c = median3_rec(v, c, c + n8 * 4, c + n8 * 7, n8, less);
        }
        median3(v, a, b, c, less)
    }

    fn choose_pivot<T, F: Fn(&T, &T) -> bool>(v: &[T], less: &F) -> usize {
        let n8 = v.len() / 8;
        if v.len() < PSEUDO_MEDIAN_REC {
            median3(v, 0, n8 * 4, n8 * 7, less)
        } else {
            median3_rec(v, 0, n8 * 4, n8 * 7, n8, less)
        }
    }

    /// Moves the elements `less` than `v[pivot]` to the front, the pivot right after them;
    /// their count. Hoare's scan, the out-of-place pairs moved as one cyclic permutation.
    fn partition<T: Copy, F: Fn(&T, &T) -> bool>(v: &mut [T], pivot: usize, less: &F) -> usize {
        v.swap(0, pivot);
        let p = v[0];
        let (mut left, mut right) = (1, v.len());
        // The first left-side element taken out, and where the cycle's gap is.
        let mut gap: Option<(T, usize)> = None;
        loop {
            while left < right && less(&v[left], &p) {
                left += 1;
            }
            loop {
                right -= 1;
                if left >= right || less(&v[right], &p) {
                    break;
                }
            }
            if left >= right {
                break;
            }
            match &mut gap {
                None => gap = Some((v[left], right)),
                Some((_, at)) => {
                    v[*at] = v[left];
                    *at = right;
                }
            }
            v[left] = v[right];
            left += 1;
        }
        if let Some((value, at)) = gap {
            v[at] = value;
        }
        let num_lt = left - 1;
        v.swap(0, num_lt);
        num_lt
    }

    fn quicksort<T: Copy, F: Fn(&T, &T) -> bool>(
        mut v: &mut [T],
        mut ancestor: Option<T>,
        mut limit: u32,
        less: &F,
    ) {
        loop {
            if v.len() <= SMALL_SORT {
                insertion(v, less);
                return;
            }
            if limit == 0 {
                heapsort(v, less);
                return;
            }
            limit -= 1;
            let pivot = choose_pivot(v, less);
            // A pivot equal to the ancestor pivot is the smallest element: the elements equal
            // to it go left and are done.
            if let Some(a) = ancestor
                && !less(&a, &v[pivot])
            {
                let num_le = partition(v, pivot, &|x: &T, y: &T| !less(y, x));
                v = &mut v[num_le + 1..];
                ancestor = None;
                continue;
            }
            let num_lt = partition(v, pivot, less);
            let (left, right) = v.split_at_mut(num_lt);
            quicksort(left, ancestor, limit, less);
            ancestor = Some(right[0]);
            v = &mut right[1..];
        }
    }

    fn heapsort<T: Copy, F: Fn(&T, &T) -> bool>(v: &mut [T], less: &F) {
        let len = v.len();
        for i in (0..len + len / 2).rev() {
            let node = if i >= len {
                i - len
            } else {
                v.swap(0, i);
                0
            };
            sift_down(&mut v[..i.min(len)], node, less);
        }
    }

    fn sift_down<T: Copy, F: Fn(&T, &T) -> bool>(v: &mut [T], mut node: usize, less: &F) {
        let len = v.len();
        loop {
            let mut child = 2 * node + 1;
            if child >= len {
                break;
            }
            if child + 1 < len && less(&v[child], &v[child + 1]) {
                child += 1;
            }
            if !less(&v[node], &v[child]) {
                break;
            }
            v.swap(node, child);
            node = child;
        }
    }
}
