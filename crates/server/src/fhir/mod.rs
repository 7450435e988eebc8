//! The FHIR R4 REST API at `/fhir` (JSON only).
//!
//! Every interaction goes the same way: who is calling (bearer token or session), the
//! policy decision for this principal, resource and context, the audit entry (durable
//! before anything is answered or changed), and only then the key lookup and the
//! decryption or encryption of the resource. There is no other path to the record.

mod audit_event;
mod system;
pub use system::{prepare_new, write_as, write_as_system};
pub mod capability;
pub mod outcome;
pub(crate) mod query;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use telesafe_core::access::break_glass::BreakGlassRepository;
use telesafe_core::access::{
    AccessContext, Action, CareTeamRepository, PatientFacts, Principal, Resource,
};
use telesafe_core::audit::Purpose;
use telesafe_core::identity::{PatientRepository, Role};
use telesafe_core::records::fhir::{self, RESOURCE_TYPES};
use telesafe_core::records::keys::{KeyRing, KeyRingError};
use telesafe_core::records::search::index_entries;
use telesafe_core::records::{
    PreparedVersion, ResourceRepository, StoredResource, open_resource, seal_resource,
};
use telesafe_core::{PatientId, RepoError, TenantId, Timestamp};
use telesafe_crypto::keys::SealingKey;

use crate::audit::{Access, Actor, record_as};
use crate::auth::{Caller, CurrentUser};
use crate::error::AppError;
use crate::state::AppState;
pub use outcome::{FHIR_JSON, FhirError};

type FhirResult = Result<Response, FhirError>;

/// The code system of the policy categories a Consent may deny (`vitals`, `clinical`,
/// `scheduling`, `messaging`, `devices`, ...).
pub const CONSENT_CATEGORY_SYSTEM: &str = "urn:telesafe:policy-category";

/// What a decision is about: the patient, one of their records, or the directory.
#[derive(Debug, Clone)]
enum Target {
    Patient(PatientId),
    Record {
        id: String,
        resource_type: String,
        patient: PatientId,
        category: String,
        restricted: bool,
    },
    Directory(String),
}

impl Target {
    fn of(r: &StoredResource) -> Result<Self, FhirError> {
        Ok(match (r.resource_type.as_str(), r.patient) {
            ("Patient", Some(p)) => Target::Patient(p),
            (_, Some(p)) => Target::Record {
                id: r.id.clone(),
                resource_type: r.resource_type.clone(),
                patient: p,
                category: r.category.clone(),
                restricted: r.restricted,
            },
            (t, None) if fhir::patient_element(t).is_none() => Target::Directory(t.to_owned()),
            _ => return Err(FhirError::internal("a compartment resource without a patient")),
        })
    }

    fn patient(&self) -> Option<PatientId> {
        match self {
            Target::Patient(p) | Target::Record { patient: p, .. } => Some(*p),
            Target::Directory(_) => None,
        }
    }
}

/// One request's view of the record: who asks, under which policies, with caches for the
/// patient facts and break-glass grants it needs.
pub(crate) struct Session {
    state: AppState,
    tenant: TenantId,
    principal: Principal,
    actor: Actor,
    role: Option<Role>,
    policies: Option<std::sync::Arc<cedar_policy::PolicySet>>,
    facts: HashMap<PatientId, Option<PatientFacts>>,
    grants: Option<HashSet<PatientId>>,
}

/// The scopes a client's grant stands for, with `system/*.read` and `.*` spelled out per
/// resource type (the policies compare exact scope strings).
fn expand_scopes(scopes: &[telesafe_core::identity::clients::Scope]) -> Vec<String> {
    let mut out = HashSet::new();
    for s in scopes {
        let Some(rest) = s.as_str().strip_prefix("system/") else { continue };
        let Some((ty, mode)) = rest.split_once('.') else { continue };
        let types: Vec<&str> = if ty == "*" { RESOURCE_TYPES.to_vec() } else { vec![ty] };
        let modes: &[&str] = match mode {
            "read" => &["read"],
            "write" => &["write"],
            "*" => &["read", "write"],
            _ => &[],
        };
        for t in types {
            for m in modes {
                out.insert(format!("system/{t}.{m}"));
            }
        }
    }
    let mut v: Vec<String> = out.into_iter().collect();
    v.sort();
    v
}

impl Session {
    async fn open(
        state: &AppState,
        caller: Result<Caller, AppError>,
        peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ) -> Result<Self, FhirError> {
        let caller = caller.map_err(FhirError::from)?;
        let (tenant, principal, actor, role) = match &caller {
            Caller::User(me) => (
                me.user.tenant_id,
                Principal::User { id: me.user.id, tenant: me.user.tenant_id, role: me.role() },
                Actor::user(me),
                Some(me.role()),
            ),
            Caller::Client(token) => (
                token.tenant_id,
                Principal::Client {
                    id: token.client_id.clone(),
                    tenant: token.tenant_id,
                    scopes: expand_scopes(&token.scopes),
                },
                Actor::client(token, peer.map(|p| p.0.0.ip())),
                None,
            ),
        };
        let policies = crate::policy::tenant_set(state, tenant).await?;
        Ok(Self {
            state: state.clone(),
            tenant,
            principal,
            actor,
            role,
            policies,
            facts: HashMap::new(),
            grants: None,
        })
    }

    /// A signed-in user's view (for the record pages).
    pub(crate) async fn for_user(state: &AppState, me: &CurrentUser) -> Result<Self, FhirError> {
        Self::open(state, Ok(Caller::User(Box::new(me.clone()))), None).await
    }

    fn now(&self) -> Timestamp {
        self.state.clock.now()
    }

    /// Why this caller ordinarily reads patient data.
    fn purpose(&self) -> Purpose {
        match self.role {
            Some(Role::Patient) => Purpose::PatientRequest,
            Some(Role::Clinician | Role::Nurse) | None => Purpose::Treatment,
            Some(_) => Purpose::Operations,
        }
    }

    async fn facts(&mut self, patient: PatientId) -> Result<Option<PatientFacts>, FhirError> {
        if let Some(f) = self.facts.get(&patient) {
            return Ok(f.clone());
        }
        let store = &self.state.store;
        let f = match store.patient_by_id(self.tenant, patient).await? {
            Some(p) => {
                let mut f = PatientFacts::of(&p, store.care_team_of(self.tenant, patient).await?);
                self.apply_consents(&mut f).await?;
                Some(f)
            }
            None => None,
        };
        self.facts.insert(patient, f.clone());
        Ok(f)
    }

    /// The patient's active Consent resources that deny: `provision.class` codes of the
    /// `urn:telesafe:policy-category` system deny a category, `provision.actor` references
    /// `Practitioner/<account id>` deny a person. Read for the decision only: not shown,
    /// so not logged as an access.
    pub(crate) async fn apply_consents(&self, f: &mut PatientFacts) -> Result<(), FhirError> {
        let q = telesafe_core::records::StoredSearch {
            resource_type: "Consent".to_owned(),
            patients: Some(vec![f.id]),
            limit: 100,
            ..Default::default()
        };
        let hits = self.state.store.search(self.tenant, &q).await?;
        if hits.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = hits.into_iter().map(|h| h.id).collect();
        for row in self.state.store.current_many(self.tenant, "Consent", &ids).await? {
            let c = self.decrypt(&row).await?;
            let p = &c["provision"];
            if c["status"] != "active" || p["type"] != "deny" {
                continue;
            }
            for class in p["class"].as_array().into_iter().flatten() {
                if class["system"] == CONSENT_CATEGORY_SYSTEM
                    && let Some(code) = class["code"].as_str()
                {
                    f.denied_categories.push(code.to_owned());
                }
            }
            for actor in p["actor"].as_array().into_iter().flatten() {
                if let Some(id) = actor["reference"]["reference"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("Practitioner/"))
                    .and_then(|id| id.parse().ok())
                {
                    f.denied_recipients.push(id);
                }
            }
        }
        Ok(())
    }

    async fn has_grant(&mut self, patient: PatientId) -> Result<bool, FhirError> {
        let Principal::User { id, role: Role::Clinician, .. } = &self.principal else {
            return Ok(false);
        };
        if self.grants.is_none() {
            let grants = self.state.store.active_grants(self.tenant, *id, self.now()).await?;
            self.grants = Some(grants.into_iter().map(|g| g.patient_id).collect());
        }
        Ok(self.grants.as_ref().is_some_and(|g| g.contains(&patient)))
    }

    /// The policy decision. `Some(purpose)` when allowed (`Emergency` when only an active
    /// break-glass grant allows it).
    async fn decide(
        &mut self,
        action: Action,
        target: &Target,
    ) -> Result<Option<Purpose>, FhirError> {
        let resource = match target {
            Target::Directory(t) => {
                Resource::Directory { resource_type: t.clone(), tenant: self.tenant }
            }
            Target::Patient(p) => match self.facts(*p).await? {
                Some(f) => Resource::Patient(f),
                None => return Ok(None),
            },
            Target::Record { id, resource_type, patient, category, restricted } => {
                match self.facts(*patient).await? {
                    Some(f) => Resource::Record {
                        id: id.clone(),
                        resource_type: resource_type.clone(),
                        patient: f,
                        category: category.clone(),
                        restricted: *restricted,
                    },
                    None => return Ok(None),
                }
            }
        };
        let purpose = self.purpose();
        let ordinary = AccessContext { purpose: purpose.as_str().to_owned(), break_glass: false };
        let engine = self.state.policy.clone();
        if engine
            .decide(&self.principal, action, &resource, &ordinary, self.policies.as_deref())
            .allowed
        {
            return Ok(Some(purpose));
        }
        if let Some(p) = target.patient()
            && self.has_grant(p).await?
        {
            let ctx = AccessContext { purpose: "emergency".to_owned(), break_glass: true };
            if engine
                .decide(&self.principal, action, &resource, &ctx, self.policies.as_deref())
                .allowed
            {
                return Ok(Some(Purpose::Emergency));
            }
        }
        Ok(None)
    }

    /// Appends the entries and waits until they are durable (fail closed: 503 otherwise).
    async fn audit(&self, accesses: &[Access<'_>]) -> Result<(), FhirError> {
        record_as(&self.state, &self.actor, accesses).await.map_err(FhirError::from)
    }

    async fn audit_one(
        &self,
        action: &str,
        resource_type: &str,
        id: &str,
        patient: Option<PatientId>,
        purpose: Purpose,
        outcome: &str,
    ) -> Result<(), FhirError> {
        self.audit(&[Access {
            action,
            resource_type,
            resource_id: id.to_owned(),
            patient_id: patient.map(|p| p.to_string()).unwrap_or_default(),
            purpose,
            outcome,
        }])
        .await
    }

    /// The key that seals `r` (its patient's, or the tenant's directory key).
    async fn key_for(
        &self,
        patient: Option<PatientId>,
        create: bool,
    ) -> Result<SealingKey, FhirError> {
        let (store, keys, now) = (&self.state.store, &self.state.keys, self.now());
        let key = match patient {
            Some(p) => keys.patient(store, self.tenant, p, now, create).await.map(|k| (*k).clone()),
            None => keys.tenant(store, self.tenant, now).await.map(|k| k.directory_key().clone()),
        };
        key.map_err(key_error)
    }

    async fn decrypt(&self, r: &StoredResource) -> Result<Value, FhirError> {
        let key = match (r.patient, telesafe_crypto::keys::sealed_key_version(&r.body)) {
            // The key version the ciphertext names (older ones live on during a data-key
            // rotation).
            (Some(p), Some(v)) => self
                .state
                .keys
                .patient_at(&self.state.store, self.tenant, p, v, self.now())
                .await
                .map(|k| (*k).clone())
                .map_err(key_error)?,
            _ => self.key_for(r.patient, false).await?,
        };
        let bytes = open_resource(&key, r).map_err(FhirError::internal)?;
        serde_json::from_slice(&bytes).map_err(FhirError::internal)
    }
}

fn key_error(e: KeyRingError) -> FhirError {
    match e {
        KeyRingError::Erased => FhirError::new(
            StatusCode::GONE,
            "deleted",
            "this patient's record was erased and cannot be read",
        ),
        other => FhirError::internal(other),
    }
}

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
    caller: Result<Caller, AppError>,
    peer: Peer,
) -> FhirResult {
    let mut s = Session::open(&state, caller, peer).await?;
    supported(&resource_type)?;
    match op.as_str() {
        "_history" => history(&mut s, &resource_type, &id).await,
        "$everything" if resource_type == "Patient" => query::everything(&mut s, &id).await,
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
