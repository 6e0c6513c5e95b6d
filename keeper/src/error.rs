//! The keeper's error: what stops a step of its loop (retried) or the
//! keeper itself (refused, dropped).

use crate::pg::PgError;
use crate::plan;
use crate::state_file;

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("cannot reach the monitor at {url}: {reason}")]
    MonitorUnreachable { url: String, reason: String },
    #[error("the monitor refused this node: {0}")]
    Refused(String),
    #[error(transparent)]
    State(#[from] state_file::StateFileError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Plan(#[from] plan::NoEdge),
    #[error("{0}")]
    Waiting(String),
    #[error("this node was dropped from its formation")]
    Dropped,
    #[error("{0}")]
    Security(String),
}
