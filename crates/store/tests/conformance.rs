//! The storage conformance suite: every case is written once and runs against SQLite and
//! PostgreSQL (`conformance::sqlite::*` and `conformance::postgres::*` in the test output).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::time::Duration;

use secrecy::SecretString;
use telesafe_core::identity::*;
use telesafe_core::{ManualClock, PatientId, RepoError, TenantId, Timestamp, UserId};
use telesafe_crypto::OpaqueToken;
use telesafe_store::Backend;
use telesafe_store::testing::{TestDatabase, TestDbError, fresh, postgres_required};

const T0: Timestamp = Timestamp::from_unix_millis(1_790_000_000_000);

async fn db(backend: Backend) -> Option<TestDatabase> {
    match fresh(backend).await {
        Ok(db) => Some(db),
        Err(TestDbError::NoPostgres) if !postgres_required() => {
            eprintln!(
                "SKIPPED on {}: TELESAFE_TEST_PG_URL is not set",
                backend.as_str()
            );
            None
        }
        Err(e) => panic!("{} test database: {e}", backend.as_str()),
    }
}

fn tenant(slug: &str) -> Tenant {
    Tenant {
        id: TenantId::new_v7(),
        slug: TenantSlug::parse(slug).unwrap(),
        name: DisplayName::parse(&format!("Clinic {slug}")).unwrap(),
        created_at: T0,
    }
}

fn user(t: &Tenant, email: &str, role: Role, hash: Option<&str>) -> User {
    User {
        id: UserId::new_v7(),
        tenant_id: t.id,
        email: Email::parse(email).unwrap(),
        display_name: DisplayName::parse("Test Person").unwrap(),
        role,
        status: if hash.is_some() {
            UserStatus::Active
        } else {
            UserStatus::Pending
        },
        password_hash: hash.map(str::to_owned),
        created_at: T0,
    }
}

async fn tenants_round_trip_and_slugs_are_unique(db: TestDatabase) {
    let s = &db.store;
    let a = tenant("alpha");
    s.create_tenant(&a).await.unwrap();
    assert_eq!(s.tenant_by_slug(&a.slug).await.unwrap(), Some(a.clone()));
    let mut dup = tenant("alpha");
    dup.id = TenantId::new_v7();
    assert!(matches!(
        s.create_tenant(&dup).await,
        Err(RepoError::Conflict)
    ));
    assert_eq!(s.list_tenants().await.unwrap(), vec![a]);
    assert_eq!(
        s.tenant_by_slug(&TenantSlug::parse("nope").unwrap())
            .await
            .unwrap(),
        None
    );
}

async fn users_are_unique_per_tenant_and_invisible_across_tenants(db: TestDatabase) {
    let s = &db.store;
    let (a, b) = (tenant("alpha"), tenant("beta"));
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let ua = user(&a, "ana@example.org", Role::Clinician, Some("$argon2id$x"));
    s.create_user(&ua).await.unwrap();
    // Same email in another tenant is a different account.
    let ub = user(&b, "ana@example.org", Role::Patient, None);
    s.create_user(&ub).await.unwrap();
    // Same email in the same tenant is refused.
    let dup = user(&a, "ana@example.org", Role::Nurse, None);
    assert!(matches!(
        s.create_user(&dup).await,
        Err(RepoError::Conflict)
    ));

    assert_eq!(
        s.user_by_email(a.id, &ua.email).await.unwrap(),
        Some(ua.clone())
    );
    assert_eq!(s.user_by_id(a.id, ua.id).await.unwrap(), Some(ua.clone()));
    // Asking tenant B for tenant A's user id finds nothing.
    assert_eq!(s.user_by_id(b.id, ua.id).await.unwrap(), None);
    assert_eq!(s.list_users(a.id).await.unwrap(), vec![ua.clone()]);
    assert_eq!(s.list_users(b.id).await.unwrap(), vec![ub]);

    s.set_password_hash(a.id, ua.id, "$argon2id$new")
        .await
        .unwrap();
    let again = s.user_by_id(a.id, ua.id).await.unwrap().unwrap();
    assert_eq!(again.password_hash.as_deref(), Some("$argon2id$new"));
    // A cross-tenant update touches nothing.
    assert!(matches!(
        s.set_password_hash(b.id, ua.id, "$argon2id$evil").await,
        Err(RepoError::NotFound)
    ));
}

async fn patients_are_listed_per_tenant(db: TestDatabase) {
    let s = &db.store;
    let (a, b) = (tenant("alpha"), tenant("beta"));
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let acct = user(&a, "pat@example.org", Role::Patient, None);
    s.create_user(&acct).await.unwrap();
    let p = Patient {
        id: PatientId::new_v7(),
        tenant_id: a.id,
        user_id: Some(acct.id),
        created_at: T0,
    };
    s.create_patient(&p).await.unwrap();
    assert_eq!(s.list_patients(a.id).await.unwrap(), vec![p]);
    assert!(s.list_patients(b.id).await.unwrap().is_empty());
}

async fn sessions_are_found_by_hash_touched_and_deleted(db: TestDatabase) {
    let s = &db.store;
    let a = tenant("alpha");
    s.create_tenant(&a).await.unwrap();
    let u = user(&a, "doc@example.org", Role::Clinician, Some("$argon2id$x"));
    s.create_user(&u).await.unwrap();
    let token = OpaqueToken::generate().unwrap();
    let sess = Session {
        token_hash: token.hash(),
        tenant_id: a.id,
        user_id: u.id,
        role: u.role,
        created_at: T0,
        last_seen_at: T0,
    };
    s.create_session(&sess).await.unwrap();
    assert_eq!(
        s.session_by_hash(&token.hash()).await.unwrap(),
        Some(sess.clone())
    );
    let later = T0.plus(Duration::from_secs(60));
    s.touch_session(a.id, &token.hash(), later).await.unwrap();
    // Touching with an older time never moves last_seen backwards.
    s.touch_session(a.id, &token.hash(), T0).await.unwrap();
    let got = s.session_by_hash(&token.hash()).await.unwrap().unwrap();
    assert_eq!(got.last_seen_at, later);
    s.delete_session(a.id, &token.hash()).await.unwrap();
    assert_eq!(s.session_by_hash(&token.hash()).await.unwrap(), None);
}

async fn setup_tokens_are_single_use_and_expire(db: TestDatabase) {
    let s = &db.store;
    let t = OpaqueToken::generate().unwrap();
    let rec = SetupToken {
        hash: t.hash(),
        created_at: T0,
        expires_at: T0.plus(Duration::from_secs(3600)),
    };
    s.create_setup_token(&rec).await.unwrap();
    let expired = OpaqueToken::generate().unwrap();
    s.create_setup_token(&SetupToken {
        hash: expired.hash(),
        created_at: T0,
        expires_at: T0,
    })
    .await
    .unwrap();
    assert!(!s.consume_setup_token(&expired.hash(), T0).await.unwrap());
    // Concurrent consumers: exactly one wins.
    let now = T0.plus(Duration::from_secs(1));
    let h = t.hash();
    let (x, y) = tokio::join!(
        s.consume_setup_token(&h, now),
        s.consume_setup_token(&h, now)
    );
    assert_eq!([x.unwrap(), y.unwrap()].iter().filter(|w| **w).count(), 1);
    assert!(!s.consume_setup_token(&t.hash(), now).await.unwrap());
    let unknown = OpaqueToken::generate().unwrap();
    assert!(!s.consume_setup_token(&unknown.hash(), now).await.unwrap());
}

async fn sign_in_opens_a_session_and_hides_which_part_was_wrong(db: TestDatabase) {
    let s = &db.store;
    let checker = PasswordChecker::new(2).await.unwrap();
    let clock = ManualClock::at(T0);
    let a = tenant("alpha");
    s.create_tenant(&a).await.unwrap();
    let pw = "a long and memorable passphrase";
    let hash = checker
        .hash(SecretString::from(pw.to_owned()))
        .await
        .unwrap();
    let u = user(&a, "doc@example.org", Role::Clinician, Some(&hash));
    s.create_user(&u).await.unwrap();
    let mut locked = user(&a, "locked@example.org", Role::Nurse, Some(&hash));
    locked.status = UserStatus::Locked;
    s.create_user(&locked).await.unwrap();

    let ok = sign_in(
        s,
        &checker,
        &clock,
        "alpha",
        "DOC@example.org",
        SecretString::from(pw.to_owned()),
    )
    .await
    .unwrap();
    assert_eq!(ok.user.id, u.id);
    assert_eq!(
        s.session_by_hash(&ok.token.hash()).await.unwrap(),
        Some(ok.session)
    );

    for (org, email, pass) in [
        ("alpha", "doc@example.org", "wrong passphrase entirely"),
        ("alpha", "nobody@example.org", pw),
        ("gamma", "doc@example.org", pw),
        ("alpha", "locked@example.org", pw),
        ("not a slug!", "not an email", pw),
    ] {
        let err = sign_in(
            s,
            &checker,
            &clock,
            org,
            email,
            SecretString::from(pass.to_owned()),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, SignInError::InvalidCredentials),
            "{org} {email}: {err:?}"
        );
    }
}

async fn rows_are_invisible_to_a_query_that_states_no_tenant(db: TestDatabase) {
    let s = &db.store;
    let a = tenant("alpha");
    s.create_tenant(&a).await.unwrap();
    s.create_user(&user(&a, "x@example.org", Role::Nurse, None))
        .await
        .unwrap();
    let unscoped = db.count_unscoped("users").await.unwrap();
    match s.backend() {
        // Row-level security is the second wall on PostgreSQL.
        Backend::Postgres => {
            assert!(!s.bypasses_row_level_security().await.unwrap());
            assert_eq!(
                unscoped, 0,
                "row-level security let an unscoped query see rows"
            );
        }
        // SQLite is one process's file; the application's scoping is the wall.
        Backend::Sqlite => assert_eq!(unscoped, 1),
    }
}

async fn readiness_reports_current_migrations(db: TestDatabase) {
    let r = db.store.readiness().await;
    assert!(r.reachable && r.migrations_current, "{r:?}");
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() {
                if let Some(db) = super::db(super::Backend::Sqlite).await { super::$case(db).await }
            })*
        }
        mod postgres {
            $(#[tokio::test] async fn $case() {
                if let Some(db) = super::db(super::Backend::Postgres).await { super::$case(db).await }
            })*
        }
    };
}

conformance!(
    tenants_round_trip_and_slugs_are_unique,
    users_are_unique_per_tenant_and_invisible_across_tenants,
    patients_are_listed_per_tenant,
    sessions_are_found_by_hash_touched_and_deleted,
    setup_tokens_are_single_use_and_expire,
    sign_in_opens_a_session_and_hides_which_part_was_wrong,
    rows_are_invisible_to_a_query_that_states_no_tenant,
    readiness_reports_current_migrations,
);
