//! Identity stitching: a union-find over interned identifiers.

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::hash::BuildHasher;
use trailmap_model::IdentityKind;

/// Interned identifiers and the links between them. A customer is a connected component.
///
/// Identifiers live in one byte arena, indexed by node, with one hash table per identity
/// kind (kinds are namespaces) holding `(hash, node)`: millions of identifiers cost no
/// allocation each, and growing a table never re-reads the arena. The table keeps 32 bits
/// of each hash (see [`spread`]): eight bytes an entry, so a million identifiers take half
/// the memory to fault in and twice the entries per cache line.
#[derive(Clone)]
pub struct IdentityGraph {
    tables: [HashTable<(u32, u32)>; IdentityKind::ALL.len()],
    hasher: FxBuildHasher,
    /// Node `n`'s identifier is `arena[start[n]..start[n + 1]]`.
    arena: Vec<u8>,
    start: Vec<usize>,
    kind: Vec<u8>,
    parent: Vec<u32>,
    /// Union by size keeps trees shallow even when links arrive in the worst order.
    size: Vec<u32>,
    /// `(absorbed root, surviving root)` of every merge since the last
    /// [`take_merges`](Self::take_merges), when [`record_merges`](Self::record_merges) asked:
    /// the live pipeline moves a customer's open state when two customers become one.
    merges: Option<Vec<(u32, u32)>>,
}

impl std::fmt::Debug for IdentityGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityGraph")
            .field("identifiers", &self.parent.len())
            .finish_non_exhaustive()
    }
}

impl Default for IdentityGraph {
    fn default() -> Self {
        IdentityGraph {
            tables: Default::default(),
            hasher: FxBuildHasher,
            arena: Vec::new(),
            start: vec![0],
            kind: Vec::new(),
            parent: Vec::new(),
            size: Vec::new(),
            merges: None,
        }
    }
}

impl IdentityGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of distinct identifiers seen.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    fn key(&self, n: u32) -> &[u8] {
        &self.arena[self.start[n as usize]..self.start[n as usize + 1]]
    }

    /// The identifier of a node, normalised as it was interned.
    pub fn identifier(&self, n: u32) -> (IdentityKind, &str) {
        let kind = IdentityKind::ALL[self.kind[n as usize] as usize];
        // Keys are copied from `&str`s, so they are valid UTF-8.
        (kind, std::str::from_utf8(self.key(n)).unwrap_or_default())
    }

    /// The node of an identifier, creating it on first sight. `None` for a blank value.
    pub fn node(&mut self, kind: IdentityKind, raw: &str) -> Option<u32> {
        let value = kind.normalize(raw)?;
        let bytes = value.as_bytes();
        let short = self.hasher.hash_one(bytes) as u32;
        let hash = spread(short);
        let (arena, start) = (&self.arena, &self.start);
        let key = |n: u32| &arena[start[n as usize]..start[n as usize + 1]];
        if let Some(&(_, n)) =
            self.tables[kind.index()].find(hash, |&(h, n)| h == short && key(n) == bytes)
        {
            return Some(n);
        }
        // `JourneyBuilder::push_batch` refuses input that would pass 2^32 identifiers.
        let n = u32::try_from(self.parent.len()).expect("fewer than 2^32 identifiers");
        self.arena.extend_from_slice(bytes);
        self.start.push(self.arena.len());
        self.kind.push(kind.index() as u8);
        self.parent.push(n);
        self.size.push(1);
        self.tables[kind.index()].insert_unique(hash, (short, n), |&(h, _)| spread(h));
        Some(n)
    }

    /// The node of an identifier seen before, without interning it.
    pub fn lookup(&self, kind: IdentityKind, raw: &str) -> Option<u32> {
        let value = kind.normalize(raw)?;
        let bytes = value.as_bytes();
        let short = self.hasher.hash_one(bytes) as u32;
        self.tables[kind.index()]
            .find(spread(short), |&(h, n)| h == short && self.key(n) == bytes)
            .map(|&(_, n)| n)
    }

    /// The component's representative, halving paths on the way.
    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// The component's representative, without shortening paths (for a shared graph).
    pub fn root(&self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            x = self.parent[x as usize];
        }
        x
    }

    /// Links two identifiers; returns whether two customers were merged.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.size[ra as usize] < self.size[rb as usize] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.size[ra as usize] += self.size[rb as usize];
        if let Some(merges) = &mut self.merges {
            merges.push((rb, ra));
        }
        true
    }

    /// Starts recording merges of customers (off by default: batch stitching only needs the
    /// final components).
    pub fn record_merges(&mut self) {
        self.merges.get_or_insert_with(Vec::new);
    }

    /// The merges since the last call, in the order they happened: `(absorbed root,
    /// surviving root)`. A surviving root may itself be absorbed by a later entry.
    pub fn take_merges(&mut self) -> Vec<(u32, u32)> {
        self.merges.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Whether two identifiers belong to one customer.
    pub fn same(&mut self, a: u32, b: u32) -> bool {
        self.find(a) == self.find(b)
    }

    /// The display node of every component, indexed by root (`u32::MAX` for non-roots):
    /// its smallest identifier of the most preferred kind ([`IdentityKind`] order), which
    /// makes a customer's name independent of arrival order.
    pub fn display_nodes(&self) -> Vec<u32> {
        let mut best = vec![u32::MAX; self.parent.len()];
        for n in 0..self.parent.len() as u32 {
            let root = self.root(n) as usize;
            let current = best[root];
            if current == u32::MAX
                || (self.kind[n as usize], self.key(n))
                    < (self.kind[current as usize], self.key(current))
            {
                best[root] = n;
            }
        }
        best
    }
}

/// The table's 64-bit hash from the 32 bits an entry keeps: the table places entries by
/// the low bits and filters probes by the top seven, so the 32 bits are multiplied out
/// across all 64 (an odd multiplier keeps distinct values distinct).
#[inline]
fn spread(short: u32) -> u64 {
    u64::from(short).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// What a graph is, for a snapshot: the arena and the forest. The hash tables are an index
/// of the arena, rebuilt on load rather than stored.
#[derive(Serialize)]
struct GraphParts<'a> {
    arena: &'a Vec<u8>,
    start: &'a Vec<usize>,
    kind: &'a Vec<u8>,
    parent: &'a Vec<u32>,
    size: &'a Vec<u32>,
    records_merges: bool,
}

#[derive(Deserialize)]
struct OwnedGraphParts {
    arena: Vec<u8>,
    start: Vec<usize>,
    kind: Vec<u8>,
    parent: Vec<u32>,
    size: Vec<u32>,
    records_merges: bool,
}

impl Serialize for IdentityGraph {
    /// Merges not taken yet are not part of the state: snapshots are taken between batches,
    /// when the live stitcher has taken them all.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        GraphParts {
            arena: &self.arena,
            start: &self.start,
            kind: &self.kind,
            parent: &self.parent,
            size: &self.size,
            records_merges: self.merges.is_some(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for IdentityGraph {
    /// Checks what the arena and the forest say of each other, so a damaged snapshot is
    /// refused rather than indexed out of bounds later.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let p = OwnedGraphParts::deserialize(deserializer)?;
        let n = p.parent.len();
        let consistent = p.start.len() == n + 1
            && p.kind.len() == n
            && p.size.len() == n
            && p.start.first() == Some(&0)
            && p.start.windows(2).all(|w| w[0] <= w[1])
            && p.start.last() == Some(&p.arena.len())
            && p.parent.iter().all(|&x| (x as usize) < n)
            && p.kind
                .iter()
                .all(|&k| (k as usize) < IdentityKind::ALL.len())
            && std::str::from_utf8(&p.arena).is_ok();
        // Every node reaches a root: union by size keeps trees under 32 levels, so a longer
        // walk means a cycle, on which `find` would never return.
        let reaches_root = |mut x: u32| {
            (0..64).any(|_| {
                let up = p.parent[x as usize];
                let root = up == x;
                x = up;
                root
            })
        };
        if !consistent || !(0..n as u32).all(reaches_root) {
            return Err(D::Error::custom("the identity graph is inconsistent"));
        }
        let mut graph = IdentityGraph {
            arena: p.arena,
            start: p.start,
            kind: p.kind,
            parent: p.parent,
            size: p.size,
            merges: p.records_merges.then(Vec::new),
            ..IdentityGraph::default()
        };
        for node in 0..n as u32 {
            let kind = graph.kind[node as usize] as usize;
            let short = graph.hasher.hash_one(graph.key(node)) as u32;
            graph.tables[kind].insert_unique(spread(short), (short, node), |&(h, _)| spread(h));
        }
        Ok(graph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdentityKind::*;

    #[test]
    fn a_graph_read_back_finds_and_links_as_before() {
        let mut g = IdentityGraph::new();
        g.record_merges();
        let anon = g.node(AnonymousId, "a1").unwrap();
        let user = g.node(UserId, "u1").unwrap();
        let email = g.node(Email, "ann@example.com").unwrap();
        g.union(anon, user);
        g.take_merges();
        let bytes = serde_json::to_vec(&g).unwrap();
        let mut back: IdentityGraph = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.lookup(UserId, "u1"), Some(user));
        assert_eq!(back.lookup(Email, "ANN@example.com"), Some(email));
        assert_eq!(back.lookup(UserId, "a1"), None, "kinds are namespaces");
        assert!(back.same(anon, user));
        assert!(!back.same(anon, email));
        assert_eq!(
            back.node(AnonymousId, "a2"),
            Some(3),
            "new nodes follow the old"
        );
        back.union(email, user);
        assert_eq!(back.take_merges().len(), 1, "merges are still recorded");
        // A damaged graph is refused.
        let mut damaged: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        damaged["parent"][0] = 99.into();
        assert!(serde_json::from_value::<IdentityGraph>(damaged).is_err());
        let mut cycle: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        cycle["parent"][1] = 0.into();
        cycle["parent"][0] = 1.into();
        assert!(serde_json::from_value::<IdentityGraph>(cycle).is_err());
    }

    #[test]
    fn a_chain_of_links_merges_customers_seen_apart() {
        let mut g = IdentityGraph::new();
        let anon = g.node(AnonymousId, "a1").unwrap();
        let user = g.node(UserId, "u1").unwrap();
        let email = g.node(Email, "Ann@Example.com").unwrap();
        let contact = g.node(ContactId, "c9").unwrap();
        // Seen apart: the web visitor, and the CRM contact with their email.
        g.union(contact, email);
        assert!(!g.same(anon, contact));
        // Login links the visitor to the account; then the account's email arrives.
        assert!(g.union(anon, user));
        let same_email = g.node(Email, "ann@example.com ").unwrap();
        assert_eq!(same_email, email);
        assert!(g.union(user, same_email));
        assert!(g.same(anon, contact));
        assert!(!g.union(anon, contact), "already one customer");
        let root = g.find(anon);
        let display = g.display_nodes();
        assert_eq!(display.iter().filter(|d| **d != u32::MAX).count(), 1);
        assert_eq!(g.identifier(display[root as usize]), (UserId, "u1"));
    }

    /// Enough identifiers for the tables to grow many times: every one interned once, found
    /// again by `node` and `lookup`, in its own kind only.
    #[test]
    fn many_identifiers_intern_once_each() {
        let mut g = IdentityGraph::new();
        let mut expected = std::collections::HashMap::new();
        for round in 0..2 {
            for i in 0..150_000u32 {
                // Kinds take turns; every third value is also seen under a second kind.
                let kinds: &[IdentityKind] = match i % 3 {
                    0 => &[UserId, AnonymousId],
                    1 => &[UserId],
                    _ => &[ContactId],
                };
                for &kind in kinds {
                    let value = format!("id-{}", i.wrapping_mul(2_654_435_761));
                    let node = g.node(kind, &value).unwrap();
                    let first = *expected.entry((kind, value.clone())).or_insert(node);
                    assert_eq!(node, first, "round {round}, {kind:?} {value}");
                    assert_eq!(g.lookup(kind, &value), Some(node));
                }
            }
        }
        assert_eq!(g.len(), expected.len());
        assert_eq!(g.lookup(Email, "id-0"), None);
    }

    #[test]
    fn kinds_are_namespaces() {
        let mut g = IdentityGraph::new();
        let a = g.node(UserId, "42").unwrap();
        let b = g.node(ContactId, "42").unwrap();
        assert_ne!(a, b);
        assert_eq!(g.node(UserId, " 42 "), Some(a));
        assert_eq!(g.node(Email, "  "), None);
        assert_eq!(g.identifier(b), (ContactId, "42"));
    }
}
