//! The role × route matrix, built from the router's own route list: every route must have
//! an expectation here (a new route without one fails this test), and for every route,
//! method and role the server's answer must match it: allowed roles get past
//! authorisation, every other role (and an anonymous caller) is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

mod common;

use telesafe_core::identity::{PLATFORM_SLUG, Role};
use telesafe_server::demo::DEMO_OPERATOR;
use telesafe_testkit::{DbBackend, both_backends};

#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

/// Who may get past authorisation on a route.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// Anyone: the route authenticates by other means (a password, a token, a link) or
    /// serves public content.
    Public,
    /// Any signed-in account, whatever its role.
    SignedIn,
    /// Only these roles.
    Roles(&'static [Role]),
}

const CLINIC_STAFF: &[Role] = &[Role::Clinician, Role::Nurse, Role::FrontDesk];
const AUDITORS: &[Role] = &[Role::SecurityOfficer, Role::PlatformOperator];

fn expectation(path: &str) -> Option<Who> {
    use Who::*;
    Some(match path {
        "/"
        | "/signin"
        | "/signout"
        | "/setup"
        | "/activate/{token}"
        | "/static/{name}"
        | "/healthz"
        | "/readyz"
        | "/metrics"
        | "/signin/passkey/options"
        | "/signin/passkey"
        | "/api/v1/sessions"
        | "/api/v1/sessions/mfa"
        | "/api/v1/sessions/current"
        | "/oauth2/token"
        | "/oauth2/introspect"
        | "/oauth2/revoke"
        // Devices authenticate by their enrolment code and then by signatures.
        | "/api/v1/devices/enroll"
        | "/api/v1/devices/telemetry"
        | "/api/v1/devices/rotate-key"
        | "/fhir/metadata"
        // The patient's visit link: the link and the date of birth are the credential.
        | "/join/{token}"
        // Bare /fhir answers every caller with the same OperationOutcome (no data).
        | "/fhir" => Public,
        // The FHIR API: any signed-in account (or client) reaches it, and the policy decides
        // record by record (denied and missing look alike); tests/fhir.rs checks those
        // decisions for every role, and the engine's unit matrix checks the policies.
        "/fhir/{type}"
        | "/fhir/{type}/{id}"
        | "/fhir/{type}/{id}/{op}"
        | "/fhir/{type}/{id}/{op}/{vid}" => SignedIn,
        "/account"
        | "/account/password"
        | "/account/sessions/revoke"
        | "/account/sessions/revoke-others"
        | "/account/passkeys/options"
        | "/account/passkeys"
        | "/account/passkeys/{id}/rename"
        | "/account/passkeys/{id}/delete"
        | "/mfa"
        | "/mfa/enroll"
        | "/mfa/step-up"
        | "/mfa/passkey/options"
        | "/mfa/passkey"
        | "/api/v1/me" => SignedIn,
        "/portal" | "/portal/access" | "/portal/record" => Roles(&[Role::Patient]),
        "/console"
        | "/console/patients/{id}"
        | "/console/patients/{id}/records"
        | "/console/patients/{id}/demographics" => Roles(CLINIC_STAFF),
        "/console/visits" | "/console/visits/status" => Roles(CLINIC_STAFF),
        // Visits: their clinicians and their patient (or the holder of the visit's pass,
        // which tests/visits.rs covers); the probe's visit does not exist, so allowed roles
        // see 404 and the rest are refused before the lookup.
        "/visits/{id}" | "/visits/{id}/check" | "/visits/{id}/socket" => {
            Roles(&[Role::Clinician, Role::Nurse, Role::Patient])
        }
        "/visits/{id}/notes" => Roles(&[Role::Clinician, Role::Nurse]),
                "/console/break-glass" => Roles(&[Role::Clinician]),
        "/console/patients/{id}/thresholds" | "/console/alerts/{id}/acknowledge" => {
            Roles(&[Role::Clinician, Role::Nurse])
        }
        "/admin"
        | "/admin/people"
        | "/admin/session-limits"
        | "/admin/policies"
        | "/admin/devices"
        | "/admin/devices/models"
        | "/admin/devices/models/{id}"
        | "/admin/devices/enrollments"
        | "/admin/devices/{id}/revoke"
        | "/admin/devices/{id}/release"
        | "/api/v1/devices/{id}/release" => Roles(&[Role::TenantAdmin]),
        "/security" | "/security/audit" => Roles(&[Role::SecurityOfficer]),
        "/platform" | "/platform/organisations" => Roles(&[Role::PlatformOperator]),
        "/api/v1/audit/head"
        | "/api/v1/audit/proof/inclusion"
        | "/api/v1/audit/proof/consistency" => Roles(AUDITORS),
        _ => return None,
    })
}

/// A concrete URL for a route template, and a form body that satisfies its extractor (so
/// the answer shows the authorisation decision, not a parsing error).
fn probe(path: &str) -> (String, Vec<(&'static str, &'static str)>) {
    let url = path
        .replace("{token}", "not-a-real-token")
        .replace("{name}", "app.css")
        .replace("{id}", "0192f3a4-5b6c-7d8e-9f00-112233445566")
        .replace("{type}", "Patient")
        .replace("{op}", "_history")
        .replace("{vid}", "1");
    let form = match path {
        "/admin/people" => {
            vec![("role", "patient"), ("name", "Probe"), ("email", "probe@example.org")]
        }
        "/platform/organisations" => vec![("code", "probe"), ("name", "Probe")],
        "/console/patients/{id}/thresholds" => vec![("code", "8867-4")],
        "/admin/devices/models" => vec![
            ("id", "probe"),
            ("manufacturer", "Probe"),
            ("model", "Probe"),
            ("min_firmware", "1.0"),
        ],
        "/admin/devices/enrollments" => vec![("patient", "none"), ("model", "none")],
        "/admin/devices/models/{id}" => vec![("min_firmware", "1.0")],
        "/api/v1/audit/proof/inclusion" => vec![],
        _ => vec![("probe", "1")],
    };
    let url = match path {
        "/api/v1/audit/proof/inclusion" => format!("{url}?seq=0&size=1"),
        "/api/v1/audit/proof/consistency" => format!("{url}?old=0&new=0"),
        _ => url,
    };
    (url, form)
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Denied,
    Allowed,
    /// The request was refused before authorisation was decided (a malformed body).
    Inconclusive,
}

async fn outcome(r: reqwest::Response) -> Outcome {
    let status = r.status().as_u16();
    let location =
        r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = r.text().await.unwrap_or_default();
    match status {
        401 => Outcome::Denied,
        303 | 302 if location.starts_with("/signin") => Outcome::Denied,
        403 if body.contains("do not have access") || body.contains("\"code\":\"forbidden\"") => {
            Outcome::Denied
        }
        400 | 415 | 422 => Outcome::Inconclusive,
        _ => Outcome::Allowed,
    }
}

async fn every_route_answers_each_role_as_expected(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let paths = telesafe_server::route_paths();
    let missing: Vec<_> = paths.iter().filter(|p| expectation(p).is_none()).collect();
    assert!(missing.is_empty(), "routes without an access expectation: {missing:?}");

    let mut callers: Vec<(Option<Role>, reqwest::Client)> = vec![(None, s.client())];
    for (email, role) in [
        (PATIENT, Role::Patient),
        (DR, Role::Clinician),
        (NURSE, Role::Nurse),
        (FRONT_DESK, Role::FrontDesk),
        (SECURITY, Role::SecurityOfficer),
        (ADMIN, Role::TenantAdmin),
    ] {
        callers.push((Some(role), s.signed_in(email).await));
    }
    callers
        .push((Some(Role::PlatformOperator), s.signed_in_at(PLATFORM_SLUG, DEMO_OPERATOR.0).await));

    let mut cells = 0;
    let mut problems = Vec::new();
    for path in &paths {
        let who = expectation(path).unwrap();
        let (url, form) = probe(path);
        for method in ["GET", "POST", "DELETE"] {
            let send = |c: &reqwest::Client| {
                let req = match method {
                    "GET" => c.get(s.url(&url)),
                    "POST" => c.post(s.url(&url)).form(&form),
                    _ => c.delete(s.url(&url)),
                };
                req.header("origin", &s.base).send()
            };
            // Methods the route does not have answer 405 to everyone.
            if send(&callers[0].1).await.unwrap().status() == 405 {
                continue;
            }
            for (role, c) in &callers {
                let got = outcome(send(c).await.unwrap()).await;
                let expected_allowed = match (who, role) {
                    (Who::Public, _) => continue,
                    (Who::SignedIn, r) => r.is_some(),
                    (Who::Roles(rs), Some(r)) => rs.contains(r),
                    (Who::Roles(_), None) => false,
                };
                cells += 1;
                let ok = match got {
                    Outcome::Denied => !expected_allowed,
                    Outcome::Allowed => expected_allowed,
                    // Tolerated only where it cannot hide a wrongly allowed role: a route any
                    // signed-in account may use, with a JSON body this probe does not build.
                    Outcome::Inconclusive => matches!(who, Who::SignedIn),
                };
                if !ok {
                    problems.push(format!(
                        "{method} {path} as {role:?}: expected {}, got {got:?}",
                        if expected_allowed { "allowed" } else { "denied" }
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(cells > 150, "the matrix covered {cells} cells");
}

both_backends!(every_route_answers_each_role_as_expected);
