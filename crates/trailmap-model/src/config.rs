//! `trailmap.toml` as types. `config/trailmap.toml` documents every key; this module gives
//! each the same default, and [`Config::from_toml_str`] validates what serde cannot
//! (regexes, journey steps, field names), naming the offending key.

use crate::alert::{AlertRule, AlertingConfig};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::identity::IdentityKind;
use crate::time::{Span, TimeUnit};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The configuration shipped in `config/trailmap.toml`; used when no `--config` is given.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../config/trailmap.toml");

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where events come from.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// How raw values become touchpoints.
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// How journeys are cut into sessions.
    #[serde(default)]
    pub sessions: SessionConfig,
    /// Named funnels.
    #[serde(default)]
    pub journeys: BTreeMap<String, JourneyConfig>,
    /// Touchpoint-pair KPIs / SLAs.
    #[serde(default)]
    pub kpis: BTreeMap<String, KpiConfig>,
    /// Reading and rejecting records.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Where events and checkpoints are stored.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Limits on analyst SQL.
    #[serde(default)]
    pub sql: SqlConfig,
    /// Network endpoints of `serve` and `demo`.
    #[serde(default)]
    pub server: ServerConfig,
    /// The Kafka cluster the live pipeline consumes sources' topics from.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Alert rules on stage conversion.
    #[serde(default)]
    pub alerts: BTreeMap<String, AlertRule>,
    /// Where alert notifications go.
    #[serde(default)]
    pub alerting: AlertingConfig,
    /// What the live pipeline keeps of each customer's recent touchpoints.
    #[serde(default)]
    pub timeline: TimelineConfig,
    /// The attribute live views can be filtered by (`segment=`).
    #[serde(default)]
    pub segments: SegmentsConfig,
}

/// Segments of the live map: each session belongs to the value an attribute has on its
/// first event (`device = "mobile"`), and the live pipeline keeps the map per value, so every
/// live view can show one segment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// The attribute: a column (`channel`, `source`) or a property (`device`,
    /// `properties.plan`). Empty: no segments (the map is kept whole only).
    pub by: String,
}

/// Customer timelines (`/api/customers/{id}/timeline`): each customer's latest touchpoints,
/// across sources, kept in memory by the live pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TimelineConfig {
    /// Touchpoints kept per customer, the latest in event time (16 bytes each); 0 keeps
    /// none.
    pub events: usize,
    /// A customer with no event for this long (event time) is forgotten.
    pub retention: Span,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            events: 20,
            retention: Span::from_secs(30 * 86_400),
        }
    }
}

impl Config {
    /// The shipped defaults (`config/trailmap.toml`).
    pub fn builtin() -> Config {
        Config::from_toml_str(DEFAULT_CONFIG_TOML).expect("config/trailmap.toml is valid")
    }

    pub fn from_toml_str(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml's message quotes the line and names the key; keep it whole.
            Error::Other(format!("config: {}", e.to_string().trim_end()))
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::from_toml_str(&text).map_err(|e| match e {
            Error::Other(msg) => Error::Other(format!("{}: {msg}", path.display())),
            Error::Config { key, message } => Error::Config {
                key: format!("{}: {key}", path.display()),
                message,
            },
            other => other,
        })
    }

    /// Checks what the types cannot: regexes compile, names are known, lists line up.
    pub fn validate(&self) -> Result<()> {
        Catalog::compile(&self.catalog)?;
        let mut names = std::collections::BTreeSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            if !names.insert(source.name.as_str()) {
                return Err(Error::config(
                    format!("sources[{i}].name"),
                    format!(
                        "`{}` is used by two sources; names must be unique",
                        source.name
                    ),
                ));
            }
            source.mapping().map_err(|(field, message)| {
                Error::config(format!("sources[{i}].fields.{field}"), message)
            })?;
            if let Some(d) = &source.csv.delimiter
                && d.len() != 1
            {
                return Err(Error::config(
                    format!("sources[{i}].csv.delimiter"),
                    "must be one ASCII character, like \",\" or \";\" or \"\\t\"",
                ));
            }
        }
        if self.sessions.gap.is_zero() {
            return Err(Error::config(
                "sessions.gap",
                "must be longer than 0, like \"30m\"",
            ));
        }
        if self.ingest.batch_size == 0 {
            return Err(Error::config("ingest.batch_size", "must be at least 1"));
        }
        for (name, journey) in &self.journeys {
            journey.validate().map_err(|(field, message)| {
                Error::config(format!("journeys.{name}.{field}"), message)
            })?;
        }
        for (name, kpi) in &self.kpis {
            if kpi.within.is_zero() {
                return Err(Error::config(
                    format!("kpis.{name}.within"),
                    "must be longer than 0, like \"24h\"",
                ));
            }
            if kpi.from.trim().is_empty() || kpi.to.trim().is_empty() {
                return Err(Error::config(
                    format!("kpis.{name}"),
                    "`from` and `to` must name touchpoints",
                ));
            }
        }
        for (name, rule) in &self.alerts {
            rule.validate(&self.journeys).map_err(|(field, message)| {
                Error::config(format!("alerts.{name}.{field}"), message)
            })?;
        }
        if let Some(by) = self.breakdown_attribute()?
            && (by == "event_id" || IdentityKind::from_column(by).is_some())
        {
            let key = if self.segments.by.trim().is_empty() {
                "alerts.*.breakdown.by"
            } else {
                "segments.by"
            };
            return Err(Error::config(
                key,
                format!(
                    "`{by}` identifies events or customers: the live map would be kept once per value; break down by a low-cardinality attribute such as device, channel or plan"
                ),
            ));
        }
        for (i, url) in self.alerting.webhooks.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Error::config(
                    format!("alerting.webhooks[{i}]"),
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The attribute the live pipeline keeps per event, for segments and alert breakdowns:
    /// `[segments] by`, which every rule with a breakdown must name too, or else the one
    /// they all name (an error names two that differ).
    pub fn breakdown_attribute(&self) -> Result<Option<&str>> {
        let segments = self.segments.by.trim();
        let mut by: Option<(&str, &str)> = (!segments.is_empty()).then_some(("", segments));
        for (name, rule) in &self.alerts {
            let Some(b) = &rule.breakdown else { continue };
            match by {
                None => by = Some((name, &b.by)),
                Some((first, attribute)) if attribute != b.by => {
                    let other = if first.is_empty() {
                        "[segments] by".to_string()
                    } else {
                        format!("rule `{first}`")
                    };
                    return Err(Error::config(
                        format!("alerts.{name}.breakdown.by"),
                        format!(
                            "{other} names `{attribute}` and this rule `{}`; the live pipeline keeps one attribute per event, so segments and alert breakdowns must all use the same",
                            b.by
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(by.map(|(_, attribute)| attribute))
    }
}

/// The kind of a source decides its built-in field mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Segment-style `track` / `page` / `identify` calls.
    Clickstream,
    /// Help-desk ticket updates (Zendesk / Freshdesk exports).
    Ticket,
    /// CRM lifecycle and deal stage changes (HubSpot / Salesforce exports).
    Crm,
    /// Any log with a customer (case) column, a time column and a touchpoint column.
    Generic,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Clickstream => "clickstream",
            SourceKind::Ticket => "ticket",
            SourceKind::Crm => "crm",
            SourceKind::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<SourceKind> {
        match s {
            "clickstream" => Some(SourceKind::Clickstream),
            "ticket" => Some(SourceKind::Ticket),
            "crm" => Some(SourceKind::Crm),
            "generic" => Some(SourceKind::Generic),
            _ => None,
        }
    }
}

/// File formats the file source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Ndjson,
    Parquet,
    Xes,
}

impl FileFormat {
    /// By extension: `.csv .tsv .ndjson .jsonl .json .parquet .xes .xes.gz` (and `.gz` of the
    /// text formats).
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = name.rsplit('.').next()?;
        match ext {
            "csv" | "tsv" | "txt" => Some(FileFormat::Csv),
            "ndjson" | "jsonl" | "json" => Some(FileFormat::Ndjson),
            "parquet" | "pq" => Some(FileFormat::Parquet),
            "xes" => Some(FileFormat::Xes),
            _ => None,
        }
    }
}

/// A string or a list of strings in TOML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// CSV dialect of a source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Field delimiter, one character; `,` by default (`\t` for `.tsv`).
    pub delimiter: Option<String>,
    /// Whether the first row names the columns (default true).
    pub header: Option<bool>,
    /// Column names when the file has no header.
    #[serde(default)]
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name; stored in the `source` column and used by catalog rules.
    pub name: String,
    /// `clickstream`, `ticket`, `crm` or `generic`: picks the built-in field mapping.
    pub kind: SourceKind,
    /// Files to read (batch import and `--input` default).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Kafka topic (live pipeline).
    pub topic: Option<String>,
    /// File format; by extension when absent.
    pub format: Option<FileFormat>,
    /// Overrides of the built-in mapping: canonical field → field reference(s) in the
    /// record, tried in order. See [`FieldRef`].
    #[serde(default)]
    pub fields: BTreeMap<String, OneOrMany>,
    /// strftime format of the time field; ISO-8601 / RFC 3339 and epoch numbers otherwise.
    pub time_format: Option<String>,
    /// Unit of numeric times; guessed from magnitude when absent.
    pub time_unit: Option<TimeUnit>,
    /// Channel of events that carry none.
    pub channel: Option<String>,
    #[serde(default)]
    pub csv: CsvOptions,
}

impl SourceConfig {
    /// A source of `kind` named after it, with the built-in mapping.
    pub fn of_kind(kind: SourceKind) -> SourceConfig {
        SourceConfig {
            name: kind.as_str().to_string(),
            kind,
            paths: Vec::new(),
            topic: None,
            format: None,
            fields: BTreeMap::new(),
            time_format: None,
            time_unit: None,
            channel: None,
            csv: CsvOptions::default(),
        }
    }

    /// The effective mapping: the kind's built-in one with this source's overrides.
    pub fn mapping(&self) -> std::result::Result<FieldMapping, (String, String)> {
        let mut mapping = FieldMapping::builtin(self.kind);
        for (field, refs) in &self.fields {
            let refs: Vec<FieldRef> = refs
                .clone()
                .into_vec()
                .iter()
                .map(|s| FieldRef::parse(s))
                .collect();
            if refs.iter().any(|r| r.segments.is_empty()) {
                return Err((field.clone(), "field references must not be empty".into()));
            }
            mapping.set(field, refs).map_err(|m| (field.clone(), m))?;
        }
        if mapping.ts.is_empty() {
            return Err(("ts".into(), "the source maps no time field".into()));
        }
        if mapping.identities.iter().all(|(_, refs)| refs.is_empty()) {
            return Err((
                "customer_id".into(),
                "the source maps no identity field (customer_id, user_id, email, …)".into(),
            ));
        }
        if let Some(c) = &self.channel {
            mapping.default_channel = Some(c.clone());
        }
        Ok(mapping)
    }
}

/// A reference to a field of a record: a column name for flat formats, a path for JSON.
/// Written `name`, `a/b/c` or `/a/b/c` (a JSON pointer); flat formats match the whole
/// string as a column name first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    pub name: String,
    pub segments: Vec<String>,
}

impl FieldRef {
    pub fn parse(s: &str) -> FieldRef {
        let trimmed = s.strip_prefix('/').unwrap_or(s);
        FieldRef {
            name: trimmed.to_string(),
            segments: if trimmed.is_empty() {
                Vec::new()
            } else {
                trimmed
                    .split('/')
                    .map(|seg| seg.replace("~1", "/").replace("~0", "~"))
                    .collect()
            },
        }
    }
}

fn refs(names: &[&str]) -> Vec<FieldRef> {
    names.iter().map(|s| FieldRef::parse(s)).collect()
}

/// How a source's records map onto canonical columns. Each canonical field lists
/// references tried in order; the first present, non-empty one is used.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMapping {
    pub event_id: Vec<FieldRef>,
    pub ts: Vec<FieldRef>,
    pub touchpoint: Vec<FieldRef>,
    pub channel: Vec<FieldRef>,
    /// A field holding a JSON object of properties. When empty, every field the mapping
    /// does not use goes into `properties`.
    pub properties: Vec<FieldRef>,
    pub identities: Vec<(IdentityKind, Vec<FieldRef>)>,
    /// Records whose `type` field has one of these values only link identities
    /// (Segment `identify` / `alias`): they are stitched but are not touchpoints.
    pub link_only_types: Vec<String>,
    pub type_field: Option<FieldRef>,
    pub default_channel: Option<String>,
}

impl FieldMapping {
    pub const FIELDS: [&'static str; 5] = ["event_id", "ts", "touchpoint", "channel", "properties"];

    pub fn builtin(kind: SourceKind) -> FieldMapping {
        let ids = |pairs: &[(IdentityKind, &[&str])]| {
            IdentityKind::ALL
                .iter()
                .map(|k| {
                    let r = pairs
                        .iter()
                        .find(|(kind, _)| kind == k)
                        .map(|(_, names)| refs(names))
                        .unwrap_or_default();
                    (*k, r)
                })
                .collect::<Vec<_>>()
        };
        match kind {
            SourceKind::Clickstream => FieldMapping {
                event_id: refs(&["messageId"]),
                ts: refs(&["timestamp", "originalTimestamp", "sentAt"]),
                touchpoint: refs(&["event", "properties/path", "name"]),
                channel: refs(&["context/channel"]),
                properties: refs(&["properties"]),
                identities: ids(&[
                    (IdentityKind::AnonymousId, &["anonymousId"]),
                    (IdentityKind::UserId, &["userId"]),
                    (
                        IdentityKind::Email,
                        &["traits/email", "context/traits/email"],
                    ),
                ]),
                link_only_types: vec!["identify".into(), "alias".into(), "group".into()],
                type_field: Some(FieldRef::parse("type")),
                default_channel: Some("web".into()),
            },
            SourceKind::Ticket => FieldMapping {
                event_id: refs(&["event_id", "id"]),
                ts: refs(&["updated_at", "created_at", "timestamp"]),
                touchpoint: refs(&["status"]),
                channel: refs(&["channel", "via/channel"]),
                properties: Vec::new(),
                identities: ids(&[
                    (IdentityKind::Email, &["requester_email", "requester/email"]),
                    (IdentityKind::TicketId, &["ticket_id"]),
                    (IdentityKind::UserId, &["requester_external_id"]),
                ]),
                link_only_types: Vec::new(),
                type_field: None,
                default_channel: Some("email".into()),
            },
            SourceKind::Crm => FieldMapping {
                event_id: refs(&["event_id", "id"]),
                ts: refs(&["changed_at", "occurred_at", "timestamp"]),
                touchpoint: refs(&["stage", "lifecyclestage", "dealstage"]),
                channel: refs(&["channel"]),
                properties: Vec::new(),
                identities: ids(&[
                    (IdentityKind::ContactId, &["contact_id"]),
                    (IdentityKind::Email, &["email"]),
                    (IdentityKind::UserId, &["user_id"]),
                ]),
                link_only_types: Vec::new(),
                type_field: None,
                default_channel: Some("sales".into()),
            },
            SourceKind::Generic => FieldMapping {
                event_id: refs(&["event_id"]),
                ts: refs(&["ts"]),
                touchpoint: refs(&["touchpoint"]),
                channel: refs(&["channel"]),
                properties: Vec::new(),
                identities: ids(&[(IdentityKind::CustomerId, &["customer_id"])]),
                link_only_types: Vec::new(),
                type_field: None,
                default_channel: None,
            },
        }
    }

    /// Sets one canonical field (or identity column) to the given references.
    pub fn set(&mut self, field: &str, refs: Vec<FieldRef>) -> std::result::Result<(), String> {
        match field {
            "event_id" => self.event_id = refs,
            "ts" => self.ts = refs,
            "touchpoint" => self.touchpoint = refs,
            "channel" => self.channel = refs,
            "properties" => self.properties = refs,
            other => match IdentityKind::from_column(other) {
                Some(kind) => {
                    if let Some(slot) = self.identities.iter_mut().find(|(k, _)| *k == kind) {
                        slot.1 = refs;
                    }
                }
                None => {
                    let mut known: Vec<&str> = Self::FIELDS.to_vec();
                    known.extend(IdentityKind::ALL.iter().map(|k| k.column()));
                    return Err(format!(
                        "`{other}` is not a canonical field; use one of {}",
                        known.join(", ")
                    ));
                }
            },
        }
        Ok(())
    }

    /// Every field reference the mapping uses (for "the rest goes to properties").
    pub fn used_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = [
            &self.event_id,
            &self.ts,
            &self.touchpoint,
            &self.channel,
            &self.properties,
        ]
        .into_iter()
        .flatten()
        .map(|r| r.name.as_str())
        .collect();
        names.extend(
            self.identities
                .iter()
                .flat_map(|(_, r)| r.iter().map(|r| r.name.as_str())),
        );
        names.extend(self.type_field.iter().map(|r| r.name.as_str()));
        names
    }
}

/// What the catalog does with raw values no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Keep the raw value as the touchpoint name.
    #[default]
    Keep,
    /// Drop the event (it is counted, not dead-lettered).
    Drop,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Lifecycle stages in map order.
    #[serde(default)]
    pub stages: Vec<String>,
    /// What to do with raw values no rule matches.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// Ordered rules; the first match wins.
    #[serde(default)]
    pub rules: Vec<TouchpointRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TouchpointRule {
    /// Source names or kinds the rule applies to (all when absent).
    pub source: Option<OneOrMany>,
    /// Regex on the raw value (event name, page path, ticket status, CRM stage).
    #[serde(rename = "match")]
    pub pattern: String,
    /// Touchpoint name; may use capture groups (`$1`, `${name}`).
    pub touchpoint: String,
    pub stage: Option<String>,
    pub channel: Option<String>,
}

/// Whole history (the process-mining case) or inactivity-cut sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Customer,
    Session,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Scope, String> {
        match s {
            "customer" => Ok(Scope::Customer),
            "session" => Ok(Scope::Session),
            other => Err(format!("`{other}` is not a scope; use customer or session")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Inactivity longer than this starts a new session (equal does not).
    pub gap: Span,
    /// A session longer than this is cut; `0` means no limit.
    pub max_duration: Span,
    /// Default scope of journeys: `customer` or `session`.
    pub scope: Scope,
    /// Live: how late an event may arrive and still correct what was emitted.
    pub allowed_lateness: Span,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            gap: Span::from_secs(30 * 60),
            max_duration: Span::from_secs(24 * 3600),
            scope: Scope::Customer,
            allowed_lateness: Span::from_secs(3600),
        }
    }
}

/// ClickHouse `windowFunnel` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunnelMode {
    StrictDeduplication,
    StrictOrder,
    StrictIncrease,
    StrictOnce,
    AllowReentry,
}

/// PostHog step order types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOrder {
    #[default]
    Ordered,
    Strict,
    Unordered,
}

/// Count customers once, or every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountBy {
    #[default]
    Customers,
    Attempts,
}

/// A touchpoint-pair KPI: `to` should follow `from` within `within`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KpiConfig {
    pub from: String,
    pub to: String,
    pub within: Span,
}

/// A named funnel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyConfig {
    /// Touchpoints in order (2 to 32).
    pub steps: Vec<String>,
    /// Bound on last step − first step.
    pub window: Span,
    #[serde(default)]
    pub mode: Vec<FunnelMode>,
    #[serde(default)]
    pub order: StepOrder,
    /// Touchpoints that disqualify an attempt when they happen between steps.
    #[serde(default)]
    pub exclusions: Vec<String>,
    #[serde(default)]
    pub count: CountBy,
    /// Per transition between consecutive steps (`steps.len() - 1` entries, `"0"` = none).
    #[serde(default)]
    pub min_gap: Vec<Span>,
    #[serde(default)]
    pub max_gap: Vec<Span>,
}

impl JourneyConfig {
    /// An ad-hoc funnel of `steps` with the defaults `--steps` and `funnel('a,b')` use:
    /// a 14-day window, the default mode, ordered, counting customers.
    pub fn of_steps(steps: Vec<String>) -> JourneyConfig {
        JourneyConfig {
            steps,
            window: Span::from_secs(14 * 86_400),
            mode: Vec::new(),
            order: StepOrder::Ordered,
            exclusions: Vec::new(),
            count: CountBy::Customers,
            min_gap: Vec::new(),
            max_gap: Vec::new(),
        }
    }

    /// What the types cannot check: step count, window, gap lists; `(field, message)`.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        let n = self.steps.len();
        if !(1..=32).contains(&n) {
            return Err((
                "steps".into(),
                format!("has {n} steps; a funnel has 1 to 32"),
            ));
        }
        if let Some(i) = self.steps.iter().position(|s| s.trim().is_empty()) {
            return Err((format!("steps[{i}]"), "must name a touchpoint".into()));
        }
        if self.window.is_zero() {
            return Err(("window".into(), "must be longer than 0, like \"7d\"".into()));
        }
        for (field, gaps) in [("min_gap", &self.min_gap), ("max_gap", &self.max_gap)] {
            if !gaps.is_empty() && gaps.len() != n.saturating_sub(1) {
                return Err((
                    field.into(),
                    format!(
                        "has {} entries; it needs one per step after the first ({})",
                        gaps.len(),
                        n - 1
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Rows per Arrow batch.
    pub batch_size: usize,
    /// Live input (Kafka, paced replay) hands a micro-batch on once its first record is
    /// this old, even when it holds fewer than `batch_size` rows: the most batching adds to
    /// an event's delay.
    pub linger: Span,
    /// More rejected records than this fails the run (absent = never).
    pub max_errors: Option<u64>,
    /// Where rejected records go, one JSON object per line with the reason.
    pub dead_letter: PathBuf,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_size: 8192,
            linger: Span(100_000),
            max_errors: None,
            dead_letter: PathBuf::from("trailmap-dead-letters.ndjson"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Data directory (or object store URL) for Parquet segments and checkpoints.
    pub data_dir: String,
    /// How often the live pipeline writes a segment and a checkpoint: the most a crash
    /// makes it read again.
    pub checkpoint_every: Span,
    /// How often, at most, the live pipeline's state is kept with a checkpoint, so a restart
    /// replays only the segments stored since instead of all of them.
    pub snapshot_every: Span,
    /// Segments the kept state covers are compacted into segments of up to this many
    /// events (0: never).
    pub compact_rows: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: "./data".into(),
            checkpoint_every: Span::from_secs(5),
            snapshot_every: Span::from_secs(60),
            compact_rows: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// A query running longer is cancelled with an error.
    pub timeout: Span,
    /// Memory one query may hold for sorts, joins and aggregations ("2GiB"); past it the
    /// query fails instead of taking memory from ingest.
    pub memory_limit: bytesize::ByteSize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            timeout: Span::from_secs(60),
            memory_limit: bytesize::ByteSize::gib(2),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP and PostgreSQL endpoints listen on.
    pub bind: String,
    /// HTTP port: the JSON API, `/metrics`, `/healthz`, `/readyz`.
    pub http_port: u16,
    /// Write keys Segment-compatible capture (`/v1/track`, `/v1/batch`, …) accepts.
    pub write_keys: Vec<String>,
    /// PostgreSQL wire protocol port (psql, BI tools).
    pub postgres_port: u16,
    /// The PostgreSQL user to log in as.
    pub postgres_user: String,
    /// Its password. Absent: no password is asked, which is allowed only on a loopback bind.
    pub postgres_password: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1".into(),
            http_port: 8080,
            write_keys: Vec::new(),
            postgres_port: 5433,
            postgres_user: "trailmap".into(),
            postgres_password: None,
        }
    }
}

/// Where a consumer group with no committed offsets starts reading a partition.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest message the topic keeps: the map includes history.
    #[default]
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

impl StartFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Consumer group every instance of the live pipeline joins.
    pub group_id: String,
    /// Rejected messages are produced here, with the reason in the `trailmap-reason` header.
    pub dead_letter_topic: String,
    /// Where a partition without a committed offset is read from.
    pub start_from: StartFrom,
    /// Any other librdkafka setting, e.g. `{ "security.protocol" = "SASL_SSL" }`.
    pub options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "trailmap".into(),
            dead_letter_topic: "trailmap-dead-letters".into(),
            start_from: StartFrom::Earliest,
            options: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_valid_and_documents_the_defaults() {
        let c = Config::builtin();
        assert_eq!(c.sessions, SessionConfig::default());
        assert_eq!(c.ingest, IngestConfig::default());
        assert_eq!(c.storage, StorageConfig::default());
        assert_eq!(c.sql, SqlConfig::default());
        assert_eq!(c.server, ServerConfig::default());
        assert_eq!(c.kafka, KafkaConfig::default());
        assert!(!c.catalog.rules.is_empty());
        assert!(c.journeys.contains_key("trial_to_purchase"));
    }

    #[test]
    fn segments_and_breakdowns_need_one_low_cardinality_attribute() {
        let e = Config::from_toml_str("[segments]\nby = \"user_id\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("segments.by") && e.contains("low-cardinality"),
            "{e}"
        );
        let mut c = Config::builtin();
        c.segments.by = "plan".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("breakdown.by") && e.contains("`plan`"), "{e}");
        c.segments.by = "device".into();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn empty_config_has_working_defaults() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.sessions.gap, Span::from_secs(1800));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml_str("[sessions]\ngap = \"thirty\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gap") && e.contains("30m"), "{e}");
        let e = Config::from_toml_str("[sessions]\ngapp = \"30m\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gapp"), "{e}");
        let e = Config::from_toml_str(
            "[journeys.j]\nsteps = [\"a\", \"b\"]\nwindow = \"1d\"\nmax_gap = [\"1h\", \"2h\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("journeys.j.max_gap"), "{e}");
        let e = Config::from_toml_str(
            "[[sources]]\nname = \"w\"\nkind = \"clickstream\"\nfields = { usr = \"u\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sources[0].fields.usr"), "{e}");
        let e = Config::from_toml_str("[[sources]]\nname = \"w\"\nkind = \"kafkaesque\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind") && e.contains("kafkaesque"), "{e}");
    }

    #[test]
    fn formats_by_extension() {
        let f = |p: &str| FileFormat::from_path(Path::new(p));
        assert_eq!(f("a/bpic.xes.gz"), Some(FileFormat::Xes));
        assert_eq!(f("x.JSONL"), Some(FileFormat::Ndjson));
        assert_eq!(f("x.csv.gz"), Some(FileFormat::Csv));
        assert_eq!(f("x.parquet"), Some(FileFormat::Parquet));
        assert_eq!(f("x.bin"), None);
    }

    #[test]
    fn overrides_replace_builtin_fields() {
        let mut s = SourceConfig::of_kind(SourceKind::Clickstream);
        s.fields
            .insert("user_id".into(), OneOrMany::One("context/user".into()));
        let m = s.mapping().unwrap();
        let user = &m
            .identities
            .iter()
            .find(|(k, _)| *k == IdentityKind::UserId)
            .unwrap()
            .1;
        assert_eq!(user[0].segments, vec!["context", "user"]);
    }
}
