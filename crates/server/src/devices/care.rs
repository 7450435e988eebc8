//! The care team's side of device readings: each patient's thresholds (sealed under the
//! patient's key) and the alerts raised when a reading crosses them.

use telesafe_core::devices::vitals::{Breach, Threshold};
use telesafe_core::devices::{ClinicalAlert, DeviceRepository};
use telesafe_core::{PatientId, TenantId};

use crate::error::AppError;
use crate::state::AppState;

const THRESHOLDS_AAD: &str = "telesafe/thresholds/v1";

fn thresholds_aad(tenant: TenantId, patient: PatientId) -> String {
    format!("{THRESHOLDS_AAD}|{tenant}|{patient}")
}

/// A patient's thresholds as the care team set them (empty: the defaults apply).
pub(crate) async fn thresholds(
    state: &AppState,
    tenant: TenantId,
    patient: PatientId,
) -> Result<Vec<Threshold>, AppError> {
    let Some(sealed) = state.store.thresholds(tenant, patient).await? else {
        return Ok(Vec::new());
    };
    let key = state
        .keys
        .patient(&state.store, tenant, patient, state.clock.now(), false)
        .await
        .map_err(AppError::internal)?;
    let plain = key
        .open(&sealed, thresholds_aad(tenant, patient).as_bytes())
        .map_err(AppError::internal)?;
    serde_json::from_slice(&plain).map_err(AppError::internal)
}

/// Seals and stores a patient's thresholds.
pub(crate) async fn set_thresholds(
    state: &AppState,
    tenant: TenantId,
    patient: PatientId,
    list: &[Threshold],
    by: &str,
) -> Result<(), AppError> {
    let now = state.clock.now();
    let key = state
        .keys
        .patient(&state.store, tenant, patient, now, true)
        .await
        .map_err(AppError::internal)?;
    let plain = serde_json::to_vec(list).map_err(AppError::internal)?;
    let sealed =
        key.seal(&plain, thresholds_aad(tenant, patient).as_bytes()).map_err(AppError::internal)?;
    state.store.set_thresholds(tenant, patient, &sealed, by, now).await?;
    super::caches::forget_thresholds(state, patient);
    Ok(())
}

pub(super) fn alert_aad(tenant: TenantId, patient: PatientId, id: &str) -> String {
    format!("telesafe/clinical-alert/v1|{tenant}|{patient}|{id}")
}

/// Opens an alert's sealed body: what crossed which threshold.
pub(crate) fn open_alert(
    key: &telesafe_crypto::keys::SealingKey,
    a: &ClinicalAlert,
) -> Option<Breach> {
    let plain = key.open(&a.body, alert_aad(a.tenant, a.patient, &a.id).as_bytes()).ok()?;
    serde_json::from_slice(&plain).ok()
}
