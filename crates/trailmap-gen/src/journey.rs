//! Walking the chain: one customer's journey as the records each source would hold.
//!
//! [`JourneyModel::journey`] is the only place journeys are made; the file writers and any
//! live source are built on it (directly or through [`Generator`]). A journey depends only on
//! `(seed, customer index)`, so customers can be generated in any order, in parallel, and
//! still give byte-identical output.

use crate::model::{CrmObject, Emit, JourneyModel, PathTail, Reveals, TICKET_CHANNELS};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trailmap_model::config::SourceKind;

/// 2026-01-05T00:00:00Z, a Monday.
pub const DEFAULT_START_MICROS: i64 = 1_767_571_200_000_000;

const MS: i64 = 1_000;
const SECOND_MS: f64 = 1_000.0;
const HOUR_MS: f64 = 3_600_000.0;

/// Mean gap between touchpoints of one session.
const IN_SESSION_MEAN_MS: f64 = 90.0 * SECOND_MS;
/// Chance that a clickstream step happens in a new visit rather than the current one.
const NEW_SESSION_P: f64 = 0.15;
/// A new visit comes at least an hour later, typically a day and a half.
const NEW_SESSION_MIN_MS: f64 = HOUR_MS;
const NEW_SESSION_MEAN_MS: f64 = 36.0 * HOUR_MS;
/// Agents and sales reps answer on their own schedule: ticket updates and CRM changes lag.
const BACK_OFFICE_MIN_MS: f64 = 60.0 * SECOND_MS;
const BACK_OFFICE_MEAN_MS: f64 = 4.0 * HOUR_MS;
/// Chance that a new visit of a customer with an account uses another device.
const NEW_DEVICE_P: f64 = 0.3;
/// Chance that a customer's email is written in another case in one of the sources.
const EMAIL_CASE_P: f64 = 0.05;
/// Chance that a ticket update omits the requester's email (it still has the ticket id).
const UPDATE_WITHOUT_EMAIL_P: f64 = 0.5;
/// The `identify` call of a signup comes this long after the `Signed Up` track. Touchpoints
/// are at least a second apart, so it never ties with one.
const IDENTIFY_DELAY_MS: i64 = 500;

/// Kinds of device a visitor browses on, with their shares: each anonymous id (a browser,
/// an app install) is one device, its kind fixed by the id, so a customer who comes back on
/// another device may come back on another kind.
pub const DEVICE_TYPES: [(&str, f64); 3] = [("desktop", 0.55), ("mobile", 0.35), ("tablet", 0.10)];

/// The kind of device behind an anonymous id: a hash of the id, not a draw from the
/// customer's random stream, so adding it changed no journey.
pub fn device_type(anonymous_id: &str) -> &'static str {
    // FNV-1a, then a finalizer, to a uniform fraction.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in anonymous_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    for (kind, share) in DEVICE_TYPES {
        acc += share;
        if u < acc {
            return kind;
        }
    }
    DEVICE_TYPES[DEVICE_TYPES.len() - 1].0
}

/// The `properties` JSON of a clickstream event on a device kind, for sources that build
/// canonical rows directly.
pub fn device_properties(device: &str) -> Option<&'static str> {
    match device {
        "desktop" => Some(r#"{"device":"desktop"}"#),
        "mobile" => Some(r#"{"device":"mobile"}"#),
        "tablet" => Some(r#"{"device":"tablet"}"#),
        _ => None,
    }
}

const TICKET_SUBJECTS: &[&str] = &[
    "Cannot log in",
    "Question about my invoice",
    "Import keeps failing",
    "How do I invite my team?",
    "Feature request",
    "Data looks wrong",
];

/// What a run generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenOptions {
    pub customers: u64,
    /// First touches are spread uniformly over this many days from `start_micros`.
    pub days: u32,
    pub seed: u64,
    /// Start of the first day, µs since the epoch; rounded down to whole milliseconds so that
    /// every format (ISO strings with milliseconds, µs columns) carries identical times.
    pub start_micros: i64,
    /// Journeys are cut after this many touchpoints (the next step is never drawn).
    pub max_steps: u32,
}

impl Default for GenOptions {
    fn default() -> GenOptions {
        GenOptions {
            customers: 1_000,
            days: 28,
            seed: 42,
            start_micros: DEFAULT_START_MICROS,
            max_steps: 60,
        }
    }
}

/// The shape of a raw record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Segment `track`: `raw` is the event name.
    Track,
    /// Segment `page`: `raw` is the path, `page_name` the page's name.
    Page,
    /// Segment `identify`: links identities, is no touchpoint; `raw` is empty.
    Identify,
    /// Help-desk ticket update: `raw` is the status.
    Ticket,
    /// CRM stage change: `raw` is the stage.
    Crm,
}

/// One raw record as its source holds it, with the ground truth alongside.
///
/// Identity fields are exactly what the record carries (an email may be in another case);
/// `touchpoint`, `stage` and the customer index of the enclosing [`CustomerJourney`] are the
/// truth that stitching and the catalog must recover.
#[derive(Debug, Clone, PartialEq)]
pub struct GenEvent {
    pub kind: RecordKind,
    pub source: SourceKind,
    /// `messageId` for clickstream, `event_id` for tickets and CRM; unique within a run.
    pub event_id: String,
    /// Whole milliseconds, strictly increasing within a customer.
    pub ts_micros: i64,
    /// `None` for `identify` records.
    pub touchpoint: Option<&'static str>,
    pub stage: Option<&'static str>,
    pub channel: &'static str,
    /// Clickstream: the kind of device ([`device_type`] of the anonymous id), sent as
    /// `properties.device`.
    pub device: Option<&'static str>,
    pub raw: String,
    pub page_name: Option<&'static str>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    /// On clickstream: `traits.email` of an identify, `context.traits.email` of a track.
    pub email: Option<String>,
    pub contact_id: Option<String>,
    pub ticket_id: Option<String>,
    pub ticket_subject: Option<&'static str>,
    pub crm_object: Option<CrmObject>,
}

impl GenEvent {
    fn new(kind: RecordKind, source: SourceKind, event_id: String, ts_micros: i64) -> GenEvent {
        GenEvent {
            kind,
            source,
            event_id,
            ts_micros,
            touchpoint: None,
            stage: None,
            channel: "web",
            device: None,
            raw: String::new(),
            page_name: None,
            anonymous_id: None,
            user_id: None,
            email: None,
            contact_id: None,
            ticket_id: None,
            ticket_subject: None,
            crm_object: None,
        }
    }
}

/// Every record of one customer, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerJourney {
    pub index: u64,
    pub events: Vec<GenEvent>,
}

impl CustomerJourney {
    /// The stable ground-truth customer key used by the flat layout.
    pub fn customer_id(&self) -> String {
        format!("cust{}", self.index)
    }

    /// How many records are touchpoints (not `identify` calls).
    pub fn touchpoint_count(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.touchpoint.is_some())
            .count()
    }
}

/// Customers `0..opts.customers` in order, one journey each.
#[derive(Debug, Clone)]
pub struct Generator {
    model: JourneyModel,
    opts: GenOptions,
    next: u64,
}

impl Generator {
    pub fn new(model: JourneyModel, opts: GenOptions) -> Generator {
        Generator {
            model,
            opts,
            next: 0,
        }
    }

    pub fn model(&self) -> &JourneyModel {
        &self.model
    }

    pub fn options(&self) -> &GenOptions {
        &self.opts
    }
}

impl Iterator for Generator {
    type Item = CustomerJourney;

    fn next(&mut self) -> Option<CustomerJourney> {
        if self.next >= self.opts.customers {
            return None;
        }
        let journey = self.model.journey(&self.opts, self.next);
        self.next += 1;
        Some(journey)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.opts.customers - self.next).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// What the sources know about a customer who has revealed themselves.
struct Known {
    user_id: Option<String>,
}

struct OpenTicket {
    id: String,
    channel: &'static str,
    subject: &'static str,
}

/// The state of one customer while walking the chain.
struct Walk {
    index: u64,
    rng: ChaCha8Rng,
    events: Vec<GenEvent>,
    seq: u32,
    anonymous_id: String,
    known: Option<Known>,
    ticket: Option<OpenTicket>,
    tickets_opened: u32,
    /// The one source (if any) that writes this customer's email in another case.
    odd_case_source: Option<SourceKind>,
}

/// Exponential with the given mean, in milliseconds.
fn exponential(rng: &mut ChaCha8Rng, mean_ms: f64) -> f64 {
    // `1 - u` is in (0, 1], so the logarithm is finite.
    -mean_ms * (1.0 - rng.random::<f64>()).ln()
}

fn anonymous_id(rng: &mut ChaCha8Rng) -> String {
    format!("anon-{:016x}", rng.next_u64())
}

/// The draws that open a customer's journey, before the walk: shared by
/// [`JourneyModel::journey`] and [`first_touch_micros`], so the two always agree.
struct Opening {
    rng: ChaCha8Rng,
    anonymous_id: String,
    odd_case_source: Option<SourceKind>,
    first_touch_ms: i64,
}

impl Opening {
    fn of(opts: &GenOptions, index: u64) -> Opening {
        // One ChaCha stream per customer: independent, and addressable without generating the
        // customers before it.
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        rng.set_stream(index);
        let anonymous_id = anonymous_id(&mut rng);
        let odd_case_source = rng.random_bool(EMAIL_CASE_P).then(|| {
            [SourceKind::Clickstream, SourceKind::Ticket, SourceKind::Crm][rng.random_range(0..3)]
        });
        let start_ms = opts.start_micros.div_euclid(MS);
        let span_ms = i64::from(opts.days.max(1)) * 86_400_000;
        let first_touch_ms = start_ms + rng.random_range(0..span_ms);
        Opening {
            rng,
            anonymous_id,
            odd_case_source,
            first_touch_ms,
        }
    }
}

/// When customer `index`'s journey starts (its first event), without generating it: a live
/// source orders customers by this to emit events in time order.
pub fn first_touch_micros(opts: &GenOptions, index: u64) -> i64 {
    Opening::of(opts, index).first_touch_ms * MS
}

impl JourneyModel {
    /// The journey of customer `index`: a pure function of `(opts.seed, index)` and the
    /// model. Customers beyond `opts.customers` are fine to ask for (a live source may run on).
    pub fn journey(&self, opts: &GenOptions, index: u64) -> CustomerJourney {
        let Opening {
            rng,
            anonymous_id,
            odd_case_source,
            first_touch_ms: mut ts_ms,
        } = Opening::of(opts, index);

        let mut walk = Walk {
            index,
            rng,
            events: Vec::new(),
            seq: 0,
            anonymous_id,
            known: None,
            ticket: None,
            tickets_opened: 0,
            odd_case_source,
        };
        let mut current = self.first(walk.rng.random());
        for step in 0..opts.max_steps {
            walk.emit(self, current, ts_ms);
            if step + 1 == opts.max_steps {
                break;
            }
            // The step is drawn with the behaviour at its time (a dip applies from then on).
            let device = device_type(&walk.anonymous_id);
            let Some(next) = self.at(ts_ms * MS, device).next(current, walk.rng.random()) else {
                break;
            };
            ts_ms += walk.gap_before(self, next);
            current = next;
        }
        CustomerJourney {
            index,
            events: walk.events,
        }
    }
}

impl Walk {
    fn event_id(&mut self) -> String {
        self.seq += 1;
        format!("e{}-{}", self.index, self.seq)
    }

    fn email(&self, source: SourceKind) -> String {
        if self.odd_case_source == Some(source) {
            format!("Customer{}@Example.com", self.index)
        } else {
            format!("customer{}@example.com", self.index)
        }
    }

    fn user_id(&self) -> Option<String> {
        self.known.as_ref().and_then(|k| k.user_id.clone())
    }

    /// Milliseconds from the previous touchpoint to `next`; also decides, for a new visit,
    /// whether it happens on another device.
    fn gap_before(&mut self, model: &JourneyModel, next: usize) -> i64 {
        let back_office = match model.touchpoints()[next].emit {
            Emit::Crm { .. } => true,
            Emit::Ticket { opens, .. } => !opens,
            Emit::Track { .. } | Emit::Page { .. } => false,
        };
        let gap = if back_office {
            BACK_OFFICE_MIN_MS + exponential(&mut self.rng, BACK_OFFICE_MEAN_MS)
        } else if self.rng.random_bool(NEW_SESSION_P) {
            // Only customers with an account can be recognised on a new device (events carry
            // their userId); anyone else on a new device would be a different visitor.
            if self.user_id().is_some() && self.rng.random_bool(NEW_DEVICE_P) {
                self.anonymous_id = anonymous_id(&mut self.rng);
            }
            NEW_SESSION_MIN_MS + exponential(&mut self.rng, NEW_SESSION_MEAN_MS)
        } else {
            exponential(&mut self.rng, IN_SESSION_MEAN_MS)
        };
        // At least a second, so a customer's timestamps strictly increase in every format.
        (gap.round() as i64).max(1_000)
    }

    fn emit(&mut self, model: &JourneyModel, tp: usize, ts_ms: i64) {
        let t = &model.touchpoints()[tp];
        let source = t.emit.source();
        let event_id = self.event_id();
        let kind = match t.emit {
            Emit::Track { .. } => RecordKind::Track,
            Emit::Page { .. } => RecordKind::Page,
            Emit::Ticket { .. } => RecordKind::Ticket,
            Emit::Crm { .. } => RecordKind::Crm,
        };
        let mut e = GenEvent::new(kind, source, event_id, ts_ms * MS);
        e.touchpoint = Some(t.name);
        e.stage = Some(t.stage);

        match t.reveals {
            Reveals::Nothing => {}
            Reveals::Email => {
                self.known.get_or_insert(Known { user_id: None });
            }
            Reveals::Account => {
                self.known = Some(Known {
                    user_id: Some(format!("u{}", self.index)),
                });
            }
        }

        match t.emit {
            Emit::Track { event, channel } => {
                e.channel = channel;
                e.raw = event.to_string();
                e.device = Some(device_type(&self.anonymous_id));
                e.anonymous_id = Some(self.anonymous_id.clone());
                e.user_id = self.user_id();
                if t.reveals == Reveals::Email {
                    e.email = Some(self.email(source));
                }
            }
            Emit::Page { name, path, tail } => {
                e.page_name = Some(name);
                e.raw = match tail {
                    PathTail::None => path.to_string(),
                    PathTail::Pick(options) => {
                        format!(
                            "{path}/{}",
                            options[self.rng.random_range(0..options.len())]
                        )
                    }
                    PathTail::Number(max) => {
                        format!("{path}/{}", self.rng.random_range(1..=max.max(1)))
                    }
                };
                e.device = Some(device_type(&self.anonymous_id));
                e.anonymous_id = Some(self.anonymous_id.clone());
                e.user_id = self.user_id();
            }
            Emit::Ticket { status, opens } => {
                // The model only reaches updates through an opening touchpoint; should one
                // still come first, it opens the ticket so it stays linked to its customer.
                let fresh = opens || self.ticket.is_none();
                if fresh {
                    self.tickets_opened += 1;
                    self.ticket = Some(OpenTicket {
                        id: format!("t{}-{}", self.index, self.tickets_opened),
                        channel: TICKET_CHANNELS[self.rng.random_range(0..TICKET_CHANNELS.len())],
                        subject: TICKET_SUBJECTS[self.rng.random_range(0..TICKET_SUBJECTS.len())],
                    });
                }
                let with_email = fresh || !self.rng.random_bool(UPDATE_WITHOUT_EMAIL_P);
                e.raw = status.to_string();
                if let Some(ticket) = &self.ticket {
                    e.channel = ticket.channel;
                    e.ticket_id = Some(ticket.id.clone());
                    e.ticket_subject = Some(ticket.subject);
                }
                e.email = with_email.then(|| self.email(source));
            }
            Emit::Crm { stage, object } => {
                e.channel = "sales";
                e.raw = stage.to_string();
                e.contact_id = Some(format!("c{}", self.index));
                e.email = Some(self.email(source));
                e.user_id = self.user_id();
                e.crm_object = Some(object);
            }
        }
        self.events.push(e);

        if t.reveals == Reveals::Account {
            let event_id = self.event_id();
            let mut identify = GenEvent::new(
                RecordKind::Identify,
                SourceKind::Clickstream,
                event_id,
                (ts_ms + IDENTIFY_DELAY_MS) * MS,
            );
            identify.anonymous_id = Some(self.anonymous_id.clone());
            identify.user_id = self.user_id();
            identify.email = Some(self.email(SourceKind::Clickstream));
            self.events.push(identify);
        }
    }
}
