//! A file's pieces shared out among the threads that read it, as they go.
//!
//! Parts of equal rows do not take equal time: on a shared machine one core runs a third
//! faster than the other for a while, and a part whose customers are longer costs more.
//! The slowest part sets the pace, so the parts are not fixed in advance. The file is cut
//! into pieces (a few dozen, whole row groups where it can be); each reader starts on an
//! equal run of them, and reads its run piece by piece. A reader whose run is done takes
//! the back half of the pieces the fullest run has left, as a new part. Parts stay
//! contiguous runs of pieces, so a part is still one stream of the file's rows in order,
//! and the parts in the order of their first pieces are the whole file.

use std::ops::Range;
use std::sync::Mutex;

/// A part handed out: which part it is (for [`Shares::next`]) and its first piece, which
/// is already its own. Parts in the order of their first pieces are the file in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Share {
    pub part: usize,
    pub first: usize,
}

/// The pieces of a file and which part reads which.
pub(crate) struct Shares {
    /// Rows before each piece, and the total last: how the fullest run is found.
    starts: Vec<u64>,
    /// Per part handed out, the pieces it has not claimed yet (`next..end`); a thief moves
    /// `end` back. A lock taken once a piece (a row group, ~25 ms of work) is no cost.
    left: Mutex<Vec<Range<usize>>>,
}

impl Shares {
    /// Pieces of `rows` rows each, in file order, shared among `readers`: the first parts,
    /// one per reader (fewer when there are fewer pieces), runs of about equal rows, each
    /// with its first piece claimed.
    pub(crate) fn new(rows: &[u64], readers: usize) -> (Shares, Vec<Share>) {
        let mut starts = Vec::with_capacity(rows.len() + 1);
        let mut at = 0u64;
        for &r in rows {
            starts.push(at);
            at += r;
        }
        starts.push(at);
        let (total, readers) = (at, readers.max(1) as u64);
        // A piece goes to the run its middle row falls in: runs of about equal rows, in order.
        let run_of = |k: usize| {
            let middle = starts[k] + rows[k] / 2;
            (u128::from(middle) * u128::from(readers) / u128::from(total.max(1))) as u64
        };
        let mut runs: Vec<Range<usize>> = Vec::new();
        for k in 0..rows.len() {
            match runs.last_mut() {
                Some(run) if run_of(run.start) == run_of(k) => run.end = k + 1,
                _ => runs.push(k..k + 1),
            }
        }
        let shares = (runs.iter().enumerate())
            .map(|(part, run)| Share {
                part,
                first: run.start,
            })
            .collect();
        let left = runs.into_iter().map(|run| run.start + 1..run.end).collect();
        let shares_of = Shares {
            starts,
            left: Mutex::new(left),
        };
        (shares_of, shares)
    }

    /// The next piece of `part`, now its own; `None` when its run is read (or taken).
    pub(crate) fn next(&self, part: usize) -> Option<usize> {
        self.lock().get_mut(part)?.next()
    }

    /// A new part for a reader that has run out: the back half (rounded up) of the pieces
    /// the run with the most rows left has not claimed, with its first piece claimed.
    /// `None` when no piece is left.
    pub(crate) fn steal(&self) -> Option<Share> {
        let mut left = self.lock();
        let rows_left = |run: &Range<usize>| self.starts[run.end] - self.starts[run.start];
        let fullest = (left.iter().enumerate())
            .filter(|(_, run)| !run.is_empty())
            .max_by_key(|(part, run)| (rows_left(run), std::cmp::Reverse(*part)))
            .map(|(part, _)| part)?;
        let run = &mut left[fullest];
        let middle = run.start + run.len() / 2;
        let taken = middle..run.end;
        run.end = middle;
        let share = Share {
            part: left.len(),
            first: taken.start,
        };
        left.push(taken.start + 1..taken.end);
        Some(share)
    }

    /// The state is a list of ranges, whole after every update: a reader that panicked
    /// holding the lock left nothing half done.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Range<usize>>> {
        self.left
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece a part of `shares` reads, by part, reading `order` (part indices, each
    /// reading one piece; a part that has none left steals instead).
    fn read_all(rows: &[u64], readers: usize, mut turns: impl FnMut() -> usize) -> Vec<Vec<usize>> {
        let (shares, first) = Shares::new(rows, readers);
        let mut parts: Vec<Vec<usize>> = Vec::new();
        for share in &first {
            assert_eq!(share.part, parts.len());
            parts.push(vec![share.first]);
        }
        // Which part each reader is on.
        let mut on: Vec<Option<usize>> = first.iter().map(|s| Some(s.part)).collect();
        on.resize(readers, None);
        while on.iter().any(Option::is_some) {
            let reader = turns() % readers;
            let Some(part) = on[reader] else { continue };
            match shares.next(part) {
                Some(piece) => parts[part].push(piece),
                None => {
                    on[reader] = shares.steal().map(|share| {
                        assert_eq!(share.part, parts.len());
                        parts.push(vec![share.first]);
                        share.part
                    });
                }
            }
        }
        parts
    }

    #[test]
    fn first_runs_are_equal_rows_in_order() {
        let (_, shares) = Shares::new(&[10; 18], 2);
        assert_eq!(
            shares,
            [Share { part: 0, first: 0 }, Share { part: 1, first: 9 }]
        );
        // Fewer pieces than readers: one part a piece.
        let (_, shares) = Shares::new(&[5, 5], 4);
        assert_eq!(shares.len(), 2);
        // Unequal pieces: the runs split the rows, not the pieces.
        let (_, shares) = Shares::new(&[100, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10], 2);
        assert_eq!(shares[1].first, 1);
        assert!(Shares::new(&[], 2).1.is_empty());
    }

    #[test]
    fn every_piece_is_read_once_by_contiguous_parts() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize
        };
        for round in 0..500 {
            let pieces = 1 + random() % 40;
            let rows: Vec<u64> = (0..pieces).map(|_| (random() % 5) as u64 * 100).collect();
            let readers = 1 + random() % 4;
            // Readers at random speeds: a slow one gets its run stolen.
            let speed: Vec<usize> = (0..readers).map(|_| 1 + random() % 6).collect();
            let total: usize = speed.iter().sum();
            let parts = read_all(&rows, readers, || {
                let (mut pick, mut reader) = (random() % total, 0);
                while pick >= speed[reader] {
                    pick -= speed[reader];
                    reader += 1;
                }
                reader
            });
            let mut by_first = parts.clone();
            by_first.sort_by_key(|p| p[0]);
            for part in &parts {
                assert!(
                    part.windows(2).all(|w| w[1] == w[0] + 1),
                    "round {round}: a part is contiguous: {parts:?}"
                );
            }
            let all: Vec<usize> = by_first.concat();
            assert_eq!(
                all,
                (0..pieces).collect::<Vec<_>>(),
                "round {round}: {rows:?}, {readers} readers: {parts:?}"
            );
        }
    }

    #[test]
    fn a_reader_that_runs_out_takes_the_back_half_of_the_fullest_run() {
        let (shares, first) = Shares::new(&[1; 8], 2);
        assert_eq!(first[0].first, 0);
        assert_eq!(first[1].first, 4);
        // Part 1 reads all of its run while part 0 stays on its first piece.
        for piece in 5..8 {
            assert_eq!(shares.next(1), Some(piece));
        }
        assert_eq!(shares.next(1), None);
        // Part 0 has 1, 2, 3 left: the thief takes 2 and 3, claiming 2.
        assert_eq!(shares.steal(), Some(Share { part: 2, first: 2 }));
        assert_eq!(shares.next(0), Some(1));
        assert_eq!(shares.next(0), None);
        assert_eq!(shares.next(2), Some(3));
        assert_eq!(shares.steal(), None);
    }
}
