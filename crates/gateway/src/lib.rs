//! Culprit's gRPC gateway: correlation queries, the watch stream, detection submission,
//! response actions (isolate, release) with auth and an audit trail, gRPC health and
//! reflection, and the automatic response policy.
//!
//! Contracts with the other services:
//! - the result store's bytes are an encoded `culprit.v1.Correlation`;
//! - messages on `culprit.correlations` are encoded `culprit.v1.CorrelationEvent`s (position
//!   unset; the gateway assigns positions in its watch log), message id = detection key;
//! - SubmitDetection publishes an encoded `culprit.v1.Detection` to `culprit.detections` with
//!   the detection key as message id and schema version header `1`.

mod auth;
mod correlation;
mod ctx;
mod error;
mod fast;
mod feed;
mod policy;
mod response;
mod server;
mod status;
pub mod stores;
mod watch;

pub use auth::{
    CreatedKey, KeyRing, Principal, Scope, Tenants, bearer, create_key, create_key_with_id,
    hash_key,
};
pub use correlation::{CorrelationApi, DETECTION_SCHEMA_VERSION};
pub use ctx::{
    BusProbe, DetectionSink, GatewayConfig, Handles, Probe, StoreProbe, SubmitError, Submitted,
};
pub use error::GatewayError;
pub use fast::RawGetCorrelationResponse;
pub use feed::WATCH_QUEUE;
pub use policy::{Decision, Mode, POLICY_ACTOR, Policy, PolicyConfig};
pub use response::{ACTION_ID_METADATA, ERROR_KIND_METADATA, ResponseApi};
pub use server::{Gateway, serve};
pub use status::{ERROR_DOMAIN, error_info, reason};
