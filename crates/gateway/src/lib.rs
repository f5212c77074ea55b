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
mod feed;
mod policy;
mod response;
mod server;
pub mod stores;
mod watch;

pub use auth::{
    CreatedKey, KeyRing, Principal, Scope, Tenants, bearer, create_key, create_key_with_id,
    hash_key,
};
pub use correlation::{CorrelationApi, DETECTION_SCHEMA_VERSION};
pub use ctx::{BusProbe, GatewayConfig, Handles, Probe, StoreProbe};
pub use error::GatewayError;
pub use feed::WATCH_QUEUE;
pub use policy::{Decision, Mode, POLICY_ACTOR, Policy, PolicyConfig};
pub use response::{ACTION_ID_METADATA, ERROR_KIND_METADATA, ResponseApi};
pub use server::{Gateway, serve};
