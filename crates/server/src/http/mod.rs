//! Middleware at the HTTP edge: request ids, security headers, CSRF defence, body limits,
//! tracing spans that carry the route template only, and request metrics.

pub mod csrf;
pub mod form;
pub mod headers;
pub mod json;
pub mod metrics;
pub mod request_id;
pub mod trace;
