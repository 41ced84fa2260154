use clap::Parser;
use std::process::ExitCode;
use trailmap::commands::Command;

// The live map, the journey logs and DataFusion make many small allocations; mimalloc
// takes them faster than the system allocator (in process, the live pipeline gains a
// tenth to a quarter: `cargo bench -p trailmap-live --bench live`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Mine customer journeys from behaviour: clickstream, support tickets and CRM events,
/// stitched per customer, into paths, funnels and drop-offs.
#[derive(Parser)]
#[command(name = "trailmap", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e` of mimalloc.h, the same in
/// mimalloc 2 and 3; libmimalloc-sys names only the options before it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.command.runs_until_stopped() {
        // A command that reads, answers and exits never hands freed memory back to the
        // system: the exit does. By default mimalloc purges it page range by page range,
        // as threads end and again at exit (~150 madvise calls after a 20M-event funnel
        // printed its answer, milliseconds of the command's time).
        // SAFETY: sets an option before any thread but this one runs.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`| head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                let kind = c
                    .downcast_ref::<std::io::Error>()
                    .map(std::io::Error::kind)
                    .or_else(|| c.downcast_ref::<serde_json::Error>()?.io_error_kind())
                    .or_else(|| match c.downcast_ref::<csv::Error>()?.kind() {
                        csv::ErrorKind::Io(io) => Some(io.kind()),
                        _ => None,
                    });
                kind == Some(std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
