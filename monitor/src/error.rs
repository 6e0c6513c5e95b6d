//! The monitor's one error type, mapped to a gRPC status in one place.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: a person must change it.
    #[error("{0}")]
    InvalidArgument(String),
    /// It names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It is well-formed but the group is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The monitor database failed.
    #[error("monitor database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("monitor database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The monitor cannot take the request now; the caller retries.
    #[error("{0}")]
    Unavailable(String),
    /// The caller did not prove who it is (no or a wrong token, no client
    /// certificate).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (a keeper running an
    /// operator command, or acting as another node).
    #[error("{0}")]
    PermissionDenied(String),
    /// The monitor itself is at fault (a stored row it cannot read): no
    /// retry or change of the request helps.
    #[error("{0}")]
    Internal(String),
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            Error::NotFound(m) => tonic::Status::not_found(m),
            Error::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            Error::Unavailable(m) => tonic::Status::unavailable(m),
            Error::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            Error::PermissionDenied(m) => tonic::Status::permission_denied(m),
            Error::Internal(m) => {
                tracing::error!(error = %m, "request failed");
                tonic::Status::internal(m)
            }
            other => {
                tracing::error!(error = %other, "request failed");
                tonic::Status::unavailable(other.to_string())
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
