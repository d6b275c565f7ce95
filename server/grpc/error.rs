//! The one mapping from [`ApiError`] to `tonic::Status`. Field violations travel as
//! `google.rpc.BadRequest` details; internal errors are logged here and answered opaquely.
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::integrations::ApiError;

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::InvalidArgument(violations) => {
                let message =
                    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ");
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field, v.description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Aborted(m) => Status::aborted(m),
            ApiError::Internal(m) => {
                let reference = uuid::Uuid::new_v4().simple().to_string();
                tracing::error!(error = %m, reference = %reference, "internal error");
                Status::internal(format!("internal error (reference {reference}); see the service logs"))
            }
        }
    }
}
