//! The journey graph: touchpoints as nodes, transitions as weighted edges (petgraph).
//!
//! Journeys are not linear; customers go back and forth. On the graph, friction shows as
//! cycles: touchpoints that can all reach each other (a strongly connected component) are a
//! loop customers circle in, and a touchpoint followed by itself is a repeat.

use crate::paths::PathStats;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

/// The directly-follows graph of a [`PathStats`].
pub struct JourneyGraph {
    pub graph: DiGraph<u32, u64>,
}

/// A set of touchpoints customers circle between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loop {
    /// Touchpoint ids, by decreasing traffic inside the loop.
    pub touchpoints: Vec<u32>,
    /// Transitions between the loop's touchpoints (repeats of one touchpoint included).
    pub transitions: u64,
}

impl JourneyGraph {
    pub fn new(paths: &PathStats) -> Self {
        let mut graph = DiGraph::new();
        let mut node = std::collections::BTreeMap::<u32, NodeIndex>::new();
        let mut edges: Vec<_> = paths
            .transitions()
            .map(|(f, t, s)| (f, t, s.count))
            .collect();
        edges.sort_unstable();
        for &(f, t, _) in &edges {
            for tp in [f, t] {
                node.entry(tp).or_insert_with(|| graph.add_node(tp));
            }
        }
        for (f, t, count) in edges {
            graph.add_edge(node[&f], node[&t], count);
        }
        JourneyGraph { graph }
    }

    /// Loops: strongly connected components of more than one touchpoint, and touchpoints
    /// that follow themselves, by decreasing traffic inside them.
    pub fn loops(&self) -> Vec<Loop> {
        let g = &self.graph;
        let mut loops: Vec<Loop> = tarjan_scc(g)
            .into_iter()
            .filter(|scc| scc.len() > 1 || g.find_edge(scc[0], scc[0]).is_some())
            .map(|scc| {
                let inside = |n: NodeIndex| scc.contains(&n);
                let mut through = vec![0u64; scc.len()];
                let mut transitions = 0;
                for (i, &n) in scc.iter().enumerate() {
                    for e in g.edges(n) {
                        use petgraph::visit::EdgeRef;
                        if inside(e.target()) {
                            transitions += *e.weight();
                            through[i] += *e.weight();
                        }
                    }
                }
                let mut order: Vec<usize> = (0..scc.len()).collect();
                order.sort_by_key(|&i| (std::cmp::Reverse(through[i]), g[scc[i]]));
                Loop {
                    touchpoints: order.into_iter().map(|i| g[scc[i]]).collect(),
                    transitions,
                }
            })
            .collect();
        loops.sort_by(|a, b| {
            b.transitions
                .cmp(&a.transitions)
                .then_with(|| a.touchpoints.cmp(&b.touchpoints))
        });
        loops
    }
}
