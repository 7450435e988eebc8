//! The FHIR R4 REST API at `/fhir` (JSON only).
//!
//! Every interaction goes the same way: who is calling (bearer token or session), the
//! policy decision for this principal, resource and context, the audit entry (durable
//! before anything is answered or changed), and only then the key lookup and the
//! decryption or encryption of the resource. There is no other path to the record.

mod audit_event;
mod system;
pub use system::{write_as, write_as_system};
pub mod capability;
pub mod outcome;
pub(crate) mod query;
mod session;
pub(crate) use session::{Session, Target};

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use telesafe_core::access::{Action, PatientFacts};
use telesafe_core::audit::Purpose;
use telesafe_core::identity::PatientRepository;
use telesafe_core::records::fhir::{self, RESOURCE_TYPES};
use telesafe_core::records::keys::KeyRing;
use telesafe_core::records::search::index_entries;
use telesafe_core::records::{PreparedVersion, ResourceRepository, StoredResource, seal_resource};
use telesafe_core::{PatientId, RepoError, Timestamp};
use telesafe_crypto::keys::SealingKey;

use crate::auth::Caller;
use crate::error::AppError;
use crate::state::AppState;
pub use outcome::{FHIR_JSON, FhirError};

type FhirResult = Result<Response, FhirError>;

/// The code system of the policy categories a Consent may deny (`vitals`, `clinical`,
/// `scheduling`, `messaging`, `devices`, ...).
pub const CONSENT_CATEGORY_SYSTEM: &str = "urn:telesafe:policy-category";

fn supported(resource_type: &str) -> Result<(), FhirError> {
    if resource_type == "AuditEvent" {
        return Err(FhirError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "AuditEvent is read-only: it comes from the audit log",
        ));
    }
    if RESOURCE_TYPES.contains(&resource_type) {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            "this server does not support that resource type (see /fhir/metadata)",
        ))
    }
}

fn http_date(t: Timestamp) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.unix_millis()) * 1_000_000)
        .ok()
        .and_then(|d| d.format(&fmt).ok())
        .unwrap_or_default()
}

fn fhir_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

fn with_version_headers(mut resp: Response, version: u32, at: Timestamp) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(at)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    resp
}

/// The base URL resources are addressed under.
fn base(state: &AppState) -> String {
    let public = state.config.server.public_url.clone().unwrap_or_default();
    format!("{}/fhir", public.trim_end_matches('/'))
}

/// The version in `If-Match: W/"3"` (or `"3"`).
fn if_match(headers: &HeaderMap) -> Result<Option<u32>, FhirError> {
    let Some(v) = headers.get(header::IF_MATCH) else { return Ok(None) };
    v.to_str()
        .ok()
        .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| FhirError::bad_request("If-Match must be an ETag such as W/\"3\""))
}

/// Parses a request body: FHIR JSON only.
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Value, FhirError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/fhir+json" && mime != "application/json" {
        return Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "send resources as application/fhir+json",
        ));
    }
    let body = body.map_err(|_| {
        FhirError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", "the resource is too large")
    })?;
    if body.is_empty() {
        return Err(FhirError::bad_request("the request has no resource in its body"));
    }
    serde_json::from_slice(&body).map_err(|e| {
        // serde's message names a line and column, never the content.
        FhirError::new(
            StatusCode::BAD_REQUEST,
            "structure",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

fn wants_minimal(headers: &HeaderMap) -> bool {
    headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.split(';').any(|x| x.trim() == "return=minimal"))
}

type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// `GET /fhir/metadata`: what this server supports (public, as the spec expects).
pub async fn metadata(State(state): State<AppState>) -> Response {
    fhir_response(StatusCode::OK, &capability::statement(&state))
}

/// `POST /fhir/{type}`: create.
pub async fn create(
    State(state): State<AppState>,
    Path(resource_type): Path<String>,
    caller: Result<Caller, AppError>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> FhirResult {
    let mut s = Session::open(&state, caller, peer).await?;
    supported(&resource_type)?;
    let resource = json_body(&headers, body)?;
    write(&mut s, &resource_type, None, resource, None, wants_minimal(&headers)).await
}

/// `PUT /fhir/{type}/{id}`: update (a new version).
pub async fn update(
    State(state): State<AppState>,
    Path((resource_type, id)): Path<(String, String)>,
    caller: Result<Caller, AppError>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> FhirResult {
    let mut s = Session::open(&state, caller, peer).await?;
    supported(&resource_type)?;
    let expected = if_match(&headers)?;
    let resource = json_body(&headers, body)?;
    write(&mut s, &resource_type, Some(&id), resource, expected, wants_minimal(&headers)).await
}

/// Which patient a new or changed resource belongs to, checked against the store.
async fn owner(
    s: &mut Session,
    resource_type: &str,
    resource: &Value,
    new_id: &str,
) -> Result<Option<PatientId>, FhirError> {
    let Some(element) = fhir::patient_element(resource_type) else { return Ok(None) };
    if element.is_empty() {
        return new_id.parse().map(Some).map_err(|_| FhirError::not_found(resource_type, new_id));
    }
    let path = format!("{resource_type}.{element}");
    let mut refs = fhir::referenced_patients(resource_type, resource);
    refs.sort();
    refs.dedup();
    let [one] = refs.as_slice() else {
        return Err(FhirError::unprocessable(
            "business-rule",
            format!("{path} must reference exactly one Patient on this server (Patient/<id>)"),
        )
        .at(path));
    };
    let patient: PatientId = one.parse().map_err(|_| {
        FhirError::unprocessable(
            "business-rule",
            format!("{path} does not reference a Patient on this server"),
        )
        .at(path.clone())
    })?;
    if s.facts(patient).await?.is_none() {
        return Err(FhirError::unprocessable(
            "business-rule",
            format!("{path} does not reference a Patient on this server"),
        )
        .at(path));
    }
    Ok(Some(patient))
}

/// A resource as stored by a write.
#[derive(Debug)]
pub(crate) struct Written {
    pub resource: Value,
    pub id: String,
    pub version: u32,
    pub at: Timestamp,
    pub created: bool,
}

async fn write(
    s: &mut Session,
    resource_type: &str,
    path_id: Option<&str>,
    resource: Value,
    expected: Option<u32>,
    minimal: bool,
) -> FhirResult {
    let w = write_resource(s, resource_type, path_id, resource, expected).await?;
    let status = if w.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut resp =
        if minimal { status.into_response() } else { fhir_response(status, &w.resource) };
    if w.created
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{}/{resource_type}/{}/_history/{}",
            base(&s.state),
            w.id,
            w.version
        ))
    {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(with_version_headers(resp, w.version, w.at))
}

/// Create (`path_id` None) or update: validated, owner checked, decided, logged, sealed,
/// indexed and stored.
pub(crate) async fn write_resource(
    s: &mut Session,
    resource_type: &str,
    path_id: Option<&str>,
    mut resource: Value,
    expected: Option<u32>,
) -> Result<Written, FhirError> {
    let issues = fhir::validate(resource_type, &resource);
    if !issues.is_empty() {
        return Err(FhirError::invalid(issues));
    }
    let (id, previous) = match path_id {
        None => {
            // The server assigns the id of a new resource (a body id is ignored, 3.1.0.7).
            let id = if resource_type == "Patient" {
                PatientId::new_v7().to_string()
            } else {
                uuid::Uuid::now_v7().to_string()
            };
            (id, None)
        }
        Some(id) => {
            if resource.get("id").and_then(Value::as_str) != Some(id) {
                return Err(FhirError::bad_request(
                    "the resource's id must be present and equal the id in the URL",
                )
                .at(format!("{resource_type}.id")));
            }
            let Some(current) = s.state.store.current(s.tenant, resource_type, id).await? else {
                return Err(FhirError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "not-supported",
                    "update cannot create a resource on this server; use POST",
                ));
            };
            (id.to_owned(), Some(current))
        }
    };
    if let (Some(want), Some(prev)) = (expected, &previous)
        && want != prev.version
    {
        return Err(FhirError::new(
            StatusCode::PRECONDITION_FAILED,
            "conflict",
            format!("the resource is at version {}, not {want}", prev.version),
        ));
    }
    let patient = owner(s, resource_type, &resource, &id).await?;
    if let Some(prev) = &previous
        && prev.patient != patient
    {
        return Err(FhirError::unprocessable(
            "business-rule",
            "a resource cannot move to another patient; create it anew for that patient",
        ));
    }
    let category = fhir::policy_category(resource_type, &resource).to_owned();
    let restricted = fhir::is_restricted(&resource);
    let (action, verb, status) = match &previous {
        None => (Action::Create, "create", StatusCode::CREATED),
        Some(_) => (Action::Update, "update", StatusCode::OK),
    };
    let target = match (resource_type, patient) {
        ("Patient", Some(p)) if previous.is_none() => {
            // A new patient: no care team, no account yet.
            s.facts.insert(
                p,
                Some(PatientFacts {
                    id: p,
                    tenant: s.tenant,
                    account: None,
                    care_team: Vec::new(),
                    denied_categories: Vec::new(),
                    denied_recipients: Vec::new(),
                }),
            );
            Target::Patient(p)
        }
        ("Patient", Some(p)) => Target::Patient(p),
        (_, Some(p)) => Target::Record {
            id: id.clone(),
            resource_type: resource_type.to_owned(),
            patient: p,
            category: category.clone(),
            restricted,
        },
        (t, None) => Target::Directory(t.to_owned()),
    };
    let Some(purpose) = s.decide(action, &target).await? else {
        s.audit_one(verb, resource_type, &id, patient, s.purpose(), "denied").await?;
        return Err(FhirError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you may not make this change",
        ));
    };
    let version = previous.as_ref().map_or(1, |p| p.version + 1);
    let now = s.now();
    resource["id"] = json!(id);
    let meta = resource.as_object_mut().map(|m| m.entry("meta").or_insert_with(|| json!({})));
    if let Some(Value::Object(meta)) = meta {
        meta.insert("versionId".into(), json!(version.to_string()));
        meta.insert("lastUpdated".into(), json!(now.to_rfc3339()));
    }
    // Recorded before the change is made: no change exists that the log does not show.
    s.audit_one(verb, resource_type, &id, patient, purpose, "success").await?;
    if let (Some(p), None) = (patient.filter(|_| resource_type == "Patient"), &previous) {
        // The patient the new Patient resource describes exists before its key does.
        let new = telesafe_core::identity::Patient {
            id: p,
            tenant_id: s.tenant,
            user_id: None,
            created_at: now,
        };
        s.state.store.create_patient(&new).await?;
    }
    let key = s.key_for(patient, true).await?;
    let row = StoredResource {
        tenant: s.tenant,
        resource_type: resource_type.to_owned(),
        id: id.clone(),
        version,
        patient,
        last_updated: now,
        deleted: false,
        category,
        restricted,
        body: Vec::new(),
    };
    seal_and_store(&s.state, &key, row, &resource).await?;
    Ok(Written { resource, id, version, at: now, created: status == StatusCode::CREATED })
}

/// Loads a row the caller may read, or the answer to give instead. Denied and missing
/// look the same (404), so ids of hidden records are not confirmed.
async fn readable(
    s: &mut Session,
    resource_type: &str,
    id: &str,
    version: Option<u32>,
    action_name: &str,
) -> Result<(StoredResource, Purpose), FhirError> {
    let store = &s.state.store;
    let row = match version {
        None => store.current(s.tenant, resource_type, id).await?,
        Some(v) => store.version(s.tenant, resource_type, id, v).await?,
    };
    let Some(row) = row else { return Err(FhirError::not_found(resource_type, id)) };
    let target = Target::of(&row)?;
    let Some(purpose) = s.decide(Action::Read, &target).await? else {
        s.audit_one(action_name, resource_type, id, row.patient, s.purpose(), "denied").await?;
        return Err(FhirError::not_found(resource_type, id));
    };
    Ok((row, purpose))
}

/// `GET /fhir/{type}/{id}`: read.
pub async fn read(
    State(state): State<AppState>,
    Path((resource_type, id)): Path<(String, String)>,
    caller: Result<Caller, AppError>,
    peer: Peer,
) -> FhirResult {
    let mut s = Session::open(&state, caller, peer).await?;
    if resource_type == "AuditEvent" {
        return audit_event::read(&mut s, &id).await;
    }
    supported(&resource_type)?;
    read_version(&mut s, &resource_type, &id, None).await
}

/// Read and vread: decided, logged, then decrypted; a deleted version answers 410.
async fn read_version(
    s: &mut Session,
    resource_type: &str,
    id: &str,
    version: Option<u32>,
) -> FhirResult {
    let (body, row) = read_value(s, resource_type, id, version).await?;
    Ok(with_version_headers(fhir_response(StatusCode::OK, &body), row.version, row.last_updated))
}

/// Whether this session may create a `resource_type` of the vitals category in the
/// patient's record (for a change that is not itself a FHIR resource, like the patient's
/// alert thresholds); a refusal is logged and answers 403.
pub(crate) async fn check_write(
    s: &mut Session,
    resource_type: &str,
    patient: PatientId,
) -> Result<Purpose, FhirError> {
    let target = Target::Record {
        id: String::new(),
        resource_type: resource_type.to_owned(),
        patient,
        category: "vitals".to_owned(),
        restricted: false,
    };
    match s.decide(Action::Create, &target).await? {
        Some(purpose) => Ok(purpose),
        None => {
            s.audit_one("update", resource_type, "", Some(patient), s.purpose(), "denied").await?;
            Err(FhirError::new(StatusCode::FORBIDDEN, "forbidden", "you may not make this change"))
        }
    }
}

/// One resource version as JSON, with its row: decided, logged, decrypted.
pub(crate) async fn read_value(
    s: &mut Session,
    resource_type: &str,
    id: &str,
    version: Option<u32>,
) -> Result<(Value, StoredResource), FhirError> {
    let (row, purpose) = readable(s, resource_type, id, version, "read").await?;
    s.audit_one("read", resource_type, id, row.patient, purpose, "success").await?;
    if row.deleted {
        return Err(FhirError::new(StatusCode::GONE, "deleted", "this resource was deleted"));
    }
    let body = s.decrypt(&row).await?;
    Ok((body, row))
}

/// The current Patient resources of `ids` that exist, decrypted, without logging: for a
/// list whose caller has already logged each patient it shows.
pub(crate) async fn patients_unlogged(
    s: &Session,
    ids: &[String],
) -> Result<HashMap<String, Value>, FhirError> {
    let rows = s.state.store.current_many(s.tenant, "Patient", ids).await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        match s.decrypt(&r).await {
            Ok(v) => {
                out.insert(r.id.clone(), v);
            }
            // An erased patient has no name to show; the list says so.
            Err(e) if e.status == StatusCode::GONE => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
/// `GET /fhir/{type}/{id}/_history/{vid}`: one version.
pub async fn vread(
    State(state): State<AppState>,
    Path((resource_type, id, op, vid)): Path<(String, String, String, String)>,
    caller: Result<Caller, AppError>,
    peer: Peer,
) -> FhirResult {
    let mut s = Session::open(&state, caller, peer).await?;
    supported(&resource_type)?;
    if op != "_history" {
        return Err(FhirError::not_found(&resource_type, &id));
    }
    let version: u32 = vid.parse().map_err(|_| FhirError::not_found(&resource_type, &id))?;
    read_version(&mut s, &resource_type, &id, Some(version)).await
}

/// `DELETE /fhir/{type}/{id}`: a versioned delete (history keeps every version).
pub async fn delete(
    State(state): State<AppState>,
    Path((resource_type, id)): Path<(String, String)>,
    caller: Result<Caller, AppError>,
    peer: Peer,
    headers: HeaderMap,
) -> FhirResult {
    let mut s = Session::open(&state, caller, peer).await?;
    supported(&resource_type)?;
    let expected = if_match(&headers)?;
    let Some(current) = s.state.store.current(s.tenant, &resource_type, &id).await? else {
        return Err(FhirError::not_found(&resource_type, &id));
    };
    let target = Target::of(&current)?;
    if s.decide(Action::Read, &target).await?.is_none() {
        s.audit_one("delete", &resource_type, &id, current.patient, s.purpose(), "denied").await?;
        return Err(FhirError::not_found(&resource_type, &id));
    }
    let Some(purpose) = s.decide(Action::Delete, &target).await? else {
        s.audit_one("delete", &resource_type, &id, current.patient, s.purpose(), "denied").await?;
        return Err(FhirError::new(StatusCode::FORBIDDEN, "forbidden", "you may not delete this"));
    };
    if current.deleted {
        // Deleting a deleted resource changes nothing (3.1.0.7.1).
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if let Some(want) = expected
        && want != current.version
    {
        return Err(FhirError::new(
            StatusCode::PRECONDITION_FAILED,
            "conflict",
            format!("the resource is at version {}, not {want}", current.version),
        ));
    }
    s.audit_one("delete", &resource_type, &id, current.patient, purpose, "success").await?;
    let row = StoredResource {
        version: current.version + 1,
        last_updated: s.now(),
        deleted: true,
        body: Vec::new(),
        ..current
    };
    match s.state.store.put_version(&row, &[], None).await {
        Ok(()) => Ok(with_version_headers(
            StatusCode::NO_CONTENT.into_response(),
            row.version,
            row.last_updated,
        )),
        Err(RepoError::Conflict) => Err(FhirError::new(
            StatusCode::CONFLICT,
            "conflict",
            "someone else changed this resource at the same time; read it again and retry",
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /fhir/{type}/{id}/_history` and `GET /fhir/Patient/{id}/$everything`.
pub async fn instance_operation(
    State(state): State<AppState>,
    Path((resource_type, id, op)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    caller: Result<Caller, AppError>,
    peer: Peer,
) -> FhirResult {
    let mut s = Session::open(&state, caller, peer).await?;
    supported(&resource_type)?;
    match op.as_str() {
        "_history" => history(&mut s, &resource_type, &id).await,
        "$everything" if resource_type == "Patient" => {
            query::everything(&mut s, &id, raw.as_deref().unwrap_or_default()).await
        }
        _ => Err(FhirError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            "unknown operation (see /fhir/metadata)",
        )),
    }
}

async fn history(s: &mut Session, resource_type: &str, id: &str) -> FhirResult {
    let (current, purpose) = readable(s, resource_type, id, None, "history").await?;
    s.audit_one("history", resource_type, id, current.patient, purpose, "success").await?;
    let versions = s.state.store.history(s.tenant, resource_type, id).await?;
    let base = base(&s.state);
    let mut entries = Vec::with_capacity(versions.len());
    for v in &versions {
        let url = format!("{base}/{resource_type}/{id}");
        let method = if v.deleted {
            "DELETE"
        } else if v.version == 1 {
            "POST"
        } else {
            "PUT"
        };
        let mut e = json!({
            "fullUrl": url,
            "request": {"method": method, "url": if method == "POST" { resource_type.to_owned() } else { format!("{resource_type}/{id}") }},
            "response": {
                "status": if v.deleted { "204 No Content" } else if v.version == 1 { "201 Created" } else { "200 OK" },
                "etag": format!("W/\"{}\"", v.version),
                "lastModified": v.last_updated.to_rfc3339(),
            }
        });
        if !v.deleted {
            e["resource"] = s.decrypt(v).await?;
        }
        entries.push(e);
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "history",
        "total": entries.len(),
        "link": [{"relation": "self", "url": format!("{base}/{resource_type}/{id}/_history")}],
        "entry": entries,
    });
    Ok(fhir_response(StatusCode::OK, &bundle))
}

/// `GET /fhir/{type}`: search.
pub async fn search_get(
    State(state): State<AppState>,
    Path(resource_type): Path<String>,
    caller: Result<Caller, AppError>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> FhirResult {
    let mut s = Session::open(&state, caller, peer).await?;
    if resource_type == "AuditEvent" {
        return audit_event::search(&mut s, raw.as_deref().unwrap_or("")).await;
    }
    supported(&resource_type)?;
    query::search(&mut s, &resource_type, raw.as_deref().unwrap_or(""), &headers).await
}

/// `POST /fhir/{type}/_search` (form-encoded parameters, 3.1.0.8.1); any other POST to an
/// instance URL is not allowed.
pub async fn search_post(
    State(state): State<AppState>,
    Path((resource_type, id)): Path<(String, String)>,
    caller: Result<Caller, AppError>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> FhirResult {
    if id != "_search" {
        return Err(FhirError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "POST is not allowed on a resource; use PUT to update",
        ));
    }
    let mut s = Session::open(&state, caller, peer).await?;
    supported(&resource_type)?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "_search takes application/x-www-form-urlencoded parameters",
        ));
    }
    let body = body.map_err(|_| {
        FhirError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", "too many parameters")
    })?;
    let form = String::from_utf8_lossy(&body);
    let all = match raw.as_deref() {
        Some(q) if !q.is_empty() => format!("{q}&{form}"),
        _ => form.into_owned(),
    };
    query::search(&mut s, &resource_type, &all, &headers).await
}

/// Any other `/fhir/...` path: an OperationOutcome, not the site's 404 page.
pub async fn unknown() -> FhirError {
    FhirError::new(StatusCode::NOT_FOUND, "not-supported", "unknown FHIR path (see /fhir/metadata)")
}

/// Seals `resource` under `key` into `row`, indexes it blind under the tenant's index key,
/// and stores it as the new current version.
/// Seals a version and computes its blind index, ready for the store.
pub(crate) async fn prepare_version(
    state: &AppState,
    key: &SealingKey,
    mut row: StoredResource,
    resource: &Value,
) -> Result<PreparedVersion, FhirError> {
    row.body =
        seal_resource(key, &row, resource.to_string().as_bytes()).map_err(FhirError::internal)?;
    let tk = state
        .keys
        .tenant(&state.store, row.tenant, row.last_updated)
        .await
        .map_err(FhirError::internal)?;
    let (index, sort_date) =
        index_entries(&row.resource_type, resource, |p, v| KeyRing::blind(&tk, p, v));
    Ok(PreparedVersion { row, index, sort_date })
}

async fn seal_and_store(
    state: &AppState,
    key: &SealingKey,
    row: StoredResource,
    resource: &Value,
) -> Result<(), FhirError> {
    let p = prepare_version(state, key, row, resource).await?;
    match state.store.put_version(&p.row, &p.index, p.sort_date).await {
        Ok(()) => Ok(()),
        Err(RepoError::Conflict) => Err(FhirError::new(
            StatusCode::CONFLICT,
            "conflict",
            "someone else changed this resource at the same time; read it again and retry",
        )),
        Err(e) => Err(e.into()),
    }
}
