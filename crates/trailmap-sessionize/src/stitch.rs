//! Identity stitching: a union-find over interned identifiers.

use rustc_hash::FxHashMap;
use trailmap_model::IdentityKind;

/// Interned identifiers and the links between them. A customer is a connected component.
#[derive(Default)]
pub struct IdentityGraph {
    /// One map per identity kind: identifiers are namespaced by kind.
    ids: [FxHashMap<Box<str>, u32>; IdentityKind::ALL.len()],
    parent: Vec<u32>,
    /// Union by size keeps trees shallow even when links arrive in the worst order.
    size: Vec<u32>,
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

    /// The node of an identifier, creating it on first sight. `None` for a blank value.
    pub fn node(&mut self, kind: IdentityKind, raw: &str) -> Option<u32> {
        let value = kind.normalize(raw)?;
        let map = &mut self.ids[kind.index()];
        if let Some(&n) = map.get(value.as_ref()) {
            return Some(n);
        }
        let n = u32::try_from(self.parent.len()).expect("fewer than 2^32 identifiers");
        map.insert(Box::from(value.as_ref()), n);
        self.parent.push(n);
        self.size.push(1);
        Some(n)
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
        true
    }

    /// Whether two identifiers belong to one customer.
    pub fn same(&mut self, a: u32, b: u32) -> bool {
        self.find(a) == self.find(b)
    }

    /// The display key of every component, by root: its smallest identifier of the most
    /// preferred kind ([`IdentityKind`] order). Independent of arrival order.
    pub fn display_keys(&mut self) -> FxHashMap<u32, (IdentityKind, &str)> {
        let mut roots = Vec::with_capacity(self.parent.len());
        for x in 0..self.parent.len() as u32 {
            roots.push(self.find(x));
        }
        let mut best: FxHashMap<u32, (IdentityKind, &str)> = FxHashMap::default();
        for (kind, map) in IdentityKind::ALL.iter().zip(self.ids.iter()) {
            for (value, &n) in map {
                let root = roots[n as usize];
                let candidate = (*kind, value.as_ref());
                best.entry(root)
                    .and_modify(|b| {
                        if candidate < *b {
                            *b = candidate;
                        }
                    })
                    .or_insert(candidate);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdentityKind::*;

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
        let keys = g.display_keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[&root], (UserId, "u1"));
    }

    #[test]
    fn kinds_are_namespaces() {
        let mut g = IdentityGraph::new();
        let a = g.node(UserId, "42").unwrap();
        let b = g.node(ContactId, "42").unwrap();
        assert_ne!(a, b);
        assert_eq!(g.node(UserId, " 42 "), Some(a));
        assert_eq!(g.node(Email, "  "), None);
    }
}
