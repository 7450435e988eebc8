//! Remote monitoring as people use it, on both backends, through the pages:
//! - an administrator registers a model and creates an enrolment code on the devices
//!   page; a device on vulnerable firmware enrols with it and is quarantined; the security
//!   console lists it with the advisory; releasing it on the devices page makes its
//!   readings clinical data;
//! - a clinician sets a patient's threshold on the chart; a reading below it is
//!   interpreted as low, alerts the console (not for someone off the care team), is drawn
//!   against the threshold, and is acknowledged off the list; a blood-pressure pair
//!   becomes one R4 `bp` panel; an impossible value is flagged as suspicious;
//! - a device rotates its key with both signatures; the old key no longer counts;
//! - five days of minute readings (more than `$everything` returns at once) are drawn on
//!   the chart over the span asked for, a single dip kept, as one audit entry; the FHIR
//!   API hands them over by window, one audit entry per reading; once the patient is
//!   erased, a reading's id answers 410 (404 to someone who may not see her record).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use serde_json::{Value, json};
use telesafe_core::Clock;
use telesafe_core::identity::PatientRepository;
use telesafe_crypto::sign::{DeviceKey, encode_base64url};
use telesafe_device::{DeviceIdentity, SequenceFile};
use telesafe_proto::telemetry::{Reading, Rotation, SignedRotation, rotation_message};
use telesafe_testkit::{DbBackend, TestServer, both_backends};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

fn at(minutes_ago: i64) -> String {
    let ms = telesafe_core::SystemClock.now().unix_millis() - minutes_ago * 60_000;
    let t = telesafe_core::Timestamp::from_unix_millis(ms - ms.rem_euclid(1000)).to_rfc3339();
    t.replace(".000", "")
}

fn reading(code: &str, unit: &str, value: &str, minutes_ago: i64) -> Reading {
    Reading { at: at(minutes_ago), code: code.into(), unit: unit.into(), value: value.into() }
}

async fn send(s: &TestServer, body: &telesafe_proto::telemetry::SignedBatch) -> Value {
    let r = s.client().post(s.url("/api/v1/devices/telemetry")).json(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn page(s: &TestServer, c: &reqwest::Client, path: &str) -> String {
    let r = c.get(s.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.unwrap()
}

/// Registers a model on the devices page, and returns an enrolment code for Ana made there.
async fn model_and_code(
    s: &TestServer,
    admin: &reqwest::Client,
    id: &str,
    measures: &[&str],
    vulnerable: &str,
) -> String {
    let csrf = s.page_csrf(admin, "/admin/devices").await;
    let mut form: Vec<(String, String)> = vec![
        ("csrf".into(), csrf.clone()),
        ("id".into(), id.into()),
        ("manufacturer".into(), "Acme Medical".into()),
        ("model".into(), format!("Monitor {id}")),
        ("min_firmware".into(), "2.0.0".into()),
        ("vulnerable".into(), vulnerable.into()),
    ];
    form.extend(measures.iter().map(|m| (format!("measure-{m}"), "on".to_owned())));
    let r = admin
        .post(s.url("/admin/devices/models"))
        .header("origin", &s.base)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let html = page(s, admin, "/admin/devices").await;
    let patient = html
        .split("<option value=\"")
        .skip(1)
        .map(|o| (o.split('"').next().unwrap(), o))
        .find(|(_, o)| o.contains("ana.lopez@"))
        .map(|(v, _)| v.to_owned())
        .expect("Ana is offered for enrolment");
    let r = post_form(
        s,
        admin,
        "/admin/devices/enrollments",
        &[("csrf", &csrf), ("patient", &patient), ("model", id)],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    assert!(html.contains("<svg"), "the code comes with its QR code");
    html.split("data-testid=\"enrolment-code\">").nth(1).unwrap().split('<').next().unwrap().into()
}

async fn enrol(s: &TestServer, code: &str, firmware: &str) -> (String, DeviceKey) {
    let key = DeviceKey::generate().unwrap();
    let r = s
        .client()
        .post(s.url("/api/v1/devices/enroll"))
        .json(&json!({"code": code, "public_key": encode_base64url(&key.public_key()), "serial": format!("SN-{firmware}"), "firmware": firmware}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (v["device_id"].as_str().unwrap().to_owned(), key)
}

async fn fhir(s: &TestServer, c: &reqwest::Client, path: &str) -> Value {
    c.get(s.url(path)).send().await.unwrap().json().await.unwrap()
}

async fn quarantine_is_listed_and_released_through_the_pages(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let admin = s.signed_in(ADMIN).await;
    let code =
        model_and_code(&s, &admin, "cuff-q", &["8480-6", "8462-4"], "2.1.0 ADV-2026-0099").await;
    let (device, key) = enrol(&s, &code, "2.1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let mut seq = SequenceFile::open(&dir.path().join("seq")).unwrap();
    let id = DeviceIdentity { device_id: device.clone(), key, firmware: "2.1.0".into() };
    let b = id
        .sign(
            &mut seq,
            &at(0),
            vec![reading("8480-6", "mm[Hg]", "131", 30), reading("8462-4", "mm[Hg]", "84", 30)],
        )
        .unwrap();
    let acks = send(&s, &b).await;
    assert!(acks[0]["quarantined"].as_str().unwrap().contains("ADV-2026-0099"), "{acks}");

    // The security officer sees the device and the advisory, and nothing of the reading.
    let sec = s.signed_in(SECURITY).await;
    let html = page(&s, &sec, "/security").await;
    let section = html.split("Devices on unsafe firmware or keys").nth(1).unwrap();
    assert!(section.contains("ADV-2026-0099") && section.contains("SN-2.1.0"), "{section}");
    assert!(!section.contains("131"), "no reading on the security console");
    let html = page(&s, &admin, "/admin/devices").await;
    assert!(html.contains("Quarantined") && html.contains("1 batch(es) of readings waiting"));

    let tenant = s.clinic.tenant.id;
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = s.state.store.patient_by_user(tenant, ana_user).await.unwrap().unwrap().id;
    let dr = s.signed_in(DR).await;
    let search = format!("/fhir/Observation?patient={ana}&code=85354-9");
    assert_eq!(fhir(&s, &dr, &search).await["total"], 0, "not clinical while quarantined");
    let csrf = s.page_csrf(&admin, "/admin/devices").await;
    let r = post_form(&s, &admin, &format!("/admin/devices/{device}/release"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), 303);
    let bundle = fhir(&s, &dr, &search).await;
    assert_eq!(bundle["total"], 1, "released: clinical now, {bundle}");
    let panel = &bundle["entry"][0]["resource"];
    assert_eq!(panel["component"][0]["valueQuantity"]["value"].as_f64(), Some(131.0));
    assert_eq!(panel["component"][1]["valueQuantity"]["value"].as_f64(), Some(84.0));
    // Releasing again files nothing twice.
    let r = post_form(&s, &admin, &format!("/admin/devices/{device}/release"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(fhir(&s, &dr, &search).await["total"], 1);
    // A new advisory: the administrator lists 2.1.0 no more but raises the minimum to
    // 2.2.0; the device (still on 2.1.0) stays quarantined, now for the minimum.
    let r = post_form(
        &s,
        &admin,
        "/admin/devices/models/cuff-q",
        &[("csrf", &csrf), ("min_firmware", "2.2.0"), ("vulnerable", "")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let next = id
        .sign(
            &mut seq,
            &at(0),
            vec![reading("8480-6", "mm[Hg]", "122", 5), reading("8462-4", "mm[Hg]", "80", 5)],
        )
        .unwrap();
    let acks = send(&s, &next).await;
    assert!(
        acks[0]["quarantined"].as_str().unwrap().contains("below the minimum secure version 2.2.0"),
        "{acks}"
    );
    let html = page(&s, &admin, "/admin/devices").await;
    assert!(html.contains("The firmware policy is saved") || html.contains("2.2.0"));
    let r = post_form(
        &s,
        &admin,
        "/admin/devices/models/cuff-q",
        &[("csrf", &csrf), ("min_firmware", "two"), ("vulnerable", "")],
    )
    .await;
    assert_eq!(r.status(), 422, "a policy that is not a version is refused");
    // Revoked on the page: refused from now on.
    let r =
        post_form(&s, &admin, &format!("/admin/devices/{device}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    let next = id.sign(&mut seq, &at(0), vec![reading("8480-6", "mm[Hg]", "120", 1)]).unwrap();
    assert_eq!(send(&s, &next).await[0]["reason"], "revoked");
    let fhir_device = fhir(&s, &dr, &format!("/fhir/Device/{device}")).await;
    assert_eq!(fhir_device["status"], "inactive", "{fhir_device}");
    assert_eq!(fhir_device["meta"]["versionId"], "2");
    // Bad input on the page: a readable message, nothing registered.
    let r = post_form(
        &s,
        &admin,
        "/admin/devices/models",
        &[
            ("csrf", &csrf),
            ("id", "bad id!"),
            ("manufacturer", "X"),
            ("model", "Y"),
            ("min_firmware", "2"),
        ],
    )
    .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("letters, digits and"));
}

async fn thresholds_alert_the_care_team_and_are_drawn(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let admin = s.signed_in(ADMIN).await;
    let code =
        model_and_code(&s, &admin, "multi", &["59408-5", "8480-6", "8462-4", "8867-4"], "").await;
    let (device, key) = enrol(&s, &code, "3.0.0").await;
    let tenant = s.clinic.tenant.id;
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = s.state.store.patient_by_user(tenant, ana_user).await.unwrap().unwrap().id;

    // The clinician raises Ana's SpO2 threshold to 93 on her chart.
    let dr = s.signed_in(DR).await;
    let chart = format!("/console/patients/{ana}");
    let csrf = s.page_csrf(&dr, &chart).await;
    let r = post_form(
        &s,
        &dr,
        &format!("{chart}/thresholds"),
        &[("csrf", &csrf), ("code", "59408-5"), ("low", "93"), ("high", "")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let r = post_form(
        &s,
        &dr,
        &format!("{chart}/thresholds"),
        &[("csrf", &csrf), ("code", "59408-5"), ("low", "99"), ("high", "95")],
    )
    .await;
    assert_eq!(r.status(), 422, "low above high is refused");

    let dir = tempfile::tempdir().unwrap();
    let mut seq = SequenceFile::open(&dir.path().join("seq")).unwrap();
    let id = DeviceIdentity { device_id: device.clone(), key, firmware: "3.0.0".into() };
    let b = id
        .sign(
            &mut seq,
            &at(0),
            vec![
                reading("59408-5", "%", "92", 20),
                reading("8480-6", "mm[Hg]", "126", 15),
                reading("8462-4", "mm[Hg]", "79", 15),
                reading("8867-4", "/min", "70", 12),
                reading("8867-4", "/min", "290", 11),
            ],
        )
        .unwrap();
    assert_eq!(send(&s, &b).await[0]["status"], "stored");

    let all =
        // From an hour ago to the minute (a date alone would take in the demo clinic's own
        // measurements of a day ago during the first hour after midnight).
        fhir(&s, &dr, &format!("/fhir/Observation?patient={ana}&date=ge{}", at(60))).await;
    let obs: Vec<&Value> =
        all["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect();
    assert_eq!(obs.len(), 4, "SpO2, one BP panel, two heart rates: {all}");
    let spo2 = obs.iter().find(|o| o["code"]["coding"][0]["code"] == "59408-5").unwrap();
    assert_eq!(spo2["interpretation"][0]["coding"][0]["code"], "L");
    assert_eq!(spo2["meta"]["profile"][0], "http://hl7.org/fhir/StructureDefinition/oxygensat");
    assert!(obs.iter().any(|o| o["code"]["coding"][0]["code"] == "85354-9"));
    let jump = obs.iter().find(|o| o["valueQuantity"]["value"].as_f64() == Some(290.0)).unwrap();
    assert!(
        jump["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == "rate-of-change"),
        "70 to 290 in a minute is flagged: {jump}"
    );

    // The console shows the alert (and the heart rate's, above the default 130).
    let console = page(&s, &dr, "/console").await;
    assert!(console.contains("Alerts from home monitoring"), "{console}");
    assert!(console.contains("Oxygen saturation (SpO2) 92 %, below 93"), "{console}");
    assert!(console.contains("flagged as suspicious"));
    // The front desk sees no alerts; a nurse off Ana's care team would not either.
    let desk = page(&s, &s.signed_in(FRONT_DESK).await, "/console").await;
    assert!(!desk.contains("Alerts from home monitoring"));
    // The chart draws the threshold and the suspicious point.
    let html = page(&s, &dr, &chart).await;
    assert!(html.contains(r#"class="threshold low""#) && html.contains(">low 93</text>"));
    assert!(html.contains("(suspicious reading)"));
    assert!(html.contains("Systolic blood pressure, last 30 days"));
    // Acknowledged: off the list.
    let alert = console.split("/console/alerts/").nth(1).unwrap().split('/').next().unwrap();
    let csrf = s.page_csrf(&dr, "/console").await;
    let r = post_form(&s, &dr, &format!("/console/alerts/{alert}/acknowledge"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console?done=acknowledged");
    let after = page(&s, &dr, "/console?done=acknowledged").await;
    assert!(after.contains("The alert is acknowledged"));
    assert_eq!(
        after.matches("/acknowledge\"").count() + 1,
        console.matches("/acknowledge\"").count()
    );
}

async fn a_device_rotates_its_key_with_both_signatures(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let admin = s.signed_in(ADMIN).await;
    let code = model_and_code(&s, &admin, "hr-rot", &["8867-4"], "").await;
    let (device, old) = enrol(&s, &code, "2.5.0").await;
    let new = DeviceKey::generate().unwrap();
    let rotation = Rotation {
        at: at(0),
        device: device.clone(),
        new_key: encode_base64url(&new.public_key()),
    };
    let msg = rotation_message(&rotation);
    let req = |sig: &DeviceKey, new_sig: &DeviceKey| SignedRotation {
        sig: encode_base64url(&sig.sign(&msg)),
        new_sig: encode_base64url(&new_sig.sign(&msg)),
        rotation: rotation.clone(),
    };
    let post = |body: SignedRotation| {
        let c = s.client();
        let url = s.url("/api/v1/devices/rotate-key");
        async move {
            let r = c.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    // Only the new key: someone who never held the device's key cannot take it over.
    let (st, v) = post(req(&new, &new)).await;
    assert_eq!((st, v["reason"].as_str()), (400, Some("bad_signature")));
    // To a key of small order (the identity point), which anyone could sign for: refused
    // before any signature is looked at.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = Rotation { new_key: encode_base64url(&identity), ..rotation.clone() };
    let weak_msg = rotation_message(&weak);
    let (st, v) = post(SignedRotation {
        sig: encode_base64url(&old.sign(&weak_msg)),
        new_sig: encode_base64url(&old.sign(&weak_msg)),
        rotation: weak,
    })
    .await;
    assert_eq!((st, v["reason"].as_str()), (400, Some("malformed")), "{v}");
    let (st, v) = post(req(&old, &new)).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("rotated")), "{v}");
    // Replayed: the key that signed it no longer rules.
    assert_eq!(post(req(&old, &new)).await.1["reason"], "bad_signature");
    let dir = tempfile::tempdir().unwrap();
    let mut seq = SequenceFile::open(&dir.path().join("seq")).unwrap();
    let with = |key: DeviceKey| DeviceIdentity {
        device_id: device.clone(),
        key,
        firmware: "2.5.0".into(),
    };
    let stale_key = with(old);
    let b = stale_key.sign(&mut seq, &at(0), vec![reading("8867-4", "/min", "64", 2)]).unwrap();
    assert_eq!(send(&s, &b).await[0]["reason"], "bad_signature");
    let b = with(new).sign(&mut seq, &at(0), vec![reading("8867-4", "/min", "64", 2)]).unwrap();
    assert_eq!(send(&s, &b).await[0]["status"], "stored");
}

async fn weeks_of_readings_are_charted_by_span_and_exported_by_window(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let admin = s.signed_in(ADMIN).await;
    let code = model_and_code(&s, &admin, "ox-long", &["59408-5"], "").await;
    let (device, key) = enrol(&s, &code, "3.0.0").await;
    let tenant = s.clinic.tenant.id;
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = s.state.store.patient_by_user(tenant, ana_user).await.unwrap().unwrap().id;

    // Five days of SpO2 a minute (7,200 readings, past MAX_EVERYTHING), sent as 72
    // batches of 100 in one request, with a single dip to 84 % three days ago.
    let dip = 3 * 1440 + 17;
    let minutes: Vec<i64> = (0..7_200).rev().collect();
    let readings: Vec<Reading> = minutes
        .iter()
        .map(|&m| {
            let v = if m == dip { "84" } else { ["96", "97", "98"][(m % 3) as usize] };
            reading("59408-5", "%", v, m)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut seq = SequenceFile::open(&dir.path().join("seq")).unwrap();
    let id = DeviceIdentity { device_id: device.clone(), key, firmware: "3.0.0".into() };
    let batches: Vec<_> =
        readings.chunks(100).map(|c| id.sign(&mut seq, &at(0), c.to_vec()).unwrap()).collect();
    let r = s.client().post(s.url("/api/v1/devices/telemetry")).json(&batches).send().await;
    let acks: Value = r.unwrap().json().await.unwrap();
    assert_eq!(acks.as_array().unwrap().len(), 72);
    assert!(acks.as_array().unwrap().iter().all(|a| a["status"] == "stored"), "{acks}");

    let audit_size = || async { s.state.store.audit_size().await.unwrap() };
    let dr = s.signed_in(DR).await;
    let chart = format!("/console/patients/{ana}");
    let before = audit_size().await;
    let html = page(&s, &dr, &chart).await;
    let after = audit_size().await;
    // The default span, 30 days, holds all of them: counted and ranged in full, drawn as
    // the lowest and highest of each span of time, so the dip is on the chart.
    let figure = html.split("Oxygen saturation (SpO2), last 30 days").last().unwrap();
    let figure = figure.split("</svg>").next().unwrap();
    // (The demo clinic's own few SpO2 measurements of Ana's are on it too.)
    assert!((7_200..7_230).contains(&measurements(figure)), "{figure}");
    assert!(figure.contains(" measurements; lowest 84 %; highest 98 %"), "{figure}");
    assert!(figure.contains("drawn as the lowest and highest in each of 240"));
    let circles = figure.matches("<circle").count();
    assert!((240..=720).contains(&circles), "{circles} points drawn");
    assert!(figure.contains(&format!("{}: 84 %", minute_label(&readings[7_199 - dip as usize]))));
    assert!(
        html.contains(r#"href="/console/patients/"#)
            && html.contains(r#"aria-current="page">30 days"#)
    );
    // One entry for the patient, one per ordinary resource, one for the drawn readings.
    use telesafe_core::audit::AuditRepository;
    let logged = s.state.store.audit_entries(before, u32::try_from(after - before).unwrap());
    let logged: Vec<_> = logged.await.unwrap().into_iter().map(|(e, _)| e).collect();
    assert!(logged.len() < 50, "{} entries for one chart view", logged.len());
    let drawn: Vec<_> = logged.iter().filter(|e| e.action == "chart").collect();
    assert_eq!(drawn.len(), 1);
    assert_eq!(drawn[0].patient_id, ana.to_string());
    assert!(drawn[0].resource_id.ends_with("Z/.."), "{}", drawn[0].resource_id);

    // 24 hours: a day of them; the patient sees her own with the same spans.
    let day = page(&s, &dr, &format!("{chart}?span=1d")).await;
    let figure = day.split("Oxygen saturation (SpO2), last 24 hours").last().unwrap();
    assert!((1_439..1_450).contains(&measurements(figure)), "{figure}");
    assert!(!day.contains("84 %"), "the dip is three days old");
    let mine = page(&s, &s.signed_in(PATIENT).await, "/portal/record?span=7d").await;
    assert!(mine.contains("Vital signs, last 7 days") && mine.contains("84 %"));
    let figure = mine.split("Oxygen saturation (SpO2), last 7 days").last().unwrap();
    assert!((7_200..7_230).contains(&measurements(figure)), "{figure}");

    // FHIR: the whole record comes in pages. The first holds the Patient and the rest of
    // the record, then the newest readings; each `next` link carries on after the last
    // reading given, and every reading comes exactly once, logged as read once.
    let everything = format!("/fhir/Patient/{ana}/$everything");
    let device_hex = device.replace('-', "");
    let mine = |r: &Value| r["id"].as_str().unwrap().starts_with(&format!("d{device_hex}."));
    let before = audit_size().await;
    let mut url = format!("{everything}?_count=2000");
    let mut seen = std::collections::HashSet::new();
    let mut pages = Vec::new();
    loop {
        let r = dr.get(s.url(&url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let bundle: Value = r.json().await.unwrap();
        let entries = bundle["entry"].as_array().unwrap();
        let patients = entries.iter().filter(|e| e["resource"]["resourceType"] == "Patient");
        pages.push((entries.len(), patients.count(), bundle["total"].clone()));
        for e in entries.iter().map(|e| &e["resource"]).filter(|r| mine(r)) {
            assert!(seen.insert(e["id"].as_str().unwrap().to_owned()), "{} twice", e["id"]);
        }
        let next = bundle["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next");
        let Some(next) = next else { break };
        let next = next["url"].as_str().unwrap();
        assert!(next.contains("_count=2000&_cursor=d"), "{next}");
        url = next[next.find("/fhir/").unwrap()..].to_owned();
    }
    assert_eq!(seen.len(), 7_200, "every reading once");
    // Page one: the Patient, the demo clinic's own resources of Ana's and 2,000 readings
    // (hers from the demo too); then 2,000 a page; no total, as the record is paged.
    assert_eq!(pages.len(), 4, "{pages:?}");
    assert!(pages[0].0 > 2_000 && pages[0].1 == 1 && pages[0].2.is_null(), "{pages:?}");
    assert!(pages[1..].iter().all(|p| p.1 == 0 && p.2.is_null()), "{pages:?}");
    assert_eq!((pages[1].0, pages[2].0), (2_000, 2_000));
    let reads = reads_of(&s, before, 20_000, &device_hex).await;
    assert_eq!(reads, 7_200);
    for bad in [
        "start=yesterday",
        "start=2026-02-30",
        "start=2026-12-02&end=2026-12-01",
        "_count=0",
        "_count=lots",
        "_cursor=nothing",
        // A well-formed place that is no reading of Ana's.
        "_cursor=d0191c3f26a4b7c3d8e9f00000000000a.1.0",
    ] {
        let r = dr.get(s.url(&format!("{everything}?{bad}"))).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let oo: Value = r.json().await.unwrap();
        assert_eq!(oo["resourceType"], "OperationOutcome", "{bad}");
    }
    // Someone who may not see vital signs learns nothing of them, not even that there are
    // more: the front desk's $everything holds none and has no next page.
    let desk = s.signed_in(FRONT_DESK).await;
    let r = desk.get(s.url(&everything)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let theirs: Value = r.json().await.unwrap();
    assert!(
        theirs["entry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["resource"]["resourceType"] != "Observation")
    );
    assert!(theirs["link"].as_array().unwrap().iter().all(|l| l["relation"] != "next"));
    // From one reading's time on: exactly the readings since, each logged as read.
    let start = &readings[7_199 - 1_000].at;
    let before = audit_size().await;
    let r = dr.get(s.url(&format!("{everything}?start={start}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let bundle: Value = r.json().await.unwrap();
    let theirs: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["id"].as_str().unwrap().starts_with(&format!("d{device_hex}.")))
        .collect();
    assert_eq!(theirs.len(), 1_001);
    assert!(theirs.iter().all(|o| o["effectiveDateTime"].as_str().unwrap() >= start.as_str()));
    let times: Vec<&str> =
        theirs.iter().map(|o| o["effectiveDateTime"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(bundle["entry"][0]["resource"]["resourceType"], "Patient");
    let reads = reads_of(&s, before, 5_000, &device_hex).await;
    assert_eq!(reads, 1_001);

    // Erased: her readings answer 410 like the rest of her record, to whoever may see
    // it; to someone who may not, 404, as for an id that never existed.
    let reading = format!("/fhir/Observation/{}", theirs[0]["id"].as_str().unwrap());
    assert_eq!(dr.get(s.url(&reading)).send().await.unwrap().status(), 200);
    use telesafe_core::records::keys::KeyRepository;
    s.state.store.shred_patient(tenant, ana, s.state.clock.now()).await.unwrap();
    assert_eq!(dr.get(s.url(&reading)).send().await.unwrap().status(), 410);
    assert_eq!(desk.get(s.url(&reading)).send().await.unwrap().status(), 404);
}

/// How many of the `n` audit entries from `from` on are reads of the device's readings.
async fn reads_of(s: &TestServer, from: u64, n: u32, device_hex: &str) -> usize {
    use telesafe_core::audit::AuditRepository;
    let logged = s.state.store.audit_entries(from, n).await.unwrap();
    let theirs = format!("d{device_hex}.");
    logged.iter().filter(|(e, _)| e.action == "read" && e.resource_id.starts_with(&theirs)).count()
}

/// How many measurements a chart's description counts.
fn measurements(svg: &str) -> usize {
    let desc = svg.split("<desc>").nth(1).unwrap_or_default();
    desc.split(" measurement").next().unwrap().parse().unwrap()
}

/// A reading's time as the chart labels it ("YYYY-MM-DD HH:MM").
fn minute_label(r: &Reading) -> String {
    r.at.chars().take(16).collect::<String>().replace('T', " ")
}

both_backends!(
    weeks_of_readings_are_charted_by_span_and_exported_by_window,
    quarantine_is_listed_and_released_through_the_pages,
    thresholds_alert_the_care_team_and_are_drawn,
    a_device_rotates_its_key_with_both_signatures,
);
