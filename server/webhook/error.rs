//! The one mapping from webhook failures to HTTP status codes and `{"error": …}` bodies.
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

use crate::ingest::IngestError;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed; webhooks are delivered with POST")]
    MethodNotAllowed,
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("could not read the request body")]
    BadBody,
    #[error("the delivery took too long; nothing was kept, retry later")]
    Timeout,
    #[error("{0}")]
    NotReady(&'static str),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl WebhookError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::NoRoute => StatusCode::NOT_FOUND,
            WebhookError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            WebhookError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BadBody => StatusCode::BAD_REQUEST,
            WebhookError::Timeout | WebhookError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebhookError::Ingest(e) => match e {
                IngestError::NotFound(_) => StatusCode::NOT_FOUND,
                IngestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                IngestError::Malformed(_) => StatusCode::BAD_REQUEST,
                IngestError::Unavailable(_) | IngestError::InboxFull => StatusCode::SERVICE_UNAVAILABLE,
                IngestError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The metric label of this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            WebhookError::NoRoute => "not_found",
            WebhookError::MethodNotAllowed => "method_not_allowed",
            WebhookError::PayloadTooLarge(_) => "too_large",
            WebhookError::BadBody => "bad_body",
            WebhookError::Timeout | WebhookError::NotReady(_) => "unavailable",
            WebhookError::Ingest(e) => match e {
                IngestError::NotFound(_) => "not_found",
                IngestError::Unauthorized(_) => "rejected",
                IngestError::Malformed(_) => "malformed",
                IngestError::Unavailable(_) => "unavailable",
                IngestError::InboxFull => "inbox_full",
                IngestError::Internal => "internal",
            },
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut resp = json(status, &serde_json::json!({ "error": self.to_string() }));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from_static("5"));
        }
        // The rest of the body is still on the wire and will not be read: the connection
        // closes after this answer, and saying so keeps a client from reusing it.
        if let WebhookError::PayloadTooLarge(_) = self {
            resp.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        if let WebhookError::MethodNotAllowed = self {
            resp.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
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
