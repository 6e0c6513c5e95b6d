//! The pgpilot keeper: drives one local PostgreSQL towards the goal state
//! the monitor assigns, heartbeats, and fences a primary that lost the
//! monitor and its standbys.

pub mod access;
pub mod adoption;
pub mod agent;
pub mod client;
pub mod config;
pub mod durable;
pub mod error;
pub mod executor;
pub mod failpoint;
pub mod fence;
pub mod guard;
pub mod hooks;
pub mod http;
pub mod init;
pub mod metrics;
pub mod monitors;
pub mod notes;
pub mod pg;
pub mod plan;
pub mod run;
pub mod slots;
pub mod state_file;
pub mod status;
pub mod stopping;
pub mod timeline;
