//! The `culprit` binary's library: the command line, the embedded pipeline and the panels, so
//! the workspace's integration tests can drive the same code the binary runs.

pub mod cli;
pub mod client;
pub mod mde_check;
pub mod observe;
pub mod pipeline;
pub mod render;
pub mod scenario;
pub mod serve;
pub mod submit;
