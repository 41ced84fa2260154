//! The customers a grouped stream met, by hash: a customer met twice (in one stream, or in
//! two parts of an input) means the input is not grouped after all.
//!
//! Hashes are kept in groups by their top bits as they come, so that looking for a repeat
//! is one small hash table per group, in cache, over every list at once. Sorting each list
//! and walking them side by side did the same in twice the time (33 against 16 ms for 1.2M
//! hashes): the sort of a part's ~600,000 hashes was a twentieth of a 20M-event funnel.

/// Groups of hashes, by their top [`GROUP_BITS`] bits.
const GROUP_BITS: u32 = 6;
const GROUPS: usize = 1 << GROUP_BITS;

/// Hashes, in groups by their top bits.
#[derive(Debug, Clone, Default)]
pub(crate) struct Met {
    /// Empty, or one list per group.
    groups: Vec<Vec<u64>>,
    len: usize,
}

impl Met {
    pub(crate) fn push(&mut self, hash: u64) {
        if self.groups.is_empty() {
            self.groups = vec![Vec::new(); GROUPS];
        }
        self.groups[group(hash)].push(hash);
        self.len += 1;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn group(&self, g: usize) -> &[u64] {
        self.groups.get(g).map_or(&[], Vec::as_slice)
    }

    /// Whether some hash is in two of `lists`, or twice in one. The lower and the upper
    /// half of the groups are looked at on two threads when there are many hashes (this
    /// runs when every part is read, alone on the machine).
    pub(crate) fn any_repeat(lists: &[Met]) -> bool {
        const ON_ONE_THREAD: usize = 1 << 16;
        if lists.iter().map(Met::len).sum::<usize>() < ON_ONE_THREAD {
            return repeat_in(lists, 0..GROUPS);
        }
        std::thread::scope(|scope| {
            let upper = scope.spawn(|| repeat_in(lists, GROUPS / 2..GROUPS));
            let lower = repeat_in(lists, 0..GROUPS / 2);
            let upper = upper
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            lower || upper
        })
    }
}

fn group(hash: u64) -> usize {
    (hash >> (64 - GROUP_BITS)) as usize
}

/// Whether some hash of `groups` is in two of `lists`, or twice in one: each group's
/// hashes, of every list, go into one open-addressing table (indexed by the bits below
/// the group's). A slot is taken when it carries the group's stamp, so the table is not
/// cleared between groups.
fn repeat_in(lists: &[Met], groups: std::ops::Range<usize>) -> bool {
    let size = |g: usize| lists.iter().map(|l| l.group(g).len()).sum::<usize>();
    let largest = groups.clone().map(size).max().unwrap_or(0);
    if largest < 2 {
        return false;
    }
    // At most half full: probes stay short.
    let bits = (2 * largest).max(16).next_power_of_two().trailing_zeros();
    let mask = (1usize << bits) - 1;
    let shift = 64 - GROUP_BITS - bits;
    let mut table: Vec<(u64, u32)> = vec![(0, 0); 1 << bits];
    for (stamp, g) in groups.enumerate() {
        let stamp = stamp as u32 + 1;
        for &hash in lists.iter().flat_map(|l| l.group(g)) {
            let mut i = (hash >> shift) as usize & mask;
            loop {
                let slot = &mut table[i];
                if slot.1 != stamp {
                    *slot = (hash, stamp);
                    break;
                }
                if slot.0 == hash {
                    return true;
                }
                i = (i + 1) & mask;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::Met;

    fn met(hashes: impl IntoIterator<Item = u64>) -> Met {
        let mut met = Met::default();
        for h in hashes {
            met.push(h);
        }
        met
    }

    /// Hashes over the whole range (every group), from small numbers.
    fn spread(k: u64) -> u64 {
        k.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn a_hash_met_twice_is_found() {
        let odd = || met((0..1000).map(|i| spread(2 * i + 1)));
        let even = || met((0..1000).map(|i| spread(2 * i)));
        assert!(!Met::any_repeat(&[]));
        assert!(!Met::any_repeat(&[Met::default(), Met::default()]));
        assert!(!Met::any_repeat(&[odd(), even(), Met::default()]));
        assert!(Met::any_repeat(&[odd(), even(), met([spread(1999)])]));
        assert!(Met::any_repeat(&[met([spread(0)]), odd(), even()]));
        // Twice in one list.
        assert!(Met::any_repeat(&[met([spread(5), spread(7), spread(5)])]));
        assert!(Met::any_repeat(&[
            odd(),
            met([spread(8), spread(9), spread(8)])
        ]));
        // Equal hashes in every place of a group: equal low bits, and hashes that probe
        // past each other (all in one group and one slot but the last).
        let crowded: Vec<u64> = (0..200).map(|k| (k << 40) | 1).collect();
        assert!(!Met::any_repeat(&[met(crowded.clone())]));
        assert!(Met::any_repeat(&[
            met(crowded.clone()),
            met([crowded[150]])
        ]));
        let same_slot: Vec<u64> = (0..100).map(|k| k + 1).collect();
        assert!(!Met::any_repeat(&[met(same_slot.clone())]));
        assert!(Met::any_repeat(&[met(same_slot.clone()), met([99])]));
        // Zero is a hash like any other.
        assert!(!Met::any_repeat(&[met([0]), met([1 << 63])]));
        assert!(Met::any_repeat(&[met([0]), met([0])]));
    }

    #[test]
    fn a_hash_met_twice_is_found_in_any_group() {
        let hashes = || (0..200_000u64).map(spread);
        assert!(!Met::any_repeat(&[met(hashes())]));
        for at in [0, 1, 77_777, 199_999] {
            let mut twice = met(hashes());
            twice.push(spread(at));
            assert!(Met::any_repeat(&[twice]), "{at}");
        }
    }

    #[test]
    fn many_hashes_are_looked_at_in_both_halves() {
        // Enough for two threads: one repeat in the lower or the upper half, or none.
        let a = || met((0..100_000).map(|k| spread(2 * k)));
        let b = || met((0..100_000).map(|k| spread(2 * k + 1)));
        assert!(!Met::any_repeat(&[a(), b(), Met::default()]));
        for upper in [false, true] {
            let repeated = (0..100_000)
                .map(|k| spread(2 * k))
                .find(|&h| (h >= 1 << 63) == upper)
                .unwrap();
            let c = met([repeated, spread(1_000_001)]);
            assert!(Met::any_repeat(&[a(), b(), c]), "upper half: {upper}");
            let mut d = b();
            d.push(repeated);
            assert!(Met::any_repeat(&[a(), d]), "upper half: {upper}");
            let mut e = a();
            e.push(repeated);
            assert!(Met::any_repeat(&[e]), "upper half: {upper}");
        }
    }
}
