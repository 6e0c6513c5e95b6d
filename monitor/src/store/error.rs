//! The store's one error type: a refusal decided by the core, something
//! not found, the database unavailable or failing, or a row that does not
//! decode.

use crate::core::{Refusal, RefusalCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The decision core refused the request (a sentence for a person).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The monitor cannot take the request now; the caller retries.
    #[error("{0}")]
    Unavailable(String),
    /// The monitor database failed.
    #[error("monitor database error: {0}")]
    Database(sqlx::Error),
    #[error("monitor database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not decode (the schema drifted, or a value was
    /// written by hand).
    #[error("the monitor database holds a row the monitor cannot read: {0}")]
    Corrupt(String),
    /// A background duty's write found the lease it runs under (this
    /// token) expired or taken over: the write is not made.
    #[error("the lease on the background duties (token {0}) is no longer held by this monitor")]
    LeaseLost(i64),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => Error::Corrupt(err.to_string()),
            other => Error::Database(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for crate::error::Error {
    fn from(err: Error) -> Self {
        use crate::error::Error as E;
        match err {
            Error::Refused(r) => match r.code() {
                RefusalCode::NotFound => E::NotFound(r.to_string()),
                RefusalCode::FailedPrecondition => E::FailedPrecondition(r.to_string()),
            },
            Error::NotFound(m) => E::NotFound(m),
            Error::Unavailable(m) => E::Unavailable(m),
            lost @ Error::LeaseLost(_) => E::Unavailable(lost.to_string()),
            Error::Database(e) => E::Database(e),
            Error::Migrate(e) => E::Migrate(e),
            corrupt @ Error::Corrupt(_) => E::Internal(corrupt.to_string()),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        crate::error::Error::from(err).into()
    }
}
