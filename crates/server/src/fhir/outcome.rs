//! Errors on the FHIR API, always as an OperationOutcome (R4 §3.1.0.4.1) in
//! `application/fhir+json`, with the FHIRPath of the offending element where there is one.
//! Like the platform API, a server error's cause is logged and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use telesafe_core::records::fhir::Issue;

use crate::error::AppError;
use crate::http::request_id;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

#[derive(Debug)]
pub struct FhirError {
    pub status: StatusCode,
    /// (severity, code, diagnostics, expression)
    pub issues: Vec<(&'static str, &'static str, String, Option<String>)>,
    /// For 401: the challenge.
    challenge: Option<&'static str>,
    /// A cause for the log (server errors only).
    cause: Option<String>,
}

impl FhirError {
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            issues: vec![("error", code, diagnostics.into(), None)],
            challenge: None,
            cause: None,
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        if let Some(i) = self.issues.first_mut() {
            i.3 = Some(expression.into());
        }
        self
    }

    pub fn invalid(issues: Vec<Issue>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            issues: issues
                .into_iter()
                .map(|i| ("error", i.code, i.diagnostics, Some(i.expression)))
                .collect(),
            challenge: None,
            cause: None,
        }
    }

    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", diagnostics)
    }

    pub fn not_found(resource_type: &str, id: &str) -> Self {
        // Never echo the id back: it could be anything a client typed.
        let _ = id;
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no {resource_type} with that id exists, or you cannot see it"),
        )
    }

    pub fn unprocessable(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, diagnostics)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "something went wrong on our side; quote the request id if you contact support",
            )
        }
    }

    pub fn body(&self) -> Value {
        let mut issues: Vec<Value> = self
            .issues
            .iter()
            .map(|(severity, code, diagnostics, expression)| {
                let mut i = json!({"severity": severity, "code": code, "diagnostics": diagnostics});
                if let Some(e) = expression {
                    i["expression"] = json!([e]);
                }
                i
            })
            .collect();
        if issues.is_empty() {
            issues.push(json!({"severity": "error", "code": "exception"}));
        }
        let mut o = json!({"resourceType": "OperationOutcome", "issue": issues});
        let id: String = request_id::current()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(64)
            .collect();
        if !id.is_empty() {
            o["id"] = json!(id);
        }
        o
    }
}

impl From<AppError> for FhirError {
    fn from(e: AppError) -> Self {
        let status = e.status();
        let code = match &e {
            AppError::Unauthenticated | AppError::InvalidToken => "login",
            AppError::Forbidden | AppError::CsrfRejected | AppError::StepUpRequired(_) => {
                "forbidden"
            }
            AppError::NotFound => "not-found",
            AppError::Conflict(_) => "conflict",
            AppError::PayloadTooLarge => "too-costly",
            AppError::RateLimited => "throttled",
            AppError::Unavailable => "transient",
            AppError::MethodNotAllowed | AppError::UnsupportedMediaType => "not-supported",
            AppError::Internal(_) => "exception",
            _ => "invalid",
        };
        let challenge = match &e {
            AppError::Unauthenticated => Some("Bearer realm=\"telesafe\""),
            AppError::InvalidToken => Some(
                "Bearer realm=\"telesafe\", error=\"invalid_token\", \
                 error_description=\"the access token is invalid, expired or revoked\"",
            ),
            _ => None,
        };
        let cause = match &e {
            AppError::Internal(c) => Some(c.clone()),
            _ => None,
        };
        Self { status, issues: vec![("error", code, e.public_message(), None)], challenge, cause }
    }
}

impl From<telesafe_core::RepoError> for FhirError {
    fn from(e: telesafe_core::RepoError) -> Self {
        AppError::from(e).into()
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(%cause, "FHIR request failed");
        }
        let body = self.body().to_string();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        if let Some(c) = self.challenge {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}
