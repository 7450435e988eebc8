//! The FHIR R4 API as an integrator and as staff meet it: create, read, versioned update,
//! history, search, delete and $everything; errors as OperationOutcome; every interaction
//! decided by policy and recorded in the audit log; nothing readable at rest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use serde_json::{Value, json};
use telesafe_core::audit::AuditRepository;
use telesafe_core::identity::PatientRepository;
use telesafe_testkit::{DbBackend, TestServer, both_backends};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

const FHIR: &str = "application/fhir+json";

struct Api<'a> {
    s: &'a TestServer,
    c: reqwest::Client,
    token: Option<String>,
}

impl Api<'_> {
    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.c.request(m, self.s.url(path)).header("accept", FHIR);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r.header("origin", &self.s.base),
        }
    }
    async fn send(
        &self,
        m: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut r = self.req(m, path);
        if let Some(b) = body {
            r = r.header("content-type", FHIR).body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, v)
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, v) = self.send(reqwest::Method::GET, path, None).await;
        (s, v)
    }
}

fn outcome_expressions(v: &Value) -> Vec<String> {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    v["issue"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

fn patient_body(family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:example:mrn", "value": format!("MRN-{family}")}],
        "name": [{"family": family, "given": ["Peter"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "telecom": [{"system": "phone", "value": "+1 (555) 010-0199"}]
    })
}

fn heart_rate(patient: &str, value: i64, at: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": at,
        "valueQuantity": {"value": value, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

async fn fhir_interactions_are_versioned_and_errors_are_operation_outcomes(backend: DbBackend) {
    use reqwest::Method;
    let Some(s) = server(backend).await else { return };
    let token = client_token(&s, "system/*.*").await;
    let api = Api { s: &s, c: s.client(), token: Some(token) };

    // The capability statement says what is supported.
    let (st, cap) = api.get("/fhir/metadata").await;
    assert_eq!(st, 200);
    assert_eq!(cap["fhirVersion"], "4.0.1");
    let patient_cap = cap["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap()
        .clone();
    assert!(patient_cap["searchParam"].as_array().unwrap().iter().any(|p| p["name"] == "family"));
    assert_eq!(patient_cap["updateCreate"], false);

    // Create.
    let (st, h, created) =
        api.send(Method::POST, "/fhir/Patient", Some(&patient_body("Chalmers"))).await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(h["etag"], "W/\"1\"");
    assert!(h["location"].to_str().unwrap().ends_with(&format!("/fhir/Patient/{id}/_history/1")));
    assert_eq!(h["content-type"], "application/fhir+json; charset=utf-8");
    assert_eq!(created["meta"]["versionId"], "1");

    // Bad input: wrong media type, not JSON, invalid resource (with element paths).
    let r = api
        .req(Method::POST, "/fhir/Patient")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(r.json::<Value>().await.unwrap()["resourceType"], "OperationOutcome");
    let r = api
        .req(Method::POST, "/fhir/Patient")
        .header("content-type", FHIR)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let bad = json!({"resourceType": "Patient", "gender": "m", "birthDate": "1974-02-30", "colour": "blue", "name": [{"given": "Peter"}]});
    let (st, _, oo) = api.send(Method::POST, "/fhir/Patient", Some(&bad)).await;
    assert_eq!(st, 400);
    let paths = outcome_expressions(&oo);
    for p in ["Patient.gender", "Patient.birthDate", "Patient.colour", "Patient.name[0].given"] {
        assert!(paths.contains(&p.to_owned()), "{p} missing from {paths:?}");
    }
    let (st, _, oo) = api
        .send(
            Method::POST,
            "/fhir/Patient",
            Some(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})),
        )
        .await;
    assert_eq!(st, 400, "{oo}");
    // Too large: 413 before the body is read.
    let head = "POST /fhir/Patient HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
                application/fhir+json\r\nContent-Length: 2097152\r\n\r\n";
    let raw = s.raw_exchange(head.as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("application/fhir+json") && raw.contains("OperationOutcome"), "{raw}");
    // Unknown type, unknown path, no credentials.
    let (st, oo) = api.get("/fhir/Spaceship").await;
    assert_eq!((st, oo["resourceType"].as_str()), (404, Some("OperationOutcome")));
    let r = s.client().get(s.url(&format!("/fhir/Patient/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(r.json::<Value>().await.unwrap()["resourceType"], "OperationOutcome");

    // Read and versioned update with If-Match.
    let (st, read) = api.get(&format!("/fhir/Patient/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(read["name"][0]["family"], "Chalmers");
    let mut changed = read.clone();
    changed["name"][0]["family"] = json!("Chalmers-Smith");
    let (st, h, v2) = api.send(Method::PUT, &format!("/fhir/Patient/{id}"), Some(&changed)).await;
    assert_eq!(st, 200, "{v2}");
    assert_eq!(h["etag"], "W/\"2\"");
    let stale = api
        .req(Method::PUT, &format!("/fhir/Patient/{id}"))
        .header("content-type", FHIR)
        .header("if-match", "W/\"1\"")
        .body(changed.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let mut wrong_id = changed.clone();
    wrong_id["id"] = json!("another");
    let (st, _, _) = api.send(Method::PUT, &format!("/fhir/Patient/{id}"), Some(&wrong_id)).await;
    assert_eq!(st, 400);
    let (st, v1) = api.get(&format!("/fhir/Patient/{id}/_history/1")).await;
    assert_eq!((st, v1["name"][0]["family"].as_str()), (200, Some("Chalmers")));
    let (st, hist) = api.get(&format!("/fhir/Patient/{id}/_history")).await;
    assert_eq!(
        (st, hist["type"].as_str(), hist["total"].as_u64()),
        (200, Some("history"), Some(2))
    );

    // Observations must belong to a patient of this server.
    let (st, _, oo) = api.send(Method::POST, "/fhir/Observation", Some(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "pulse"}}))).await;
    assert_eq!(st, 422);
    assert_eq!(outcome_expressions(&oo), vec!["Observation.subject"]);
    let (st, _, _) = api
        .send(
            Method::POST,
            "/fhir/Observation",
            Some(&heart_rate("00000000-0000-7000-8000-000000000000", 70, "2024-05-01T08:00:00Z")),
        )
        .await;
    assert_eq!(st, 422);
    let mut obs_ids = Vec::new();
    for (v, at) in
        [(71, "2024-05-01T08:00:00Z"), (88, "2024-05-02T08:00:00Z"), (64, "2024-06-01T08:00:00Z")]
    {
        let (st, _, o) =
            api.send(Method::POST, "/fhir/Observation", Some(&heart_rate(&id, v, at))).await;
        assert_eq!(st, 201, "{o}");
        obs_ids.push(o["id"].as_str().unwrap().to_owned());
    }

    // Search: tokens, names (case and accents folded), dates, paging, unknown parameters.
    let (st, b) = api
        .get(&format!(
            "/fhir/Observation?patient={id}&code=http://loinc.org|8867-4&date=ge2024-05-02"
        ))
        .await;
    assert_eq!((st, b["total"].as_u64()), (200, Some(2)), "{b}");
    let (_, b) = api.get("/fhir/Patient?family=chalmers-smith").await;
    assert_eq!(b["total"], 1);
    let (_, b) = api.get("/fhir/Patient?family=CHALMERS").await;
    assert_eq!(b["total"], 1, "a word of the family name matches");
    let (_, b) = api.get("/fhir/Patient?phone=15550100199").await;
    assert_eq!(b["total"], 1);
    let (_, b) =
        api.get(&format!("/fhir/Observation?subject=Patient/{id}&_count=2&_sort=date")).await;
    assert_eq!(b["total"], 3);
    assert_eq!(b["entry"].as_array().unwrap().len(), 2);
    assert_eq!(b["entry"][0]["resource"]["valueQuantity"]["value"], 71);
    let next =
        b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
            .as_str()
            .unwrap()
            .to_owned();
    let next_path = &next[next.find("/fhir/").unwrap()..];
    let (_, page2) = api.get(next_path).await;
    assert_eq!(page2["entry"].as_array().unwrap().len(), 1);
    assert_eq!(page2["entry"][0]["resource"]["valueQuantity"]["value"], 64);
    let (_, b) = api.get(&format!("/fhir/Observation?patient={id}&colour=blue")).await;
    assert_eq!(b["total"], 3, "an unknown parameter is ignored");
    let selfl = b["link"][0]["url"].as_str().unwrap();
    assert!(!selfl.contains("colour"), "{selfl}");
    assert!(b["entry"].as_array().unwrap().iter().any(|e| e["search"]["mode"] == "outcome"));
    let strict = api
        .req(Method::GET, &format!("/fhir/Observation?patient={id}&colour=blue"))
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), 400);
    let (st, _) = api.get("/fhir/Observation?date=yesterday").await;
    assert_eq!(st, 400);
    let (st, _) = api.get("/fhir/Patient?family:contains=chal").await;
    assert_eq!(st, 400);

    // Delete is versioned: gone from reads and searches, kept in history.
    let (st, _, _) =
        api.send(Method::DELETE, &format!("/fhir/Observation/{}", obs_ids[0]), None).await;
    assert_eq!(st, 204);
    let (st, _) = api.get(&format!("/fhir/Observation/{}", obs_ids[0])).await;
    assert_eq!(st, 410);
    let (_, b) = api.get(&format!("/fhir/Observation?patient={id}")).await;
    assert_eq!(b["total"], 2);
    let (_, hist) = api.get(&format!("/fhir/Observation/{}/_history", obs_ids[0])).await;
    assert_eq!(hist["total"], 2);
    assert_eq!(hist["entry"][0]["request"]["method"], "DELETE");

    // $everything: the patient and what remains of their record.
    let (st, all) = api.get(&format!("/fhir/Patient/{id}/$everything")).await;
    assert_eq!((st, all["total"].as_u64()), (200, Some(3)), "{all}");

    // At rest: no name, no value, no code in any column.
    let db = s.database();
    for (table, col) in [("fhir_resources", "body"), ("fhir_index", "value")] {
        let dump = db.dump_text(table, col).await.unwrap();
        for needle in ["Chalmers", "chalmers", "1974-12-25", "8867-4", "beats/minute", "5550100199"]
        {
            assert!(!dump.contains(needle), "{table}.{col} holds {needle} in clear");
        }
    }
}

async fn fhir_access_follows_policy_and_every_interaction_is_audited(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let patients = s.state.store.list_patients(s.clinic.tenant.id).await.unwrap();
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = patients.iter().find(|p| p.user_id == Some(ana_user)).unwrap().id.to_string();
    let offline = patients.iter().find(|p| p.user_id.is_none()).unwrap().id.to_string();
    let as_user = |c: reqwest::Client| Api { s: &s, c, token: None };

    // The patient reads her own record and nobody else's; a hidden record looks missing.
    let me = as_user(s.signed_in(PATIENT).await);
    let (st, p) = me.get(&format!("/fhir/Patient/{ana}")).await;
    assert_eq!((st, p["name"][0]["family"].as_str()), (200, Some("López")));
    let (st, _) = me.get(&format!("/fhir/Patient/{offline}")).await;
    assert_eq!(st, 404);
    let (_, b) = me.get("/fhir/Observation?code=8867-4").await;
    assert_eq!(b["total"], 7, "her own week of heart rates, nobody else's");
    let (_, b) = me.get("/fhir/Patient").await;
    assert_eq!(b["total"], 1, "the search shows only her: no count of the others");

    // The nurse cares only for patients with accounts; the doctor for everyone.
    let nurse = as_user(s.signed_in(NURSE).await);
    assert_eq!(nurse.get(&format!("/fhir/Patient/{offline}")).await.0, 404);
    assert_eq!(nurse.get(&format!("/fhir/Patient/{ana}")).await.0, 200);
    let dr = as_user(s.signed_in(DR).await);
    assert_eq!(dr.get(&format!("/fhir/Patient/{offline}")).await.0, 200);
    let (_, b) = dr.get("/fhir/Patient").await;
    assert_eq!(b["total"], 3);
    // The doctor records an observation for a patient of the team.
    let (st, _, created) = dr
        .send(
            reqwest::Method::POST,
            "/fhir/Observation",
            Some(&heart_rate(&ana, 72, "2024-05-01T08:00:00Z")),
        )
        .await;
    assert_eq!(st, 201, "{created}");

    // Front desk: demographics yes, clinical data no. Security officer: neither.
    let desk = as_user(s.signed_in(FRONT_DESK).await);
    assert_eq!(desk.get(&format!("/fhir/Patient/{ana}")).await.0, 200);
    let (_, b) = desk.get(&format!("/fhir/Observation?patient={ana}")).await;
    assert_eq!(b["total"], 0);
    let sec = as_user(s.signed_in(SECURITY).await);
    assert_eq!(sec.get(&format!("/fhir/Patient/{ana}")).await.0, 404);
    // A client holds only the scopes it was granted.
    let reader =
        Api { s: &s, c: s.client(), token: Some(client_token(&s, "system/Patient.read").await) };
    assert_eq!(reader.get(&format!("/fhir/Patient/{ana}")).await.0, 200);
    assert_eq!(reader.get(&format!("/fhir/Observation?patient={ana}")).await.1["total"], 0);
    let (st, _, _) =
        reader.send(reqwest::Method::POST, "/fhir/Patient", Some(&patient_body("Nobody"))).await;
    assert_eq!(st, 403);

    // AuditEvent, from the same log: the security officer reads the organisation's, the
    // patient only her own, others nothing; it cannot be written.
    let (st, events) = sec.get(&format!("/fhir/AuditEvent?patient={ana}&_count=500")).await;
    assert_eq!(st, 200);
    let total = events["total"].as_u64().unwrap();
    assert!(total >= 5, "{events}");
    assert!(
        events["entry"].as_array().unwrap().iter().any(|e| e["resource"]["outcome"] == "4"),
        "refusals are there"
    );
    let (_, mine) = me.get("/fhir/AuditEvent?_count=500").await;
    assert!(mine["entry"].as_array().unwrap().iter().all(|e| {
        e["resource"]["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["what"]["reference"] == format!("Patient/{ana}"))
    }));
    let (_, not_hers) = me.get(&format!("/fhir/AuditEvent?patient={offline}")).await;
    assert_eq!(not_hers["total"], 0);
    let first = events["entry"][0]["resource"]["id"].as_str().unwrap().to_owned();
    assert_eq!(sec.get(&format!("/fhir/AuditEvent/{first}")).await.0, 200);
    assert_eq!(nurse.get("/fhir/AuditEvent").await.0, 403);
    assert_eq!(nurse.get(&format!("/fhir/AuditEvent/{first}")).await.0, 404);
    let (st, _, _) = sec
        .send(
            reqwest::Method::POST,
            "/fhir/AuditEvent",
            Some(&json!({"resourceType": "AuditEvent"})),
        )
        .await;
    assert_eq!(st, 405);

    // The log has every one of those, allowed and refused, with who and why.
    let n = s.state.store.audit_size().await.unwrap();
    let entries: Vec<_> = s
        .state
        .store
        .audit_entries(0, u32::try_from(n).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    let reads_of_ana: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "read" && e.resource_type == "Patient" && e.resource_id == ana)
        .collect();
    assert!(reads_of_ana.iter().any(|e| e.actor_role == "patient" && e.outcome == "success"));
    assert!(
        reads_of_ana.iter().any(|e| e.actor_role == "security-officer" && e.outcome == "denied")
    );
    assert!(reads_of_ana.iter().any(|e| e.actor_kind.as_str() == "client"));
    assert!(entries.iter().any(|e| e.action == "create"
        && e.resource_type == "Observation"
        && e.actor_role == "clinician"
        && e.patient_id == ana));
    assert!(
        entries
            .iter()
            .any(|e| e.action == "create" && e.resource_type == "Patient" && e.outcome == "denied")
    );
    // Ids only: no name, no value in any entry.
    assert!(
        entries
            .iter()
            .any(|e| e.resource_type == "AuditEvent" && e.actor_role == "security-officer"),
        "reading the log is logged"
    );
    for e in &entries {
        let text = format!("{e:?}");
        assert!(!text.contains("López") && !text.contains("beats"), "{text}");
    }
}

async fn a_patients_consent_denials_bind_every_decision(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let patients = s.state.store.list_patients(s.clinic.tenant.id).await.unwrap();
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = patients.iter().find(|p| p.user_id == Some(ana_user)).unwrap().id.to_string();
    let nurse_id = s.clinic.users.iter().find(|u| u.email.as_str() == NURSE).unwrap().id;
    let as_user = |c: reqwest::Client| Api { s: &s, c, token: None };
    let dr = as_user(s.signed_in(DR).await);
    let nurse = as_user(s.signed_in(NURSE).await);
    let me = as_user(s.signed_in(PATIENT).await);
    let vitals = format!("/fhir/Observation?patient={ana}");
    assert_eq!(dr.get(&vitals).await.1["total"], 14, "a week of heart rate and SpO2");
    assert_eq!(nurse.get(&format!("/fhir/Patient/{ana}")).await.0, 200);

    // Ana refuses her vital signs to everyone, and everything to the nurse.
    let consent = |provision: Value| {
        json!({
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": format!("Patient/{ana}")},
            "provision": provision
        })
    };
    let writer =
        Api { s: &s, c: s.client(), token: Some(client_token(&s, "system/Consent.*").await) };
    let deny_vitals = consent(
        json!({"type": "deny", "class": [{"system": "urn:telesafe:policy-category", "code": "vitals"}]}),
    );
    let (st, _, c1) = writer.send(reqwest::Method::POST, "/fhir/Consent", Some(&deny_vitals)).await;
    assert_eq!(st, 201, "{c1}");
    let deny_nurse = consent(json!({"type": "deny", "actor": [{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "reference": {"reference": format!("Practitioner/{nurse_id}")}
    }]}));
    assert_eq!(writer.send(reqwest::Method::POST, "/fhir/Consent", Some(&deny_nurse)).await.0, 201);

    // Decisions are made per request from the record: no new sign-in is needed.
    assert_eq!(dr.get(&vitals).await.1["total"], 0, "the doctor no longer sees her vitals");
    assert_eq!(dr.get(&format!("/fhir/Patient/{ana}")).await.0, 200, "but still her details");
    assert_eq!(nurse.get(&format!("/fhir/Patient/{ana}")).await.0, 404, "the nurse sees nothing");
    let list = nurse.c.get(s.url("/console")).send().await.unwrap().text().await.unwrap();
    assert!(
        !list.contains("Ana López") && list.contains("Walter Brown"),
        "nor in her patient list"
    );
    assert_eq!(me.get(&vitals).await.1["total"], 14, "Ana herself still does");

    // Withdrawn (inactive), the denial no longer applies.
    let mut withdrawn = c1.clone();
    withdrawn["status"] = json!("inactive");
    let id = c1["id"].as_str().unwrap();
    assert_eq!(
        writer.send(reqwest::Method::PUT, &format!("/fhir/Consent/{id}"), Some(&withdrawn)).await.0,
        200
    );
    assert_eq!(dr.get(&vitals).await.1["total"], 14);
}

both_backends!(
    fhir_interactions_are_versioned_and_errors_are_operation_outcomes,
    fhir_access_follows_policy_and_every_interaction_is_audited,
    a_patients_consent_denials_bind_every_decision,
);
