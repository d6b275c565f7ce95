//! Owns [`CliError`], what a command can fail with, its exit code (one per failure class, see
//! [`exit`]) and how it is reported: one `error: …` line that says the thing once and names the
//! flag the user typed (`--webhook-secret`, not `credentials.webhook_signing_secret`), or a
//! JSON object under `--json`.

use capydb_auth_sync_client::error::code_name;
use capydb_auth_sync_client::webhook::WebhookSendError;
use capydb_auth_sync_client::{ClientError, SigningError};
use serde_json::json;
use tonic::Code;

/// The exit codes (documented in `--help`).
pub mod exit {
    /// Anything else that failed (a failed backfill, a test event the receiver refused, …).
    pub const FAILURE: u8 = 1;
    /// A bad flag or argument (clap's own usage errors exit 2 too).
    pub const USAGE: u8 = 2;
    /// Missing or wrong admin token; a test webhook signed with the wrong secret.
    pub const UNAUTHENTICATED: u8 = 3;
    /// No such integration.
    pub const NOT_FOUND: u8 = 4;
    /// The service or a database is unreachable, or did not answer in time.
    pub const UNAVAILABLE: u8 = 5;
    /// The provider or the integration's state does not allow the call.
    pub const FAILED_PRECONDITION: u8 = 6;
}

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("--secret: {0}")]
    Signing(#[from] SigningError),
    #[error(transparent)]
    Webhook(#[from] WebhookSendError),
    /// A bad flag or argument.
    #[error("{0}")]
    Usage(String),
    /// A failure of the given exit class, already phrased for the user.
    #[error("{message}")]
    Failed { exit: u8, message: String },
}

impl CliError {
    /// The exit code of this failure's class.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) => match e {
                ClientError::InvalidEndpoint { .. } | ClientError::InvalidToken => exit::USAGE,
                ClientError::Connect { .. } | ClientError::Transport(_) => exit::UNAVAILABLE,
                _ => exit_for_code(e.code()),
            },
            CliError::Signing(_) | CliError::Usage(_) => exit::USAGE,
            CliError::Webhook(_) => exit::UNAVAILABLE,
            CliError::Failed { exit, .. } => *exit,
        }
    }

    /// The message, with API field names turned into the CLI's flags.
    pub fn message(&self, has_token: bool) -> String {
        match self {
            CliError::Client(ClientError::InvalidArgument { violations, .. }) if !violations.is_empty() => violations
                .iter()
                .map(|v| format!("{}: {}", flag_of(&v.field), v.description))
                .collect::<Vec<_>>()
                .join("; "),
            CliError::Client(e @ ClientError::Unauthenticated(_)) => {
                let hint = if has_token {
                    "check --token / CAPYDB_AUTH_SYNC_ADMIN_TOKEN: the service does not accept this admin token"
                } else {
                    "no admin token: pass --token or set CAPYDB_AUTH_SYNC_ADMIN_TOKEN"
                };
                format!("{}: {hint}", code_name(e.code()))
            }
            other => other.to_string(),
        }
    }

    /// Prints the error on stderr: `error: …`, or `{"error": {…}}` under `--json`.
    pub fn report(&self, json: bool, has_token: bool) {
        let message = self.message(has_token);
        if !json {
            eprintln!("error: {message}");
            return;
        }
        let code = match self {
            CliError::Client(e) => code_name(e.code()),
            CliError::Signing(_) | CliError::Usage(_) => "INVALID_ARGUMENT",
            CliError::Webhook(_) => "UNAVAILABLE",
            CliError::Failed { exit, .. } => match *exit {
                exit::UNAUTHENTICATED => "UNAUTHENTICATED",
                exit::NOT_FOUND => "NOT_FOUND",
                exit::UNAVAILABLE => "UNAVAILABLE",
                exit::FAILED_PRECONDITION => "FAILED_PRECONDITION",
                exit::USAGE => "INVALID_ARGUMENT",
                _ => "FAILED",
            },
        };
        let violations: Vec<_> = match self {
            CliError::Client(e) => e
                .field_violations()
                .iter()
                .map(|v| json!({"field": v.field, "flag": flag_of(&v.field), "description": v.description}))
                .collect(),
            _ => Vec::new(),
        };
        // The code has its own field: the message does not repeat it.
        let message = message.strip_prefix(&format!("{code}: ")).unwrap_or(&message);
        let mut body = json!({"code": code, "exit_code": self.exit_code(), "message": message});
        if !violations.is_empty() {
            body["field_violations"] = violations.into();
        }
        eprintln!("{}", json!({ "error": body }));
    }
}

/// The exit class of a gRPC code.
pub fn exit_for_code(code: Code) -> u8 {
    match code {
        Code::InvalidArgument | Code::OutOfRange => exit::USAGE,
        Code::Unauthenticated | Code::PermissionDenied => exit::UNAUTHENTICATED,
        Code::NotFound => exit::NOT_FOUND,
        Code::Unavailable | Code::DeadlineExceeded => exit::UNAVAILABLE,
        Code::FailedPrecondition => exit::FAILED_PRECONDITION,
        _ => exit::FAILURE,
    }
}

/// The CLI spelling of a request field named in a field violation.
pub fn flag_of(field: &str) -> &str {
    match field {
        "project_id" => "PROJECT",
        "provider" => "--provider",
        "database_url" => "--database-url",
        "credentials.secret_key" => "--secret-key",
        "credentials.webhook_signing_secret" => "--webhook-secret",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    fn invalid(field: &str, description: &str) -> CliError {
        let details = ErrorDetails::with_bad_request_violation(field, description);
        let message = format!("{field}: {description}");
        CliError::Client(tonic::Status::with_error_details(Code::InvalidArgument, message, details).into())
    }

    #[test]
    fn field_violations_name_the_flag_once() {
        let e = invalid("credentials.webhook_signing_secret", "must be whsec_ followed by base64");
        assert_eq!(e.message(true), "--webhook-secret: must be whsec_ followed by base64");
        assert_eq!(e.exit_code(), exit::USAGE);
    }

    #[test]
    fn each_failure_class_has_its_exit_code() {
        let client = |s: tonic::Status| CliError::Client(s.into());
        assert_eq!(client(tonic::Status::unauthenticated("x")).exit_code(), exit::UNAUTHENTICATED);
        assert_eq!(client(tonic::Status::not_found("x")).exit_code(), exit::NOT_FOUND);
        assert_eq!(client(tonic::Status::unavailable("x")).exit_code(), exit::UNAVAILABLE);
        assert_eq!(client(tonic::Status::deadline_exceeded("x")).exit_code(), exit::UNAVAILABLE);
        assert_eq!(client(tonic::Status::failed_precondition("x")).exit_code(), exit::FAILED_PRECONDITION);
        assert_eq!(client(tonic::Status::internal("x")).exit_code(), exit::FAILURE);
        assert_eq!(CliError::Usage("x".into()).exit_code(), exit::USAGE);
        let unauth = client(tonic::Status::unauthenticated("missing or invalid admin token"));
        assert!(unauth.message(false).contains("pass --token or set CAPYDB_AUTH_SYNC_ADMIN_TOKEN"));
        assert!(unauth.message(true).starts_with("UNAUTHENTICATED: check --token"));
    }
}
