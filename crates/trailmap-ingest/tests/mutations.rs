//! Bad input never panics: every reader is fed byte-mutated copies of the example files
//! and the bad-input corpus. Each run must end in batches or a clear error, and every
//! record read must be booked exactly once.

use std::path::{Path, PathBuf};
use trailmap_ingest::DeadLetters;
use trailmap_ingest::file::{self, FileInput, IngestOptions};
use trailmap_model::config::{SourceConfig, SourceKind};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A tiny deterministic generator, so a failure names a reproducible case.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn mutate(bytes: &[u8], rng: &mut Lcg) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.next() % 4 {
        if out.is_empty() {
            break;
        }
        let i = (rng.next() as usize) % out.len();
        match rng.next() % 4 {
            0 => out[i] = rng.next() as u8,
            1 => out.truncate(i),
            2 => {
                out.remove(i);
            }
            _ => out.insert(
                i,
                [b'"', b',', b'\n', b'<', b'{', 0xff][(rng.next() % 6) as usize],
            ),
        }
    }
    out
}

#[test]
fn mutated_inputs_never_panic() {
    let cases: Vec<(&str, SourceKind)> = vec![
        (
            "config/examples/clickstream.ndjson",
            SourceKind::Clickstream,
        ),
        ("config/examples/ticket.csv", SourceKind::Ticket),
        ("config/examples/crm.ndjson", SourceKind::Crm),
        ("tests/data/bad/bad.csv", SourceKind::Generic),
        ("tests/data/bad/bad.ndjson", SourceKind::Generic),
        ("tests/data/bad/bad.xes", SourceKind::Generic),
        ("tests/data/bad/truncated.xes.gz", SourceKind::Generic),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(7);
    let mut runs = 0;
    for (rel, kind) in cases {
        let original = std::fs::read(root().join(rel)).unwrap();
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        for round in 0..150 {
            let path = dir.path().join(format!("{round}-{name}"));
            std::fs::write(&path, mutate(&original, &mut rng)).unwrap();
            let input = FileInput::new(&path, SourceConfig::of_kind(kind)).unwrap();
            let mut dead = DeadLetters::new(dir.path().join("dead.ndjson"), None);
            let mut rows = 0;
            let result = file::read_all(&[input], &IngestOptions::default(), &mut dead, |b| {
                rows += b.num_rows() as u64;
                Ok(())
            });
            runs += 1;
            if let Ok(stats) = result {
                assert_eq!(
                    stats.records,
                    stats.events + stats.links + stats.dropped + stats.rejected,
                    "{rel} round {round}: {stats:?}"
                );
                assert_eq!(rows, stats.events + stats.links, "{rel} round {round}");
            }
        }
    }
    assert_eq!(runs, 7 * 150);
}
