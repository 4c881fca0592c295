//! Typed errors: what the server refused (with its stable code) apart from what went wrong on
//! the way (connection, timeout, TLS), because only the second kind may be retried blindly.

use std::time::Duration;

pub use promised_schemas::wire::ErrorCode;

/// An error the server answered with: a stable code (`schemas/PROTOCOL.md`) and a message for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", code_name(*code), code.0)]
pub struct ServerError {
    pub code: ErrorCode,
    pub message: String,
}

fn code_name(code: ErrorCode) -> &'static str {
    code.variant_name().unwrap_or("UnknownCode")
}

impl ServerError {
    /// Overload or a restart in progress: the same request may succeed later, elsewhere.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::Timeout
        )
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request.
    #[error("server: {0}")]
    Server(#[from] ServerError),
    /// Could not connect, or the connection broke; the request may or may not have been applied.
    #[error("connection to {addr}: {reason}")]
    Connection { addr: String, reason: String },
    /// No answer within the request timeout; the request may or may not have been applied.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server answered something this client does not understand.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A request the client refuses to send (too big, bad TLS settings, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The server's code, for a server error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server(e) => Some(e.code),
            _ => None,
        }
    }

    /// Whether sending the same request again could succeed: the connection failed, the answer
    /// did not come in time, or the server was overloaded or restarting. A retry of a write is
    /// only safe with the same request id (the server answers a repeat with the first result).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Server(e) => e.is_transient(),
            Self::Connection { .. } | Self::Timeout(_) => true,
            Self::Protocol(_) | Self::Invalid(_) => false,
        }
    }
}
