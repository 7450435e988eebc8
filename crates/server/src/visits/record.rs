//! What a visit writes into the patient's record, each through the same decided, audited
//! and sealed path as any FHIR write: the Appointment when it is booked, the Encounter from
//! the first admission (with the identity check and, at the end, its period), every chat
//! line as a Communication, and the clinician's notes as a DocumentReference.

use base64::Engine;
use serde_json::{Value, json};
use telesafe_core::access::Action;
use telesafe_core::records::{ResourceRepository, StoredSearch};
use telesafe_core::visits::{IdentityMethod, Visit};
use telesafe_core::{PatientId, Timestamp, UserId};

use crate::fhir::{FhirError, Session, Target, read_value, write_resource};

/// The identifier system that ties an Appointment, Encounter and Communication to a visit.
pub const VISIT_SYSTEM: &str = "urn:telesafe:visit";
/// The extension on the Encounter that records how identity was verified.
pub const IDENTITY_EXTENSION: &str = "urn:telesafe:identity-verification";

fn visit_identifier(v: &Visit) -> Value {
    json!([{"system": VISIT_SYSTEM, "value": v.id.to_string()}])
}

fn practitioner(u: UserId, name: &str) -> Value {
    json!({"reference": format!("Practitioner/{u}"), "display": name})
}

/// Books the Appointment; returns its id.
pub(crate) async fn book(
    s: &mut Session,
    visit: &Visit,
    clinicians: &[(UserId, String)],
    reason: &str,
) -> Result<String, FhirError> {
    let mut participants = vec![
        json!({"actor": {"reference": format!("Patient/{}", visit.patient)}, "status": "accepted"}),
    ];
    participants.extend(
        clinicians.iter().map(|(u, n)| json!({"actor": practitioner(*u, n), "status": "accepted"})),
    );
    let mut appointment = json!({
        "resourceType": "Appointment",
        "identifier": visit_identifier(visit),
        "status": "booked",
        "serviceType": [{"text": "Video visit"}],
        "start": visit.starts_at.to_rfc3339(),
        "end": visit.ends_at.to_rfc3339(),
        "created": visit.created_at.to_rfc3339(),
        "participant": participants,
    });
    if !reason.is_empty() {
        appointment["description"] = json!(reason);
    }
    Ok(write_resource(s, "Appointment", None, appointment, None).await?.id)
}

/// Opens the Encounter at the first admission; returns its id.
pub(crate) async fn open_encounter(
    s: &mut Session,
    visit: &Visit,
    clinicians: &[(UserId, String)],
    now: Timestamp,
) -> Result<String, FhirError> {
    let encounter = json!({
        "resourceType": "Encounter",
        "identifier": visit_identifier(visit),
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"},
        "subject": {"reference": format!("Patient/{}", visit.patient)},
        "participant": clinicians.iter().map(|(u, n)| json!({"individual": practitioner(*u, n)})).collect::<Vec<_>>(),
        "appointment": [{"reference": format!("Appointment/{}", visit.appointment_id)}],
        "period": {"start": now.to_rfc3339()},
    });
    Ok(write_resource(s, "Encounter", None, encounter, None).await?.id)
}

/// Changes the visit's Encounter (a new version).
async fn change_encounter(
    s: &mut Session,
    visit: &Visit,
    change: impl FnOnce(&mut Value),
) -> Result<(), FhirError> {
    let Some(id) = visit.encounter_id.as_deref() else {
        return Err(FhirError::bad_request("the visit has not started"));
    };
    let (mut body, row) = read_value(s, "Encounter", id, None).await?;
    change(&mut body);
    write_resource(s, "Encounter", Some(id), body, Some(row.version)).await.map(|_| ())
}

/// Records the identity check on the Encounter.
pub(crate) async fn record_identity(
    s: &mut Session,
    visit: &Visit,
    method: IdentityMethod,
    note: &str,
    by: UserId,
    now: Timestamp,
) -> Result<(), FhirError> {
    let mut ext = vec![
        json!({"url": "method", "valueCode": method.as_str()}),
        json!({"url": "verifiedBy", "valueReference": {"reference": format!("Practitioner/{by}")}}),
        json!({"url": "verifiedAt", "valueDateTime": now.to_rfc3339()}),
    ];
    if !note.is_empty() {
        ext.push(json!({"url": "note", "valueString": note}));
    }
    change_encounter(s, visit, |e| {
        let mut others: Vec<Value> = e["extension"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["url"] != IDENTITY_EXTENSION).cloned().collect())
            .unwrap_or_default();
        others.push(json!({"url": IDENTITY_EXTENSION, "extension": ext}));
        e["extension"] = json!(others);
    })
    .await
}

/// Closes the Encounter at the end of the visit.
pub(crate) async fn close_encounter(
    s: &mut Session,
    visit: &Visit,
    now: Timestamp,
) -> Result<(), FhirError> {
    change_encounter(s, visit, |e| {
        e["status"] = json!("finished");
        e["period"]["end"] = json!(now.to_rfc3339());
    })
    .await
}

/// Who wrote a chat line.
#[derive(Debug, Clone)]
pub(crate) enum Sender {
    Patient(PatientId),
    Clinician(UserId, String),
}

/// One chat line as the page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ChatLine {
    pub from: &'static str,
    pub name: String,
    pub text: String,
    pub at: String,
}

/// Stores a chat line as a Communication.
pub(crate) async fn chat(
    s: &mut Session,
    visit: &Visit,
    sender: &Sender,
    text: &str,
    now: Timestamp,
) -> Result<ChatLine, FhirError> {
    let (from, name, sender_ref) = match sender {
        Sender::Patient(p) => {
            ("patient", "Patient".to_owned(), json!({"reference": format!("Patient/{p}")}))
        }
        Sender::Clinician(u, n) => ("clinician", n.clone(), practitioner(*u, n)),
    };
    let communication = json!({
        "resourceType": "Communication",
        "identifier": visit_identifier(visit),
        "status": "completed",
        "category": [{"coding": [{"system": "urn:telesafe:communication", "code": "visit-chat"}]}],
        "subject": {"reference": format!("Patient/{}", visit.patient)},
        "sent": now.to_rfc3339(),
        "sender": sender_ref,
        "payload": [{"contentString": text}],
    });
    write_resource(s, "Communication", None, communication, None).await?;
    Ok(ChatLine { from, name, text: text.to_owned(), at: now.to_rfc3339() })
}

/// The visit's chat so far, oldest first: each line decided and logged as a read.
pub(crate) async fn history(
    s: &mut Session,
    visit: &Visit,
    since: Option<Timestamp>,
) -> Result<Vec<ChatLine>, FhirError> {
    // The visit's lines by their blind-indexed identifier, like any FHIR token search.
    let tk = s
        .state
        .keys
        .tenant(&s.state.store, s.tenant, s.now())
        .await
        .map_err(FhirError::internal)?;
    let token =
        telesafe_core::records::search::token_query(&format!("{VISIT_SYSTEM}|{}", visit.id));
    let q = StoredSearch {
        resource_type: "Communication".to_owned(),
        patients: Some(vec![visit.patient]),
        tokens: vec![(
            "identifier".to_owned(),
            vec![telesafe_core::records::keys::KeyRing::blind(&tk, "identifier", &token)],
        )],
        limit: 2_000,
        ..Default::default()
    };
    let hits = s.state.store.search(s.tenant, &q).await?;
    let ids: Vec<String> = hits.into_iter().map(|h| h.id).collect();
    let rows = s.state.store.current_many(s.tenant, "Communication", &ids).await?;
    let mut shown = Vec::new();
    let shown_rows =
        rows.into_iter().filter(|r| !r.deleted && since.is_none_or(|t| r.last_updated >= t));
    for row in shown_rows {
        let Some(purpose) = s.decide(Action::Read, &Target::of(&row)?).await? else { continue };
        let body = s.decrypt(&row).await?;
        let ours = body["identifier"].as_array().is_some_and(|a| {
            a.iter().any(|i| i["system"] == VISIT_SYSTEM && i["value"] == visit.id.to_string())
        });
        if ours {
            shown.push((row, purpose, body));
        }
    }
    let accesses: Vec<_> = shown
        .iter()
        .map(|(r, p, _)| crate::audit::Access {
            action: "read",
            resource_type: "Communication",
            resource_id: r.id.clone(),
            patient_id: visit.patient.to_string(),
            purpose: *p,
            outcome: "success",
        })
        .collect();
    if !accesses.is_empty() {
        s.audit(&accesses).await?;
    }
    let mut lines: Vec<ChatLine> = shown
        .into_iter()
        .map(|(_, _, b)| {
            let patient =
                b["sender"]["reference"].as_str().is_some_and(|r| r.starts_with("Patient/"));
            ChatLine {
                from: if patient { "patient" } else { "clinician" },
                name: if patient {
                    "Patient".to_owned()
                } else {
                    b["sender"]["display"].as_str().unwrap_or("Clinician").to_owned()
                },
                text: b["payload"][0]["contentString"].as_str().unwrap_or_default().to_owned(),
                at: b["sent"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect();
    lines.sort_by(|a, b| a.at.cmp(&b.at));
    Ok(lines)
}

/// The visit notes' text, if written.
pub(crate) async fn note(s: &mut Session, visit: &Visit) -> Result<Option<String>, FhirError> {
    let Some(id) = visit.note_id.as_deref() else { return Ok(None) };
    let (body, _) = read_value(s, "DocumentReference", id, None).await?;
    let data = body["content"][0]["attachment"]["data"].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| FhirError::internal("visit note attachment is not base64"))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Saves the visit notes (a new DocumentReference, or a new version of it); returns its id.
pub(crate) async fn save_note(
    s: &mut Session,
    visit: &Visit,
    author: (UserId, &str),
    text: &str,
    now: Timestamp,
) -> Result<String, FhirError> {
    let mut doc = json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]},
        "subject": {"reference": format!("Patient/{}", visit.patient)},
        "date": now.to_rfc3339(),
        "author": [practitioner(author.0, author.1)],
        "description": "Video visit notes",
        "content": [{"attachment": {
            "contentType": "text/plain; charset=utf-8",
            "data": base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
        }}],
    });
    if let Some(enc) = &visit.encounter_id {
        doc["context"] = json!({"encounter": [{"reference": format!("Encounter/{enc}")}]});
    }
    match visit.note_id.as_deref() {
        None => Ok(write_resource(s, "DocumentReference", None, doc, None).await?.id),
        Some(id) => {
            let (_, row) = read_value(s, "DocumentReference", id, None).await?;
            doc["id"] = json!(id);
            write_resource(s, "DocumentReference", Some(id), doc, Some(row.version)).await?;
            Ok(id.to_owned())
        }
    }
}
