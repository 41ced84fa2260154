//! `trailmap kpis`: touchpoint-pair SLAs from the config's [kpis].

use super::common::{as_of, duration, percent, touchpoint_id, warn_unknown};
use crate::input::InputArgs;
use crate::output::{Format, print_rows, thousands};
use anyhow::bail;
use clap::Args;
use trailmap_ingest::Projection;
use trailmap_mine::report::KpiRow;
use trailmap_mine::{KpiSpec, Kpis, fold};
use trailmap_sessionize::Attribute;

#[derive(Args)]
pub struct KpisArgs {
    #[command(flatten)]
    input: InputArgs,

    /// KPIs to report, by name (repeatable) [default: every configured one].
    #[arg(long = "kpi", value_name = "NAME")]
    kpis: Vec<String>,

    /// Count breaches by this attribute of the `from` event (a column such as channel or
    /// source, or a property key); `none` to skip.
    #[arg(long, default_value = "channel", value_name = "PROPERTY")]
    breakdown: String,

    /// The data's "now" (RFC 3339): instances due later are pending [default: the last
    /// event's time].
    #[arg(long, value_name = "TIME")]
    as_of: Option<String>,

    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, short = 'f')]
    format: Option<Format>,
}

impl KpisArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let config = self.input.config()?;
        let selected: Vec<(String, trailmap_model::config::KpiConfig)> = if self.kpis.is_empty() {
            config.kpis.clone().into_iter().collect()
        } else {
            self.kpis
                .iter()
                .map(|name| match config.kpis.get(name) {
                    Some(k) => Ok((name.clone(), k.clone())),
                    None => bail!(
                        "--kpi {name}: not in the config's [kpis]; configured: {}",
                        config.kpis.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                })
                .collect::<anyhow::Result<_>>()?
        };
        if selected.is_empty() {
            bail!(
                "no KPIs configured; add a [kpis.NAME] table with from, to and within to the config"
            );
        }
        let attribute = (self.breakdown != "none").then(|| Attribute::parse(&self.breakdown));
        let loaded = self.input.load_keeping(Projection::minimal(), attribute)?;
        let log = &loaded.log;
        let mut unknown = Vec::new();
        let mut id = |name: &str| {
            touchpoint_id(log, name).unwrap_or_else(|| {
                unknown.push(name.to_string());
                u32::MAX
            })
        };
        let specs: Vec<KpiSpec> = selected
            .iter()
            .map(|(name, k)| KpiSpec {
                name: name.clone(),
                from: id(&k.from),
                to: id(&k.to),
                from_name: k.from.clone(),
                to_name: k.to.clone(),
                within: k.within.micros(),
            })
            .collect();
        warn_unknown(&log.touchpoints, &unknown);
        let now = as_of(log, self.as_of.as_deref())?;
        let attr = log.attribute.as_ref();
        let kpis = fold(log, loaded.config.sessions.scope, || {
            Kpis::new(specs.clone(), now, attr.map(|a| a.of_event.as_slice()))
        });
        let rows = KpiRow::all(
            &kpis,
            &log.stages,
            attr.map(|a| (a.name.as_str(), a.values.as_slice())),
        );
        let format = Format::resolve(self.format);
        let table = format == Format::Table;
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|k| {
                let n = |v: u64| if table { thousands(v) } else { v.to_string() };
                let rate = |v: f64| if table { percent(v) } else { format!("{v:.6}") };
                let secs = |v: Option<f64>| {
                    if table {
                        duration(v)
                    } else {
                        v.map(|s| format!("{s:.3}")).unwrap_or_default()
                    }
                };
                vec![
                    k.name.clone(),
                    format!("{} → {}", k.from, k.to),
                    if table {
                        duration(Some(k.within_seconds))
                    } else {
                        k.within_seconds.to_string()
                    },
                    n(k.instances),
                    n(k.met),
                    n(k.breached),
                    n(k.pending),
                    rate(k.met_rate),
                    secs(k.duration.median_seconds),
                    secs(k.duration.p90_seconds),
                    k.breaches_by
                        .iter()
                        .take(3)
                        .map(|v| format!("{} {}", v.value, n(v.count)))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect();
        print_rows(
            format,
            &[
                "kpi",
                "pair",
                "within",
                "instances",
                "met",
                "breached",
                "pending",
                "met_rate",
                "median",
                "p90",
                "breaches_by",
            ],
            &cells,
            &rows,
        )
    }
}
