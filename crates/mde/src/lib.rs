//! Microsoft Defender for Endpoint and Graph client: tokens, hunting, machines, isolation,
//! portal links. The one place Culprit talks to Microsoft.
//!
//! The client does not retry on its own (the hunter owns retries and the tenant's quota);
//! the one exception is a 401, after which it fetches a fresh token and tries once more.

mod classify;
mod client;
pub mod cloud;
pub mod config;
pub mod error;
pub mod hunt;
pub mod links;
pub mod machines;
pub mod token;
mod transport;

pub use classify::{Call, ErrorBody, classify, error_body, parse_retry_after, quota_of};
pub use client::{Audience, MachineSelector, MdeClient};
pub use cloud::{Cloud, CloudInfo, Endpoints};
pub use config::{ClientConfig, HuntingApi, ProxyAuth, TokenForm, user_agent};
pub use error::{MdeError, Quota};
pub use hunt::{HuntResult, HuntSpan, ROW_LIMIT};
pub use machines::{
    ActionStatus, IsolationState, IsolationType, Machine, MachineAction, exactly_one,
};
pub use token::{AccessToken, Clock, SystemClock};
