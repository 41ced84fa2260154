//! Alert rules over generated traffic whose truth is known: a dip injected into the journey
//! model fires the built-in checkout rule soon after it starts and resolves it soon after it
//! ends; the same traffic without a dip almost never fires; a small stage with a large dip
//! stays quiet below the minimum sample. Everything runs through the live pipeline, then
//! every evaluation a live run makes is replayed over its counts (`Alerts::backtest`).

mod common;
use common::run_source;
use trailmap_gen::{DEFAULT_START_MICROS, GenOptions, JourneyModel};
use trailmap_live::alert::{Backtest, Change};
use trailmap_live::{Alerts, GeneratorSource, LiveResult, PipelineOptions};
use trailmap_model::Config;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
const RULE: &str = "checkout_conversion";
/// About 800 checkouts a day: 100 to 200 settled ones in the rule's 6 h window.
const CUSTOMERS: u64 = 40_000;
const DAYS: u32 = 14;

/// The built-in config, whose rule `checkout_conversion` watches checkout_view → purchase.
fn config() -> Config {
    let config = Config::builtin();
    assert!(
        config.alerts.contains_key(RULE),
        "the built-in config has {RULE}"
    );
    config
}

/// The traffic of `customers` over `days`, through the live pipeline to its end.
fn run(model: JourneyModel, customers: u64, days: u32, seed: u64, config: &Config) -> LiveResult {
    let opts = GenOptions {
        customers,
        days,
        seed,
        ..GenOptions::default()
    };
    let source = GeneratorSource::of_model(model, opts, 4096);
    run_source(Box::new(source), config, &PipelineOptions::default())
}

fn backtest(config: &Config, result: &LiveResult) -> Backtest {
    backtest_rule(config, result, RULE)
}

fn backtest_rule(config: &Config, result: &LiveResult, rule: &str) -> Backtest {
    let mut alerts = Alerts::new(config)
        .expect("rules")
        .only(&[rule.to_string()])
        .expect("the rule");
    let newest = result.status.newest.expect("events");
    alerts
        .backtest(&result.map, &result.names.values, newest)
        .expect("backtest")
}

/// The longest a dip can take to fire: the journey window has to elapse before a cohort's
/// outcome is known, the current window to fill with dipped cohorts, the rule's `for` to
/// pass, and one more evaluation interval.
fn budget(config: &Config) -> i64 {
    budget_of(config, RULE)
}

fn budget_of(config: &Config, rule: &str) -> i64 {
    let rule = &config.alerts[rule];
    let journey = &config.journeys[&rule.journey];
    journey.window.micros() + rule.window.micros() + rule.hold.micros() + rule.every.micros()
}

fn changes(b: &Backtest) -> Vec<(Change, i64)> {
    b.changes
        .iter()
        .map(|c| (c.change, c.evaluation.at))
        .collect()
}

#[test]
fn a_dip_fires_within_the_budget_and_resolves_after_recovery() {
    let config = config();
    let (starts, ends) = (
        DEFAULT_START_MICROS + 8 * DAY,
        DEFAULT_START_MICROS + 10 * DAY,
    );
    let model = JourneyModel::default()
        .with_dip("checkout_view", "purchase", 0.5, starts, ends)
        .expect("dip");
    let result = run(model, CUSTOMERS, DAYS, 1, &config);
    let b = backtest(&config, &result);
    let budget = budget(&config);
    let seen = changes(&b);
    // Journeys run on for weeks after the last first touch; only the busy days are judged.
    assert!(
        b.dipping + b.steady > 1000,
        "too few evaluations had the sample to judge: {b:?}"
    );
    // Once each: no flapping while the dip lasts or after it.
    let kinds: Vec<Change> = seen.iter().map(|&(c, _)| c).collect();
    assert_eq!(kinds, [Change::Firing, Change::Resolved], "{seen:?}");
    let at = seen[0].1;
    assert!(
        (starts..=starts + budget).contains(&at),
        "fired {} h after the dip began (budget {} h): {seen:?}",
        (at - starts) as f64 / HOUR as f64,
        budget / HOUR
    );
    let resolved = seen
        .iter()
        .find(|(c, _)| *c == Change::Resolved)
        .unwrap_or_else(|| panic!("never resolved: {seen:?}"));
    assert!(
        (ends..=ends + budget).contains(&resolved.1),
        "resolved {} h after the dip ended (budget {} h): {seen:?}",
        (resolved.1 - ends) as f64 / HOUR as f64,
        budget / HOUR
    );
    // Nothing fires after the recovery.
    assert!(
        seen.iter()
            .all(|&(c, t)| c == Change::Resolved || t < ends + budget),
        "{seen:?}"
    );
}

/// Many evaluations of the same traffic with no dip: the alert is firing after at most 1%.
#[test]
fn without_a_dip_it_almost_never_fires() {
    let config = config();
    let mut total = Backtest::default();
    for seed in [11, 12, 13] {
        let b = backtest(
            &config,
            &run(JourneyModel::default(), CUSTOMERS, DAYS, seed, &config),
        );
        total.evaluations += b.evaluations;
        total.dipping += b.dipping;
        total.steady += b.steady;
        total.firing += b.firing;
        total.changes.extend(b.changes);
    }
    // Of the evaluations that had the sample to judge (the others change nothing).
    let judged = total.dipping + total.steady;
    assert!(
        judged > 1000,
        "too few judged evaluations for a rate: {total:?}"
    );
    let rate = total.firing as f64 / judged as f64;
    assert!(
        rate <= 0.01,
        "firing after {:.2}% of {judged} judged evaluations without a dip: {:?}",
        rate * 100.0,
        changes(&total)
    );
}

/// A stage with a tenth of the traffic and a far larger dip: visible with no minimum
/// sample, quiet with the rule's.
#[test]
fn a_small_stage_below_the_minimum_sample_stays_quiet() {
    let mut config = config();
    let (starts, ends) = (
        DEFAULT_START_MICROS + 8 * DAY,
        DEFAULT_START_MICROS + 12 * DAY,
    );
    let model = JourneyModel::default()
        .with_dip("checkout_view", "purchase", 0.2, starts, ends)
        .expect("dip");
    let result = run(model, CUSTOMERS / 10, DAYS, 3, &config);
    let quiet = backtest(&config, &result);
    assert!(quiet.changes.is_empty(), "{:?}", changes(&quiet));
    assert_eq!(quiet.firing, 0);
    assert!(quiet.too_few > quiet.evaluations * 9 / 10, "{quiet:?}");

    config.alerts.get_mut(RULE).expect("rule").min_sample = 1;
    let loud = backtest(&config, &result);
    assert!(
        loud.changes.iter().any(|c| c.change == Change::Firing),
        "the dip is there to see without the minimum sample: {loud:?}"
    );
}

/// A dip on mobile alone: the rule broken down by device fires for mobile, within the
/// budget, and resolves after recovery; desktop and tablet stay quiet.
#[test]
fn a_breakdown_fires_for_the_dipping_value_only() {
    const BY_DEVICE: &str = "checkout_conversion_by_device";
    let config = config();
    let rule = &config.alerts[BY_DEVICE];
    let breakdown = rule.breakdown.as_ref().expect("a breakdown");
    assert_eq!((breakdown.by.as_str(), breakdown.top), ("device", 3));
    let (starts, ends) = (
        DEFAULT_START_MICROS + 6 * DAY,
        DEFAULT_START_MICROS + 8 * DAY,
    );
    let model = JourneyModel::default()
        .with_dip_on(
            "checkout_view",
            "purchase",
            0.4,
            starts,
            ends,
            Some("mobile"),
        )
        .expect("dip");
    // Mobile is about a third of the traffic: twice the customers give it the sample.
    let result = run(model, 2 * CUSTOMERS, 12, 5, &config);
    let b = backtest_rule(&config, &result, BY_DEVICE);
    let seen: Vec<(Option<&str>, Change, i64)> = b
        .changes
        .iter()
        .map(|c| (c.value.as_deref(), c.change, c.evaluation.at))
        .collect();
    let budget = budget_of(&config, BY_DEVICE);
    assert!(
        seen.iter().all(|(v, _, _)| *v == Some("mobile")),
        "only mobile dipped: {seen:?}"
    );
    let kinds: Vec<Change> = seen.iter().map(|&(_, c, _)| c).collect();
    assert_eq!(kinds, [Change::Firing, Change::Resolved], "{seen:?}");
    assert!(
        (starts..=starts + budget).contains(&seen[0].2),
        "fired {} h after the dip began (budget {} h)",
        (seen[0].2 - starts) as f64 / HOUR as f64,
        budget / HOUR
    );
    assert!(
        (ends..=ends + budget).contains(&seen[1].2),
        "resolved {} h after the dip ended (budget {} h)",
        (seen[1].2 - ends) as f64 / HOUR as f64,
        budget / HOUR
    );
    // Desktop had the sample to judge and stayed steady: the breakdown looked at it.
    assert!(b.steady > 1000, "{b:?}");
}
