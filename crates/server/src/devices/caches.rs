//! Short-lived caches of the telemetry path.

use telesafe_core::devices::DeviceRepository;
use telesafe_core::devices::readings::{KIND_PARAMS, KindEntry};
use telesafe_core::devices::vitals::{self, Threshold};
use telesafe_core::records::IndexEntry;
use telesafe_core::records::keys::{KeyRing, TenantKeys};
use telesafe_core::{PatientId, TenantId};
use telesafe_proto::telemetry::Reading;

use super::care::thresholds;
use crate::error::AppError;
use crate::state::AppState;

/// Short-lived caches for the telemetry path, which otherwise reads the same rows for
/// every batch: device models (never edited in place), organisation codes, and patients'
/// thresholds (dropped here when changed on this node; other nodes see a change within
/// `CACHE_TTL`). Devices themselves are always read fresh: a revocation or key rotation
/// takes effect at once.
#[derive(Clone)]
pub struct DeviceCaches {
    models: moka::sync::Cache<(TenantId, String), telesafe_core::devices::DeviceModel>,
    organisations: moka::sync::Cache<String, Option<TenantId>>,
    thresholds: moka::sync::Cache<PatientId, Vec<Threshold>>,
    /// Each tenant's blinded kinds by Observation code (the tenant's index key never
    /// changes, so neither do they).
    kinds: moka::sync::Cache<(TenantId, String), Kind>,
    /// Whether a device public key is sound (a fact of the key's bytes, never stale).
    sound_keys: moka::sync::Cache<Vec<u8>, bool>,
    /// Whether a device's key is unsound, by device id. Never stale either: a rotation
    /// must come from a sound key and go to a sound one, so no device changes sides.
    unprovable_devices: moka::sync::Cache<String, bool>,
}

/// A blinded kind and the blind index values it answers to.
pub(super) type Kind = std::sync::Arc<(String, Vec<KindEntry>)>;

/// How long a cached model, organisation or threshold list is used.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl std::fmt::Debug for DeviceCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCaches").finish_non_exhaustive()
    }
}

impl Default for DeviceCaches {
    fn default() -> Self {
        Self {
            models: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CACHE_TTL)
                .build(),
            organisations: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CACHE_TTL)
                .build(),
            thresholds: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .build(),
            kinds: moka::sync::Cache::builder().max_capacity(10_000).build(),
            sound_keys: moka::sync::Cache::builder().max_capacity(100_000).build(),
            unprovable_devices: moka::sync::Cache::builder().max_capacity(100_000).build(),
        }
    }
}

/// Drops a model from this node's cache after its policy changed.
pub(crate) fn forget_model(state: &AppState, tenant: TenantId, id: &str) {
    state.device_caches.models.invalidate(&(tenant, id.to_owned()));
}

pub(super) async fn cached_model(
    state: &AppState,
    tenant: TenantId,
    id: &str,
) -> Result<Option<telesafe_core::devices::DeviceModel>, AppError> {
    let k = (tenant, id.to_owned());
    if let Some(m) = state.device_caches.models.get(&k) {
        return Ok(Some(m));
    }
    let m = state.store.model(tenant, id).await?;
    if let Some(m) = &m {
        state.device_caches.models.insert(k, m.clone());
    }
    Ok(m)
}

pub(super) async fn cached_thresholds(
    state: &AppState,
    tenant: TenantId,
    patient: PatientId,
) -> Result<Vec<Threshold>, AppError> {
    if let Some(t) = state.device_caches.thresholds.get(&patient) {
        return Ok(t);
    }
    let t = thresholds(state, tenant, patient).await?;
    state.device_caches.thresholds.insert(patient, t.clone());
    Ok(t)
}

/// The organisation an MQTT topic names, by its code.
pub(super) async fn cached_organisation(
    state: &AppState,
    code: &str,
) -> Result<Option<TenantId>, AppError> {
    use telesafe_core::identity::{TenantRepository, TenantSlug};
    if let Some(t) = state.device_caches.organisations.get(code) {
        return Ok(t);
    }
    let t = match TenantSlug::parse(code) {
        Ok(slug) => state.store.tenant_by_slug(&slug).await?.map(|t| t.id),
        Err(_) => None,
    };
    state.device_caches.organisations.insert(code.to_owned(), t);
    Ok(t)
}

/// Drops a patient's thresholds from this node's cache after they changed.
pub(super) fn forget_thresholds(state: &AppState, patient: PatientId) {
    state.device_caches.thresholds.invalidate(&patient);
}

/// The kind of an Observation with `code` in a tenant: its blinded code, and the blind
/// index values (code, category, status) a search finds it by, computed from a rendered
/// Observation of that code exactly as an ordinary resource's index is.
pub(super) fn cached_kind(state: &AppState, tk: &TenantKeys, tenant: TenantId, code: &str) -> Kind {
    let k = (tenant, code.to_owned());
    if let Some(entries) = state.device_caches.kinds.get(&k) {
        return entries;
    }
    let reading = |code: &str| Reading {
        at: "2000-01-01T00:00:00Z".into(),
        code: code.into(),
        unit: String::new(),
        value: "0".into(),
    };
    let (readings, pair) = if code == vitals::BP_PANEL {
        (vec![reading(vitals::SYSTOLIC), reading(vitals::DIASTOLIC)], Some(1))
    } else {
        (vec![reading(code)], None)
    };
    let j = vitals::Judgement {
        i: 0,
        pair,
        interp: Vec::new(),
        suspicious: Vec::new(),
        breaches: Vec::new(),
    };
    let resource = vitals::render("-", "-", &readings, &j, "-");
    let kind = KeyRing::blind(tk, "kind", code);
    let (index, _) =
        telesafe_core::records::search::index_entries("Observation", &resource, |p, v| {
            KeyRing::blind(tk, p, v)
        });
    let entries: Vec<KindEntry> = index
        .into_iter()
        .filter_map(|e| match e {
            IndexEntry::Token { param, hash } if KIND_PARAMS.contains(&param.as_str()) => {
                Some(KindEntry { kind: kind.clone(), param, value: hash })
            }
            _ => None,
        })
        .collect();
    let entries = std::sync::Arc::new((kind, entries));
    state.device_caches.kinds.insert(k, entries.clone());
    entries
}

/// Whether a device's public key is one only its holder can sign for
/// ([`telesafe_crypto::sign::ed25519_public_key_is_sound`]). Enrolment and rotation refuse
/// other keys, but a database from before that check (2026-12-05) may hold one, and
/// anyone can sign for it. Checking takes a point decompression and a multiplication by
/// the group order (tens of microseconds), so each key's answer is remembered.
pub(crate) fn key_is_sound(state: &AppState, key: &[u8]) -> bool {
    let cache = &state.device_caches.sound_keys;
    if let Some(sound) = cache.get(key) {
        return sound;
    }
    let sound = telesafe_crypto::sign::ed25519_public_key_is_sound(key);
    cache.insert(key.to_vec(), sound);
    sound
}

/// Whether what `device` filed proves nothing: it holds a key anyone can sign for, so it
/// was enrolled before enrolment checked keys, and the readings it filed then were
/// accepted on signatures anyone could have made. They stay in the record, shown as
/// unverifiable ([`vitals::mark_unprovable`]) rather than as verified. An unknown device
/// is not unprovable (its readings, if any, are judged elsewhere).
pub(crate) async fn device_unprovable(state: &AppState, device: &str) -> Result<bool, AppError> {
    if let Some(u) = state.device_caches.unprovable_devices.get(device) {
        return Ok(u);
    }
    let u = match state.store.device(device).await? {
        Some(d) => !key_is_sound(state, &d.public_key),
        None => false,
    };
    state.device_caches.unprovable_devices.insert(device.to_owned(), u);
    Ok(u)
}
