//! Access decided by policy (Cedar): deny by default, one decision function for every
//! operation on patient data, with the real principal, the resource with its patient's
//! care team and consent restrictions, and the context (purpose, break-glass).
//!
//! The schema (`access/schema.cedarschema`) and the shipped policies
//! (`access/default.cedar`) are compiled in; the shipped policies are validated against
//! the schema when the engine is built. Tenants may add `forbid` policies only; they are
//! validated against the same schema before they take effect, and a policy that fails is
//! refused with the validator's message.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::identity::Role;
use crate::ids::{PatientId, TenantId, UserId};

/// The schema every policy is checked against.
pub const SCHEMA: &str = include_str!("access/schema.cedarschema");
/// The policies Telesafe ships.
pub const DEFAULT_POLICIES: &str = include_str!("access/default.cedar");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy could not be read: {0}")]
    Parse(String),
    #[error("an organisation may add only forbid policies; \"{0}\" is a permit")]
    NotForbid(String),
    #[error("the policy does not fit the schema: {0}")]
    Invalid(String),
    #[error("the policy engine could not be built: {0}")]
    Engine(String),
}

/// What is being done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Search,
    Create,
    Update,
    Delete,
    Export,
    BreakGlass,
    Admit,
    Administer,
    ReadAudit,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Read,
        Action::Search,
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Export,
        Action::BreakGlass,
        Action::Admit,
        Action::Administer,
        Action::ReadAudit,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Search => "search",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Export => "export",
            Action::BreakGlass => "break_glass",
            Action::Admit => "admit",
            Action::Administer => "administer",
            Action::ReadAudit => "read_audit",
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User {
        id: UserId,
        tenant: TenantId,
        role: Role,
    },
    Client {
        id: String,
        tenant: TenantId,
        scopes: Vec<String>,
    },
    /// A patient who opened a visit link and confirmed their date of birth: no account,
    /// only that visit's pass.
    VisitGuest {
        visit: crate::VisitId,
        tenant: TenantId,
        patient: PatientId,
    },
}

/// What a decision needs to know about a patient: whose record it is, who cares for them,
/// and what they have refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientFacts {
    pub id: PatientId,
    pub tenant: TenantId,
    pub account: Option<UserId>,
    pub care_team: Vec<UserId>,
    pub denied_categories: Vec<String>,
    pub denied_recipients: Vec<UserId>,
}

/// What is being acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// The patient's demographics.
    Patient(PatientFacts),
    /// One clinical resource of a patient (`resource_type` as in FHIR: Observation, ...).
    Record {
        id: String,
        resource_type: String,
        patient: PatientFacts,
        category: String,
        restricted: bool,
    },
    Appointment {
        id: String,
        tenant: TenantId,
        patient: PatientFacts,
        clinicians: Vec<UserId>,
    },
    AuditLog(TenantId),
    Tenant(TenantId),
    /// A tenant's directory resource (Practitioner, PractitionerRole, Organization): no
    /// patient's data.
    Directory {
        resource_type: String,
        tenant: TenantId,
    },
}

/// Why, and under which grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessContext {
    /// A purpose of use (`treatment`, `emergency`, ...).
    pub purpose: String,
    /// Whether an active break-glass grant covers this patient.
    pub break_glass: bool,
}

/// The answer, with the ids of the policies that decided it (for the audit log and for
/// explaining a refusal to an administrator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub policies: Vec<String>,
}

impl PatientFacts {
    /// The facts of a stored patient with its care team. Consent restrictions start empty;
    /// the record's Consent resources fill them.
    pub fn of(p: &crate::identity::Patient, care_team: Vec<UserId>) -> Self {
        Self {
            id: p.id,
            tenant: p.tenant_id,
            account: p.user_id,
            care_team,
            denied_categories: Vec::new(),
            denied_recipients: Vec::new(),
        }
    }
}

/// Explicit care-team assignments.
pub trait CareTeamRepository: Send + Sync {
    /// Adds `user` to `patient`'s care team (idempotent).
    fn add_to_care_team(
        &self,
        tenant: TenantId,
        patient: PatientId,
        user: UserId,
        now: crate::clock::Timestamp,
    ) -> impl std::future::Future<Output = Result<(), crate::repo::RepoError>> + Send;
    /// Every (patient, member) pair of the tenant.
    fn care_teams(
        &self,
        tenant: TenantId,
    ) -> impl std::future::Future<Output = Result<Vec<(PatientId, UserId)>, crate::repo::RepoError>> + Send;
    /// The members of one patient's care team.
    fn care_team_of(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> impl std::future::Future<Output = Result<Vec<UserId>, crate::repo::RepoError>> + Send;
}

/// An organisation's own policies, stored as Cedar source.
pub trait TenantPolicyRepository: Send + Sync {
    /// The source, empty when the organisation has none.
    fn tenant_policy_source(
        &self,
        tenant: TenantId,
    ) -> impl std::future::Future<Output = Result<String, crate::repo::RepoError>> + Send;
    fn set_tenant_policy_source(
        &self,
        tenant: TenantId,
        source: &str,
        now: crate::clock::Timestamp,
    ) -> impl std::future::Future<Output = Result<(), crate::repo::RepoError>> + Send;
}

/// The compiled schema and shipped policies.
pub struct PolicyEngine {
    schema: Schema,
    policies: PolicySet,
    authorizer: Authorizer,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").finish_non_exhaustive()
    }
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let ty = EntityTypeName::from_str(&format!("Telesafe::{ty}"))
        .map_err(|e| PolicyError::Engine(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(ty, EntityId::new(id)))
}

fn action_uid(a: Action) -> Result<EntityUid, PolicyError> {
    uid("Action", a.as_str())
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_owned())
}

fn users(ids: &[UserId]) -> Result<RestrictedExpression, PolicyError> {
    Ok(RestrictedExpression::new_set(
        ids.iter()
            .map(|u| uid("User", &u.to_string()).map(RestrictedExpression::new_entity_uid))
            .collect::<Result<Vec<_>, _>>()?,
    ))
}

fn strings(v: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(v.iter().map(|x| s(x)))
}

/// Builds the entities a request needs (principal, resource, and what they point at).
struct Builder {
    entities: Vec<Entity>,
    seen: HashSet<EntityUid>,
}

impl Builder {
    fn add(
        &mut self,
        id: EntityUid,
        attrs: HashMap<String, RestrictedExpression>,
        parents: HashSet<EntityUid>,
    ) -> Result<(), PolicyError> {
        if self.seen.insert(id.clone()) {
            self.entities.push(
                Entity::new(id, attrs, parents).map_err(|e| PolicyError::Engine(e.to_string()))?,
            );
        }
        Ok(())
    }

    fn tenant(&mut self, t: TenantId) -> Result<EntityUid, PolicyError> {
        let id = uid("Tenant", &t.to_string())?;
        self.add(id.clone(), HashMap::new(), HashSet::new())?;
        Ok(id)
    }

    fn user(
        &mut self,
        u: UserId,
        tenant: TenantId,
        role: Option<Role>,
    ) -> Result<EntityUid, PolicyError> {
        let t = self.tenant(tenant)?;
        let id = uid("User", &u.to_string())?;
        let attrs = HashMap::from([
            ("tenant".to_owned(), RestrictedExpression::new_entity_uid(t.clone())),
            // Users known only by reference (a care-team member) need no real role.
            ("role".to_owned(), s(role.map_or("", Role::as_str))),
        ]);
        self.add(id.clone(), attrs, HashSet::from([t]))?;
        Ok(id)
    }

    fn patient(&mut self, p: &PatientFacts) -> Result<EntityUid, PolicyError> {
        let t = self.tenant(p.tenant)?;
        let id = uid("Patient", &p.id.to_string())?;
        let mut attrs = HashMap::from([
            ("tenant".to_owned(), RestrictedExpression::new_entity_uid(t.clone())),
            ("careTeam".to_owned(), users(&p.care_team)?),
            ("deniedCategories".to_owned(), strings(&p.denied_categories)),
            ("deniedRecipients".to_owned(), users(&p.denied_recipients)?),
            ("readScope".to_owned(), s("system/Patient.read")),
            ("writeScope".to_owned(), s("system/Patient.write")),
        ]);
        if let Some(a) = p.account {
            attrs.insert(
                "account".to_owned(),
                RestrictedExpression::new_entity_uid(uid("User", &a.to_string())?),
            );
        }
        self.add(id.clone(), attrs, HashSet::from([t]))?;
        Ok(id)
    }
}

impl PolicyEngine {
    /// Parses the schema and the shipped policies and validates the policies against it.
    pub fn new() -> Result<Self, PolicyError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|e| PolicyError::Engine(e.to_string()))?;
        let policies =
            PolicySet::from_str(DEFAULT_POLICIES).map_err(|e| PolicyError::Parse(e.to_string()))?;
        let engine = Self { schema, policies, authorizer: Authorizer::new() };
        engine.validate(&engine.policies)?;
        Ok(engine)
    }

    fn validate(&self, set: &PolicySet) -> Result<(), PolicyError> {
        let result = Validator::new(self.schema.clone()).validate(set, ValidationMode::Strict);
        if result.validation_passed() {
            Ok(())
        } else {
            let msgs: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            Err(PolicyError::Invalid(msgs.join("; ")))
        }
    }

    /// Checks an organisation's own policies: parseable, `forbid` only, and valid against
    /// the schema together with the shipped set. Returns the set to pass to [`decide`].
    ///
    /// [`decide`]: PolicyEngine::decide
    pub fn tenant_policies(&self, src: &str) -> Result<PolicySet, PolicyError> {
        let set = PolicySet::from_str(src).map_err(|e| PolicyError::Parse(e.to_string()))?;
        for p in set.policies() {
            if p.effect() != Effect::Forbid {
                return Err(PolicyError::NotForbid(p.id().to_string()));
            }
        }
        let mut combined = self.policies.clone();
        for p in set.policies() {
            // Renamed on the way in so a tenant's ids never collide with the shipped ones.
            let name = p.annotation("id").map_or_else(|| p.id().to_string(), str::to_owned);
            let renamed = p.new_id(cedar_policy::PolicyId::new(format!("tenant.{name}")));
            combined.add(renamed).map_err(|e| PolicyError::Parse(e.to_string()))?;
        }
        self.validate(&combined)?;
        Ok(combined)
    }

    /// Decides one request. `policies` is the tenant's combined set, or `None` for the
    /// shipped policies alone. Any error building the request is a refusal.
    pub fn decide(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
        context: &AccessContext,
        policies: Option<&PolicySet>,
    ) -> Verdict {
        match self.try_decide(principal, action, resource, context, policies) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "access request could not be evaluated; refused");
                Verdict { allowed: false, policies: Vec::new() }
            }
        }
    }

    fn try_decide(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
        context: &AccessContext,
        policies: Option<&PolicySet>,
    ) -> Result<Verdict, PolicyError> {
        let mut b = Builder { entities: Vec::new(), seen: HashSet::new() };
        let p = match principal {
            Principal::User { id, tenant, role } => b.user(*id, *tenant, Some(*role))?,
            Principal::Client { id, tenant, scopes } => {
                let t = b.tenant(*tenant)?;
                let cid = uid("Client", id)?;
                let attrs = HashMap::from([
                    ("tenant".to_owned(), RestrictedExpression::new_entity_uid(t.clone())),
                    ("scopes".to_owned(), strings(scopes)),
                ]);
                b.add(cid.clone(), attrs, HashSet::from([t]))?;
                cid
            }
            Principal::VisitGuest { visit, tenant, patient } => {
                let t = b.tenant(*tenant)?;
                let gid = uid("VisitGuest", &visit.to_string())?;
                // The patient is referenced, not described: comparing references needs no
                // entity, and the resource's own description of the patient stays the one
                // policies read.
                let attrs = HashMap::from([
                    ("tenant".to_owned(), RestrictedExpression::new_entity_uid(t.clone())),
                    (
                        "patient".to_owned(),
                        RestrictedExpression::new_entity_uid(uid("Patient", &patient.to_string())?),
                    ),
                ]);
                b.add(gid.clone(), attrs, HashSet::from([t]))?;
                gid
            }
        };
        let r = match resource {
            Resource::Patient(facts) => b.patient(facts)?,
            Resource::Record { id, resource_type, patient, category, restricted } => {
                let pid = b.patient(patient)?;
                let t = b.tenant(patient.tenant)?;
                let rid = uid("Record", &format!("{resource_type}/{id}"))?;
                let attrs = HashMap::from([
                    ("tenant".to_owned(), RestrictedExpression::new_entity_uid(t)),
                    ("patient".to_owned(), RestrictedExpression::new_entity_uid(pid.clone())),
                    ("category".to_owned(), s(category)),
                    (
                        "sensitivity".to_owned(),
                        s(if *restricted { "restricted" } else { "normal" }),
                    ),
                    ("readScope".to_owned(), s(&format!("system/{resource_type}.read"))),
                    ("writeScope".to_owned(), s(&format!("system/{resource_type}.write"))),
                ]);
                b.add(rid.clone(), attrs, HashSet::from([pid]))?;
                rid
            }
            Resource::Appointment { id, tenant, patient, clinicians } => {
                let pid = b.patient(patient)?;
                let t = b.tenant(*tenant)?;
                let aid = uid("Appointment", id)?;
                let attrs = HashMap::from([
                    ("tenant".to_owned(), RestrictedExpression::new_entity_uid(t.clone())),
                    ("patient".to_owned(), RestrictedExpression::new_entity_uid(pid)),
                    ("clinicians".to_owned(), users(clinicians)?),
                ]);
                b.add(aid.clone(), attrs, HashSet::from([t]))?;
                aid
            }
            Resource::AuditLog(tenant) => {
                let t = b.tenant(*tenant)?;
                let lid = uid("AuditLog", &tenant.to_string())?;
                let attrs = HashMap::from([(
                    "tenant".to_owned(),
                    RestrictedExpression::new_entity_uid(t.clone()),
                )]);
                b.add(lid.clone(), attrs, HashSet::from([t]))?;
                lid
            }
            Resource::Tenant(tenant) => b.tenant(*tenant)?,
            Resource::Directory { resource_type, tenant } => {
                let t = b.tenant(*tenant)?;
                let did = uid("Directory", resource_type)?;
                let attrs = HashMap::from([
                    ("tenant".to_owned(), RestrictedExpression::new_entity_uid(t.clone())),
                    ("readScope".to_owned(), s(&format!("system/{resource_type}.read"))),
                    ("writeScope".to_owned(), s(&format!("system/{resource_type}.write"))),
                ]);
                b.add(did.clone(), attrs, HashSet::from([t]))?;
                did
            }
        };
        let ctx = Context::from_pairs([
            ("purpose".to_owned(), s(&context.purpose)),
            ("breakGlass".to_owned(), RestrictedExpression::new_bool(context.break_glass)),
        ])
        .map_err(|e| PolicyError::Engine(e.to_string()))?;
        let request = Request::new(p, action_uid(action)?, r, ctx, Some(&self.schema))
            .map_err(|e| PolicyError::Engine(e.to_string()))?;
        let entities = Entities::from_entities(b.entities, None)
            .map_err(|e| PolicyError::Engine(e.to_string()))?;
        let set = policies.unwrap_or(&self.policies);
        let response = self.authorizer.is_authorized(&request, set, &entities);
        Ok(Verdict {
            allowed: response.decision() == Decision::Allow,
            // Named by their `@id` annotation where they have one.
            policies: response
                .diagnostics()
                .reason()
                .map(|id| match set.policy(id).and_then(|p| p.annotation("id")) {
                    Some(name) if !id.to_string().starts_with("tenant.") => name.to_owned(),
                    _ => id.to_string(),
                })
                .collect(),
        })
    }
}

pub mod break_glass;

#[cfg(test)]
mod tests;
