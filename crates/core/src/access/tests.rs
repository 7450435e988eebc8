//! The shipped policies as a matrix: every role against every kind of resource and action,
//! with care teams, consent restrictions, break-glass, other tenants and API scopes.

#![allow(clippy::unwrap_used, reason = "unit tests")]

use super::*;

struct World {
    engine: PolicyEngine,
    tenant: TenantId,
    other_tenant: TenantId,
    users: HashMap<&'static str, (UserId, Role)>,
    patient: PatientFacts,
}

fn world() -> World {
    let tenant = TenantId::new_v7();
    let mut users = HashMap::new();
    for (name, role) in [
        ("patient", Role::Patient),
        ("other-patient", Role::Patient),
        ("clinician", Role::Clinician),
        ("outside-clinician", Role::Clinician),
        ("nurse", Role::Nurse),
        ("front-desk", Role::FrontDesk),
        ("security", Role::SecurityOfficer),
        ("admin", Role::TenantAdmin),
        ("operator", Role::PlatformOperator),
    ] {
        users.insert(name, (UserId::new_v7(), role));
    }
    let patient = PatientFacts {
        id: PatientId::new_v7(),
        tenant,
        account: Some(users["patient"].0),
        care_team: vec![users["clinician"].0, users["nurse"].0],
        denied_categories: Vec::new(),
        denied_recipients: Vec::new(),
    };
    World {
        engine: PolicyEngine::new().unwrap(),
        tenant,
        other_tenant: TenantId::new_v7(),
        users,
        patient,
    }
}

impl World {
    fn user(&self, name: &str) -> Principal {
        let (id, role) = self.users[name];
        let tenant = if role == Role::PlatformOperator { self.other_tenant } else { self.tenant };
        Principal::User { id, tenant, role }
    }

    fn record(&self, category: &str) -> Resource {
        Resource::Record {
            id: "obs-1".into(),
            resource_type: "Observation".into(),
            patient: self.patient.clone(),
            category: category.into(),
            restricted: false,
        }
    }

    fn allowed(&self, who: &Principal, action: Action, what: &Resource) -> bool {
        self.decide(who, action, what, false)
    }

    fn decide(&self, who: &Principal, action: Action, what: &Resource, break_glass: bool) -> bool {
        let ctx = AccessContext { purpose: "treatment".into(), break_glass };
        self.engine.decide(who, action, what, &ctx, None).allowed
    }
}

#[test]
fn the_shipped_policies_validate_against_the_schema() {
    PolicyEngine::new().unwrap();
}

#[test]
fn role_matrix_for_a_clinical_record() {
    let w = world();
    let rec = w.record("clinical");
    // (who, read, update, export, delete): the care team writes, and deletes (a versioned
    // delete: history keeps every version); the patient reads and exports.
    let expect = [
        ("patient", true, false, true, false),
        ("other-patient", false, false, false, false),
        ("clinician", true, true, false, true),
        ("nurse", true, true, false, true),
        ("outside-clinician", false, false, false, false),
        ("front-desk", false, false, false, false),
        ("security", false, false, false, false),
        ("admin", false, false, false, false),
        ("operator", false, false, false, false),
    ];
    for (who, read, update, export, delete) in expect {
        let p = w.user(who);
        assert_eq!(w.allowed(&p, Action::Read, &rec), read, "{who} read");
        assert_eq!(w.allowed(&p, Action::Update, &rec), update, "{who} update");
        assert_eq!(w.allowed(&p, Action::Export, &rec), export, "{who} export");
        assert_eq!(w.allowed(&p, Action::Delete, &rec), delete, "{who} delete");
    }
}

#[test]
fn front_desk_sees_demographics_and_scheduling_only() {
    let w = world();
    let fd = w.user("front-desk");
    assert!(w.allowed(&fd, Action::Read, &Resource::Patient(w.patient.clone())));
    assert!(w.allowed(&fd, Action::Update, &w.record("scheduling")));
    assert!(!w.allowed(&fd, Action::Read, &w.record("clinical")));
    assert!(!w.allowed(&fd, Action::Read, &w.record("vitals")));
}

#[test]
fn security_officers_read_audit_and_admins_administer_without_clinical_content() {
    let w = world();
    let log = Resource::AuditLog(w.tenant);
    assert!(w.allowed(&w.user("security"), Action::ReadAudit, &log));
    assert!(!w.allowed(&w.user("clinician"), Action::ReadAudit, &log));
    assert!(!w.allowed(&w.user("admin"), Action::ReadAudit, &log));
    let org = Resource::Tenant(w.tenant);
    assert!(w.allowed(&w.user("admin"), Action::Administer, &org));
    assert!(!w.allowed(&w.user("security"), Action::Administer, &org));
    assert!(!w.allowed(&w.user("admin"), Action::Read, &Resource::Patient(w.patient.clone())));
    assert!(!w.allowed(&w.user("security"), Action::Read, &w.record("clinical")));
}

#[test]
fn nothing_crosses_tenants() {
    let w = world();
    let (id, _) = w.users["clinician"];
    let elsewhere = Principal::User { id, tenant: w.other_tenant, role: Role::Clinician };
    assert!(!w.allowed(&elsewhere, Action::Read, &w.record("clinical")));
    assert!(
        !w.decide(&elsewhere, Action::Read, &w.record("clinical"), true),
        "not even break-glass"
    );
    let admin_elsewhere = Principal::User { id, tenant: w.other_tenant, role: Role::TenantAdmin };
    assert!(!w.allowed(&admin_elsewhere, Action::Administer, &Resource::Tenant(w.tenant)));
}

#[test]
fn break_glass_opens_reading_for_a_clinician_only() {
    let w = world();
    let out = w.user("outside-clinician");
    let rec = w.record("clinical");
    assert!(w.allowed(&out, Action::BreakGlass, &Resource::Patient(w.patient.clone())));
    assert!(!w.allowed(
        &w.user("nurse"),
        Action::BreakGlass,
        &Resource::Patient(w.patient.clone())
    ));
    assert!(!w.allowed(&out, Action::Read, &rec));
    assert!(w.decide(&out, Action::Read, &rec, true));
    assert!(!w.decide(&out, Action::Update, &rec, true), "break-glass reads, never writes");
    assert!(!w.decide(&w.user("front-desk"), Action::Read, &rec, true));
}

#[test]
fn consent_restrictions_are_inputs_to_every_decision() {
    let mut w = world();
    w.patient.denied_categories = vec!["mental-health".into()];
    w.patient.denied_recipients = vec![w.users["nurse"].0];
    let mh = w.record("mental-health");
    assert!(!w.allowed(&w.user("clinician"), Action::Read, &mh), "denied category");
    assert!(w.allowed(&w.user("patient"), Action::Read, &mh), "the patient always sees their own");
    assert!(
        w.decide(&w.user("clinician"), Action::Read, &mh, true),
        "break-glass overrides a category"
    );
    assert!(!w.allowed(&w.user("nurse"), Action::Read, &w.record("clinical")), "denied recipient");
    assert!(!w.decide(&w.user("nurse"), Action::Read, &Resource::Patient(w.patient.clone()), true));
    assert!(w.allowed(&w.user("clinician"), Action::Read, &w.record("clinical")));
}

#[test]
fn restricted_records_are_for_clinicians_not_nurses() {
    let w = world();
    let r = Resource::Record {
        id: "c1".into(),
        resource_type: "Condition".into(),
        patient: w.patient.clone(),
        category: "clinical".into(),
        restricted: true,
    };
    assert!(w.allowed(&w.user("clinician"), Action::Read, &r));
    assert!(!w.allowed(&w.user("nurse"), Action::Read, &r));
}

#[test]
fn api_clients_act_within_their_scopes() {
    let w = world();
    let client = |scopes: &[&str], tenant| Principal::Client {
        id: "tsc_lab".into(),
        tenant,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    };
    let obs = w.record("vitals");
    assert!(w.allowed(&client(&["system/Observation.read"], w.tenant), Action::Read, &obs));
    assert!(!w.allowed(&client(&["system/Observation.read"], w.tenant), Action::Create, &obs));
    assert!(w.allowed(&client(&["system/Observation.write"], w.tenant), Action::Create, &obs));
    assert!(!w.allowed(&client(&["system/Patient.read"], w.tenant), Action::Read, &obs));
    assert!(!w.allowed(&client(&["system/Observation.read"], w.other_tenant), Action::Read, &obs));
}

#[test]
fn only_the_appointments_clinicians_admit() {
    let w = world();
    let appt = Resource::Appointment {
        id: "a1".into(),
        tenant: w.tenant,
        patient: w.patient.clone(),
        clinicians: vec![w.users["clinician"].0],
    };
    assert!(w.allowed(&w.user("clinician"), Action::Admit, &appt));
    assert!(!w.allowed(&w.user("outside-clinician"), Action::Admit, &appt));
    assert!(!w.allowed(&w.user("patient"), Action::Admit, &appt));
}

#[test]
fn tenants_may_add_forbids_that_fit_the_schema() {
    let w = world();
    let set = w
        .engine
        .tenant_policies(
            r#"@id("no-exports") forbid (principal, action == Telesafe::Action::"export", resource);"#,
        )
        .unwrap();
    let ctx = AccessContext { purpose: "patient_request".into(), break_glass: false };
    let rec = w.record("clinical");
    let v = w.engine.decide(&w.user("patient"), Action::Export, &rec, &ctx, Some(&set));
    assert!(!v.allowed);
    assert_eq!(v.policies, ["tenant.no-exports"]);
    let read = w.engine.decide(&w.user("patient"), Action::Read, &rec, &ctx, Some(&set));
    assert!(read.allowed);
    assert_eq!(read.policies, ["patient-own-record"], "decisions name the policy that decided");

    let permit = w.engine.tenant_policies(r#"permit (principal, action, resource);"#);
    assert!(matches!(permit, Err(PolicyError::NotForbid(_))), "{permit:?}");
    let typo = w.engine.tenant_policies(
        r#"forbid (principal, action, resource is Telesafe::Record) when { resource.sensitivty == "restricted" };"#,
    );
    match typo {
        Err(PolicyError::Invalid(msg)) => assert!(msg.contains("sensitivty"), "{msg}"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert!(matches!(w.engine.tenant_policies("forbid ("), Err(PolicyError::Parse(_))));
}

#[test]
fn every_action_is_denied_by_default_to_an_unknown_role() {
    let w = world();
    // A patient of this tenant who is nobody's patient: nothing about this record.
    let p = w.user("other-patient");
    for a in Action::ALL {
        for r in [
            w.record("clinical"),
            Resource::Patient(w.patient.clone()),
            Resource::AuditLog(w.tenant),
            Resource::Tenant(w.tenant),
        ] {
            assert!(!w.allowed(&p, a, &r), "{a:?} on {r:?}");
        }
    }
}
