//! Break-glass: a clinician outside a patient's care team asks for emergency access with a
//! reason (a category and free text), after a fresh second factor. The policy decides
//! whether they may ask; a grant lasts a bounded time (60 minutes by default), raises a
//! security alert for review, and every access under it is audited with purpose
//! `emergency` and the grant's id, so the patient's access log shows the reason.

use std::future::Future;
use std::time::Duration;

use super::{AccessContext, Action, PatientFacts, PolicyEngine, Principal, Resource};
use crate::clock::Timestamp;
use crate::identity::Session;
use crate::identity::{User, stepup};
use crate::ids::{PatientId, TenantId, UserId};
use crate::repo::RepoError;

/// How long a grant lasts.
pub const GRANT_LIFETIME: Duration = Duration::from_secs(60 * 60);
const MAX_REASON_CHARS: usize = 500;

/// Why emergency access is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// The patient cannot consent and needs care now.
    Emergency,
    /// Covering for the patient's own clinician.
    Covering,
    /// Anything else (the text must say what).
    Other,
}

impl Category {
    pub const ALL: [Category; 3] = [Category::Emergency, Category::Covering, Category::Other];

    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Emergency => "emergency",
            Category::Covering => "covering",
            Category::Other => "other",
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Category::Emergency => "Medical emergency",
            Category::Covering => "Covering for the patient's clinician",
            Category::Other => "Other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// An emergency access grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub patient_id: PatientId,
    pub user_id: UserId,
    pub category: Category,
    pub reason: String,
    pub granted_at: Timestamp,
    pub expires_at: Timestamp,
}

pub trait BreakGlassRepository: Send + Sync {
    /// Stores the grant and its security alert in one transaction.
    fn create_grant(&self, g: &Grant) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// The user's grants that are active at `now`.
    fn active_grants(
        &self,
        tenant: TenantId,
        user: UserId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Grant>, RepoError>> + Send;
    /// Every grant for one patient (for showing reasons in their access log).
    fn grants_for_patient(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> impl Future<Output = Result<Vec<Grant>, RepoError>> + Send;
    /// Open (unreviewed) security alerts, newest first: (kind, user, patient, grant, at).
    fn open_alerts(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<Alert>, RepoError>> + Send;
}

/// A security alert for review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub kind: String,
    pub user_id: Option<UserId>,
    pub patient_id: Option<PatientId>,
    pub ref_id: String,
    pub created_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum BreakGlassError {
    #[error("only clinicians may ask for emergency access")]
    NotAllowed,
    #[error("confirm it is you first: emergency access needs a recent second step")]
    StepUpRequired,
    #[error("say why emergency access is needed, in at most {MAX_REASON_CHARS} characters")]
    Reason,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Grants `user` emergency access to `patient` if the policy lets them ask, the session's
/// second factor is fresh, and a reason is given.
#[allow(clippy::too_many_arguments, reason = "each input is a distinct fact of the request")]
pub async fn request<R: BreakGlassRepository>(
    repo: &R,
    policy: &PolicyEngine,
    user: &User,
    session: &Session,
    patient: PatientFacts,
    category: Category,
    reason: &str,
    now: Timestamp,
) -> Result<Grant, BreakGlassError> {
    let who = Principal::User { id: user.id, tenant: user.tenant_id, role: user.role };
    let ctx = AccessContext { purpose: "emergency".into(), break_glass: false };
    if !policy
        .decide(&who, Action::BreakGlass, &Resource::Patient(patient.clone()), &ctx, None)
        .allowed
    {
        return Err(BreakGlassError::NotAllowed);
    }
    if !stepup::is_fresh(session, now) {
        return Err(BreakGlassError::StepUpRequired);
    }
    let reason = reason.trim();
    if reason.is_empty()
        || reason.chars().count() > MAX_REASON_CHARS
        || reason.chars().any(|c| c.is_control() && c != '\n')
    {
        return Err(BreakGlassError::Reason);
    }
    let grant = Grant {
        id: uuid::Uuid::now_v7(),
        tenant_id: user.tenant_id,
        patient_id: patient.id,
        user_id: user.id,
        category,
        reason: reason.to_owned(),
        granted_at: now,
        expires_at: now.plus(GRANT_LIFETIME),
    };
    repo.create_grant(&grant).await?;
    tracing::warn!(
        security_event = "break_glass",
        user = %user.id,
        patient = %patient.id,
        grant = %grant.id,
        "emergency access granted; a security officer must review it"
    );
    Ok(grant)
}
