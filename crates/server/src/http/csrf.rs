//! Cross-site request forgery defence for state-changing requests.
//!
//! Session cookies are `SameSite=Strict`, and in addition every unsafe request must show it
//! came from our own pages: `Sec-Fetch-Site` (sent by every current browser) must be
//! `same-origin` or `none`; without it, `Origin` must match `Host`; a request carrying a
//! cookie with neither header is refused. Non-browser clients (bearer tokens, devices) send
//! no cookie and no `Sec-Fetch-Site`, and pass. This follows the OWASP CSRF cheat sheet's
//! "Fetch Metadata" and "verifying origin with standard headers" defences.

use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub(crate) fn allowed(req: &Request) -> bool {
    if is_safe(req.method()) {
        return true;
    }
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        return origin_host.is_some() && origin_host == host;
    }
    !h.contains_key(header::COOKIE)
}

pub async fn layer(req: Request, next: Next) -> Response {
    if allowed(&req) { next.run(req).await } else { AppError::CsrfRejected.into_response() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn req(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().method(method).uri("/signin");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn decisions() {
        let host = ("host", "clinic.example:8443");
        assert!(allowed(&req(Method::GET, &[("sec-fetch-site", "cross-site")])));
        assert!(allowed(&req(Method::POST, &[("sec-fetch-site", "same-origin")])));
        assert!(!allowed(&req(Method::POST, &[("sec-fetch-site", "cross-site")])));
        assert!(!allowed(&req(Method::POST, &[("sec-fetch-site", "same-site")])));
        assert!(allowed(&req(Method::POST, &[host, ("origin", "https://clinic.example:8443")])));
        assert!(!allowed(&req(Method::POST, &[host, ("origin", "https://evil.example")])));
        assert!(!allowed(&req(Method::POST, &[host, ("origin", "null")])));
        assert!(!allowed(&req(Method::POST, &[host, ("cookie", "__Host-telesafe_session=x")])));
        assert!(allowed(&req(Method::POST, &[host])));
    }
}
