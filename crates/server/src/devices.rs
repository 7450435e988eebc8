//! Device endpoints over HTTPS (docs/device-protocol.md): enrolment with a one-time code,
//! and telemetry batches, each decided by `core::devices::decide`, stored exactly once,
//! and turned into FHIR Observations with provenance. Answers to devices carry the
//! server's Ed25519 signature over the body (`Telesafe-Signature`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use telesafe_core::PatientId;
use telesafe_core::audit::{ActorKind, Purpose};
use telesafe_core::devices::readings::{
    BatchRecord, FiledReading, KindEntry, batch_aad, reading_id,
};
use telesafe_core::devices::vitals::{self, Threshold};
use telesafe_core::devices::{
    ClinicalAlert, Device, DeviceRepository, FiledBatch, Outcome, Release, SignatureCheck,
    StoredBatch, batch_signatures_valid, decide_checked,
};
use telesafe_crypto::OpaqueToken;
use telesafe_proto::telemetry::{Ack, Reason, SignedBatch, parse};

mod caches;
mod care;
mod writer;

pub use caches::DeviceCaches;
use caches::{cached_kind, cached_model, cached_organisation, cached_thresholds};
pub(crate) use caches::{device_unprovable, forget_model, key_is_sound};
use care::alert_aad;
pub(crate) use care::{open_alert, set_thresholds, thresholds};
pub use writer::DeviceWriter;
pub(crate) use writer::spread;

use crate::audit::{Access, Actor, record_as, record_each};
use crate::error::AppError;
use crate::http::json::ValidJson;
use crate::state::AppState;

/// The prefix of the message the server signs over an answer's body.
pub const ACK_CONTEXT: &[u8] = b"telesafe-ack-v1\n";
/// The most batches one request may carry.
pub const MAX_BATCHES: usize = 100;

/// An answer to a device as JSON bytes and their base64url server signature over
/// `ACK_CONTEXT` and those bytes: the `Telesafe-Signature` header on HTTPS, the first line
/// of an MQTT ack message.
pub(crate) fn signed_answer(state: &AppState, body: &impl Serialize) -> (Vec<u8>, String) {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut msg = ACK_CONTEXT.to_vec();
    msg.extend_from_slice(&bytes);
    let sig = telesafe_crypto::sign::encode_base64url(&state.device_signer.sign(&msg));
    (bytes, sig)
}

/// A JSON answer signed by the server.
fn signed(state: &AppState, status: StatusCode, body: &impl Serialize) -> Response {
    let (bytes, sig) = signed_answer(state, body);
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&sig) {
        resp.headers_mut().insert("telesafe-signature", v);
    }
    resp
}

fn text_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.chars().any(char::is_control)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    code: String,
    /// base64url of the 32-byte Ed25519 public key.
    public_key: String,
    serial: String,
    firmware: String,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest").finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
pub struct EnrollResponse {
    device_id: String,
    /// base64url of the server's Ed25519 key that signs every answer.
    server_public_key: String,
}

fn device_actor(tenant: telesafe_core::TenantId, device: &str) -> Actor {
    Actor {
        tenant: tenant.to_string(),
        kind: ActorKind::Device,
        id: device.to_owned(),
        role: "device".to_owned(),
        source: String::new(),
        session: String::new(),
    }
}

/// `POST /api/v1/devices/enroll`.
pub async fn enroll(
    State(state): State<AppState>,
    ValidJson(req): ValidJson<EnrollRequest>,
) -> Result<Response, AppError> {
    let refused = || {
        AppError::InvalidCredentials(
            "the enrolment code is not valid, was already used, or expired".into(),
        )
    };
    let code = OpaqueToken::parse(req.code.trim()).ok_or_else(refused)?;
    let public_key = telesafe_crypto::sign::decode_base64url(&req.public_key)
        .filter(|k| k.len() == 32)
        .ok_or_else(|| {
            AppError::BadRequest("public_key must be base64url of a 32-byte Ed25519 key".into())
        })?;
    // Checked before the code is redeemed: a device with a broken key generator can
    // enrol again with the same code once it has a sound key.
    if !telesafe_crypto::sign::ed25519_public_key_is_sound(&public_key) {
        return Err(AppError::BadRequest(
            "public_key is not a usable Ed25519 key (a small-order or mixed-order point, or a \
             non-canonical encoding); generate a new key pair"
                .into(),
        ));
    }
    if !text_ok(&req.serial) || !text_ok(&req.firmware) {
        return Err(AppError::BadRequest(
            "serial and firmware must be 1-64 printable characters".into(),
        ));
    }
    let now = state.clock.now();
    let e = state.store.redeem_enrollment(&code.hash(), now).await?.ok_or_else(refused)?;
    let model = state.store.model(e.tenant, &e.model_id).await?.ok_or(AppError::NotFound)?;
    let device = Device {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: e.tenant,
        patient: e.patient,
        model_id: model.id.clone(),
        public_key,
        serial: req.serial.clone(),
        firmware: req.firmware.clone(),
        revoked: false,
        last_seq: 0,
        enrolled_at: now,
    };
    state.store.create_device(&device).await?;
    write_fhir_device(&state, &device_actor(e.tenant, &device.id), &device, &model, "active")
        .await?;
    let body = EnrollResponse {
        device_id: device.id,
        server_public_key: telesafe_crypto::sign::encode_base64url(
            &state.device_signer.public_key(),
        ),
    };
    Ok(signed(&state, StatusCode::CREATED, &body))
}

/// Writes the device as FHIR sees it, in the patient's record (a new version each time):
/// `active` at enrolment, `inactive` once revoked.
pub(crate) async fn write_fhir_device(
    state: &AppState,
    actor: &Actor,
    device: &Device,
    model: &telesafe_core::devices::DeviceModel,
    status: &str,
) -> Result<(), AppError> {
    let resource = json!({
        "resourceType": "Device",
        "status": status,
        "patient": {"reference": format!("Patient/{}", device.patient)},
        "manufacturer": model.manufacturer,
        "serialNumber": device.serial,
        "deviceName": [{"name": model.model, "type": "model-name"}],
        "version": [{"value": device.firmware}],
    });
    crate::fhir::write_as(
        state,
        actor,
        device.tenant,
        "Device",
        &device.id,
        Some(device.patient),
        resource,
    )
    .await
    .map(|_| ())
    .map_err(|f| AppError::Internal(f.issues.first().map(|i| i.2.clone()).unwrap_or_default()))
}

/// `POST /api/v1/devices/telemetry`: one signed batch, or an array of up to 100.
pub async fn telemetry(State(state): State<AppState>, body: Bytes) -> Result<Response, AppError> {
    // Each batch is parsed once, from its own bytes in the request (its size on the wire
    // is what `oversized` limits); an array is only split, not decoded twice.
    let items: Vec<&[u8]> = if body.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'[') {
        match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(&body) {
            Ok(items) if items.len() <= MAX_BATCHES => {
                items.into_iter().map(|v| v.get().as_bytes()).collect()
            }
            Ok(_) => {
                return Err(AppError::BadRequest(format!(
                    "at most {MAX_BATCHES} batches per request"
                )));
            }
            Err(_) => return Ok(malformed(&state)),
        }
    } else {
        vec![&body[..]]
    };
    let mut lookups = Lookups::default();
    let parsed: Vec<Result<SignedBatch, Reason>> = items.into_iter().map(parse).collect();
    let ok: Vec<&SignedBatch> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
    let signature = verify_together(&state, &mut lookups, &ok).await?;
    let mut decided = Vec::with_capacity(parsed.len());
    for p in parsed {
        decided.push(match p {
            Ok(b) => prepare(&state, b, &mut lookups, signature).await?,
            Err(reason) => Prepared::Done(Ack::Refused { seq: None, reason }),
        });
    }
    let acks = file_all(&state, decided).await?;
    Ok(signed(&state, StatusCode::OK, &acks))
}

/// The answer to a request that is not JSON.
fn malformed(state: &AppState) -> Response {
    signed(state, StatusCode::OK, &[Ack::Refused { seq: None, reason: Reason::Malformed }])
}

/// Batches that arrived on MQTT topics, as `(organisation, device, payload)`, filed
/// together: one lookup per device, one audit append and one write for the lot. Each
/// topic must name its batch's device and that device's organisation. One
/// acknowledgement per message, in order; a storage failure fails them all (the devices
/// keep their batches and resend them).
pub(crate) async fn on_topics(
    state: &AppState,
    messages: &[(&str, &str, &[u8])],
) -> Result<Vec<Ack>, AppError> {
    let mut lookups = Lookups::default();
    let mut checked = Vec::with_capacity(messages.len());
    for (organisation, device, raw) in messages {
        checked.push(on_topic(state, &mut lookups, organisation, device, raw).await?);
    }
    let ok: Vec<&SignedBatch> = checked.iter().filter_map(|c| c.as_ref().ok()).collect();
    let signature = verify_together(state, &mut lookups, &ok).await?;
    let mut decided = Vec::with_capacity(checked.len());
    for c in checked {
        decided.push(match c {
            Ok(b) => prepare(state, b, &mut lookups, signature).await?,
            Err(done) => done,
        });
    }
    file_all(state, decided).await
}

/// A message's batch, if it parses and its topic names its device and that device's
/// organisation; otherwise its answer.
async fn on_topic(
    state: &AppState,
    lookups: &mut Lookups,
    organisation: &str,
    device: &str,
    raw: &[u8],
) -> Result<Result<SignedBatch, Prepared>, AppError> {
    let b: SignedBatch = match parse(raw) {
        Ok(b) => b,
        Err(reason) => return Ok(Err(Prepared::Done(Ack::Refused { seq: None, reason }))),
    };
    if b.batch.device != device {
        return Ok(Err(Prepared::Done(crate::mqtt::wrong_topic(Some(b.batch.seq)))));
    }
    let tenant = lookup_device(state, lookups, device).await?.map(|(d, _)| d.tenant);
    if tenant.is_some() && cached_organisation(state, organisation).await? != tenant {
        return Ok(Err(Prepared::Done(crate::mqtt::wrong_topic(Some(b.batch.seq)))));
    }
    Ok(Ok(b))
}

/// Checks the signatures of a request's (or MQTT group's) batches together, under their
/// devices' keys: `Verified` if every one is valid, else `Pending`, and each is checked
/// alone as it is decided (so one bad batch costs the others nothing but this attempt).
/// Batches of unknown or revoked devices, and of devices with unsound keys, are left out:
/// they are refused before their signature matters (and the batch equation's guarantees
/// assume sound keys). A lone batch is checked alone, as before.
async fn verify_together(
    state: &AppState,
    lookups: &mut Lookups,
    batches: &[&SignedBatch],
) -> Result<SignatureCheck, AppError> {
    let mut keyed: Vec<(Vec<u8>, &SignedBatch)> = Vec::with_capacity(batches.len());
    for b in batches {
        if let Some((d, _)) = lookup_device(state, lookups, &b.batch.device).await?
            && !d.revoked
            && key_is_sound(state, &d.public_key)
        {
            keyed.push((d.public_key.clone(), *b));
        }
    }
    if keyed.len() < 2 {
        return Ok(SignatureCheck::Pending);
    }
    let items: Vec<(&[u8], &SignedBatch)> = keyed.iter().map(|(k, b)| (k.as_slice(), *b)).collect();
    Ok(match batch_signatures_valid(&items) {
        true => SignatureCheck::Verified,
        false => SignatureCheck::Pending,
    })
}

/// A device and its model, looked up once per request (or MQTT group).
async fn lookup_device<'l>(
    state: &AppState,
    lookups: &'l mut Lookups,
    id: &str,
) -> Result<Option<&'l mut (Device, telesafe_core::devices::DeviceModel)>, AppError> {
    if !lookups.devices.contains_key(id) {
        let found = match state.store.device(id).await? {
            Some(d) => cached_model(state, d.tenant, &d.model_id).await?.map(|m| (d, m)),
            None => None,
        };
        lookups.devices.insert(id.to_owned(), found);
    }
    Ok(lookups.devices.get_mut(id).and_then(Option::as_mut))
}

/// What one request has looked up already (a request usually carries one device's
/// batches): devices, their models, patients' thresholds and data keys. A writer asks
/// storage for the newest data key (a rotation elsewhere may have made one); once per
/// request is as good as once per batch, since a rotation during the request is no
/// different from one just after it.
#[derive(Default)]
struct Lookups {
    devices: HashMap<String, Option<(Device, telesafe_core::devices::DeviceModel)>>,
    thresholds: HashMap<PatientId, Vec<Threshold>>,
    keys: HashMap<PatientId, std::sync::Arc<telesafe_crypto::keys::SealingKey>>,
}

/// A batch decided: answered already, or to be filed (its ack if filing stores it).
enum Prepared {
    Done(Ack),
    File { filed: Box<FiledBatch>, actor: Actor, accesses: Vec<Access<'static>>, ack: Ack },
}

/// Decides one batch and, if it is to be stored, seals it and prepares its Observations.
async fn prepare(
    state: &AppState,
    b: SignedBatch,
    lookups: &mut Lookups,
    signature: SignatureCheck,
) -> Result<Prepared, AppError> {
    let seq = b.batch.seq;
    let Some((device, model)) = lookup_device(state, lookups, &b.batch.device).await? else {
        return Ok(Prepared::Done(Ack::Refused { seq: Some(seq), reason: Reason::UnknownDevice }));
    };
    let (device, model) = (device.clone(), model.clone());
    let now = state.clock.now();
    let actor = device_actor(device.tenant, &device.id);
    // Only a number at or below the highest seen can be stored already.
    let already_stored =
        seq <= device.last_seq && state.store.batch_stored(device.tenant, &device.id, seq).await?;
    let outcome = if !device.revoked && !key_is_sound(state, &device.public_key) {
        // Enrolled before keys were checked, with a key anyone can sign for: nothing
        // signed with it proves anything (docs/device-protocol.md §1).
        Outcome::Refuse(Reason::BadSignature)
    } else {
        decide_checked(Some(&device.state()), &model.policy, &b, now, already_stored, signature)
    };
    match outcome {
        Outcome::Refuse(reason) => {
            if matches!(reason, Reason::Revoked | Reason::BadSignature) {
                let denied = Access {
                    action: "telemetry",
                    resource_type: "Device",
                    resource_id: device.id.clone(),
                    patient_id: device.patient.to_string(),
                    purpose: Purpose::Treatment,
                    outcome: "denied",
                };
                record_as(state, &actor, &[denied]).await?;
            }
            Ok(Prepared::Done(Ack::Refused { seq: Some(seq), reason }))
        }
        Outcome::Duplicate => Ok(Prepared::Done(Ack::Duplicate { seq })),
        Outcome::Store { gap_from, quarantine } => {
            // The next batch of this request (or group) follows this one: a request of
            // batches 1, 2, 3 has no gap.
            if let Some(Some((d, _))) = lookups.devices.get_mut(&device.id) {
                d.last_seq = d.last_seq.max(seq);
            }
            let key = match lookups.keys.get(&device.patient) {
                Some(key) => key.clone(),
                None => {
                    let key = state
                        .keys
                        .patient(&state.store, device.tenant, device.patient, now, true)
                        .await
                        .map_err(AppError::internal)?;
                    lookups.keys.insert(device.patient, key.clone());
                    key
                }
            };
            // One audit entry per batch: its readings' Observations are named by the
            // batch (d<device>.<seq>.<n>), so each is traceable to this entry.
            let accesses = vec![Access {
                action: "telemetry",
                resource_type: "DeviceBatch",
                resource_id: format!("{}/{seq}", device.id),
                patient_id: device.patient.to_string(),
                purpose: Purpose::Treatment,
                outcome: "success",
            }];
            let filed = if quarantine.is_none() {
                if let std::collections::hash_map::Entry::Vacant(e) =
                    lookups.thresholds.entry(device.patient)
                {
                    e.insert(cached_thresholds(state, device.tenant, device.patient).await?);
                }
                let t = lookups.thresholds.get(&device.patient).map_or(&[][..], Vec::as_slice);
                file_readings(state, &device, seq, &b.batch.readings, &key, t).await?
            } else {
                Filed::default()
            };
            let firmware = b.batch.firmware.clone();
            // Bound to its row: tenant, patient, device and sequence number.
            let record = BatchRecord { batch: b.batch, filed: filed.judged };
            let body = seal_batch(&key, &device, &record)?;
            let filed = FiledBatch {
                batch: StoredBatch {
                    tenant: device.tenant,
                    device_id: device.id.clone(),
                    seq,
                    received_at: now,
                    gap_from,
                    quarantine: quarantine.clone(),
                    body,
                },
                firmware,
                readings: filed.readings,
                kinds: filed.kinds,
                alerts: filed.alerts,
            };
            Ok(Prepared::File {
                filed: Box::new(filed),
                actor,
                accesses,
                ack: Ack::Stored { seq, gap_from, quarantined: quarantine },
            })
        }
    }
}

/// Audits then stores the batches to file (through the group-committing writer), and
/// answers every item in order. Storage failures fail the whole request (the devices keep
/// their batches and resend them).
async fn file_all(state: &AppState, items: Vec<Prepared>) -> Result<Vec<Ack>, AppError> {
    // Durable in the audit log before anything is stored or acknowledged, in one append.
    let audited: Vec<(&Actor, &[Access<'_>])> = items
        .iter()
        .filter_map(|item| match item {
            Prepared::File { actor, accesses, .. } => Some((actor, accesses.as_slice())),
            Prepared::Done(_) => None,
        })
        .collect();
    if !audited.is_empty() {
        record_each(state, &audited).await?;
    }
    let mut to_file = Vec::new();
    let mut slots = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Prepared::Done(ack) => slots.push(Ok(ack)),
            Prepared::File { filed, ack, .. } => {
                slots.push(Err(ack));
                to_file.push(*filed);
            }
        }
    }
    let stored = state.device_writer.write(to_file).await?;
    let mut stored = stored.into_iter();
    Ok(slots
        .into_iter()
        .map(|slot| match slot {
            Ok(ack) => ack,
            Err(ack) => match (stored.next(), ack) {
                (Some(true), ack) => ack,
                // Another batch with the number was stored first: exactly once.
                (_, Ack::Stored { seq, .. }) => Ack::Duplicate { seq },
                (_, ack) => ack,
            },
        })
        .collect())
}

/// What filing a batch's readings produces, for one transaction: how each Observation was
/// judged (sealed with the batch), their rows, their kinds' index values and the alerts
/// they raise.
#[derive(Default)]
struct Filed {
    judged: Option<Vec<vitals::Judgement>>,
    readings: Vec<FiledReading>,
    kinds: Vec<KindEntry>,
    alerts: Vec<ClinicalAlert>,
}

/// Judges a batch's readings (plausibility, the patient's thresholds) into the rows of
/// the Observations they are filed as, and the alerts they raise. The Observations
/// themselves are rendered when read, from the sealed batch and these judgements.
async fn file_readings(
    state: &AppState,
    device: &Device,
    seq: u64,
    readings: &[telesafe_proto::telemetry::Reading],
    key: &telesafe_crypto::keys::SealingKey,
    thresholds: &[Threshold],
) -> Result<Filed, AppError> {
    let at_ms = |at: &str| telesafe_core::records::search::parse_date_range(at);
    let mut previous = state.device_previous.get(&device.id).unwrap_or_default();
    let judged =
        vitals::judge_batch(readings, |at| at_ms(at).map(|r| r.low), &mut previous, thresholds);
    state.device_previous.insert(device.id.clone(), previous);
    let now = state.clock.now();
    let tk =
        state.keys.tenant(&state.store, device.tenant, now).await.map_err(AppError::internal)?;
    let mut out = Filed::default();
    let id = |n| {
        reading_id(&device.id, seq, n)
            .ok_or_else(|| AppError::Internal("a device id that is not a UUID".into()))
    };
    for j in &judged {
        let n = u32::try_from(j.i).map_err(AppError::internal)?;
        let kind = cached_kind(state, &tk, device.tenant, j.code(readings));
        if !out.readings.iter().any(|r| r.kind == kind.0) {
            out.kinds.extend(kind.1.iter().cloned());
        }
        // The protocol admits only whole-second UTC times (parse checked them).
        let range = readings.get(j.i).and_then(|r| at_ms(&r.at)).ok_or_else(|| {
            AppError::Internal("a reading's time did not parse after checking".into())
        })?;
        out.readings.push(FiledReading {
            patient: device.patient,
            n,
            kind: kind.0.clone(),
            low: range.low,
            high: range.high,
        });
        for breach in &j.breaches {
            let alert_id = uuid::Uuid::now_v7().to_string();
            let plain = serde_json::to_vec(breach).map_err(AppError::internal)?;
            let body = key
                .seal(&plain, alert_aad(device.tenant, device.patient, &alert_id).as_bytes())
                .map_err(AppError::internal)?;
            out.alerts.push(ClinicalAlert {
                id: alert_id,
                tenant: device.tenant,
                patient: device.patient,
                observation_id: id(n)?,
                created_at: now,
                body,
            });
        }
    }
    out.judged = Some(judged);
    Ok(out)
}

/// Seals a batch record under the patient's key, bound to its row.
fn seal_batch(
    key: &telesafe_crypto::keys::SealingKey,
    device: &Device,
    record: &BatchRecord,
) -> Result<Vec<u8>, AppError> {
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(record).map_err(AppError::internal)?);
    let aad = batch_aad(device.tenant, device.patient, &device.id, record.batch.seq);
    key.seal(&plain, &aad).map_err(AppError::internal)
}

#[derive(Debug, Serialize)]
pub struct Released {
    released: usize,
}

/// `POST /api/v1/devices/{id}/release`: a tenant administrator releases a device's
/// quarantined readings (after checking them): they are filed as Observations, by them.
pub async fn release(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    me: crate::auth::CurrentUser,
) -> Result<axum::Json<Released>, AppError> {
    if me.role() != telesafe_core::identity::Role::TenantAdmin {
        return Err(AppError::Forbidden);
    }
    let released = release_device(&state, &me, &id).await?;
    Ok(axum::Json(Released { released }))
}

/// Releases a device's quarantined batches (a tenant administrator, checked by the
/// caller): audited, then each batch marked released and its readings filed as
/// Observations in one transaction. Returns how many batches were released.
pub(crate) async fn release_device(
    state: &AppState,
    me: &crate::auth::CurrentUser,
    id: &str,
) -> Result<usize, AppError> {
    let device = state
        .store
        .device(id)
        .await?
        .filter(|d| d.tenant == me.user.tenant_id)
        .ok_or(AppError::NotFound)?;
    if !key_is_sound(state, &device.public_key) {
        return Err(AppError::BadRequest(
            "this device's key is one anyone could sign for, so the readings it holds back \
             cannot be trusted; revoke it and enrol it again"
                .into(),
        ));
    }
    let now = state.clock.now();
    let actor = Actor::user(me);
    let batches = state.store.quarantined_batches(device.tenant, &device.id).await?;
    record_as(
        state,
        &actor,
        &[Access {
            action: "release",
            resource_type: "Device",
            resource_id: device.id.clone(),
            patient_id: device.patient.to_string(),
            purpose: Purpose::Operations,
            outcome: "success",
        }],
    )
    .await?;
    let key = state
        .keys
        .patient(&state.store, device.tenant, device.patient, now, false)
        .await
        .map_err(AppError::internal)?;
    let thresholds = thresholds(state, device.tenant, device.patient).await?;
    let mut released = 0;
    for b in batches {
        let plain = key
            .open(&b.body, &batch_aad(device.tenant, device.patient, &device.id, b.seq))
            .map_err(AppError::internal)?;
        let record = BatchRecord::parse(&plain)
            .ok_or_else(|| AppError::Internal("a stored batch did not parse".into()))?;
        // Released readings are filed as they are, judged like any reading; they are old
        // news by now, so they raise no alerts.
        let filed =
            file_readings(state, &device, b.seq, &record.batch.readings, &key, &thresholds).await?;
        let mut accesses = Vec::with_capacity(filed.readings.len());
        for r in &filed.readings {
            accesses.push(Access {
                action: "create",
                resource_type: "Observation",
                resource_id: reading_id(&device.id, b.seq, r.n)
                    .ok_or_else(|| AppError::Internal("a device id that is not a UUID".into()))?,
                patient_id: device.patient.to_string(),
                purpose: Purpose::Treatment,
                outcome: "success",
            });
        }
        record_as(state, &actor, &accesses).await?;
        let record = BatchRecord { batch: record.batch, filed: filed.judged };
        let body = seal_batch(&key, &device, &record)?;
        // Marked and filed in one transaction: a second release files nothing.
        if state
            .store
            .release_batch(
                device.tenant,
                &device.id,
                &Release {
                    seq: b.seq,
                    at: now,
                    body,
                    readings: filed.readings,
                    kinds: filed.kinds,
                },
            )
            .await?
        {
            released += 1;
        }
    }
    Ok(released)
}

#[derive(Debug, Serialize)]
struct Rotated {
    status: &'static str,
    device_id: String,
}

/// `POST /api/v1/devices/rotate-key`: a device replaces its key, signing the request with
/// the old key and the new one (docs/device-protocol.md §1b). Refusals are signed answers
/// with a reason code, like a batch's; every outcome is audited.
pub async fn rotate_key(State(state): State<AppState>, body: Bytes) -> Result<Response, AppError> {
    let refused = |state: &AppState, reason: Reason| {
        signed(state, StatusCode::BAD_REQUEST, &json!({"status": "refused", "reason": reason}))
    };
    let r = match telesafe_proto::telemetry::parse_rotation(&body) {
        Ok(r) => r,
        Err(reason) => return Ok(refused(&state, reason)),
    };
    let Some(device) = state.store.device(&r.rotation.device).await? else {
        return Ok(refused(&state, Reason::UnknownDevice));
    };
    let now = state.clock.now();
    let decision = if !device.revoked && !key_is_sound(&state, &device.public_key) {
        // Anyone could sign a rotation away from a key anyone can sign for.
        Err(Reason::BadSignature)
    } else {
        telesafe_core::devices::decide_rotation(Some(&device.state()), &r, now)
    };
    let actor = device_actor(device.tenant, &device.id);
    let access = |outcome| Access {
        action: "rotate_key",
        resource_type: "Device",
        resource_id: device.id.clone(),
        patient_id: device.patient.to_string(),
        purpose: Purpose::Operations,
        outcome,
    };
    let new_key = match decision {
        Ok(k) => k,
        Err(reason) => {
            record_as(&state, &actor, &[access("denied")]).await?;
            return Ok(refused(&state, reason));
        }
    };
    record_as(&state, &actor, &[access("success")]).await?;
    if !state
        .store
        .rotate_device_key(device.tenant, &device.id, &device.public_key, &new_key, now)
        .await?
    {
        // Rotated or revoked by someone else in the meantime: the old key no longer rules.
        return Ok(refused(&state, Reason::BadSignature));
    }
    Ok(signed(&state, StatusCode::OK, &Rotated { status: "rotated", device_id: device.id }))
}
