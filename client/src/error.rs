//! Owns [`ClientError`], the one error type of the client library, and the rendering of gRPC
//! statuses as one readable line (`NOT_FOUND: no clerk integration for project p1`).
//!
//! No variant ever holds the admin token, so no `Display`/`Debug` output can contain it.

use std::fmt;

use tonic::Code;
use tonic_types::StatusExt;

/// One violated field of an `INVALID_ARGUMENT` answer (`google.rpc.BadRequest.FieldViolation`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldViolation {
    /// The request field, e.g. `credentials.webhook_signing_secret`.
    pub field: String,
    /// What is wrong with it, e.g. `must be whsec_ followed by base64`.
    pub description: String,
}

/// Everything that can go wrong when calling the service.
///
/// The statuses a caller acts on each have their own variant (match on them); any other status
/// is [`ClientError::Other`]. [`ClientError::code`] gives the gRPC code of every variant.
///
/// ```
/// use capydb_auth_sync_client::ClientError;
///
/// fn explain(err: &ClientError) -> String {
///     match err {
///         ClientError::NotFound(_) => "no such integration".into(),
///         ClientError::InvalidArgument { violations, .. } => {
///             violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
///         }
///         ClientError::Unauthenticated(_) => "check the admin token".into(),
///         ClientError::Unavailable(_) | ClientError::Connect { .. } => "try again later".into(),
///         other => other.to_string(),
///     }
/// }
/// let err = ClientError::from(tonic::Status::not_found("no clerk integration for project p1"));
/// assert_eq!(explain(&err), "no such integration");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// `NOT_FOUND`: no such integration (or backfill).
    #[error("{}", StatusLine(.0))]
    NotFound(#[source] tonic::Status),
    /// `INVALID_ARGUMENT`, with the violated request fields.
    #[error("{}", StatusLine(.status))]
    InvalidArgument {
        #[source]
        status: tonic::Status,
        violations: Vec<FieldViolation>,
    },
    /// `UNAUTHENTICATED` (or `PERMISSION_DENIED`): the admin token is missing or wrong.
    #[error("{}", StatusLine(.0))]
    Unauthenticated(#[source] tonic::Status),
    /// `UNAVAILABLE`: the service or a database it needs is unreachable; try again later.
    #[error("{}", StatusLine(.0))]
    Unavailable(#[source] tonic::Status),
    /// `DEADLINE_EXCEEDED`: no answer within the request timeout.
    #[error("{}", StatusLine(.0))]
    DeadlineExceeded(#[source] tonic::Status),
    /// `FAILED_PRECONDITION`: the provider or the integration's state does not allow the call.
    #[error("{}", StatusLine(.0))]
    FailedPrecondition(#[source] tonic::Status),
    /// Any other gRPC status (`INTERNAL`, `UNKNOWN`, …).
    #[error("{}", StatusLine(.0))]
    Other(#[source] tonic::Status),
    /// The server's response lacked a field it always sets (a server bug).
    #[error("malformed response: missing field `{0}`")]
    MissingField(&'static str),
}

impl ClientError {
    /// The gRPC code of this error. Non-status errors map to the closest code: connection and
    /// transport failures are `Unavailable`, invalid endpoint/token `InvalidArgument`, a
    /// malformed response `Internal`.
    pub fn code(&self) -> Code {
        match self.status() {
            Some(s) => s.code(),
            None => match self {
                ClientError::Connect { .. } | ClientError::Transport(_) => Code::Unavailable,
                ClientError::InvalidEndpoint { .. } | ClientError::InvalidToken => Code::InvalidArgument,
                _ => Code::Internal,
            },
        }
    }

    /// The gRPC status, when the error is one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::NotFound(s)
            | ClientError::Unauthenticated(s)
            | ClientError::Unavailable(s)
            | ClientError::DeadlineExceeded(s)
            | ClientError::FailedPrecondition(s)
            | ClientError::Other(s)
            | ClientError::InvalidArgument { status: s, .. } => Some(s),
            _ => None,
        }
    }

    /// The gRPC status, when the error is one (by value).
    pub fn into_status(self) -> Option<tonic::Status> {
        match self {
            ClientError::NotFound(s)
            | ClientError::Unauthenticated(s)
            | ClientError::Unavailable(s)
            | ClientError::DeadlineExceeded(s)
            | ClientError::FailedPrecondition(s)
            | ClientError::Other(s)
            | ClientError::InvalidArgument { status: s, .. } => Some(s),
            _ => None,
        }
    }

    /// The status message (empty for non-status errors).
    pub fn message(&self) -> &str {
        self.status().map(|s| s.message()).unwrap_or("")
    }

    /// The violated fields of an `INVALID_ARGUMENT` answer (empty otherwise).
    pub fn field_violations(&self) -> &[FieldViolation] {
        match self {
            ClientError::InvalidArgument { violations, .. } => violations,
            _ => &[],
        }
    }
}

impl From<tonic::Status> for ClientError {
    /// Sorts a status into its variant (`PERMISSION_DENIED` counts as `Unauthenticated`).
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            Code::NotFound => ClientError::NotFound(s),
            Code::InvalidArgument => {
                let violations = field_violations(&s);
                ClientError::InvalidArgument { status: s, violations }
            }
            Code::Unauthenticated | Code::PermissionDenied => ClientError::Unauthenticated(s),
            Code::Unavailable => ClientError::Unavailable(s),
            Code::DeadlineExceeded => ClientError::DeadlineExceeded(s),
            Code::FailedPrecondition => ClientError::FailedPrecondition(s),
            _ => ClientError::Other(s),
        }
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

fn field_violations(status: &tonic::Status) -> Vec<FieldViolation> {
    status
        .get_details_bad_request()
        .map(|br| {
            br.field_violations
                .into_iter()
                .map(|v| FieldViolation { field: v.field, description: v.description })
                .collect()
        })
        .unwrap_or_default()
}

/// `CODE: message`, or for field violations `CODE: field: description; …` (each said once:
/// the server's message usually repeats the violations, so it is left out when there are any).
struct StatusLine<'a>(&'a tonic::Status);

impl fmt::Display for StatusLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(f, "{}", code_name(s.code()))?;
        let violations = field_violations(s);
        if !violations.is_empty() {
            let list: Vec<String> = violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect();
            write!(f, ": {}", list.join("; "))
        } else if !s.message().is_empty() {
            write!(f, ": {}", s.message())
        } else {
            Ok(())
        }
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
        assert_eq!(e.to_string(), "INVALID_ARGUMENT: credentials.secret_key: must start with sk_live_ or sk_test_");
        assert_eq!(
            e.field_violations(),
            &[FieldViolation {
                field: "credentials.secret_key".to_string(),
                description: "must start with sk_live_ or sk_test_".to_string()
            }]
        );
        assert!(matches!(e, ClientError::InvalidArgument { .. }));
    }
}
