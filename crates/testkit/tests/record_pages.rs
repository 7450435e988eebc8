//! The record as people meet it in the browser: the clinic console links each patient to
//! their chart (demographics, problems, allergies, medications, vital signs drawn), staff
//! add to it with readable validation messages, and patients read their own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use telesafe_core::identity::PatientRepository;
use telesafe_testkit::{DbBackend, TestServer, both_backends, field_value};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

async fn post(
    s: &TestServer,
    c: &reqwest::Client,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String, String) {
    let r = c.post(s.url(path)).header("origin", &s.base).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    let location =
        r.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, location, r.text().await.unwrap())
}

async fn page(s: &TestServer, c: &reqwest::Client, path: &str) -> (u16, String) {
    let r = c.get(s.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn staff_chart_shows_the_record_and_validates_what_is_added(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let patients = s.state.store.list_patients(s.clinic.tenant.id).await.unwrap();
    let ana_user = s.clinic.users.iter().find(|u| u.email.as_str() == PATIENT).unwrap().id;
    let ana = patients.iter().find(|p| p.user_id == Some(ana_user)).unwrap().id.to_string();
    let offline = patients.iter().find(|p| p.user_id.is_none()).unwrap().id.to_string();
    let chart = format!("/console/patients/{ana}");

    // The console names patients from their encrypted records and links to each chart.
    let dr = s.signed_in(DR).await;
    let (st, console) = page(&s, &dr, "/console").await;
    assert_eq!(st, 200);
    assert!(console.contains(&format!("<a href=\"{chart}\">Ana López</a>")), "{console}");
    assert!(console.contains("Maria Santos") && console.contains("1948-05-12"));

    // The chart: details and a week of vital signs, drawn.
    let (st, html) = page(&s, &dr, &chart).await;
    assert_eq!(st, 200);
    assert!(html.contains("<h1>Ana López</h1>") && html.contains("MRN-"), "{html}");
    assert!(html.contains("Heart rate") && html.contains("7 measurements"));
    assert!(html.contains("<svg class=\"chart line\"") && html.contains("<polyline"));
    let csrf = field_value(&html, "csrf");

    // Adding: a problem, then readable refusals for bad values.
    let add = |fields: Vec<(&'static str, String)>| {
        let mut f: Vec<(&str, String)> = vec![("csrf", csrf.clone())];
        f.extend(fields);
        f
    };
    let form = add(vec![
        ("kind", "condition".into()),
        ("text", "Type 2 diabetes".into()),
        ("status", "active".into()),
        ("date", "2019-03-01".into()),
    ]);
    let borrowed: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (st, location, _) = post(&s, &dr, &format!("{chart}/records"), &borrowed).await;
    assert_eq!((st, location.as_str()), (303, format!("{chart}?saved=condition").as_str()));
    let (_, html) = page(&s, &dr, &format!("{chart}?saved=condition")).await;
    assert!(html.contains("Type 2 diabetes") && html.contains("since 2019-03-01"));
    assert!(html.contains("The problem was added."));
    for (value, message) in [("abc", "as a number"), ("150", "outside what a person can have")] {
        let form =
            add(vec![("kind", "vital".into()), ("vital", "spo2".into()), ("value", value.into())]);
        let borrowed: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (st, _, html) = post(&s, &dr, &format!("{chart}/records"), &borrowed).await;
        assert_eq!(st, 422);
        assert!(html.contains("role=\"alert\"") && html.contains(message), "{value}: {html}");
    }
    let form = add(vec![
        ("kind", "vital".into()),
        ("vital", "spo2".into()),
        ("value", "97".into()),
        ("when", "2024-05-01T09:30".into()),
    ]);
    let borrowed: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Taken long ago: the chart comes back on a span that reaches it.
    let (st, location, _) = post(&s, &dr, &format!("{chart}/records"), &borrowed).await;
    assert_eq!((st, location.as_str()), (303, format!("{chart}?saved=vital&span=all").as_str()));
    let (_, html) = page(&s, &dr, &location).await;
    assert!(
        html.contains("Oxygen saturation (SpO2), all time") && html.contains("(8 measurements)"),
        "{html}"
    );
    assert!(html.contains("The measurement was recorded."));
    let (_, recent) = page(&s, &dr, &chart).await;
    let caption = |html: &str| {
        let after = html.split("<strong>Oxygen saturation (SpO2)</strong>").nth(1).unwrap();
        after.split("</figcaption>").next().unwrap().to_owned()
    };
    assert!(caption(&html).ends_with("(8 measurements)"), "{}", caption(&html));
    assert!(recent.contains("Vital signs, last 30 days"));
    assert!(caption(&recent).ends_with("(7 measurements)"), "the old one is not in the span");
    // Without the form's token nothing is added.
    let (st, _, _) = post(
        &s,
        &dr,
        &format!("{chart}/records"),
        &[("kind", "condition"), ("text", "x"), ("status", "active")],
    )
    .await;
    assert_eq!(st, 403);

    // Demographics: a new version; a stale form is refused, not silently overwritten.
    let version = field_value(&html, "version");
    let details = |v: &str, born: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("version", v.to_owned()),
            ("given", "Ana María".to_owned()),
            ("family", "López".to_owned()),
            ("birth_date", born.to_owned()),
            ("phone", "+34 600 000 000".to_owned()),
        ]
    };
    let f = details(&version, "1948-13-12");
    let b: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (st, _, html) = post(&s, &dr, &format!("{chart}/demographics"), &b).await;
    assert_eq!(st, 422);
    assert!(html.contains("YYYY-MM-DD"));
    let f = details(&version, "1948-05-12");
    let b: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(post(&s, &dr, &format!("{chart}/demographics"), &b).await.0, 303);
    let (st, _, html) = post(&s, &dr, &format!("{chart}/demographics"), &b).await;
    assert_eq!(st, 422, "the same version again is stale");
    assert!(html.contains("Someone else changed this record"), "{html}");
    let (_, html) = page(&s, &dr, &chart).await;
    assert!(html.contains("<h1>Ana María López</h1>") && html.contains("+34 600 000 000"));

    // Front desk: details, but no clinical data and no clinical writes.
    let desk = s.signed_in(FRONT_DESK).await;
    let (st, html) = page(&s, &desk, &chart).await;
    assert_eq!(st, 200);
    assert!(
        html.contains("Ana María López")
            && !html.contains("Heart rate")
            && !html.contains("diabetes")
    );
    let dcsrf = field_value(&html, "csrf");
    let (st, _, html) = post(
        &s,
        &desk,
        &format!("{chart}/records"),
        &[("csrf", &dcsrf), ("kind", "condition"), ("text", "Asthma"), ("status", "active")],
    )
    .await;
    assert_eq!(st, 422);
    assert!(html.contains("You may not change this patient"), "{html}");
    // The nurse is not on the offline patient's team: the chart does not exist for her.
    let nurse = s.signed_in(NURSE).await;
    assert_eq!(page(&s, &nurse, &format!("/console/patients/{offline}")).await.0, 404);

    // The patient reads her own record, with what the doctor added.
    let me = s.signed_in(PATIENT).await;
    let (st, html) = page(&s, &me, "/portal/record").await;
    assert_eq!(st, 200);
    assert!(
        html.contains("Type 2 diabetes") && html.contains("Heart rate") && html.contains("<svg")
    );
    assert!(!html.contains("Add a problem"), "read-only for the patient");
    assert_eq!(page(&s, &me, &chart).await.0, 403);
}

both_backends!(staff_chart_shows_the_record_and_validates_what_is_added,);
