//! Culprit's domain: what a detection is, what a hunting table is, what the endpoint's
//! telemetry rows mean, and what a correlation answers. Every other crate speaks these types;
//! this crate does no I/O and depends on no crate of ours.

pub mod community_id;
pub mod correlation;
pub mod detection;
pub mod table;
pub mod telemetry;
pub mod timestamp;

pub use correlation::{Correlation, ProcessAnswer, Status};
pub use detection::{
    Detection, DetectionKey, Direction, Flow, HostRef, Session, SourceKind, Window,
};
pub use table::{Column, KustoType, Table, Value};
pub use telemetry::{ProcessKey, Telemetry};
pub use timestamp::{Duration, Timestamp};
