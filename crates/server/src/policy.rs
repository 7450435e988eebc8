//! The policy set a tenant's requests are decided with: the shipped policies plus the
//! organisation's own forbid policies.

use std::sync::Arc;

use cedar_policy::PolicySet;
use telesafe_core::TenantId;
use telesafe_core::access::TenantPolicyRepository;

use crate::error::AppError;
use crate::state::AppState;

/// The tenant's combined set, or `None` when it has no policies of its own. A stored
/// policy that no longer validates is an error, never silently dropped: dropping a
/// `forbid` would widen access. Parsing and validating happen once per change of the
/// stored source (the source is read on every call, so a change applies at once, on every
/// node).
pub async fn tenant_set(
    state: &AppState,
    tenant: TenantId,
) -> Result<Option<Arc<PolicySet>>, AppError> {
    let source = state.store.tenant_policy_source(tenant).await?;
    if source.trim().is_empty() {
        return Ok(None);
    }
    if let Some(set) = state.policy_cache.get(&tenant).filter(|(s, _)| *s == source) {
        return Ok(Some(set.1));
    }
    let set = state.policy.tenant_policies(&source).map(Arc::new).map_err(|e| {
        AppError::internal(format!("the organisation's stored policies no longer validate: {e}"))
    })?;
    state.policy_cache.insert(tenant, (source, set.clone()));
    Ok(Some(set))
}
