//! How an operator command fails: one sentence for a person and the exit
//! code scripts check (1 failed or timed out, 2 usage or invalid input,
//! 3 monitor unreachable).

/// An operator command's failure, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Exit 1: the operation failed or timed out.
    #[error("{0}")]
    Failed(String),
    /// Exit 2: bad input.
    #[error("{0}")]
    Usage(String),
    /// Exit 3: the monitor cannot be reached.
    #[error("{0}")]
    Unreachable(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
        }
    }
}
