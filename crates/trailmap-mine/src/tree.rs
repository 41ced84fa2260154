//! Path trees: where journeys go after a touchpoint, or how they arrive at one.
//!
//! From a start touchpoint, each journey is followed from its first occurrence of it for up
//! to `max_steps` touchpoints; back from an end touchpoint, from its last occurrence
//! backwards. The walks are counted in a trie; [`PathTree::prune`] keeps the biggest
//! branches within a node budget per step and folds the rest into `other`.

use crate::fold::Aggregate;
use rustc_hash::FxHashMap;
use serde::Serialize;
use trailmap_sessionize::Journey;

/// Which way the tree grows from its anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// What happens after the anchor (`--from`).
    From,
    /// What leads up to the anchor (`--to`).
    To,
}

#[derive(Debug, Clone, Copy)]
pub struct TreeSpec {
    pub anchor: u32,
    pub direction: Direction,
    /// Touchpoints followed beyond the anchor.
    pub max_steps: usize,
    /// Count `a a b` as `a b`.
    pub collapse_repeats: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    touchpoint: u32,
    parent: u32,
    depth: u32,
    /// Journeys through this node.
    count: u64,
    /// Journeys whose walk stopped here because the journey ended (or, backwards, began).
    ends: u64,
}

/// Counted walks from (or to) an anchor touchpoint. Node 0 is the anchor.
#[derive(Debug, Clone)]
pub struct PathTree {
    spec: TreeSpec,
    nodes: Vec<Node>,
    children: FxHashMap<(u32, u32), u32>,
}

/// One node of a pruned tree, for output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TreeNode {
    pub id: usize,
    /// Steps from the anchor (0 = the anchor).
    pub step: usize,
    /// Touchpoint id, or `None` for an `other` bucket.
    #[serde(skip)]
    pub touchpoint: Option<u32>,
    pub parent: Option<usize>,
    pub count: u64,
    /// Journeys that ended here (began here, for a tree built backwards).
    pub ends: u64,
}

impl PathTree {
    pub fn new(spec: TreeSpec) -> Self {
        PathTree {
            spec,
            nodes: vec![Node {
                touchpoint: spec.anchor,
                parent: u32::MAX,
                depth: 0,
                count: 0,
                ends: 0,
            }],
            children: FxHashMap::default(),
        }
    }

    fn child(&mut self, parent: u32, touchpoint: u32) -> u32 {
        let next = self.nodes.len() as u32;
        let id = *self.children.entry((parent, touchpoint)).or_insert(next);
        if id == next {
            let depth = self.nodes[parent as usize].depth + 1;
            self.nodes.push(Node {
                touchpoint,
                parent,
                depth,
                count: 0,
                ends: 0,
            });
        }
        id
    }

    /// Journeys that contain the anchor.
    pub fn journeys(&self) -> u64 {
        self.nodes[0].count
    }

    fn walk(&mut self, steps: impl Iterator<Item = u32>) {
        let (max, collapse) = (self.spec.max_steps, self.spec.collapse_repeats);
        let mut node = 0u32;
        let mut prev = self.spec.anchor;
        let mut taken = 0;
        self.nodes[0].count += 1;
        let mut ended = true;
        for tp in steps {
            if collapse && tp == prev {
                continue;
            }
            if taken == max {
                ended = false;
                break;
            }
            node = self.child(node, tp);
            self.nodes[node as usize].count += 1;
            prev = tp;
            taken += 1;
        }
        if ended {
            self.nodes[node as usize].ends += 1;
        }
    }

    /// Keeps, at each step, the `budget` biggest nodes with at least `min_count` journeys
    /// whose parent was kept; the rest of each parent's children become one `other` node.
    /// Nodes are listed parents first, biggest first.
    pub fn prune(&self, min_count: u64, budget: usize) -> Vec<TreeNode> {
        let mut kids: Vec<Vec<u32>> = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            kids[n.parent as usize].push(i as u32);
        }
        let root = &self.nodes[0];
        let mut out = vec![TreeNode {
            id: 0,
            step: 0,
            touchpoint: Some(root.touchpoint),
            parent: None,
            count: root.count,
            ends: root.ends,
        }];
        if root.count == 0 {
            return out;
        }
        // (output id, trie id) of the nodes kept at the current step.
        let mut level: Vec<(usize, u32)> = vec![(0, 0)];
        let mut step = 0;
        while !level.is_empty() {
            step += 1;
            let mut candidates: Vec<(usize, u32)> = level
                .iter()
                .flat_map(|&(out_id, trie)| kids[trie as usize].iter().map(move |&k| (out_id, k)))
                .collect();
            // Ties by touchpoint, then by the parent's place in the output: trie ids depend
            // on the order journeys came in, the output must not.
            candidates.sort_by_key(|&(parent, k)| {
                let n = &self.nodes[k as usize];
                (std::cmp::Reverse(n.count), n.touchpoint, parent)
            });
            let mut next = Vec::new();
            let mut other: Vec<(usize, u64, u64)> = Vec::new();
            for (rank, &(parent, k)) in candidates.iter().enumerate() {
                let n = &self.nodes[k as usize];
                if rank < budget && n.count >= min_count {
                    next.push((out.len(), k));
                    out.push(TreeNode {
                        id: out.len(),
                        step,
                        touchpoint: Some(n.touchpoint),
                        parent: Some(parent),
                        count: n.count,
                        ends: n.ends,
                    });
                } else {
                    match other.iter_mut().find(|o| o.0 == parent) {
                        Some(o) => {
                            o.1 += n.count;
                            o.2 += n.ends;
                        }
                        None => other.push((parent, n.count, n.ends)),
                    }
                }
            }
            for (parent, count, _) in other {
                // An `other` bucket's ends are unknown below it: it is not expanded.
                out.push(TreeNode {
                    id: out.len(),
                    step,
                    touchpoint: None,
                    parent: Some(parent),
                    count,
                    ends: 0,
                });
            }
            level = next;
        }
        out
    }
}

impl Aggregate<'_> for PathTree {
    fn add(&mut self, journey: &Journey<'_>) {
        let tp = journey.touchpoint;
        let anchor = self.spec.anchor;
        match self.spec.direction {
            Direction::From => {
                if let Some(at) = tp.iter().position(|&t| t == anchor) {
                    self.walk(tp[at + 1..].iter().copied());
                }
            }
            Direction::To => {
                if let Some(at) = tp.iter().rposition(|&t| t == anchor) {
                    self.walk(tp[..at].iter().rev().copied());
                }
            }
        }
    }

    fn merge(&mut self, other: Self) {
        // Trie ids differ between parts: map theirs to ours, parents first (ids grow with
        // depth along every branch, so increasing id order visits parents first).
        let mut ours = vec![0u32; other.nodes.len()];
        self.nodes[0].count += other.nodes[0].count;
        self.nodes[0].ends += other.nodes[0].ends;
        for (i, n) in other.nodes.iter().enumerate().skip(1) {
            let id = self.child(ours[n.parent as usize], n.touchpoint);
            ours[i] = id;
            let mine = &mut self.nodes[id as usize];
            mine.count += n.count;
            mine.ends += n.ends;
        }
    }
}
