//! The `trailmap` command line: wiring, not logic.
//!
//! Each command is a clap `Args` struct with a `run` in [`commands`]; they share
//! [`input::InputArgs`] (what to read and how to map it, turned into file inputs, the
//! catalog and the session settings), and [`output`] (table on a terminal, CSV or JSON).
//! The work itself lives in the library crates: `trailmap-ingest` reads, `trailmap-sessionize`
//! stitches and cuts, `trailmap-gen` synthesises journeys.

pub mod commands;
pub mod input;
pub mod output;
