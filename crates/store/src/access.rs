//! Care-team assignments.

use telesafe_core::access::CareTeamRepository;
use telesafe_core::{PatientId, RepoError, TenantId, Timestamp, UserId};

use crate::Store;
use crate::tx::{Scope, on_tx, repo_err};

impl CareTeamRepository for Store {
    async fn add_to_care_team(
        &self,
        tenant: TenantId,
        patient: PatientId,
        user: UserId,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO care_team_members (tenant_id, patient_id, user_id, added_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (patient_id, user_id) DO NOTHING")
            .bind(tenant.to_string())
            .bind(patient.to_string())
            .bind(user.to_string())
            .bind(now.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }

    async fn care_teams(&self, tenant: TenantId) -> Result<Vec<(PatientId, UserId)>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<(String, String)> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT patient_id, user_id FROM care_team_members WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        rows.into_iter()
            .map(|(p, u)| {
                let bad = |_| RepoError::Backend("stored care team failed to parse".into());
                Ok((p.parse().map_err(bad)?, u.parse().map_err(bad)?))
            })
            .collect()
    }
}
