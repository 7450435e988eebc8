//! The policy set a tenant's requests are decided with: the shipped policies plus the
//! organisation's own forbid policies.

use cedar_policy::PolicySet;
use telesafe_core::TenantId;
use telesafe_core::access::TenantPolicyRepository;

use crate::error::AppError;
use crate::state::AppState;

/// The tenant's combined set, or `None` when it has no policies of its own. A stored
/// policy that no longer validates is an error, never silently dropped: dropping a
/// `forbid` would widen access.
pub async fn tenant_set(state: &AppState, tenant: TenantId) -> Result<Option<PolicySet>, AppError> {
    let source = state.store.tenant_policy_source(tenant).await?;
    if source.trim().is_empty() {
        return Ok(None);
    }
    state.policy.tenant_policies(&source).map(Some).map_err(|e| {
        AppError::internal(format!("the organisation's stored policies no longer validate: {e}"))
    })
}
