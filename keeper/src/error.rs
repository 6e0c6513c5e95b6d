//! The keeper's error: what stops a step of its loop (retried) or the
//! keeper itself (refused, dropped).

use crate::pg::PgError;
use crate::plan;
use crate::state_file;

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// No answer from the monitor at `url`. `tried`: once every monitor
    /// of a list of several failed since one last answered, all of them in
    /// the configuration's order (the sentence then names each); else empty.
    #[error(
        "cannot reach {}: {reason}",
        crate::monitors::describe_unreachable(url, tried)
    )]
    MonitorUnreachable {
        url: String,
        reason: String,
        tried: Vec<String>,
    },
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
    /// The `before_promotion` hook refused the promotion asked (the
    /// sentence says how it ended).
    #[error("{0}")]
    PromotionRefused(String),
    #[error("{0}")]
    Security(String),
}
