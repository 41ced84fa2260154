//! `trailmap sessions`: what was read and how it stitched.

use crate::input::InputArgs;
use crate::output::{Format, print_rows, thousands};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use trailmap_ingest::Projection;
use trailmap_ingest::time::format_micros;

#[derive(Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, short = 'f')]
    format: Option<Format>,
}

#[derive(Serialize)]
struct Report {
    /// Events with a touchpoint, after stitching.
    events: u64,
    customers: u64,
    sessions: u64,
    /// Records rejected to the dead letters.
    rejected: u64,
    /// Records read from the inputs (events, identity links, dropped and rejected).
    records: u64,
    identity_links: u64,
    identifiers: u64,
    cross_source_customers: u64,
    /// Events the catalog drops (`unmatched = "drop"`).
    dropped: u64,
    touchpoints: u64,
    first_ts: Option<String>,
    last_ts: Option<String>,
    median_events_per_session: f64,
    median_session_seconds: f64,
    files: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letters: Option<PathBuf>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    rejected_by_reason: BTreeMap<String, u64>,
}

/// Median by selection (linear time): millions of sessions need no full sort.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let (len, m) = (v.len(), v.len() / 2);
    let (below, upper, _) = v.select_nth_unstable_by(m, f64::total_cmp);
    let upper = *upper;
    if len % 2 == 1 {
        upper
    } else {
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

impl SessionsArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let loaded = self.input.load(Projection::minimal())?;
        let log = &loaded.log;
        let summary = log.summary();
        let sessions = log.session_offsets().windows(2);
        let lengths: Vec<f64> = sessions.clone().map(|w| (w[1] - w[0]) as f64).collect();
        let durations: Vec<f64> = sessions
            .map(|w| (log.ts[w[1] - 1] - log.ts[w[0]]) as f64 / 1e6)
            .collect();
        let report = Report {
            events: summary.events,
            customers: summary.customers,
            sessions: summary.sessions,
            rejected: loaded.ingest.rejected,
            records: loaded.ingest.records,
            identity_links: summary.identity_links,
            identifiers: summary.identifiers,
            cross_source_customers: summary.cross_source_customers,
            dropped: loaded.ingest.dropped,
            touchpoints: summary.touchpoints,
            first_ts: summary.first_ts.map(format_micros),
            last_ts: summary.last_ts.map(format_micros),
            median_events_per_session: median(lengths),
            median_session_seconds: median(durations),
            files: loaded.files.clone(),
            dead_letters: (loaded.ingest.rejected > 0).then(|| loaded.dead_letters.clone()),
            rejected_by_reason: loaded.rejected_by_reason.clone(),
        };
        if report.rejected > 0 {
            eprintln!(
                "warning: {} records rejected; see {}",
                thousands(report.rejected),
                loaded.dead_letters.display()
            );
        }
        let n = |v: u64| thousands(v);
        let mut rows = vec![
            vec!["events".into(), n(report.events)],
            vec!["customers".into(), n(report.customers)],
            vec!["sessions".into(), n(report.sessions)],
            vec!["rejected".into(), n(report.rejected)],
            vec!["records read".into(), n(report.records)],
            vec!["identity links".into(), n(report.identity_links)],
            vec!["identifiers".into(), n(report.identifiers)],
            vec![
                "cross-source customers".into(),
                n(report.cross_source_customers),
            ],
            vec!["dropped by catalog".into(), n(report.dropped)],
            vec!["touchpoints".into(), n(report.touchpoints)],
            vec![
                "first event".into(),
                report.first_ts.clone().unwrap_or_default(),
            ],
            vec![
                "last event".into(),
                report.last_ts.clone().unwrap_or_default(),
            ],
            vec![
                "median events per session".into(),
                format!("{}", report.median_events_per_session),
            ],
            vec![
                "median session length (s)".into(),
                format!("{:.0}", report.median_session_seconds),
            ],
        ];
        let format = Format::resolve(self.format);
        if format == Format::Csv {
            // One record with a column per measure, so the CSV loads as a table row.
            let header: Vec<&str> = vec![
                "events",
                "customers",
                "sessions",
                "rejected",
                "records",
                "identity_links",
                "identifiers",
                "cross_source_customers",
                "dropped",
                "touchpoints",
            ];
            let row = vec![
                vec![
                    report.events,
                    report.customers,
                    report.sessions,
                    report.rejected,
                    report.records,
                    report.identity_links,
                    report.identifiers,
                    report.cross_source_customers,
                    report.dropped,
                    report.touchpoints,
                ]
                .into_iter()
                .map(|v| v.to_string())
                .collect(),
            ];
            return print_rows(format, &header, &row, &report);
        }
        for (reason, count) in &report.rejected_by_reason {
            rows.push(vec![format!("rejected: {reason}"), n(*count)]);
        }
        print_rows(format, &["measure", "value"], &rows, &report)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(super::median(vec![]), 0.0);
        assert_eq!(super::median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(super::median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
