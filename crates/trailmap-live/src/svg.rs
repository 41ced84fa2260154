//! The journey map as a standalone SVG, for reports: the dashboard's picture without a
//! browser. Stages are columns (in lifecycle order), a touchpoint's height grows with the
//! square root of its events (one busy touchpoint does not squeeze the rest below reading
//! size), its colour is its exit rate on cividis (readable for colour-blind viewers), and
//! transitions are flows whose width is their volume; flows back or within a stage arc on
//! the left, so loops read as going back. Every element carries its numbers as `data-*`
//! attributes and a `<title>` tooltip, so the picture can be checked and read.

use crate::report::MapReport;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Lifecycle order of the stage columns; other stages follow, by name.
pub const STAGES: [&str; 6] = [
    "awareness",
    "consideration",
    "purchase",
    "onboarding",
    "support",
    "retention",
];

/// Exit rate colours, low exits light, high exits dark (cividis).
const SCALE: [&str; 8] = [
    "#fde737", "#c9d046", "#94b65f", "#6a9a70", "#4a7c75", "#365e76", "#2c3e6e", "#1f2556",
];

/// Transitions drawn, busiest first: beyond these a map is a hairball.
pub const MAX_EDGES: usize = 80;

const WIDTH: f64 = 1200.0;
const NODE_WIDTH: f64 = 14.0;
const TOP: f64 = 28.0;
const GAP: f64 = 6.0;
const LEGEND: f64 = 40.0;
/// Room on the right for the last column's labels.
const RIGHT: f64 = 150.0;

fn colour(rate: f64) -> &'static str {
    let i = (rate * SCALE.len() as f64)
        .floor()
        .clamp(0.0, (SCALE.len() - 1) as f64);
    SCALE[i as usize]
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Where a touchpoint is drawn.
struct Place {
    x: f64,
    y: f64,
    h: f64,
    column: usize,
}

/// The map as an SVG document.
pub fn map_svg(map: &MapReport) -> String {
    let stage_of = |n: &crate::report::MapNode| n.stage.clone().unwrap_or_else(|| "other".into());
    let mut stages: Vec<String> = STAGES
        .iter()
        .filter(|s| map.nodes.iter().any(|n| stage_of(n) == **s))
        .map(|s| s.to_string())
        .collect();
    let mut rest: Vec<String> = map
        .nodes
        .iter()
        .map(stage_of)
        .filter(|s| !STAGES.contains(&s.as_str()))
        .collect();
    rest.sort();
    rest.dedup();
    stages.extend(rest);

    let column_width = (WIDTH - RIGHT) / stages.len().max(1) as f64;
    let busiest = map.nodes.iter().map(|n| n.events).max().unwrap_or(1).max(1) as f64;
    let height = |events: i64| (110.0 * (events.max(0) as f64 / busiest).sqrt()).max(14.0);
    let mut places: BTreeMap<&str, Place> = BTreeMap::new();
    let mut tallest: f64 = 0.0;
    for (column, stage) in stages.iter().enumerate() {
        // Nodes come busiest first.
        let mut y = TOP;
        let x = column as f64 * column_width + column_width / 2.0 - NODE_WIDTH / 2.0;
        for n in map.nodes.iter().filter(|n| stage_of(n) == *stage) {
            let h = height(n.events);
            places.insert(n.touchpoint.as_str(), Place { x, y, h, column });
            y += h + GAP;
        }
        tallest = tallest.max(y);
    }
    let total_height = (tallest + 12.0).max(360.0) + LEGEND;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {total_height:.0}" width="{WIDTH}" height="{total_height:.0}" font-family="system-ui, sans-serif" role="img" aria-label="Journey map: touchpoints by stage, transitions as flows">"#
    );
    let _ = writeln!(
        svg,
        r#"<title>Journey map: {} events, {} journeys{}</title>"#,
        map.events,
        map.journeys,
        map.as_of
            .as_deref()
            .map_or(String::new(), |t| format!(", as of {t}"))
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    for (column, stage) in stages.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="14" text-anchor="middle" font-size="12" font-weight="600" fill="#5b6475">{}</text>"##,
            column as f64 * column_width + column_width / 2.0,
            escape(stage)
        );
    }
    let shown = &map.edges[..map.edges.len().min(MAX_EDGES)];
    let widest = shown.iter().map(|e| e.count).max().unwrap_or(1).max(1) as f64;
    let _ = writeln!(
        svg,
        r##"<g fill="none" stroke="#7d8aa5" stroke-opacity="0.35">"##
    );
    for e in shown {
        let (Some(a), Some(b)) = (places.get(e.from.as_str()), places.get(e.to.as_str())) else {
            continue;
        };
        let width = (14.0 * e.count as f64 / widest).max(1.0);
        let (y1, y2) = (a.y + a.h / 2.0, b.y + b.h / 2.0);
        let d = if b.column > a.column {
            let (x1, x2) = (a.x + NODE_WIDTH, b.x);
            let mx = (x1 + x2) / 2.0;
            format!("M{x1:.1},{y1:.1} C{mx:.1},{y1:.1} {mx:.1},{y2:.1} {x2:.1},{y2:.1}")
        } else {
            let bend = a.x.min(b.x) - 40.0 - 10.0 * a.column.abs_diff(b.column) as f64;
            format!(
                "M{:.1},{y1:.1} C{bend:.1},{y1:.1} {bend:.1},{y2:.1} {:.1},{y2:.1}",
                a.x, b.x
            )
        };
        let _ = writeln!(
            svg,
            r#"<path class="edge" d="{d}" stroke-width="{width:.1}" data-from="{}" data-to="{}" data-count="{}"><title>{} → {}: {} (mean {:.0} s)</title></path>"#,
            escape(&e.from),
            escape(&e.to),
            e.count,
            escape(&e.from),
            escape(&e.to),
            e.count,
            e.mean_seconds
        );
    }
    let _ = writeln!(svg, "</g>");
    for n in &map.nodes {
        let Some(p) = places.get(n.touchpoint.as_str()) else {
            continue;
        };
        let name = escape(&n.touchpoint);
        let _ = writeln!(
            svg,
            r##"<g class="node" data-touchpoint="{name}" data-events="{}" data-journeys="{}" data-exits="{}"><rect x="{:.1}" y="{:.1}" width="{NODE_WIDTH}" height="{:.1}" fill="{}" stroke="#1d2433" stroke-width="0.5"><title>{name}: {} events, {} journeys, exit rate {:.1}%</title></rect><text x="{:.1}" y="{:.1}" font-size="11" fill="#1d2433">{name} {}</text></g>"##,
            n.events,
            n.journeys,
            n.exits,
            p.x,
            p.y,
            p.h,
            colour(n.exit_rate),
            n.events,
            n.journeys,
            n.exit_rate * 100.0,
            p.x + NODE_WIDTH + 4.0,
            p.y + (p.h / 2.0).min(10.0) + 4.0,
            n.events
        );
    }
    // Legend: the exit-rate scale, and what is drawn.
    let ly = total_height - LEGEND + 14.0;
    let _ = write!(
        svg,
        r##"<g font-size="11" fill="#5b6475"><text x="20" y="{:.1}">exit rate 0%</text>"##,
        ly + 9.0
    );
    for (i, c) in SCALE.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<rect x="{}" y="{ly:.1}" width="18" height="10" fill="{c}" stroke="#0002"/>"##,
            95 + 20 * i
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{:.1}">100%; {} touchpoints, the {} busiest of {} transitions, width by volume</text></g>"##,
        100 + 20 * SCALE.len(),
        ly + 9.0,
        map.nodes.len(),
        shown.len(),
        map.edges.len()
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{MapEdge, MapNode};

    fn node(name: &str, stage: Option<&str>, events: i64) -> MapNode {
        MapNode {
            id: name.into(),
            touchpoint: name.into(),
            stage: stage.map(String::from),
            events,
            journeys: events,
            starts: 0,
            exits: events / 2,
            exit_rate: 0.5,
        }
    }

    #[test]
    fn stages_are_columns_in_lifecycle_order_and_names_are_escaped() {
        let map = MapReport {
            as_of: None,
            events: 30,
            journeys: 10,
            nodes: vec![
                node("buy <now>", Some("purchase"), 20),
                node("ad", Some("awareness"), 10),
                node("odd", None, 1),
            ],
            edges: vec![MapEdge {
                from: "ad".into(),
                to: "buy <now>".into(),
                count: 7,
                mean_seconds: 3.0,
            }],
            funnels: vec![],
        };
        let svg = map_svg(&map);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        let awareness = svg.find(">awareness<").expect("awareness column");
        let purchase = svg.find(">purchase<").expect("purchase column");
        let other = svg
            .find(">other<")
            .expect("a column for nodes without a stage");
        assert!(awareness < purchase && purchase < other);
        assert!(svg.contains(r#"data-touchpoint="buy &lt;now&gt;" data-events="20""#));
        assert!(svg.contains(r#"data-from="ad" data-to="buy &lt;now&gt;" data-count="7""#));
        assert!(!svg.contains("<now>"));
        assert_eq!(svg.matches(r#"<g class="node""#).count(), 3);
    }
}
