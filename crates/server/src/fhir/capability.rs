//! The CapabilityStatement: exactly what this server supports, generated from the same
//! tables the handlers use (resource types, search parameters), so it cannot drift.

use serde_json::{Value, json};
use telesafe_core::records::fhir::{self, RESOURCE_TYPES};
use telesafe_core::records::search::{self, Kind};

use crate::state::AppState;

fn param_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Token | Kind::Telecom(_) => "token",
        Kind::Name | Kind::Text => "string",
        Kind::Date => "date",
        Kind::Reference => "reference",
    }
}

fn resource(resource_type: &str) -> Value {
    let mut params = vec![
        json!({"name": "_id", "type": "token", "documentation": "Exact id; comma-separated for any of several"}),
        json!({"name": "_lastUpdated", "type": "date", "documentation": "Prefixes eq, ne, lt, gt, le, ge, sa, eb"}),
    ];
    if fhir::patient_element(resource_type).is_some_and(|e| !e.is_empty()) {
        for name in ["patient", "subject"] {
            params.push(json!({
                "name": name, "type": "reference",
                "documentation": "Patient/<id> or <id>: resources in that patient's record"
            }));
        }
    }
    for d in search::params(resource_type) {
        params.push(json!({"name": d.name, "type": param_type(d.kind), "documentation": d.doc}));
    }
    let mut r = json!({
        "type": resource_type,
        "interaction": [
            {"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "delete"},
            {"code": "history-instance"}, {"code": "create"}, {"code": "search-type"}
        ],
        "versioning": "versioned-update",
        "readHistory": true,
        "updateCreate": false,
        "conditionalCreate": false,
        "conditionalRead": "not-supported",
        "conditionalUpdate": false,
        "conditionalDelete": "not-supported",
        "searchParam": params,
    });
    if let Some(sort) = search::sort_param(resource_type) {
        r["documentation"] = json!(format!(
            "_sort accepts _lastUpdated, _id and {sort} (each optionally with -); the default is -_lastUpdated"
        ));
    }
    if resource_type == "Patient" {
        r["operation"] = json!([{
            "name": "everything",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"
        }]);
    }
    r
}

/// AuditEvent: read-only, from the tamper-evident audit log.
fn audit_event() -> Value {
    json!({
        "type": "AuditEvent",
        "documentation": "Read-only: one AuditEvent per entry of the tamper-evident audit log (id = its sequence number). Security officers read their organisation's entries; a patient reads the entries about themselves.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "searchParam": [
            {"name": "patient", "type": "reference", "documentation": "Entries about this patient"},
            {"name": "agent", "type": "reference", "documentation": "The account or client id that acted"},
            {"name": "date", "type": "date", "documentation": "Prefixes eq, lt, gt, le, ge, sa, eb"},
            {"name": "subtype", "type": "token", "documentation": "The action (read, create, update, delete, search-type, break_glass, ...)"},
        ],
    })
}

/// `GET /fhir/metadata`.
pub fn statement(state: &AppState) -> Value {
    let public = state.config.server.public_url.clone().unwrap_or_default();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "publisher": "Telesafe",
        "kind": "instance",
        "software": {"name": "Telesafe", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": "Telesafe FHIR R4 API: every resource encrypted under its patient's key, every access decided by policy and recorded in a tamper-evident log",
            "url": format!("{}/fhir", public.trim_end_matches('/')),
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search parameters match exact values (names ignore case and accents); unknown parameters are ignored unless Prefer: handling=strict is sent. _count defaults to 20 and is capped at 100.",
            "security": {
                "cors": false,
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "OAuth"
                }]}],
                "description": "OAuth 2.0 client credentials (POST /oauth2/token) with system/<Type>.read and .write scopes, or a signed-in session"
            },
            "resource": RESOURCE_TYPES.iter().map(|t| resource(t)).chain([audit_event()]).collect::<Vec<_>>(),
        }],
    })
}
