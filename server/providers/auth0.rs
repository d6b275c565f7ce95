//! Auth0 webhooks (being written).
use chrono::{DateTime, Utc};
use http::HeaderMap;

use super::{Delivery, ParseError, VerifyError};

pub fn verify(_secret: &str, _headers: &HeaderMap) -> Result<(), VerifyError> {
    Err(VerifyError::BadSecret)
}

pub fn parse(_body: &[u8], _received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    Err(ParseError::Field("body"))
}
