//! The platform operator: above the tenants, creating organisations and their first
//! administrator, seeing each organisation's size but none of its people or patients.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

mod common;

use telesafe_core::identity::outbox::{self, OutboxRepository};
use telesafe_core::identity::{
    Email, PLATFORM_SLUG, Role, TenantRepository, TenantSlug, UserRepository,
};
use telesafe_server::demo::DEMO_OPERATOR;
use telesafe_testkit::{DbBackend, both_backends};

#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

async fn operators_create_organisations_and_see_no_one_inside_them(backend: DbBackend) {
    let Some(s) = server(backend).await else { return };
    let op = s.signed_in_at(PLATFORM_SLUG, DEMO_OPERATOR.0).await;
    let r = op.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/platform", "operators start at the organisations page");
    let page = op.get(s.url("/platform")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Riverside Demo Clinic") && page.contains("<code>demo</code>"), "{page}");
    assert!(!page.contains("<code>platform</code>"), "the platform is not listed as a clinic");
    for person in ["Ana López", "ana.lopez@", "Dr. Sam Rivera", "dr.rivera@"] {
        assert!(!page.contains(person), "an operator sees no one inside a clinic: {person}");
    }
    // No clinic page is open to an operator.
    for path in ["/admin", "/console", "/security", "/portal"] {
        assert_eq!(op.get(s.url(path)).send().await.unwrap().status(), 403, "{path}");
    }

    // Creating an organisation: bad input is explained and changes nothing.
    let csrf = s.page_csrf(&op, "/platform").await;
    let create = |code: &'static str, email: &'static str| {
        let (op, csrf) = (op.clone(), csrf.clone());
        let s = &s;
        async move {
            post_form(
                s,
                &op,
                "/platform/organisations",
                &[
                    ("csrf", &csrf),
                    ("code", code),
                    ("name", "Hilltop Health"),
                    ("admin_name", "Hana Hill"),
                    ("admin_email", email),
                ],
            )
            .await
        }
    };
    let r = create("platform", "hana@hilltop.example").await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("reserved"));
    let r = create("demo", "hana@hilltop.example").await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("already exists"));
    let r = create("Hill top!", "hana@hilltop.example").await;
    assert_eq!(r.status(), 422);
    let r = create("hilltop", "hana@hilltop.example").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/platform?done=created");

    // The first administrator exists, pending, with a link in the outbox.
    let slug = TenantSlug::parse("hilltop").unwrap();
    let tenant = s.state.store.tenant_by_slug(&slug).await.unwrap().unwrap();
    let admin = s
        .state
        .store
        .user_by_email(tenant.id, &Email::parse("hana@hilltop.example").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.role, Role::TenantAdmin);
    let due = s.state.store.due_messages(10, s.state.clock.now()).await.unwrap();
    let body = due
        .iter()
        .find(|m| m.user_id == admin.id)
        .map(|m| outbox::open_body(&s.state.outbox_key, m).unwrap())
        .unwrap();
    let link = body.lines().find(|l| l.contains("/activate/")).unwrap().trim();
    let path = &link[link.find("/activate/").unwrap()..];
    assert_eq!(s.client().get(s.url(path)).send().await.unwrap().status(), 200);
    let page = op.get(s.url("/platform")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Hilltop Health"));

    // A clinic's administrator cannot make anyone a platform operator.
    let admin = s.signed_in(ADMIN).await;
    let csrf = s.page_csrf(&admin, "/admin").await;
    let r = post_form(
        &s,
        &admin,
        "/admin/people",
        &[
            ("csrf", &csrf),
            ("role", "platform-operator"),
            ("name", "Sneaky"),
            ("email", "sneaky@demo.telesafe.test"),
        ],
    )
    .await;
    assert_eq!(r.status(), 422);
    assert_eq!(admin.get(s.url("/platform")).send().await.unwrap().status(), 403);
}

both_backends!(operators_create_organisations_and_see_no_one_inside_them);
