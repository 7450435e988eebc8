//! The one error type at the HTTP edge, and its status table.
//!
//! What a client sees (`{code, message, request_id}`) is fixed per variant; the cause of a
//! 5xx is logged inside the request span and never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use telesafe_proto::{ErrorBody, ErrorCode};

use crate::http::request_id;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("sign in to continue")]
    Unauthenticated,
    /// A bearer token was presented but is unknown, expired or revoked (RFC 6750 §3.1).
    #[error("the access token is invalid, expired or revoked")]
    InvalidToken,
    /// A sign-in or second-factor check failed (deliberately not saying which part).
    #[error("{0}")]
    InvalidCredentials(String),
    #[error("you do not have access to this")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("the request did not come from this site")]
    CsrfRejected,
    /// A sensitive action needs a second factor from the last five minutes; the string is
    /// the page that asks for it and returns to the action.
    #[error("confirm it is you first: this change needs a recent second step")]
    StepUpRequired(&'static str),
    #[error("too many requests; try again shortly")]
    RateLimited,
    #[error("the service is not ready")]
    Unavailable,
    /// Anything unexpected. The string is for the log only.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    /// The status table (unit-tested below).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated | Self::InvalidToken | Self::InvalidCredentials(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden | Self::CsrfRejected | Self::StepUpRequired(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::InvalidToken => ErrorCode::InvalidToken,
            Self::InvalidCredentials(_) => ErrorCode::InvalidCredentials,
            Self::Forbidden => ErrorCode::Forbidden,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::CsrfRejected => ErrorCode::CsrfRejected,
            Self::StepUpRequired(_) => ErrorCode::StepUpRequired,
            Self::RateLimited => ErrorCode::RateLimited,
            Self::Unavailable => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The message for people: for server errors a generic sentence, never the cause.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => {
                "something went wrong on our side; quote the request id if you contact support"
                    .to_owned()
            }
            other => other.to_string(),
        }
    }

    /// Logs server-side causes; client errors are routine and only counted.
    pub fn log(&self) {
        if let Self::Internal(cause) = self {
            tracing::error!(%cause, "request failed");
        }
    }
}

impl From<telesafe_core::RepoError> for AppError {
    fn from(e: telesafe_core::RepoError) -> Self {
        match e {
            telesafe_core::RepoError::NotFound => Self::NotFound,
            telesafe_core::RepoError::Conflict => {
                Self::Conflict("that conflicts with an existing record".into())
            }
            telesafe_core::RepoError::Backend(cause) => Self::Internal(cause),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        let body = ErrorBody {
            code: self.code(),
            message: self.public_message(),
            request_id: request_id::current(),
        };
        let mut resp = (self.status(), Json(body)).into_response();
        let challenge = match self {
            Self::Unauthenticated => Some("Bearer realm=\"telesafe\""),
            Self::InvalidToken => Some(
                "Bearer realm=\"telesafe\", error=\"invalid_token\", \
                 error_description=\"the access token is invalid, expired or revoked\"",
            ),
            _ => None,
        };
        if let Some(c) = challenge {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if let Self::StepUpRequired(page) = self {
            resp.headers_mut().insert(header::LOCATION, HeaderValue::from_static(page));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let table = [
            (AppError::BadRequest("x".into()), 400, "bad_request"),
            (AppError::Unauthenticated, 401, "unauthenticated"),
            (AppError::InvalidToken, 401, "invalid_token"),
            (AppError::InvalidCredentials("x".into()), 401, "invalid_credentials"),
            (AppError::Forbidden, 403, "forbidden"),
            (AppError::CsrfRejected, 403, "csrf_rejected"),
            (AppError::StepUpRequired("/mfa/step-up"), 403, "step_up_required"),
            (AppError::NotFound, 404, "not_found"),
            (AppError::MethodNotAllowed, 405, "method_not_allowed"),
            (AppError::Conflict("x".into()), 409, "conflict"),
            (AppError::PayloadTooLarge, 413, "payload_too_large"),
            (AppError::UnsupportedMediaType, 415, "unsupported_media_type"),
            (AppError::RateLimited, 429, "rate_limited"),
            (AppError::Unavailable, 503, "unavailable"),
            (AppError::Internal("db down".into()), 500, "internal"),
        ];
        for (err, status, code) in table {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code().as_str(), code, "{err:?}");
        }
    }

    #[tokio::test]
    async fn internal_errors_never_reach_the_client() {
        use http_body_util::BodyExt;
        let resp =
            AppError::Internal("password authentication failed for user x".into()).into_response();
        assert_eq!(resp.status(), 500);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.code, ErrorCode::Internal);
        assert!(!body.message.contains("password"), "{}", body.message);
    }

    #[test]
    fn unauthenticated_carries_www_authenticate() {
        let resp = AppError::Unauthenticated.into_response();
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
