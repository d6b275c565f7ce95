//! The one mapping from webhook failures to HTTP status codes and `{"error": …}` bodies.
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

use crate::providers::{ParseError, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed; webhooks are delivered with POST")]
    MethodNotAllowed,
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("could not read the request body")]
    BadBody,
    #[error("webhook verification failed: {0}")]
    Unauthorized(#[from] VerifyError),
    #[error("not a valid event: {0}")]
    Malformed(#[from] ParseError),
    /// Nothing was applied; the sender must retry.
    #[error("{0}; nothing was applied, retry later")]
    Unavailable(String),
    /// Logged with context where it happens; answered opaquely.
    #[error("internal error")]
    Internal,
}

impl WebhookError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::NotFound(_) => StatusCode::NOT_FOUND,
            WebhookError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            WebhookError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BadBody => StatusCode::BAD_REQUEST,
            WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebhookError::Malformed(_) => StatusCode::BAD_REQUEST,
            WebhookError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebhookError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The metric label of this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            WebhookError::NotFound(_) => "not_found",
            WebhookError::MethodNotAllowed => "method_not_allowed",
            WebhookError::PayloadTooLarge(_) => "too_large",
            WebhookError::BadBody => "bad_body",
            WebhookError::Unauthorized(_) => "rejected",
            WebhookError::Malformed(_) => "malformed",
            WebhookError::Unavailable(_) => "unavailable",
            WebhookError::Internal => "internal",
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = json(self.status(), &serde_json::json!({ "error": self.to_string() }));
        match self {
            WebhookError::Unavailable(_) => {
                resp.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from_static("5"));
            }
            WebhookError::MethodNotAllowed => {
                resp.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
            }
            _ => {}
        }
        resp
    }
}

pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts are valid")
}
