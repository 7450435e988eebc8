//! Writes by actors that are not signed-in people (the system seeding the demo, devices
//! filing readings): the same validation, sealing, indexing and audit as the API's writes.

use serde_json::{Value, json};
use telesafe_core::audit::Purpose;
use telesafe_core::records::ResourceRepository;
use telesafe_core::records::StoredResource;
use telesafe_core::records::fhir;
use telesafe_core::{PatientId, TenantId};

use super::{FhirError, seal_and_store};
use crate::audit::{Access, Actor, record_as};
use crate::state::AppState;

/// Writes a resource as the system itself (demo seeding, imports): validated, sealed,
/// indexed and audited like any write, with the system as the actor. Returns the version.
pub async fn write_as_system(
    state: &AppState,
    tenant: TenantId,
    resource_type: &str,
    id: &str,
    patient: Option<PatientId>,
    resource: Value,
) -> Result<u32, FhirError> {
    let actor = Actor {
        tenant: tenant.to_string(),
        kind: telesafe_core::audit::ActorKind::System,
        id: "telesafe".to_owned(),
        role: "system".to_owned(),
        source: String::new(),
        session: String::new(),
    };
    write_as(state, &actor, tenant, resource_type, id, patient, resource).await
}

/// Writes a resource for a non-person actor (the system, a device): validated, sealed,
/// indexed and audited like any write. Returns the version.
pub async fn write_as(
    state: &AppState,
    actor: &Actor,
    tenant: TenantId,
    resource_type: &str,
    id: &str,
    patient: Option<PatientId>,
    mut resource: Value,
) -> Result<u32, FhirError> {
    let issues = fhir::validate(resource_type, &resource);
    if !issues.is_empty() {
        return Err(FhirError::invalid(issues));
    }
    let store = &state.store;
    let now = state.clock.now();
    let version = store.current(tenant, resource_type, id).await?.map_or(1, |r| r.version + 1);
    resource["id"] = json!(id);
    if !resource["meta"].is_object() {
        resource["meta"] = json!({});
    }
    resource["meta"]["versionId"] = json!(version.to_string());
    resource["meta"]["lastUpdated"] = json!(now.to_rfc3339());
    record_as(
        state,
        actor,
        &[Access {
            action: if version == 1 { "create" } else { "update" },
            resource_type,
            resource_id: id.to_owned(),
            patient_id: patient.map(|p| p.to_string()).unwrap_or_default(),
            purpose: if actor.kind == telesafe_core::audit::ActorKind::Device {
                Purpose::Treatment
            } else {
                Purpose::Operations
            },
            outcome: "success",
        }],
    )
    .await?;
    let key = match patient {
        Some(p) => state.keys.patient(store, tenant, p, now, true).await.map(|k| (*k).clone()),
        None => state.keys.tenant(store, tenant, now).await.map(|k| k.directory_key().clone()),
    }
    .map_err(FhirError::internal)?;
    let row = StoredResource {
        tenant,
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        version,
        patient,
        last_updated: now,
        deleted: false,
        category: fhir::policy_category(resource_type, &resource).to_owned(),
        restricted: fhir::is_restricted(&resource),
        body: Vec::new(),
    };
    seal_and_store(state, &key, row, &resource).await?;
    Ok(version)
}
