//! The ingest service (`culprit serve --role ingest`): turns what network sensors send into
//! normalised detections on `culprit.detections`, exactly when it is safe to.
//!
//! - [`IngestPublisher`]: raw input + [`Source`] → parse (the parsers of `culprit-ingest`) →
//!   protobuf `culprit.v1.Detection` → publish with publisher confirms and `mandatory`;
//!   deduplicated by detection key within a window (shared through the idempotency store);
//!   unparseable input dead-lettered with its reason and raw bytes.
//! - [`webhook`]: `POST /v1/sources/{source}/detections`, per-source bearer token or HMAC
//!   signature; 202 only once every detection of the body is confirmed.
//! - [`syslog`]: UDP, TCP (octet counting or LF) and TLS listeners; TCP and TLS accept the
//!   configured peers only and read the next frame only when the broker has room for it.
//! - [`IngestService`]: every configured source, run until shutdown and drained.
//!
//! The tenant of a detection always comes from its source's configuration, never from the
//! body: a sender can only spend the quota of the tenant its credentials belong to.

mod error;
mod poller;
mod publisher;
mod service;
mod source;
pub mod syslog;
pub mod webhook;

pub use error::PublishError;
pub use poller::PollerSink;
pub use publisher::{
    DEAD_LETTER_QUEUE, HEADER_FORMAT, HEADER_SOURCE, HEADER_TENANT, IngestPublisher, IngestReport,
    Published, PublisherConfig, Rejection,
};
pub use service::{IngestService, ServiceError};
pub use source::{Format, Source};
