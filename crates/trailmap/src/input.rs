//! What the analytics commands read, and how: the input flags shared by `sessions`,
//! `paths`, `funnel`, `dropoffs` and `sql`.

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;
use trailmap_ingest::DeadLetters;
use trailmap_ingest::file::{self, FileInput, IngestOptions, IngestStats, Projection};
use trailmap_model::config::{OneOrMany, Scope, SourceConfig, SourceKind};
use trailmap_model::time::{Span, TimeUnit};
use trailmap_model::{Catalog, Config, Error};
use trailmap_sessionize::{
    Attribute, GroupedError, GroupedJourneys, GroupedPart, GroupedSummary, JourneyBuilder,
    JourneyLog, JourneySink,
};

#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Input file, repeatable: `FILE` (a generic log, mapped by --customer/--time/--touchpoint)
    /// or `KIND=FILE` with KIND clickstream, ticket, crm or a configured source's name.
    /// Formats by extension: .csv .tsv .ndjson .jsonl .parquet .xes .xes.gz (and .gz text).
    /// Without --input, the paths of the configured [[sources]] are read.
    #[arg(long = "input", short = 'i', value_name = "[KIND=]FILE")]
    pub inputs: Vec<String>,

    /// Configuration file (default: the built-in copy of config/trailmap.toml).
    #[arg(long, env = "TRAILMAP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Customer (case) column of generic logs [default: customer_id; XES: the trace's concept:name].
    #[arg(long, value_name = "COL")]
    pub customer: Option<String>,

    /// Time column of generic logs [default: ts; XES: time:timestamp].
    #[arg(long, value_name = "COL")]
    pub time: Option<String>,

    /// Touchpoint column of generic logs [default: touchpoint; XES: the event's concept:name].
    #[arg(long, value_name = "COL")]
    pub touchpoint: Option<String>,

    /// CSV delimiter (one character, `\t` for tab) [default: sniffed from the header line].
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,

    /// The CSV has no header row; name the columns with --columns.
    #[arg(long)]
    pub no_header: bool,

    /// Column names of a CSV without header, comma-separated.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    pub columns: Vec<String>,

    /// strftime format of text times (e.g. "%Y/%m/%d %H:%M:%S%.f") [default: ISO-8601 or epoch].
    #[arg(long, value_name = "FMT")]
    pub time_format: Option<String>,

    /// Unit of numeric times [default: guessed from the magnitude].
    #[arg(long, value_name = "s|ms|us")]
    pub time_unit: Option<TimeUnit>,

    /// Inactivity that starts a new session (e.g. 30m) [default: sessions.gap].
    #[arg(long, value_name = "DURATION")]
    pub gap: Option<Span>,

    /// Longest session before it is cut; 0 for none [default: sessions.max_duration].
    #[arg(long, value_name = "DURATION")]
    pub max_duration: Option<Span>,

    /// Journeys are whole customer histories or sessions [default: sessions.scope].
    #[arg(long, value_name = "customer|session")]
    pub scope: Option<Scope>,

    /// Where rejected records go [default: ingest.dead_letter].
    #[arg(long, value_name = "FILE")]
    pub dead_letter: Option<PathBuf>,

    /// Fail when more than N records are rejected [default: ingest.max_errors, unlimited].
    #[arg(long, value_name = "N")]
    pub max_errors: Option<u64>,
}

/// Journeys loaded from the inputs, with what ingest saw.
pub struct Loaded {
    pub config: Config,
    pub log: JourneyLog,
    pub ingest: IngestStats,
    pub files: Vec<PathBuf>,
    pub dead_letters: PathBuf,
    pub rejected_by_reason: std::collections::BTreeMap<String, u64>,
}

impl InputArgs {
    /// The configuration with the command-line overrides applied.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::builtin(),
        };
        if let Some(gap) = self.gap {
            if gap.is_zero() {
                bail!("--gap must be longer than 0, like 30m");
            }
            config.sessions.gap = gap;
        }
        if let Some(max) = self.max_duration {
            config.sessions.max_duration = max;
        }
        if let Some(scope) = self.scope {
            config.sessions.scope = scope;
        }
        if let Some(dl) = &self.dead_letter {
            config.ingest.dead_letter = dl.clone();
        }
        if self.max_errors.is_some() {
            config.ingest.max_errors = self.max_errors;
        }
        Ok(config)
    }

    /// Applies the format flags (and, for generic logs, the column flags) to a source.
    fn tune(&self, mut source: SourceConfig) -> SourceConfig {
        if source.kind == SourceKind::Generic {
            for (field, flag) in [
                ("customer_id", &self.customer),
                ("ts", &self.time),
                ("touchpoint", &self.touchpoint),
            ] {
                if let Some(col) = flag {
                    source
                        .fields
                        .insert(field.into(), OneOrMany::One(col.clone()));
                }
            }
        }
        if self.time_format.is_some() {
            source.time_format = self.time_format.clone();
        }
        if self.time_unit.is_some() {
            source.time_unit = self.time_unit;
        }
        if self.delimiter.is_some() {
            source.csv.delimiter = self.delimiter.clone();
        }
        if self.no_header {
            source.csv.header = Some(false);
            source.csv.columns = self.columns.clone();
        }
        source
    }

    /// Whether the config names files to read when no --input is given.
    pub fn has_configured_sources(&self, config: &Config) -> bool {
        config.sources.iter().any(|s| !s.paths.is_empty())
    }

    /// The files to read, each with its source config.
    pub fn file_inputs(&self, config: &Config) -> anyhow::Result<Vec<FileInput>> {
        let mut inputs = Vec::new();
        for spec in &self.inputs {
            let (source, path) = match spec.split_once('=') {
                Some((name, path)) if !name.contains(['/', '\\']) => {
                    let source = config
                        .sources
                        .iter()
                        .find(|s| s.name == name)
                        .cloned()
                        .or_else(|| SourceKind::parse(name).map(SourceConfig::of_kind))
                        .with_context(|| {
                            let mut known: Vec<&str> = vec!["clickstream", "ticket", "crm", "generic"];
                            known.extend(config.sources.iter().map(|s| s.name.as_str()));
                            format!(
                                "--input {spec}: `{name}` is not a source kind or configured source; use one of {}",
                                known.join(", ")
                            )
                        })?;
                    (source, PathBuf::from(path))
                }
                _ => {
                    let mut source = SourceConfig::of_kind(SourceKind::Generic);
                    source.name = "file".into();
                    (source, PathBuf::from(spec))
                }
            };
            inputs.push(FileInput::new(path, self.tune(source))?);
        }
        if inputs.is_empty() {
            for source in &config.sources {
                for path in &source.paths {
                    inputs.push(FileInput::new(path.clone(), self.tune(source.clone()))?);
                }
            }
        }
        if inputs.is_empty() {
            bail!(
                "no input: pass --input FILE (repeatable), or configure [[sources]] with paths in --config"
            );
        }
        for input in &inputs {
            if !input.path.exists() {
                bail!("{}: no such file", input.path.display());
            }
        }
        Ok(inputs)
    }

    /// Reads, stitches and sessionizes every input.
    pub fn load(&self, projection: Projection) -> anyhow::Result<Loaded> {
        self.load_keeping(projection, None)
    }

    /// [`load`](Self::load), keeping one attribute per event for breakdowns.
    pub fn load_keeping(
        &self,
        mut projection: Projection,
        attribute: Option<Attribute>,
    ) -> anyhow::Result<Loaded> {
        if attribute.as_ref().is_some_and(Attribute::needs_properties) {
            projection.properties = true;
        }
        let config = self.config()?;
        let inputs = self.file_inputs(&config)?;
        let started = std::time::Instant::now();
        let mut journeys = JourneyBuilder::new();
        // Room for every event at once where the files say how many they hold: growing
        // columns of tens of millions of events by doubling costs a quarter of the load.
        // (Footers are the files' own say: added without overflowing.)
        let hint = inputs
            .iter()
            .filter_map(file::records_hint)
            .fold(0u64, u64::saturating_add);
        journeys.reserve(usize::try_from(hint).unwrap_or(0));
        if let Some(attribute) = attribute {
            journeys.keep_attribute(attribute);
        }
        let read = read_inputs(&config, &inputs, projection, &mut |batch| {
            journeys.push_batch(batch).map_err(Error::Other)
        })?;
        let took = started.elapsed();
        let log = journeys.finish(&config.sessions);
        timing("read + stitch", took);
        timing("group + order + sessions", started.elapsed() - took);
        Ok(Loaded {
            dead_letters: read.dead_letters,
            rejected_by_reason: read.rejected_by_reason,
            config,
            log,
            ingest: read.ingest,
            files: inputs.into_iter().map(|i| i.path).collect(),
        })
    }

    /// Journeys of input grouped by customer, each handed to `sink` as soon as the next
    /// customer's events begin, with no journey log kept (see
    /// [`GroupedJourneys`]): what commands that only aggregate journeys read when they can.
    /// `names` get their touchpoint ids before any event, in order (repeats once), so
    /// aggregates can be set up ahead. Only the touchpoints are read (no record channel).
    /// `None` when the input turns out not to be grouped, or to need stitching: load it
    /// then.
    pub fn stream_grouped(
        &self,
        config: &Config,
        names: &[&str],
        sink: &mut dyn JourneySink,
    ) -> anyhow::Result<Option<GroupedSummary>> {
        let mut stream = GroupedJourneys::new(config.sessions.scope, &config.sessions);
        for name in names {
            stream.touchpoint_id(name);
        }
        let started = std::time::Instant::now();
        let mut not_grouped = None;
        let projection = Projection {
            channel: false,
            ..Projection::minimal()
        };
        let read = self.read_with(config, projection, &mut |batch| match stream
            .push_batch(batch, &mut *sink)
        {
            Ok(()) => Ok(()),
            Err(GroupedError::NotGrouped(why)) => {
                let stop = Error::Other(why.to_string());
                not_grouped = Some(why);
                Err(stop)
            }
            Err(GroupedError::Batch(e)) => Err(Error::Other(e)),
        });
        let finished = match (not_grouped, read) {
            (Some(why), _) => Err(why),
            (None, read) => {
                read?;
                stream.finish(sink)
            }
        };
        match finished {
            Ok(summary) => {
                timing("read + aggregate, streamed", started.elapsed());
                Ok(Some(summary))
            }
            Err(why) => {
                timing(&format!("streaming stopped ({why})"), started.elapsed());
                Ok(None)
            }
        }
    }

    /// [`stream_grouped`](Self::stream_grouped), reading one Parquet file in parts side by
    /// side when it can (see [`file::parts`]): each thread takes parts of the file (runs of
    /// row groups, shared out as the threads go), decodes them and streams their journeys
    /// into a sink of each part's own, while the batches are in its cache; the customers
    /// at the parts' edges are joined and the sinks merged. The result is
    /// the one stream's. Input that cannot be read in parts is streamed as one.
    pub fn stream_grouped_in_parts<S: PartSink>(
        &self,
        config: &Config,
        names: &[&str],
        sink: &mut S,
    ) -> anyhow::Result<Option<GroupedSummary>> {
        match self.stream_parts(config, names, sink)? {
            InParts::Streamed(summary) => Ok(Some(summary)),
            InParts::NotGrouped => Ok(None),
            InParts::CannotSplit => self.stream_grouped(config, names, sink),
        }
    }

    fn stream_parts<S: PartSink>(
        &self,
        config: &Config,
        names: &[&str],
        sink: &mut S,
    ) -> anyhow::Result<InParts> {
        let inputs = self.file_inputs(config)?;
        let [input] = &inputs[..] else {
            return Ok(InParts::CannotSplit);
        };
        // A thread per core; two at least, so that one core reads the same way (and a test
        // sees the same path on any machine).
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let options = IngestOptions {
            catalog: Arc::new(Catalog::compile(&config.catalog)?),
            batch_size: config.ingest.batch_size,
            projection: Projection {
                channel: false,
                ..Projection::minimal()
            },
        };
        let Some(parts) = file::parts(input, &options, threads)? else {
            return Ok(InParts::CannotSplit);
        };
        let started = std::time::Instant::now();
        let stream = |early: usize| {
            let mut stream =
                GroupedJourneys::part(config.sessions.scope, &config.sessions).check_early(early);
            for name in names {
                stream.touchpoint_id(name);
            }
            stream
        };
        let progress = ProgressBar::new(file::records_hint(input).unwrap_or(0));
        progress.set_style(
            ProgressStyle::with_template(
                "{spinner} reading {msg} {bar:30} {pos}/{len} rows ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        progress.set_message(input.path.display().to_string());
        // A part that stops makes the others' work useless: they stop at their next batch.
        let stop = std::sync::atomic::AtomicBool::new(false);
        let template = sink.for_part();
        let early = GroupedJourneys::EARLY_CUSTOMERS / threads;
        let mut streamed: Vec<StreamedPart<S>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (parts, template, stream) = (&parts, &template, &stream);
                    let (stop, progress) = (&stop, &progress);
                    scope.spawn(move || {
                        // Only a thread's first part checks its first customers as they come:
                        // the parts taken later are near the end of the input, where finding
                        // out early saves nothing.
                        let mut early = early;
                        let mut streamed = Vec::new();
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let part = match parts.take() {
                                Ok(Some(part)) => part,
                                Ok(None) => break,
                                Err(e) => {
                                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                                    streamed.push(StreamedPart {
                                        place: 0,
                                        streamed: Err(PartStop::Unreadable(e)),
                                    });
                                    break;
                                }
                            };
                            let (place, mut part_sink) = (part.place(), template.for_part());
                            let part =
                                stream_part(part, stream(early), &mut part_sink, stop, progress);
                            early = 0;
                            streamed.push(StreamedPart {
                                place,
                                streamed: part.map(|part| (part, part_sink)),
                            });
                        }
                        streamed
                    })
                })
                .collect();
            (handles.into_iter())
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        streamed.sort_by_key(|part| part.place);
        progress.finish_and_clear();
        let all = streamed.len();
        let mut parts = Vec::with_capacity(all);
        let mut sinks = Vec::with_capacity(all);
        // The first part's reason to stop is the one that counts (the others may only have
        // been told to).
        for part in streamed {
            match part.streamed {
                Ok((part, part_sink)) => {
                    parts.push(part);
                    sinks.push(part_sink);
                }
                Err(PartStop::Stopped) => {}
                Err(PartStop::NotColumnar) => {
                    timing(
                        "reading in parts stopped (records the row path reads)",
                        started.elapsed(),
                    );
                    return Ok(InParts::CannotSplit);
                }
                Err(PartStop::Grouped(GroupedError::NotGrouped(why))) => {
                    timing(&format!("streaming stopped ({why})"), started.elapsed());
                    return Ok(InParts::NotGrouped);
                }
                Err(PartStop::Grouped(GroupedError::Batch(e))) => {
                    return Err(Error::Other(e).into());
                }
                Err(PartStop::Unreadable(e)) => return Err(e.into()),
            }
        }
        if parts.len() < all {
            // Told to stop with no part saying why: cannot happen, but a partial answer must not.
            return Ok(InParts::CannotSplit);
        }
        let joined = match stream(0).join(parts, sink) {
            Ok(joined) => joined,
            Err(why) => {
                timing(&format!("streaming stopped ({why})"), started.elapsed());
                return Ok(InParts::NotGrouped);
            }
        };
        for (part_sink, ids) in sinks.into_iter().zip(&joined.touchpoint_ids) {
            sink.merge_part(part_sink, ids);
        }
        timing("read + aggregate, streamed in parts", started.elapsed());
        Ok(InParts::Streamed(joined.summary))
    }

    /// Reads every input into `consume`, batch by batch. An error from `consume` stops the
    /// reading and is returned.
    fn read_with(
        &self,
        config: &Config,
        projection: Projection,
        consume: &mut dyn FnMut(&RecordBatch) -> Result<(), Error>,
    ) -> anyhow::Result<Read> {
        let inputs = self.file_inputs(config)?;
        read_inputs(config, &inputs, projection, consume)
    }
}

/// A [`JourneySink`] that can count the parts of an input apart, one copy per part, and
/// merge them (every aggregate here is mergeable).
pub trait PartSink: JourneySink + Send + Sync + Sized {
    /// A sink for one part: the same question, nothing counted.
    fn for_part(&self) -> Self;

    /// Adds what `part` counted, its touchpoint ids renumbered first: the part's id `t` is
    /// `ids[t]` here (see [`Joined`](trailmap_sessionize::Joined)).
    fn merge_part(&mut self, part: Self, ids: &[u32]);
}

/// Reads `part` into `stream`, its journeys into `sink`, until it ends or `stop` is set;
/// sets `stop` when it cannot go on.
fn stream_part<S: PartSink>(
    mut part: file::FilePart,
    mut stream: GroupedJourneys,
    sink: &mut S,
    stop: &std::sync::atomic::AtomicBool,
    progress: &ProgressBar,
) -> Result<GroupedPart, PartStop> {
    use std::sync::atomic::Ordering::Relaxed;
    let began = std::time::Instant::now();
    let ended = loop {
        if stop.load(Relaxed) {
            break Err(PartStop::Stopped);
        }
        let batch = match part.next_batch() {
            Ok(Some(batch)) => batch,
            Ok(None) => break Ok(()),
            Err(file::NotColumnar) => break Err(PartStop::NotColumnar),
        };
        if let Err(e) = stream.push_batch(&batch, sink) {
            break Err(PartStop::Grouped(e));
        }
        progress.inc(batch.num_rows() as u64);
    };
    let finished = ended.map(|()| stream.finish_part(sink));
    match &finished {
        Ok(_) => timing("a part read and streamed", began.elapsed()),
        Err(_) => stop.store(true, Relaxed),
    }
    finished
}

/// A part of an input as a thread read it: its place in the input (see
/// [`FilePart::place`](file::FilePart::place)), and its journeys and what its sink counted,
/// or why it stopped.
struct StreamedPart<S> {
    place: usize,
    streamed: Result<(GroupedPart, S), PartStop>,
}

/// How reading an input in parts went.
enum InParts {
    Streamed(GroupedSummary),
    /// The input is not grouped by customer (or needs stitching): load it.
    NotGrouped,
    /// It cannot be read in parts: stream it as one.
    CannotSplit,
}

/// Why a part stopped before its end.
enum PartStop {
    /// Another part stopped.
    Stopped,
    /// A part could not be opened.
    Unreadable(Error),
    NotColumnar,
    Grouped(GroupedError),
}

/// What reading the inputs saw, besides the batches.
struct Read {
    pub ingest: IngestStats,
    pub dead_letters: PathBuf,
    pub rejected_by_reason: std::collections::BTreeMap<String, u64>,
}

/// Reads `inputs` into `consume`, with a progress bar, dead letters and the error budget.
fn read_inputs(
    config: &Config,
    inputs: &[FileInput],
    projection: Projection,
    consume: &mut dyn FnMut(&RecordBatch) -> Result<(), Error>,
) -> anyhow::Result<Read> {
    let options = IngestOptions {
        catalog: Arc::new(Catalog::compile(&config.catalog)?),
        batch_size: config.ingest.batch_size,
        projection,
    };
    let mut dead = DeadLetters::new(&config.ingest.dead_letter, config.ingest.max_errors);
    let total_bytes: u64 = inputs
        .iter()
        .filter_map(|i| std::fs::metadata(&i.path).ok())
        .map(|m| m.len())
        .sum();
    let progress = ProgressBar::new(total_bytes);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} reading {msg} {bar:30} {bytes}/{total_bytes} ({eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Reading (decompression, parsing, mapping; Parquet decodes row groups on threads of
    // its own) runs on one thread and the consumer (the stitcher) on this one, so both
    // cores work; the bounded channel keeps memory flat.
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let (read, consumed) = std::thread::scope(|scope| {
        let (options, dead, progress) = (&options, &mut dead, &progress);
        // `tx` moves into the reader so the channel closes when reading ends.
        let reader = scope.spawn(move || -> Result<IngestStats, Error> {
            let mut ingest = IngestStats::default();
            let mut done_bytes = 0;
            for input in inputs {
                progress.set_message(input.path.display().to_string());
                let mut source = file::open(input, options)?;
                while let Some(batch) = source.next_batch(dead)? {
                    if tx.send(batch).is_err() {
                        // The consumer stopped; its error is the one to report.
                        return Ok(ingest);
                    }
                    progress.set_position(done_bytes + source.bytes_read());
                }
                done_bytes += std::fs::metadata(&input.path).map(|m| m.len()).unwrap_or(0);
                ingest.add(source.stats());
            }
            dead.flush()?;
            Ok(ingest)
        });
        let mut consumed = Ok(());
        for batch in rx {
            if let Err(e) = consume(&batch) {
                consumed = Err(e);
                break;
            }
        }
        let read = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (read, consumed)
    });
    progress.finish_and_clear();
    // A read error (a bad file, the error budget spent) explains a consumer's error that
    // follows from it, so it is reported first.
    let read = match (read, consumed) {
        (Ok(_), Err(e)) => Err(e),
        (read, _) => read,
    };
    let ingest = match read {
        Ok(ingest) => ingest,
        Err(e @ Error::TooManyErrors { .. }) => {
            let reasons: Vec<String> = dead
                .by_reason()
                .iter()
                .map(|(r, n)| format!("  {n} × {r}"))
                .collect();
            bail!("{e}\nrejected by reason:\n{}", reasons.join("\n"));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Read {
        ingest,
        dead_letters: dead.path().to_path_buf(),
        rejected_by_reason: dead.by_reason().clone(),
    })
}

/// With `TRAILMAP_TIMINGS` set, how long a phase took, on stderr (for profiling runs).
pub fn timing(phase: &str, took: std::time::Duration) {
    if std::env::var_os("TRAILMAP_TIMINGS").is_some() {
        eprintln!("timing: {phase}: {:.3} s", took.as_secs_f64());
    }
}
