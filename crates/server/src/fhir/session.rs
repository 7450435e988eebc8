//! One request's view of the record (`Session`): who asks, under which policies, the
//! decision for each target, the audit entries, and the keys; and what a decision is about
//! (`Target`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Extension};

use axum::http::StatusCode;
use serde_json::Value;
use telesafe_core::access::break_glass::BreakGlassRepository;
use telesafe_core::access::{
    AccessContext, Action, CareTeamRepository, PatientFacts, Principal, Resource,
};
use telesafe_core::audit::Purpose;
use telesafe_core::devices::readings::{BatchRecord, parse_reading_id, reading_id};
use telesafe_core::identity::{PatientRepository, Role};
use telesafe_core::records::fhir::{self, RESOURCE_TYPES};
use telesafe_core::records::keys::KeyRingError;
use telesafe_core::records::{ReadingBatch, ResourceRepository, StoredResource, open_resource};
use telesafe_core::{PatientId, TenantId, Timestamp};
use telesafe_crypto::keys::SealingKey;
use zeroize::Zeroizing;

use super::{CONSENT_CATEGORY_SYSTEM, FhirError};
use crate::audit::{Access, Actor, record_as};
use crate::auth::{Caller, CurrentUser};
use crate::error::AppError;
use crate::state::AppState;

/// What a decision is about: the patient, one of their records, or the directory.
#[derive(Debug, Clone)]
pub(crate) enum Target {
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
    pub(crate) fn of(r: &StoredResource) -> Result<Self, FhirError> {
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

    pub(crate) fn patient(&self) -> Option<PatientId> {
        match self {
            Target::Patient(p) | Target::Record { patient: p, .. } => Some(*p),
            Target::Directory(_) => None,
        }
    }
}

/// One request's view of the record: who asks, under which policies, with caches for the
/// patient facts and break-glass grants it needs.
pub(crate) struct Session {
    pub(crate) state: AppState,
    pub(crate) tenant: TenantId,
    pub(crate) principal: Principal,
    pub(crate) actor: Actor,
    pub(crate) role: Option<Role>,
    pub(crate) policies: Option<std::sync::Arc<cedar_policy::PolicySet>>,
    pub(crate) facts: HashMap<PatientId, Option<PatientFacts>>,
    pub(crate) grants: Option<HashSet<PatientId>>,
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
    pub(crate) async fn open(
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

    /// The view of a patient who joined a video visit by its link: the `VisitGuest`
    /// principal, audited as the visit link (by visit id) with the pass's participant key
    /// as its session.
    pub(crate) async fn for_guest(
        state: &AppState,
        pass: &telesafe_core::visits::VisitPass,
        source: &str,
    ) -> Result<Self, FhirError> {
        let tenant = pass.tenant;
        let policies = crate::policy::tenant_set(state, tenant).await?;
        Ok(Self {
            state: state.clone(),
            tenant,
            principal: Principal::VisitGuest { visit: pass.visit, tenant, patient: pass.patient },
            actor: Actor {
                tenant: tenant.to_string(),
                kind: telesafe_core::audit::ActorKind::VisitLink,
                id: pass.visit.to_string(),
                role: Role::Patient.as_str().to_owned(),
                source: source.to_owned(),
                session: pass.participant_key(),
            },
            // Acts for the patient: their purpose of use, no grants.
            role: Some(Role::Patient),
            policies,
            facts: HashMap::new(),
            grants: None,
        })
    }

    /// A signed-in user's view (for the record pages).
    pub(crate) async fn for_user(state: &AppState, me: &CurrentUser) -> Result<Self, FhirError> {
        Self::open(state, Ok(Caller::User(Box::new(me.clone()))), None).await
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.state.clock.now()
    }

    /// Why this caller ordinarily reads patient data.
    pub(crate) fn purpose(&self) -> Purpose {
        match self.role {
            Some(Role::Patient) => Purpose::PatientRequest,
            Some(Role::Clinician | Role::Nurse) | None => Purpose::Treatment,
            Some(_) => Purpose::Operations,
        }
    }

    pub(crate) async fn facts(
        &mut self,
        patient: PatientId,
    ) -> Result<Option<PatientFacts>, FhirError> {
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

    pub(crate) async fn has_grant(&mut self, patient: PatientId) -> Result<bool, FhirError> {
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
    pub(crate) async fn decide(
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
    pub(crate) async fn audit(&self, accesses: &[Access<'_>]) -> Result<(), FhirError> {
        record_as(&self.state, &self.actor, accesses).await.map_err(FhirError::from)
    }

    pub(crate) async fn audit_one(
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
    pub(crate) async fn key_for(
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

    pub(crate) async fn decrypt(&self, r: &StoredResource) -> Result<Value, FhirError> {
        let bytes = self.unseal(r).await?;
        if r.version == 1
            && r.resource_type == "Observation"
            && let (Some(patient), Some(reading)) = (r.patient, parse_reading_id(&r.id))
        {
            let record = batch_record(&bytes)?;
            let unprovable = self.unprovable(&reading.device).await?;
            return render_reading(&record, r, patient, &r.id, reading.n, unprovable);
        }
        serde_json::from_slice(&bytes).map_err(FhirError::internal)
    }

    /// The Observations of a batch's matched readings, the batch opened once.
    pub(crate) async fn decrypt_readings(&self, b: &ReadingBatch) -> Result<Vec<Value>, FhirError> {
        let r = &b.batch;
        let (Some(patient), Some(batch)) = (r.patient, parse_reading_id(&r.id)) else {
            return Err(FhirError::internal("a device batch row without its patient or name"));
        };
        let record = batch_record(&self.unseal(r).await?)?;
        let unprovable = self.unprovable(&batch.device).await?;
        b.readings
            .iter()
            .map(|&n| {
                let id = reading_id(&batch.device, batch.seq, n)
                    .ok_or_else(|| FhirError::internal("a device batch under a malformed id"))?;
                render_reading(&record, r, patient, &id, n, unprovable)
            })
            .collect()
    }

    /// Whether the readings `device` filed prove nothing (see
    /// [`crate::devices::device_unprovable`]).
    pub(crate) async fn unprovable(&self, device: &str) -> Result<bool, FhirError> {
        Ok(crate::devices::device_unprovable(&self.state, device).await?)
    }

    /// A device batch's record, opened once for all its matched readings (for charts,
    /// which read values without rendering Observations).
    pub(crate) async fn open_batch(&self, b: &ReadingBatch) -> Result<BatchRecord, FhirError> {
        batch_record(&self.unseal(&b.batch).await?)
    }

    /// A sealed row's plaintext, under the key version the ciphertext names.
    async fn unseal(&self, r: &StoredResource) -> Result<Zeroizing<Vec<u8>>, FhirError> {
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
        open_resource(&key, r).map_err(FhirError::internal)
    }
}

fn batch_record(plain: &[u8]) -> Result<BatchRecord, FhirError> {
    BatchRecord::parse(plain)
        .ok_or_else(|| FhirError::internal("a stored device batch did not parse"))
}

/// A device reading's Observation from its opened batch record: rendered as it was judged
/// on arrival (labelled unverifiable if its device's key proves nothing), stamped with its
/// id, version 1 and the time its batch was stored.
fn render_reading(
    record: &BatchRecord,
    r: &StoredResource,
    patient: PatientId,
    id: &str,
    n: u32,
    unprovable: bool,
) -> Result<Value, FhirError> {
    let mut o = record
        .observation(patient, n)
        .ok_or_else(|| FhirError::internal("a device reading without its judgement"))?;
    if unprovable {
        telesafe_core::devices::vitals::mark_unprovable(&mut o);
    }
    o["id"] = Value::String(id.to_owned());
    o["meta"]["versionId"] = Value::String("1".into());
    o["meta"]["lastUpdated"] = Value::String(r.last_updated.to_rfc3339());
    Ok(o)
}

pub(crate) fn key_error(e: KeyRingError) -> FhirError {
    match e {
        KeyRingError::Erased => FhirError::new(
            StatusCode::GONE,
            "deleted",
            "this patient's record was erased and cannot be read",
        ),
        other => FhirError::internal(other),
    }
}
