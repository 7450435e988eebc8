//! AuditEvent, read-only, from the tamper-evident audit log: each log entry is one FHIR
//! R4 AuditEvent (id = its sequence number in the log). Security officers read their
//! organisation's; a patient reads the ones about themselves. Reading the log is itself
//! logged.

use axum::http::StatusCode;
use serde_json::{Value, json};
use telesafe_core::access::{AccessContext, Action, Resource};
use telesafe_core::audit::{AuditFilter, AuditRepository, Entry, Purpose};
use telesafe_core::identity::{PatientRepository, Role};
use telesafe_core::records::fhir::RESOURCE_TYPES;
use telesafe_core::records::search::{Prefix, parse_date_condition};

use super::{FhirError, FhirResult, Session, base, fhir_response};

const REST: &str = "http://hl7.org/fhir/restful-interaction";

fn subtype(action: &str) -> (&'static str, String) {
    let rest = match action {
        "read" => Some("read"),
        "create" => Some("create"),
        "update" => Some("update"),
        "delete" => Some("delete"),
        "history" => Some("history-instance"),
        "search" | "list" => Some("search-type"),
        _ => None,
    };
    match rest {
        Some(code) => (REST, code.to_owned()),
        None => ("urn:telesafe:audit-action", action.to_owned()),
    }
}

fn crude(action: &str) -> &'static str {
    match action {
        "create" => "C",
        "read" | "list" | "search" | "history" | "everything" | "chart" => "R",
        "update" => "U",
        "delete" | "erase" => "D",
        _ => "E",
    }
}

fn purpose_code(p: Purpose) -> (&'static str, &'static str) {
    match p {
        Purpose::Treatment => ("TREAT", "treatment"),
        Purpose::Payment => ("HPAYMT", "healthcare payment"),
        Purpose::Operations => ("HOPERAT", "healthcare operations"),
        Purpose::Emergency => ("ETREAT", "emergency treatment"),
        Purpose::PatientRequest => ("PATRQT", "patient requested"),
        Purpose::Security => ("HSYSADMIN", "health system administration"),
    }
}

/// One log entry as an R4 AuditEvent.
pub fn to_fhir(e: &Entry) -> Value {
    let (sub_system, sub_code) = subtype(&e.action);
    let (why, why_text) = purpose_code(e.purpose);
    let mut agent = json!({
        "who": {"identifier": {"system": format!("urn:telesafe:{}", e.actor_kind.as_str()), "value": e.actor_id}},
        "requestor": true,
    });
    if !e.actor_role.is_empty() {
        agent["role"] = json!([{"text": e.actor_role}]);
    }
    if !e.source.is_empty() {
        agent["network"] = json!({"address": e.source, "type": "2"});
    }
    let mut entities = Vec::new();
    if !e.patient_id.is_empty() {
        entities.push(json!({
            "what": {"reference": format!("Patient/{}", e.patient_id)},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
        }));
    }
    let is_the_patient = e.resource_type == "Patient" && e.resource_id == e.patient_id;
    if !e.resource_id.is_empty() && !is_the_patient {
        let what = if RESOURCE_TYPES.contains(&e.resource_type.as_str()) {
            json!({"reference": format!("{}/{}", e.resource_type, e.resource_id)})
        } else {
            json!({"identifier": {"value": e.resource_id}})
        };
        entities.push(json!({"what": what, "description": e.resource_type}));
    }
    if !e.request_id.is_empty() {
        entities.push(json!({
            "description": "request",
            "detail": [{"type": "request-id", "valueString": e.request_id}],
        }));
    }
    let mut v = json!({
        "resourceType": "AuditEvent",
        "id": e.seq.to_string(),
        "meta": {"versionId": "1"},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": sub_system, "code": sub_code}],
        "action": crude(&e.action),
        "recorded": telesafe_core::Timestamp::from_unix_millis(e.at).to_rfc3339(),
        "outcome": match e.outcome.as_str() { "success" | "granted" => "0", "denied" => "4", _ => "8" },
        "outcomeDesc": e.outcome,
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": why, "display": why_text}]}],
        "agent": [agent],
        "source": {
            "site": "Telesafe",
            "observer": {"display": "Telesafe tamper-evident audit log"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
        },
    });
    if !entities.is_empty() {
        v["entity"] = json!(entities);
    }
    v
}

/// Whom the caller may see entries about: everyone in the tenant (a security officer,
/// by policy) or only themselves (a patient). `None`: nothing.
async fn scope(s: &mut Session) -> Result<Option<Option<String>>, FhirError> {
    let ctx = AccessContext { purpose: "security".to_owned(), break_glass: false };
    let auditor = s
        .state
        .policy
        .decide(
            &s.principal,
            Action::ReadAudit,
            &Resource::AuditLog(s.tenant),
            &ctx,
            s.policies.as_deref(),
        )
        .allowed;
    if auditor {
        return Ok(Some(None));
    }
    if let (Some(Role::Patient), telesafe_core::access::Principal::User { id, .. }) =
        (s.role, &s.principal)
    {
        let own = s.state.store.patient_by_user(s.tenant, *id).await?;
        return Ok(own.map(|p| Some(p.id.to_string())));
    }
    Ok(None)
}

fn purpose_of(scope: &Option<String>) -> Purpose {
    if scope.is_some() { Purpose::PatientRequest } else { Purpose::Security }
}

pub(super) async fn read(s: &mut Session, id: &str) -> FhirResult {
    let not_found = || FhirError::not_found("AuditEvent", id);
    let Some(scope) = scope(s).await? else {
        s.audit_one("read", "AuditEvent", id, None, s.purpose(), "denied").await?;
        return Err(not_found());
    };
    let seq: u64 = id.parse().map_err(|_| not_found())?;
    let entry = s.state.store.audit_entries(seq, 1).await?.into_iter().next().map(|(e, _)| e);
    let Some(entry) = entry.filter(|e| e.seq == seq && e.tenant_id == s.tenant.to_string()) else {
        return Err(not_found());
    };
    if scope.as_ref().is_some_and(|own| *own != entry.patient_id) {
        return Err(not_found());
    }
    s.audit_one(
        "read",
        "AuditEvent",
        id,
        entry.patient_id.parse().ok(),
        purpose_of(&scope),
        "success",
    )
    .await?;
    Ok(fhir_response(StatusCode::OK, &to_fhir(&entry)))
}

/// The most entries one search considers (newest first).
pub const MAX_AUDIT_SEARCH: u32 = 2000;

pub(super) async fn search(s: &mut Session, raw: &str) -> FhirResult {
    let Some(scope) = scope(s).await? else {
        s.audit_one("search", "AuditEvent", "", None, s.purpose(), "denied").await?;
        return Err(FhirError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you may not read the audit log",
        ));
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|_| FhirError::bad_request("the search parameters are not valid form encoding"))?;
    let mut filter = AuditFilter::default();
    let (mut count, mut offset) = (50usize, 0usize);
    let mut used = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "patient" | "entity" => {
                filter.patient_id =
                    Some(value.strip_prefix("Patient/").unwrap_or(&value).to_owned())
            }
            "agent" => filter.actor_id = Some(value.clone()),
            "subtype" => filter.action = Some(value.rsplit('|').next().unwrap_or("").to_owned()),
            "date" => {
                let c = parse_date_condition(&value).ok_or_else(|| {
                    FhirError::new(StatusCode::BAD_REQUEST, "value", "date: not a FHIR date")
                })?;
                match c.prefix {
                    Prefix::Ge | Prefix::Sa | Prefix::Gt => {
                        let from =
                            if c.prefix == Prefix::Ge { c.range.low } else { c.range.high + 1 };
                        filter.from = Some(filter.from.map_or(from, |f| f.max(from)));
                    }
                    Prefix::Le | Prefix::Eb | Prefix::Lt => {
                        let until =
                            if c.prefix == Prefix::Le { c.range.high + 1 } else { c.range.low };
                        filter.until = Some(filter.until.map_or(until, |u| u.min(until)));
                    }
                    Prefix::Eq => {
                        filter.from = Some(c.range.low);
                        filter.until = Some(c.range.high + 1);
                    }
                    Prefix::Ne => {
                        return Err(FhirError::new(
                            StatusCode::BAD_REQUEST,
                            "not-supported",
                            "date: ne is not supported on AuditEvent",
                        ));
                    }
                }
            }
            "_count" => {
                count = value
                    .parse::<usize>()
                    .map_err(|_| FhirError::bad_request("_count must be a whole number"))?
                    .min(500);
                continue;
            }
            "_offset" => {
                offset = value
                    .parse()
                    .map_err(|_| FhirError::bad_request("_offset must be a whole number"))?;
                continue;
            }
            _ => continue,
        }
        used.push((name, value));
    }
    if let Some(own) = &scope {
        // A patient sees entries about themselves only, whatever they asked for.
        if filter.patient_id.as_ref().is_some_and(|p| p != own) {
            filter.patient_id = Some("-".to_owned());
        } else {
            filter.patient_id = Some(own.clone());
        }
    }
    s.audit_one(
        "search",
        "AuditEvent",
        "",
        filter.patient_id.as_deref().and_then(|p| p.parse().ok()),
        purpose_of(&scope),
        "success",
    )
    .await?;
    let entries = s.state.store.search_audit(s.tenant, &filter, MAX_AUDIT_SEARCH).await?;
    let total = entries.len();
    let base = base(&s.state);
    let link = |off: usize| {
        let mut p = used.clone();
        p.push(("_count".into(), count.to_string()));
        p.push(("_offset".into(), off.to_string()));
        format!("{base}/AuditEvent?{}", serde_urlencoded::to_string(&p).unwrap_or_default())
    };
    let mut links = vec![json!({"relation": "self", "url": link(offset)})];
    if offset + count < total {
        links.push(json!({"relation": "next", "url": link(offset + count)}));
    }
    let entry: Vec<Value> = entries
        .iter()
        .skip(offset)
        .take(count)
        .map(|e| json!({"fullUrl": format!("{base}/AuditEvent/{}", e.seq), "resource": to_fhir(e), "search": {"mode": "match"}}))
        .collect();
    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entry});
    if entry_empty(&bundle)
        && let Some(m) = bundle.as_object_mut()
    {
        m.remove("entry");
    }
    Ok(fhir_response(StatusCode::OK, &bundle))
}

fn entry_empty(b: &Value) -> bool {
    b["entry"].as_array().is_some_and(Vec::is_empty)
}
