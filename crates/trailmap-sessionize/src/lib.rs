//! Stitching and sessions: canonical event batches in, ordered customer journeys out.
//!
//! Layout:
//! - [`stitch`]: the [`IdentityGraph`], a union-find over interned `(kind, value)`
//!   identifiers. Every identifier seen on one event is linked, so an anonymous visitor who
//!   logs in, opens a ticket by email and becomes a CRM contact is one customer, and a late
//!   link merges two customers seen apart until then.
//! - [`journeys`]: the [`JourneyBuilder`] takes batches (any order, any size), and
//!   [`JourneyBuilder::finish`] groups events per customer, orders them by event time with
//!   ties in arrival order (a stable sort, as pm4py does), and cuts sessions. The result, a
//!   [`JourneyLog`], is columnar: dense customer and touchpoint ids, `i64` microseconds, and
//!   offsets into them; mining walks it without touching a string.
//! - [`grouped`]: [`GroupedJourneys`], for input already grouped by customer (exports by
//!   user, logs by case): each journey is handed to an aggregate as soon as the next
//!   customer's events begin, with no log kept. It checks the grouping as it goes and says
//!   when the input needs the builder instead; an input read in parts on several threads
//!   is streamed a part each and the parts joined.
//!
//! Nothing here depends on where batches come from: batch import and the live pipeline
//! share this code.

pub mod grouped;
pub mod journeys;
pub mod stitch;

pub use grouped::{
    GroupedError, GroupedJourneys, GroupedPart, GroupedSummary, Joined, JourneySink, NotGrouped,
};
pub use journeys::{
    Arrived, Attribute, AttributeColumn, Journey, JourneyBuilder, JourneyLog, NO_VALUE,
    SessionSummary, Sieve, Sifted, session_starts, starts_session,
};
pub use stitch::IdentityGraph;
