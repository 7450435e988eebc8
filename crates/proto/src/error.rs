//! The platform API's error body, `{code, message, request_id}`.
//!
//! Codes are stable strings a client can match on and an operator can grep for; the message
//! is written for a person and never carries internal detail.

use serde::{Deserialize, Serialize};

/// Every error code the platform API can answer with. Adding a variant is fine; renaming or
/// removing one breaks clients, so the strings are pinned by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    InvalidToken,
    InvalidCredentials,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    CsrfRejected,
    StepUpRequired,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The stable wire string of this code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidToken => "invalid_token",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::CsrfRejected => "csrf_rejected",
            Self::StepUpRequired => "step_up_required",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

/// The JSON body of every platform-API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_match_serde_and_are_pinned() {
        let all = [
            (ErrorCode::BadRequest, "bad_request"),
            (ErrorCode::Unauthenticated, "unauthenticated"),
            (ErrorCode::InvalidToken, "invalid_token"),
            (ErrorCode::InvalidCredentials, "invalid_credentials"),
            (ErrorCode::Forbidden, "forbidden"),
            (ErrorCode::NotFound, "not_found"),
            (ErrorCode::MethodNotAllowed, "method_not_allowed"),
            (ErrorCode::Conflict, "conflict"),
            (ErrorCode::PayloadTooLarge, "payload_too_large"),
            (ErrorCode::UnsupportedMediaType, "unsupported_media_type"),
            (ErrorCode::CsrfRejected, "csrf_rejected"),
            (ErrorCode::StepUpRequired, "step_up_required"),
            (ErrorCode::RateLimited, "rate_limited"),
            (ErrorCode::Unavailable, "unavailable"),
            (ErrorCode::Internal, "internal"),
        ];
        for (code, s) in all {
            assert_eq!(code.as_str(), s);
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{s}\""));
        }
    }
}
