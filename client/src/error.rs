//! Owns [`ClientError`], the one error type of the client library, and the rendering of gRPC
//! statuses as one readable line (`NOT_FOUND: no clerk integration for project p1`).
//!
//! No variant ever holds the admin token, so no `Display`/`Debug` output can contain it.

use std::fmt;

use tonic::Code;
use tonic_types::StatusExt;

/// Everything that can go wrong when calling the service.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URI (or uses an unsupported scheme).
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    /// The admin token cannot be sent as an HTTP header value. The token is not included.
    #[error("invalid admin token: it contains characters that are not allowed in an HTTP header")]
    InvalidToken,
    /// Connecting to the endpoint failed (`connect`, not `connect_lazy`).
    #[error("cannot connect to {endpoint}: {}", error_chain(source))]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// Any other transport-level failure.
    #[error("transport error: {}", error_chain(.0))]
    Transport(#[source] tonic::transport::Error),
    /// The server (or the client's own deadline) answered with a gRPC status.
    #[error("{}", StatusLine(.0))]
    Status(#[source] tonic::Status),
    /// The server's response lacked a field it always sets (a server bug).
    #[error("malformed response: missing field `{0}`")]
    MissingField(&'static str),
}

impl ClientError {
    /// The gRPC code of this error. Non-status errors map to the closest code: connection and
    /// transport failures are `Unavailable`, invalid endpoint/token `InvalidArgument`, a
    /// malformed response `Internal`.
    pub fn code(&self) -> Code {
        match self {
            ClientError::Status(s) => s.code(),
            ClientError::Connect { .. } | ClientError::Transport(_) => Code::Unavailable,
            ClientError::InvalidEndpoint { .. } | ClientError::InvalidToken => Code::InvalidArgument,
            ClientError::MissingField(_) => Code::Internal,
        }
    }

    /// The gRPC status, when the error is one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Status(s) => Some(s),
            _ => None,
        }
    }

    /// The status message (empty for non-status errors).
    pub fn message(&self) -> &str {
        self.status().map(|s| s.message()).unwrap_or("")
    }

    /// `(field, description)` pairs of the `google.rpc.BadRequest` detail of an
    /// `INVALID_ARGUMENT` status (empty when there is none).
    pub fn field_violations(&self) -> Vec<(String, String)> {
        self.status().map(field_violations).unwrap_or_default()
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        ClientError::Status(s)
    }
}

impl From<tonic::transport::Error> for ClientError {
    fn from(e: tonic::transport::Error) -> Self {
        ClientError::Transport(e)
    }
}

/// The canonical upper-case name of a gRPC code (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn field_violations(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .map(|br| br.field_violations.into_iter().map(|v| (v.field, v.description)).collect())
        .unwrap_or_default()
}

/// `CODE: message (field: description; …)`.
struct StatusLine<'a>(&'a tonic::Status);

impl fmt::Display for StatusLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(f, "{}", code_name(s.code()))?;
        if !s.message().is_empty() {
            write!(f, ": {}", s.message())?;
        }
        let violations = field_violations(s);
        if !violations.is_empty() {
            let list: Vec<String> = violations.iter().map(|(field, desc)| format!("{field}: {desc}")).collect();
            write!(f, " ({})", list.join("; "))?;
        }
        Ok(())
    }
}

/// An error and its sources joined with `: `, skipping repeated messages (tonic's transport
/// error says only "transport error"; the useful part is in the source chain).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if !msg.is_empty() && msg != "transport error" && !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        "transport error".to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn status_display_is_one_line() {
        let e = ClientError::from(tonic::Status::not_found("no clerk integration for project p1"));
        assert_eq!(e.to_string(), "NOT_FOUND: no clerk integration for project p1");
        assert_eq!(e.code(), Code::NotFound);
    }

    #[test]
    fn field_violations_are_shown() {
        let details =
            ErrorDetails::with_bad_request_violation("credentials.secret_key", "must start with sk_live_ or sk_test_");
        let status = tonic::Status::with_error_details(Code::InvalidArgument, "invalid request", details);
        let e = ClientError::from(status);
        assert_eq!(
            e.to_string(),
            "INVALID_ARGUMENT: invalid request (credentials.secret_key: must start with sk_live_ or sk_test_)"
        );
        assert_eq!(
            e.field_violations(),
            vec![("credentials.secret_key".to_string(), "must start with sk_live_ or sk_test_".to_string())]
        );
    }
}
