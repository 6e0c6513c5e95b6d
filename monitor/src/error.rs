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

/// Longest status message sent: it travels in an HTTP/2 header, and a
/// header past the peer's limit turns the whole answer into a protocol
/// error instead of the sentence.
const MAX_STATUS_BYTES: usize = 4096;

fn bounded(mut m: String) -> String {
    if m.len() > MAX_STATUS_BYTES {
        let mut cut = MAX_STATUS_BYTES - '…'.len_utf8();
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    m
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Code;
        let (code, m) = match err {
            Error::InvalidArgument(m) => (Code::InvalidArgument, m),
            Error::NotFound(m) => (Code::NotFound, m),
            Error::FailedPrecondition(m) => (Code::FailedPrecondition, m),
            Error::Unavailable(m) => (Code::Unavailable, m),
            Error::Unauthenticated(m) => (Code::Unauthenticated, m),
            Error::PermissionDenied(m) => (Code::PermissionDenied, m),
            Error::Internal(m) => {
                tracing::error!(error = %m, "request failed");
                (Code::Internal, m)
            }
            other => {
                tracing::error!(error = %other, "request failed");
                (Code::Unavailable, other.to_string())
            }
        };
        tonic::Status::new(code, bounded(m))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_are_bounded_at_a_character_boundary() {
        let short = tonic::Status::from(Error::NotFound("no node 7".into()));
        assert_eq!(short.message(), "no node 7");
        let long = tonic::Status::from(Error::InvalidArgument("é".repeat(10_000)));
        assert!(
            long.message().len() <= MAX_STATUS_BYTES,
            "{}",
            long.message().len()
        );
        assert!(long.message().ends_with('…'));
        assert_eq!(long.code(), tonic::Code::InvalidArgument);
    }
}
