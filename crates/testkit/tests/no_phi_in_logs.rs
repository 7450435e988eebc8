//! No patient data, credential or session token reaches the logs, even at debug level:
//! the server logs route templates, ids and outcomes only. One test per binary, because it
//! installs the process-wide log subscriber.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use secrecy::ExposeSecret;
use telesafe_core::SystemClock;
use telesafe_testkit::{DbBackend, start};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_data_and_secrets_never_reach_the_log() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .init();

    let s = start(DbBackend::Sqlite, Arc::new(SystemClock)).await.unwrap();
    let patient_email = "ana.lopez@demo.telesafe.test";
    let c = s.client();
    // A failed and a successful sign-in, a query string carrying personal data, pages that
    // render names, an API call, a 404 whose path carries a name.
    c.post(s.url("/signin"))
        .header("origin", &s.base)
        .form(&[
            ("organisation", "demo"),
            ("email", patient_email),
            ("password", "Wrong-But-Long-Password-1"),
        ])
        .send()
        .await
        .unwrap();
    let signed_in = s.signed_in(patient_email).await;
    signed_in.get(s.url("/portal?note=Ana+Lopez+diabetes")).send().await.unwrap();
    signed_in.get(s.url("/api/v1/me")).send().await.unwrap();
    signed_in.get(s.url("/patients/Walter-Brown")).send().await.unwrap();
    let doctor = s.signed_in("dr.rivera@demo.telesafe.test").await;
    let console = doctor.get(s.url("/console")).send().await.unwrap().text().await.unwrap();
    assert!(console.contains("Walter Brown"), "the page itself does show names");

    // The record: a chart page, FHIR searches whose query strings carry a name, a birth
    // date and a phone number, an invalid resource whose error names an element, and a
    // write whose body carries clinical text.
    let ana =
        doctor.get(s.url("/fhir/Patient?family=Brown&birthdate=1941-09-03")).send().await.unwrap();
    assert_eq!(ana.status(), 200);
    let bundle: serde_json::Value = ana.json().await.unwrap();
    let walter = bundle["entry"][0]["resource"]["id"].as_str().unwrap().to_owned();
    doctor.get(s.url("/fhir/Patient?phone=5550100")).send().await.unwrap();
    let chart = doctor.get(s.url(&format!("/console/patients/{walter}"))).send().await.unwrap();
    assert!(chart.text().await.unwrap().contains("Walter Brown"));
    let bad = serde_json::json!({"resourceType": "Patient", "name": [{"family": "Walterson"}], "gender": "diabetes"});
    let r = doctor
        .post(s.url("/fhir/Patient"))
        .header("origin", &s.base)
        .header("content-type", "application/fhir+json")
        .body(bad.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "diabetes screening"}, "subject": {"reference": format!("Patient/{walter}")},
        "note": [{"text": "Walter reports diabetes in the family"}]});
    let r = doctor
        .post(s.url("/fhir/Observation"))
        .header("origin", &s.base)
        .header("content-type", "application/fhir+json")
        .body(obs.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("\"route\":\"/fhir/{type}\""), "FHIR spans carry the template");
    assert!(log.contains("\"route\":\"/portal\""), "spans carry the route template");
    assert!(log.contains("signed in"), "sign-ins are logged (by id)");
    let password = s.password.expose_secret().to_owned();
    for forbidden in [
        "Ana López",
        "Ana Lopez",
        "Ana+Lopez",
        "Walter",
        "diabetes",
        "Brown",
        "1941-09-03",
        "5550100",
        patient_email,
        "ana.lopez",
        "Wrong-But-Long-Password-1",
        password.as_str(),
        "__Host-telesafe_session=",
    ] {
        assert!(!log.contains(forbidden), "the log contains {forbidden:?}");
    }
}
