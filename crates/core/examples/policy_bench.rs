//! Benchmark: policy decisions per second (Cedar, the shipped policies, a care-team
//! clinician reading a clinical record: entities built, request validated against the
//! schema, policies evaluated), beside the cost of hashing that request's audit entry,
//! which every such decision is paired with, in one run.
//!
//! Run: `cargo run --release -p telesafe-core --example policy_bench [-- SECONDS]`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::time::{Duration, Instant};

use telesafe_core::access::{
    AccessContext, Action, PatientFacts, PolicyEngine, Principal, Resource,
};
use telesafe_core::audit::{ActorKind, Entry, Purpose};
use telesafe_core::identity::Role;
use telesafe_core::{PatientId, TenantId, UserId};

fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let engine = PolicyEngine::new().unwrap();
    let tenant = TenantId::new_v7();
    let clinician = UserId::new_v7();
    let patient = PatientFacts {
        id: PatientId::new_v7(),
        tenant,
        account: Some(UserId::new_v7()),
        care_team: (0..8).map(|_| UserId::new_v7()).chain([clinician]).collect(),
        denied_categories: vec!["mental-health".into()],
        denied_recipients: vec![UserId::new_v7()],
    };
    let who = Principal::User { id: clinician, tenant, role: Role::Clinician };
    let what = Resource::Record {
        id: "obs-1".into(),
        resource_type: "Observation".into(),
        patient,
        category: "vitals".into(),
        restricted: false,
    };
    let ctx = AccessContext { purpose: "treatment".into(), break_glass: false };
    assert!(engine.decide(&who, Action::Read, &what, &ctx, None).allowed);

    let run = |f: &mut dyn FnMut()| {
        let end = Instant::now() + Duration::from_secs(secs);
        let start = Instant::now();
        let mut n = 0u64;
        while Instant::now() < end {
            for _ in 0..100 {
                f();
            }
            n += 100;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let entry = Entry {
        seq: 1,
        at: 1_790_000_000_000,
        tenant_id: tenant.to_string(),
        actor_kind: ActorKind::User,
        actor_id: clinician.to_string(),
        actor_role: "clinician".into(),
        action: "read".into(),
        resource_type: "Observation".into(),
        resource_id: "obs-1".into(),
        patient_id: "p".into(),
        purpose: Purpose::Treatment,
        outcome: "success".into(),
        source: "192.0.2.1".into(),
        session: "abcd".into(),
        request_id: "r".into(),
    };
    let hash_rate = run(&mut || {
        std::hint::black_box(std::hint::black_box(&entry).leaf_hash());
    });
    let decide_rate = run(&mut || {
        std::hint::black_box(engine.decide(&who, Action::Read, &what, &ctx, None));
    });
    println!("| what | per second (one core) | × audit-entry hash |\n|---|---|---|");
    println!("| hash one audit entry (baseline) | {hash_rate:.0} | 1.00 |");
    println!("| one policy decision | {decide_rate:.0} | {:.3} |", decide_rate / hash_rate);
}
