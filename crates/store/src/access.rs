//! Care-team assignments.

use telesafe_core::access::{CareTeamRepository, TenantPolicyRepository};
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

    async fn care_team_of(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> Result<Vec<UserId>, RepoError> {
        self.care_team_rows(tenant, patient)
            .await?
            .into_iter()
            .map(|u| {
                u.parse().map_err(|_| RepoError::Backend("stored care team failed to parse".into()))
            })
            .collect()
    }
}

impl Store {
    async fn care_team_rows(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> Result<Vec<String>, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let rows: Vec<String> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT user_id FROM care_team_members WHERE tenant_id = $1 AND patient_id = $2")
            .bind(tenant.to_string())
            .bind(patient.to_string())
            .fetch_all(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(rows)
    }
}

impl TenantPolicyRepository for Store {
    async fn tenant_policy_source(&self, tenant: TenantId) -> Result<String, RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let src: Option<String> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT source FROM tenant_policies WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_optional(&mut **c).await)
        .map_err(repo_err)?;
        tx.commit().await?;
        Ok(src.unwrap_or_default())
    }

    async fn set_tenant_policy_source(
        &self,
        tenant: TenantId,
        source: &str,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO tenant_policies (tenant_id, source, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET source = excluded.source, updated_at = excluded.updated_at")
            .bind(tenant.to_string())
            .bind(source)
            .bind(now.unix_millis())
            .execute(&mut **c).await.map(|_| ()))
        .map_err(repo_err)?;
        tx.commit().await
    }
}

mod break_glass {
    use telesafe_core::access::break_glass::{Alert, BreakGlassRepository, Category, Grant};
    use telesafe_core::{PatientId, RepoError, TenantId, Timestamp, UserId};

    use crate::Store;
    use crate::tx::{Scope, on_tx, repo_err};

    /// (id, tenant_id, patient_id, user_id, category, reason, granted_at, expires_at)
    type GrantRow = (String, String, String, String, String, String, i64, i64);
    /// (kind, user_id, patient_id, ref_id, created_at)
    type AlertRow = (String, Option<String>, Option<String>, String, i64);

    fn grant(r: GrantRow) -> Result<Grant, RepoError> {
        let bad = || RepoError::Backend("stored break-glass grant failed to parse".into());
        Ok(Grant {
            id: r.0.parse().map_err(|_| bad())?,
            tenant_id: r.1.parse().map_err(|_| bad())?,
            patient_id: r.2.parse().map_err(|_| bad())?,
            user_id: r.3.parse().map_err(|_| bad())?,
            category: Category::parse(&r.4).ok_or_else(bad)?,
            reason: r.5,
            granted_at: Timestamp::from_unix_millis(r.6),
            expires_at: Timestamp::from_unix_millis(r.7),
        })
    }

    impl BreakGlassRepository for Store {
        async fn create_grant(&self, g: &Grant) -> Result<(), RepoError> {
            let mut tx = self.begin(Scope::Tenant(g.tenant_id)).await?;
            on_tx!(&mut tx, c => sqlx::query(
                "INSERT INTO break_glass_grants (id, tenant_id, patient_id, user_id, category, \
                 reason, granted_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(g.id.to_string())
                .bind(g.tenant_id.to_string())
                .bind(g.patient_id.to_string())
                .bind(g.user_id.to_string())
                .bind(g.category.as_str())
                .bind(&g.reason)
                .bind(g.granted_at.unix_millis())
                .bind(g.expires_at.unix_millis())
                .execute(&mut **c).await.map(|_| ()))
            .map_err(repo_err)?;
            on_tx!(&mut tx, c => sqlx::query(
                "INSERT INTO security_alerts (id, tenant_id, kind, user_id, patient_id, ref_id, \
                 created_at) VALUES ($1, $2, 'break_glass', $3, $4, $5, $6)")
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(g.tenant_id.to_string())
                .bind(g.user_id.to_string())
                .bind(g.patient_id.to_string())
                .bind(g.id.to_string())
                .bind(g.granted_at.unix_millis())
                .execute(&mut **c).await.map(|_| ()))
            .map_err(repo_err)?;
            tx.commit().await
        }

        async fn active_grants(
            &self,
            tenant: TenantId,
            user: UserId,
            now: Timestamp,
        ) -> Result<Vec<Grant>, RepoError> {
            let mut tx = self.begin(Scope::Tenant(tenant)).await?;
            let rows: Vec<GrantRow> = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT id, tenant_id, patient_id, user_id, category, reason, granted_at, expires_at \
                 FROM break_glass_grants WHERE tenant_id = $1 AND user_id = $2 \
                 AND granted_at <= $3 AND expires_at > $3")
                .bind(tenant.to_string())
                .bind(user.to_string())
                .bind(now.unix_millis())
                .fetch_all(&mut **c).await)
            .map_err(repo_err)?;
            tx.commit().await?;
            rows.into_iter().map(grant).collect()
        }

        async fn grants_for_patient(
            &self,
            tenant: TenantId,
            patient: PatientId,
        ) -> Result<Vec<Grant>, RepoError> {
            let mut tx = self.begin(Scope::Tenant(tenant)).await?;
            let rows: Vec<GrantRow> = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT id, tenant_id, patient_id, user_id, category, reason, granted_at, expires_at \
                 FROM break_glass_grants WHERE tenant_id = $1 AND patient_id = $2 ORDER BY granted_at")
                .bind(tenant.to_string())
                .bind(patient.to_string())
                .fetch_all(&mut **c).await)
            .map_err(repo_err)?;
            tx.commit().await?;
            rows.into_iter().map(grant).collect()
        }

        async fn open_alerts(&self, tenant: TenantId) -> Result<Vec<Alert>, RepoError> {
            let mut tx = self.begin(Scope::Tenant(tenant)).await?;
            let rows: Vec<AlertRow> = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT kind, user_id, patient_id, ref_id, created_at FROM security_alerts \
                 WHERE tenant_id = $1 AND reviewed_at IS NULL ORDER BY created_at DESC LIMIT 100")
                .bind(tenant.to_string())
                .fetch_all(&mut **c).await)
            .map_err(repo_err)?;
            tx.commit().await?;
            rows.into_iter()
                .map(|(kind, user, patient, ref_id, at)| {
                    let bad = |_| RepoError::Backend("stored alert failed to parse".into());
                    Ok(Alert {
                        kind,
                        user_id: user.map(|u| u.parse()).transpose().map_err(bad)?,
                        patient_id: patient.map(|p| p.parse()).transpose().map_err(bad)?,
                        ref_id,
                        created_at: Timestamp::from_unix_millis(at),
                    })
                })
                .collect()
        }
    }
}
