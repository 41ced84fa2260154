//! `trailmap funnel`: conversion through ordered steps within a window.

use super::common::{as_of, duration, instant, percent, say, title, warn_unknown};
use crate::input::{InputArgs, PartSink};
use crate::output::{Format, print_rows, thousands};
use anyhow::{Context, bail};
use clap::Args;
use trailmap_ingest::Projection;
use trailmap_mine::Aggregate;
use trailmap_mine::funnel::{FunnelSpec, Modes, TrendPeriod};
use trailmap_mine::report::{BreakdownNames, FunnelReport, Names, parse_trend};
use trailmap_mine::{Funnel, fold};
use trailmap_model::config::{CountBy, JourneyConfig, StepOrder};
use trailmap_model::time::Span;
use trailmap_sessionize::{Attribute, GroupedSummary, Journey, JourneyLog, JourneySink, Sifted};

/// The funnel definition flags, shared with `trailmap dropoffs`.
#[derive(Args, Clone)]
pub struct FunnelFlags {
    /// Steps in order: touchpoints, comma-separated (up to 32).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "A,B,C",
        conflicts_with = "journey"
    )]
    pub steps: Vec<String>,

    /// A funnel defined in the config's [journeys] (flags below override its fields).
    #[arg(long, value_name = "NAME")]
    pub journey: Option<String>,

    /// Bound on last step − first step [default: the journey's, or 14d].
    #[arg(long, value_name = "DURATION")]
    pub window: Option<Span>,

    /// ClickHouse windowFunnel modes, comma-separated: default, strict_deduplication,
    /// strict_order, strict_increase, strict_once, allow_reentry.
    #[arg(long, value_name = "MODES")]
    pub mode: Option<String>,

    /// ordered (others may happen between steps), strict (nothing between), unordered.
    #[arg(long, value_name = "ORDER")]
    pub order: Option<String>,

    /// Touchpoints that disqualify a journey when they happen between its steps.
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub exclude: Vec<String>,

    /// Count customers once, or every attempt.
    #[arg(long, value_name = "customers|attempts")]
    pub count: Option<String>,

    /// Least time between consecutive steps, one per step after the first (0 = none).
    #[arg(long, value_delimiter = ',', value_name = "D1,D2")]
    pub min_gap: Vec<Span>,

    /// Most time between consecutive steps, one per step after the first (0 = none).
    #[arg(long, value_delimiter = ',', value_name = "D1,D2")]
    pub max_gap: Vec<Span>,

    /// The data's "now" (RFC 3339): journeys whose window ends later are maturing
    /// [default: the last event's time].
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
}

impl FunnelFlags {
    pub fn given(&self) -> bool {
        !self.steps.is_empty() || self.journey.is_some()
    }

    /// The funnel: a configured journey with flags applied, or one from the flags.
    pub fn journey_config(
        &self,
        config: &trailmap_model::Config,
    ) -> anyhow::Result<(String, JourneyConfig)> {
        let (name, mut journey) = match &self.journey {
            Some(name) => {
                let j = config.journeys.get(name).with_context(|| {
                    let names: Vec<&str> = config.journeys.keys().map(String::as_str).collect();
                    format!(
                        "--journey {name}: no such journey in the config; configured: {}",
                        names.join(", ")
                    )
                })?;
                (name.clone(), j.clone())
            }
            None if !self.steps.is_empty() => (
                self.steps.join(" → "),
                JourneyConfig::of_steps(self.steps.clone()),
            ),
            None => {
                let names: Vec<&str> = config.journeys.keys().map(String::as_str).collect();
                bail!(
                    "give the funnel: --steps a,b,c or --journey NAME (configured: {})",
                    names.join(", ")
                )
            }
        };
        if let Some(w) = self.window {
            if w.is_zero() {
                bail!("--window must be longer than 0, like 1d");
            }
            journey.window = w;
        }
        if let Some(mode) = &self.mode {
            let modes = Modes::parse(mode).map_err(anyhow::Error::msg)?;
            journey.mode = modes_list(modes);
        }
        if let Some(order) = &self.order {
            journey.order = match order.as_str() {
                "ordered" => StepOrder::Ordered,
                "strict" => StepOrder::Strict,
                "unordered" => StepOrder::Unordered,
                other => bail!("--order {other}: use ordered, strict or unordered"),
            };
        }
        if !self.exclude.is_empty() {
            journey.exclusions = self.exclude.clone();
        }
        if let Some(count) = &self.count {
            journey.count = match count.as_str() {
                "customers" => CountBy::Customers,
                "attempts" => CountBy::Attempts,
                other => bail!("--count {other}: use customers or attempts"),
            };
        }
        if !self.min_gap.is_empty() {
            journey.min_gap = self.min_gap.clone();
        }
        if !self.max_gap.is_empty() {
            journey.max_gap = self.max_gap.clone();
        }
        journey
            .validate()
            .map_err(|(field, message)| anyhow::anyhow!("funnel {name}: {field} {message}"))?;
        Ok((name, journey))
    }

    /// The resolved spec, with unknown touchpoints warned about.
    pub fn spec(
        &self,
        config: &trailmap_model::Config,
        log: &JourneyLog,
    ) -> anyhow::Result<(String, Vec<String>, FunnelSpec)> {
        let (name, journey) = self.journey_config(config)?;
        let now = as_of(log, self.as_of.as_deref())?;
        let (spec, unknown) =
            FunnelSpec::resolve(&journey, &log.touchpoints, now).map_err(anyhow::Error::msg)?;
        warn_unknown(&log.touchpoints, &unknown);
        Ok((name, journey.steps, spec))
    }
}

/// A funnel counting journeys as a stream hands them on: its steps resolved against names
/// the stream numbers before any event, its maturity settled at the end (unless `--as-of`
/// says when "now" is).
pub struct StreamedFunnel {
    funnel: Funnel<'static>,
    /// The funnel's step and exclusion names, to warn about those no event has.
    names: Vec<String>,
}

impl FunnelFlags {
    /// Sets up the funnel of `journey` for a streamed read: its step and exclusion names are
    /// added to `names` (the names the stream numbers ahead, in order; repeats once).
    pub fn ahead_of_stream(
        &self,
        journey: &JourneyConfig,
        names: &mut Vec<String>,
        trend: Option<TrendPeriod>,
    ) -> anyhow::Result<StreamedFunnel> {
        let now = self
            .as_of
            .as_deref()
            .map(|t| instant("--as-of", t))
            .transpose()?;
        let mut own = Vec::new();
        for step in journey.steps.iter().chain(&journey.exclusions) {
            if !names.contains(step) {
                names.push(step.clone());
            }
            if !own.contains(step) {
                own.push(step.clone());
            }
        }
        let (mut spec, _) =
            FunnelSpec::resolve(journey, names, now.unwrap_or(0)).map_err(anyhow::Error::msg)?;
        spec.trend = trend;
        let mut funnel = Funnel::new(spec, None);
        if now.is_none() {
            funnel.defer_maturity();
        }
        Ok(StreamedFunnel { funnel, names: own })
    }
}

impl JourneySink for StreamedFunnel {
    fn journey(&mut self, journey: &Journey<'_>, _customer: &str) {
        self.add(journey);
    }

    fn kept_touchpoints(&self) -> Option<Vec<u32>> {
        self.funnel.kept_touchpoints()
    }

    fn sifted(&mut self, journey: &Sifted<'_>, _customer: &str) {
        self.funnel.add_sifted(journey);
        self.funnel.settled_until(journey.last_ts);
    }
}

impl PartSink for StreamedFunnel {
    fn for_part(&self) -> Self {
        StreamedFunnel {
            funnel: self.funnel.fresh(),
            names: self.names.clone(),
        }
    }

    fn merge_part(&mut self, mut part: Self, ids: &[u32]) {
        part.funnel.renumber_touchpoints(ids);
        self.funnel.merge(part.funnel);
    }
}

impl StreamedFunnel {
    pub fn add(&mut self, journey: &Journey<'_>) {
        self.funnel.add(journey);
        // "Now" is the last event's time: at least this journey's last.
        if let Some(&last) = journey.ts.last() {
            self.funnel.settled_until(last);
        }
    }

    /// The counted funnel, once the stream has ended; warns about steps no event had.
    pub fn finish(mut self, summary: &GroupedSummary) -> Funnel<'static> {
        // Unless `--as-of` gave it, "now" is the last event's time.
        self.funnel.settle(summary.last_ts.unwrap_or(0));
        let seen = summary.seen_touchpoints();
        let unknown: Vec<String> = self
            .names
            .into_iter()
            .filter(|t| !seen.contains(t))
            .collect();
        warn_unknown(&seen, &unknown);
        self.funnel
    }
}

fn modes_list(m: Modes) -> Vec<trailmap_model::config::FunnelMode> {
    use trailmap_model::config::FunnelMode::*;
    [
        (m.strict_deduplication, StrictDeduplication),
        (m.strict_order, StrictOrder),
        (m.strict_increase, StrictIncrease),
        (m.strict_once, StrictOnce),
        (m.allow_reentry, AllowReentry),
    ]
    .into_iter()
    .filter_map(|(on, mode)| on.then_some(mode))
    .collect()
}

#[derive(Args)]
pub struct FunnelArgs {
    #[command(flatten)]
    input: InputArgs,

    #[command(flatten)]
    funnel: FunnelFlags,

    /// Output format [default: table on a terminal, json otherwise]. CSV prints the steps.
    #[arg(long, short = 'f')]
    format: Option<Format>,

    /// Break down by an event attribute of the first step: a column (channel, source,
    /// stage) or a property key (`plan`, `properties.plan`, or a JSON pointer `/utm/source`).
    #[arg(long, value_name = "PROPERTY")]
    breakdown: Option<String>,

    /// Breakdown values listed; the rest are summed as `other`.
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,

    /// Conversion per period of entry: day or week.
    #[arg(long, value_name = "day|week")]
    trend: Option<String>,
}

/// A counted funnel with what its report needs to name things.
struct Counted<'a> {
    name: String,
    steps: Vec<String>,
    funnel: Funnel<'a>,
    touchpoints: &'a [String],
    breakdown: Option<BreakdownNames<'a>>,
}

impl FunnelArgs {
    pub fn run(self) -> anyhow::Result<()> {
        // Flag errors before the input is read.
        let config = self.input.config()?;
        self.funnel.journey_config(&config)?;
        let trend = self
            .trend
            .as_deref()
            .map(parse_trend)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        // Input grouped by customer (exports by user, logs by case) is counted journey by
        // journey as it is read, with no journey log: a breakdown needs the log's values.
        if self.breakdown.is_none()
            && let Some((name, steps, funnel, touchpoints)) = self.streamed(&config, trend)?
        {
            return self.print(Counted {
                name,
                steps,
                funnel,
                touchpoints: &touchpoints,
                breakdown: None,
            });
        }
        let attribute = self.breakdown.as_deref().map(Attribute::parse);
        let loaded = self.input.load_keeping(Projection::minimal(), attribute)?;
        let log = &loaded.log;
        let (name, steps, mut spec) = self.funnel.spec(&loaded.config, log)?;
        spec.trend = trend;
        let attr = log.attribute.as_ref();
        let scope = loaded.config.sessions.scope;
        let started = std::time::Instant::now();
        let funnel = fold(log, scope, || {
            Funnel::new(spec.clone(), attr.map(|a| a.of_event.as_slice()))
        });
        crate::input::timing("funnel", started.elapsed());
        self.print(Counted {
            name,
            steps,
            funnel,
            touchpoints: &log.touchpoints,
            breakdown: attr.map(|a| BreakdownNames {
                by: &a.name,
                values: &a.values,
                top: self.top,
            }),
        })
    }

    /// The funnel counted while the input is read (see
    /// [`InputArgs::stream_grouped`]). `None` when the input turns out not to be grouped
    /// by customer, or to need stitching: the general load counts it then.
    #[allow(clippy::type_complexity)]
    fn streamed(
        &self,
        config: &trailmap_model::Config,
        trend: Option<TrendPeriod>,
    ) -> anyhow::Result<Option<(String, Vec<String>, Funnel<'static>, Vec<String>)>> {
        let (name, journey) = self.funnel.journey_config(config)?;
        let mut names = Vec::new();
        let mut counting = self.funnel.ahead_of_stream(&journey, &mut names, trend)?;
        let ahead: Vec<&str> = names.iter().map(String::as_str).collect();
        let Some(summary) = self
            .input
            .stream_grouped_in_parts(config, &ahead, &mut counting)?
        else {
            return Ok(None);
        };
        let funnel = counting.finish(&summary);
        Ok(Some((name, journey.steps, funnel, summary.touchpoints)))
    }

    fn print(&self, counted: Counted<'_>) -> anyhow::Result<()> {
        let names = Names {
            touchpoints: counted.touchpoints,
        };
        let report = FunnelReport::new(&counted.funnel, &counted.steps, names, counted.breakdown);
        let name = counted.name;
        let format = Format::resolve(self.format);
        let header = [
            "step",
            "name",
            "reached",
            "conversion_from_previous",
            "conversion_from_first",
            "dropped",
            "maturing",
            "median_seconds_from_previous",
            "p90_seconds_from_previous",
        ];
        let secs = |v: Option<f64>| v.map(|s| format!("{s:.3}")).unwrap_or_default();
        match format {
            Format::Json => print_rows(format, &header, &[], &report),
            Format::Csv => {
                let rows: Vec<Vec<String>> = report
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(k, s)| {
                        vec![
                            (k + 1).to_string(),
                            s.name.clone(),
                            s.reached.to_string(),
                            format!("{:.6}", s.conversion_from_previous),
                            format!("{:.6}", s.conversion_from_first),
                            s.dropped.to_string(),
                            s.maturing.to_string(),
                            secs(s.time_from_previous.median_seconds),
                            secs(s.time_from_previous.p90_seconds),
                        ]
                    })
                    .collect();
                print_rows(format, &header, &rows, &report)
            }
            Format::Table => print_tables(&name, &report),
        }
    }
}

fn print_tables(name: &str, r: &FunnelReport) -> anyhow::Result<()> {
    say(&format!(
        "funnel {name}: {} of {} {} entered, {} converted ({}), window {}{}",
        thousands(r.entered),
        thousands(r.customers),
        if r.count == "attempts" {
            "journeys (counting attempts)"
        } else {
            "journeys"
        },
        thousands(r.converted),
        percent(r.conversion),
        duration(Some(r.window_seconds)),
        if r.excluded > 0 {
            format!(", {} excluded", thousands(r.excluded))
        } else {
            String::new()
        }
    ))?;
    let t = Format::Table;
    let rows: Vec<Vec<String>> = r
        .steps
        .iter()
        .enumerate()
        .map(|(k, s)| {
            vec![
                (k + 1).to_string(),
                s.name.clone(),
                thousands(s.reached),
                percent(s.conversion_from_previous),
                percent(s.conversion_from_first),
                thousands(s.dropped),
                thousands(s.maturing),
                duration(s.time_from_previous.median_seconds),
                duration(s.time_from_previous.p90_seconds),
                s.next_after_dropoff
                    .iter()
                    .take(3)
                    .map(|c| format!("{} ({})", c.touchpoint, thousands(c.count)))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    print_rows(
        t,
        &[
            "#",
            "step",
            "reached",
            "from previous",
            "from first",
            "dropped",
            "maturing",
            "median time",
            "p90 time",
            "stopped here, then",
        ],
        &rows,
        &(),
    )?;
    if let Some(by) = &r.breakdown_by {
        title(&format!("By {by}"))?;
        let rows: Vec<Vec<String>> = r
            .breakdown
            .iter()
            .map(|b| {
                vec![
                    b.value.clone(),
                    thousands(b.entered),
                    thousands(b.converted),
                    percent(b.conversion),
                    thousands(b.maturing),
                ]
            })
            .collect();
        print_rows(
            t,
            &[
                by.as_str(),
                "entered",
                "converted",
                "conversion",
                "maturing",
            ],
            &rows,
            &(),
        )?;
    }
    if !r.trend.is_empty() {
        title("Trend by entry period")?;
        let rows: Vec<Vec<String>> = r
            .trend
            .iter()
            .map(|p| {
                vec![
                    p.period.clone(),
                    thousands(p.entered),
                    thousands(p.converted),
                    percent(p.conversion),
                    thousands(p.maturing),
                ]
            })
            .collect();
        print_rows(
            t,
            &["period", "entered", "converted", "conversion", "maturing"],
            &rows,
            &(),
        )?;
    }
    Ok(())
}
