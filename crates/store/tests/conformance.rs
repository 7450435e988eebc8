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
use telesafe_core::identity::throttle::{self, AddressThrottle};
use telesafe_core::identity::*;
use telesafe_core::{Clock, ManualClock, PatientId, RepoError, TenantId, Timestamp};
use telesafe_crypto::OpaqueToken;
use telesafe_store::Backend;
use telesafe_store::testing::TestDatabase;

#[macro_use]
mod common;
use common::{T0, tenant};

fn user(t: &Tenant, email: &str, role: Role, hash: Option<&str>) -> User {
    User::new(
        t.id,
        Email::parse(email).unwrap(),
        DisplayName::parse("Test Person").unwrap(),
        role,
        if hash.is_some() { UserStatus::Active } else { UserStatus::Pending },
        hash.map(str::to_owned),
        T0,
    )
}

fn session(u: &User, token: &OpaqueToken, at: Timestamp) -> Session {
    Session {
        token_hash: token.hash(),
        tenant_id: u.tenant_id,
        user_id: u.id,
        role: u.role,
        created_at: at,
        last_seen_at: at,
        csrf_token: "csrf".into(),
        source: "192.0.2.1".into(),
        user_agent: "Firefox on Linux".into(),
        stage: SessionStage::MfaPending,
        mfa_at: Some(at),
    }
}

fn attempt<'a>(org: &'a str, email: &'a str, password: &str) -> SignInAttempt<'a> {
    SignInAttempt {
        organisation: org,
        email,
        password: SecretString::from(password.to_owned()),
        source: Some("192.0.2.7".parse().unwrap()),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
    }
}

async fn tenants_round_trip_and_slugs_are_unique(db: TestDatabase) {
    let s = &db.store;
    let a = tenant("alpha");
    s.create_tenant(&a).await.unwrap();
    assert_eq!(s.tenant_by_slug(&a.slug).await.unwrap(), Some(a.clone()));
    let mut dup = tenant("alpha");
    dup.id = TenantId::new_v7();
    assert!(matches!(s.create_tenant(&dup).await, Err(RepoError::Conflict)));
    assert_eq!(s.list_tenants().await.unwrap(), vec![a]);
    assert_eq!(s.tenant_by_slug(&TenantSlug::parse("nope").unwrap()).await.unwrap(), None);
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
    assert!(matches!(s.create_user(&dup).await, Err(RepoError::Conflict)));

    assert_eq!(s.user_by_email(a.id, &ua.email).await.unwrap(), Some(ua.clone()));
    assert_eq!(s.user_by_id(a.id, ua.id).await.unwrap(), Some(ua.clone()));
    // Asking tenant B for tenant A's user id finds nothing.
    assert_eq!(s.user_by_id(b.id, ua.id).await.unwrap(), None);
    assert_eq!(s.list_users(a.id).await.unwrap(), vec![ua.clone()]);
    assert_eq!(s.list_users(b.id).await.unwrap(), vec![ub]);

    s.set_password_hash(a.id, ua.id, "$argon2id$new").await.unwrap();
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
    let sess = session(&u, &token, T0);
    s.create_session(&sess).await.unwrap();
    assert_eq!(s.session_by_hash(&token.hash()).await.unwrap(), Some(sess.clone()));
    let later = T0.plus(Duration::from_secs(60));
    s.touch_session(a.id, &token.hash(), later).await.unwrap();
    // Touching with an older time never moves last_seen backwards.
    s.touch_session(a.id, &token.hash(), T0).await.unwrap();
    let got = s.session_by_hash(&token.hash()).await.unwrap().unwrap();
    assert_eq!(got.last_seen_at, later);
    s.delete_session(a.id, &token.hash()).await.unwrap();
    assert_eq!(s.session_by_hash(&token.hash()).await.unwrap(), None);

    // Several sessions: listed newest activity first; "sign out everywhere else" keeps one.
    let tokens: Vec<OpaqueToken> = (0..3).map(|_| OpaqueToken::generate().unwrap()).collect();
    for (i, t) in tokens.iter().enumerate() {
        s.create_session(&session(&u, t, T0.plus(Duration::from_secs(i as u64)))).await.unwrap();
    }
    let listed = s.list_sessions(a.id, u.id).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].token_hash, tokens[2].hash());
    assert_eq!(listed[0].user_agent, "Firefox on Linux");
    let ended = s.delete_sessions_of_user(a.id, u.id, Some(&tokens[0].hash())).await.unwrap();
    assert_eq!(ended, 2);
    let left = s.list_sessions(a.id, u.id).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].token_hash, tokens[0].hash());
    assert_eq!(s.delete_sessions_of_user(a.id, u.id, None).await.unwrap(), 1);
}

async fn sign_in_attempts_are_capped_atomically_and_lock_the_account(db: TestDatabase) {
    let s = &db.store;
    let a = tenant("alpha");
    s.create_tenant(&a).await.unwrap();
    let u = user(&a, "target@example.org", Role::Patient, Some("$argon2id$x"));
    s.create_user(&u).await.unwrap();
    let window = Duration::from_secs(3600);
    // 150 concurrent reservations: exactly 100 are granted.
    let mut tasks = Vec::new();
    for _ in 0..150 {
        let store = s.clone();
        let (t, id) = (a.id, u.id);
        tasks.push(tokio::spawn(async move {
            store.reserve_sign_in_attempt(t, id, T0, window, 100).await.unwrap()
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.unwrap());
    }
    assert_eq!(granted, 100);
    // The 100th failure locks the account, once.
    assert!(s.record_sign_in_failure(a.id, u.id, T0, 100).await.unwrap());
    assert!(!s.record_sign_in_failure(a.id, u.id, T0, 100).await.unwrap());
    let locked = s.user_by_id(a.id, u.id).await.unwrap().unwrap();
    assert_eq!(locked.status, UserStatus::Locked);
    // A locked account gets no attempt, even in a new window.
    assert!(
        !s.reserve_sign_in_attempt(a.id, u.id, T0.plus(window * 2), window, 100).await.unwrap()
    );
    // Unlocking clears the count.
    s.set_user_status(a.id, u.id, UserStatus::Active).await.unwrap();
    let unlocked = s.user_by_id(a.id, u.id).await.unwrap().unwrap();
    assert_eq!((unlocked.status, unlocked.failed_attempts), (UserStatus::Active, 0));
    assert!(s.reserve_sign_in_attempt(a.id, u.id, T0, window, 100).await.unwrap());
    // An old window starts afresh.
    let other = user(&a, "other@example.org", Role::Patient, Some("$argon2id$x"));
    s.create_user(&other).await.unwrap();
    for _ in 0..3 {
        assert!(s.reserve_sign_in_attempt(a.id, other.id, T0, window, 3).await.unwrap());
    }
    assert!(!s.reserve_sign_in_attempt(a.id, other.id, T0, window, 3).await.unwrap());
    assert!(s.reserve_sign_in_attempt(a.id, other.id, T0.plus(window), window, 3).await.unwrap());
    assert_eq!(s.user_by_id(a.id, other.id).await.unwrap().unwrap().failed_attempts, 1);
}

async fn auth_events_are_kept_per_tenant_newest_first(db: TestDatabase) {
    let s = &db.store;
    let (a, b) = (tenant("alpha"), tenant("beta"));
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let u = user(&a, "doc@example.org", Role::Clinician, Some("$argon2id$x"));
    s.create_user(&u).await.unwrap();
    let e1 = AuthEvent::new(
        a.id,
        T0,
        AuthEventKind::SignInFailed,
        Some(u.id),
        "192.0.2.1",
        "bad_credentials",
    );
    let e2 = AuthEvent::new(
        a.id,
        T0.plus(Duration::from_secs(1)),
        AuthEventKind::SignIn,
        Some(u.id),
        "192.0.2.1",
        "ok",
    );
    let e3 = AuthEvent::new(
        a.id,
        T0.plus(Duration::from_secs(2)),
        AuthEventKind::SignInFailed,
        None,
        "",
        "unknown_account",
    );
    for e in [&e1, &e2, &e3] {
        s.record_auth_event(e).await.unwrap();
    }
    assert_eq!(
        s.list_auth_events(a.id, None, 10).await.unwrap(),
        vec![e3.clone(), e2.clone(), e1.clone()]
    );
    assert_eq!(s.list_auth_events(a.id, Some(u.id), 10).await.unwrap(), vec![e2.clone(), e1]);
    assert_eq!(s.list_auth_events(a.id, None, 1).await.unwrap(), vec![e3]);
    assert!(s.list_auth_events(b.id, None, 10).await.unwrap().is_empty());
}

async fn second_factors_are_single_use(db: TestDatabase) {
    use telesafe_core::identity::mfa::{MfaRepository, TotpRecord};
    let s = &db.store;
    let a = tenant("alpha");
    s.create_tenant(&a).await.unwrap();
    let u = user(&a, "doc@example.org", Role::Clinician, Some("$argon2id$x"));
    s.create_user(&u).await.unwrap();
    assert_eq!(s.totp_for(a.id, u.id).await.unwrap(), None);
    let pending = |seed: &[u8]| TotpRecord {
        tenant_id: a.id,
        user_id: u.id,
        sealed_seed: seed.to_vec(),
        confirmed: false,
        last_step: 0,
        created_at: T0,
    };
    s.save_pending_totp(&pending(b"first")).await.unwrap();
    s.save_pending_totp(&pending(b"second")).await.unwrap();
    assert_eq!(s.totp_for(a.id, u.id).await.unwrap().unwrap().sealed_seed, b"second");
    // A step cannot be used before confirmation.
    assert!(!s.use_totp_step(a.id, u.id, 10).await.unwrap());
    assert!(s.confirm_totp(a.id, u.id, 10).await.unwrap());
    assert!(!s.confirm_totp(a.id, u.id, 11).await.unwrap());
    // A confirmed authenticator is never replaced by a pending one.
    assert!(s.save_pending_totp(&pending(b"third")).await.is_err());
    let got = s.totp_for(a.id, u.id).await.unwrap().unwrap();
    assert!(got.confirmed && got.sealed_seed == b"second" && got.last_step == 10);
    // Replay guard: the same step twice (concurrently) succeeds once; older steps never.
    let (x, y) = tokio::join!(s.use_totp_step(a.id, u.id, 11), s.use_totp_step(a.id, u.id, 11));
    assert_eq!(u8::from(x.unwrap()) + u8::from(y.unwrap()), 1);
    assert!(!s.use_totp_step(a.id, u.id, 10).await.unwrap());
    assert!(s.use_totp_step(a.id, u.id, 12).await.unwrap());
    // Recovery codes: each once; replacing voids the old set.
    let hashes: Vec<String> = (0..10).map(|i| format!("h{i}")).collect();
    s.replace_recovery_codes(a.id, u.id, &hashes, T0).await.unwrap();
    assert_eq!(s.unused_recovery_codes(a.id, u.id).await.unwrap(), 10);
    assert!(s.consume_recovery_code(a.id, u.id, "h3", T0).await.unwrap());
    assert!(!s.consume_recovery_code(a.id, u.id, "h3", T0).await.unwrap());
    assert!(!s.consume_recovery_code(a.id, u.id, "nope", T0).await.unwrap());
    assert_eq!(s.unused_recovery_codes(a.id, u.id).await.unwrap(), 9);
    s.replace_recovery_codes(a.id, u.id, &["n1".to_owned()], T0).await.unwrap();
    assert!(!s.consume_recovery_code(a.id, u.id, "h4", T0).await.unwrap());
    assert_eq!(s.unused_recovery_codes(a.id, u.id).await.unwrap(), 1);
}

async fn passkeys_are_per_account_and_ceremonies_single_use(db: TestDatabase) {
    use telesafe_core::PasskeyId;
    use telesafe_core::identity::mfa::{self, MfaRepository};
    use telesafe_core::identity::passkey::*;
    use telesafe_crypto::keys::{SealingKey, SecretKey};
    let s = &db.store;
    let (a, b) = (tenant("alpha"), tenant("beta"));
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let u = user(&a, "doc@example.org", Role::Clinician, Some("$argon2id$x"));
    let other = user(&b, "doc@example.org", Role::Patient, Some("$argon2id$x"));
    s.create_user(&u).await.unwrap();
    s.create_user(&other).await.unwrap();
    let key = |u: &User, cred: &str, name: &str| PasskeyRecord {
        id: PasskeyId::new_v7(),
        tenant_id: u.tenant_id,
        user_id: u.id,
        credential_id: cred.to_owned(),
        name: PasskeyName::parse(name).unwrap(),
        credential: format!("{{\"cred\":\"{cred}\"}}"),
        created_at: T0,
        last_used_at: None,
    };
    assert!(!mfa::has_mfa(s, &u).await.unwrap());
    let first = key(&u, "Y3JlZC0x", "Laptop");
    s.add_passkey(&first).await.unwrap();
    s.add_passkey(&key(&u, "Y3JlZC0y", "Phone")).await.unwrap();
    assert!(s.has_passkey(a.id, u.id).await.unwrap() && mfa::has_mfa(s, &u).await.unwrap());
    // A credential id is registered once in the whole deployment, whatever the tenant.
    assert!(matches!(
        s.add_passkey(&key(&other, "Y3JlZC0x", "Mine")).await,
        Err(RepoError::Conflict)
    ));
    let names: Vec<_> =
        s.passkeys_of(a.id, u.id).await.unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names.iter().map(PasskeyName::as_str).collect::<Vec<_>>(), ["Laptop", "Phone"]);
    assert!(s.passkeys_of(b.id, other.id).await.unwrap().is_empty());
    // Found by credential id before the tenant is known.
    assert_eq!(s.passkey_by_credential("Y3JlZC0x").await.unwrap().unwrap(), first);
    assert_eq!(s.passkey_by_credential("bm9uZQ").await.unwrap(), None);
    s.record_passkey_use(a.id, first.id, Some("{\"counter\":2}"), T0.plus(Duration::from_secs(5)))
        .await
        .unwrap();
    let used = s.passkey_by_credential("Y3JlZC0x").await.unwrap().unwrap();
    assert_eq!(
        (used.credential.as_str(), used.last_used_at),
        ("{\"counter\":2}", Some(T0.plus(Duration::from_secs(5))))
    );
    s.record_passkey_use(a.id, first.id, None, T0).await.unwrap();
    assert_eq!(
        s.passkey_by_credential("Y3JlZC0x").await.unwrap().unwrap().credential,
        "{\"counter\":2}"
    );
    // Rename and delete only within the owner's account.
    let renamed = PasskeyName::parse("Work laptop").unwrap();
    assert!(!s.rename_passkey(b.id, other.id, first.id, &renamed).await.unwrap());
    assert!(s.rename_passkey(a.id, u.id, first.id, &renamed).await.unwrap());
    assert!(!s.delete_passkey(b.id, other.id, first.id).await.unwrap());
    // Staff keep at least one second factor.
    check_removal(s, &u, first.id).await.unwrap();
    assert!(s.delete_passkey(a.id, u.id, first.id).await.unwrap());
    let last = s.passkeys_of(a.id, u.id).await.unwrap().remove(0);
    assert!(matches!(check_removal(s, &u, last.id).await, Err(PasskeyError::LastFactor)));
    assert!(matches!(check_removal(s, &u, first.id).await, Err(PasskeyError::NotFound)));

    // Ceremonies: finished once, by the account that started them, before they expire.
    let seal = SealingKey::new(SecretKey::generate().unwrap(), 1);
    let id =
        start_ceremony(s, &seal, CeremonyPurpose::Register, Some(&u), b"state", T0).await.unwrap();
    let wrong_purpose =
        finish_ceremony(s, &seal, CeremonyPurpose::SignIn, id.reveal(), None, T0).await;
    assert!(matches!(wrong_purpose, Err(PasskeyError::CeremonyExpired)));
    let (x, y) = tokio::join!(
        finish_ceremony(s, &seal, CeremonyPurpose::Register, id.reveal(), Some(&u), T0),
        finish_ceremony(s, &seal, CeremonyPurpose::Register, id.reveal(), Some(&u), T0),
    );
    assert_eq!(u8::from(x.is_ok()) + u8::from(y.is_ok()), 1);
    assert_eq!(x.or(y).unwrap().as_slice(), b"state");
    let id = start_ceremony(s, &seal, CeremonyPurpose::Register, Some(&u), b"s", T0).await.unwrap();
    let stolen =
        finish_ceremony(s, &seal, CeremonyPurpose::Register, id.reveal(), Some(&other), T0).await;
    assert!(matches!(stolen, Err(PasskeyError::CeremonyExpired)));
    let id = start_ceremony(s, &seal, CeremonyPurpose::SignIn, None, b"s", T0).await.unwrap();
    let late = T0.plus(CEREMONY_TTL);
    assert!(
        finish_ceremony(s, &seal, CeremonyPurpose::SignIn, id.reveal(), None, late).await.is_err()
    );
    let id = start_ceremony(s, &seal, CeremonyPurpose::SignIn, None, b"s", T0).await.unwrap();
    assert!(
        finish_ceremony(s, &seal, CeremonyPurpose::SignIn, id.reveal(), None, T0).await.is_ok()
    );
    assert!(
        finish_ceremony(s, &seal, CeremonyPurpose::SignIn, "not-a-token", None, T0).await.is_err()
    );
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
    s.create_setup_token(&SetupToken { hash: expired.hash(), created_at: T0, expires_at: T0 })
        .await
        .unwrap();
    assert!(!s.consume_setup_token(&expired.hash(), T0).await.unwrap());
    // Concurrent consumers: exactly one wins.
    let now = T0.plus(Duration::from_secs(1));
    let h = t.hash();
    let (x, y) = tokio::join!(s.consume_setup_token(&h, now), s.consume_setup_token(&h, now));
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
    let hash = checker.hash(SecretString::from(pw.to_owned())).await.unwrap();
    let u = user(&a, "doc@example.org", Role::Clinician, Some(&hash));
    s.create_user(&u).await.unwrap();
    let mut locked = user(&a, "locked@example.org", Role::Nurse, Some(&hash));
    locked.status = UserStatus::Locked;
    s.create_user(&locked).await.unwrap();

    let addresses = AddressThrottle::default();
    let ok = sign_in(s, &checker, &addresses, &clock, attempt("alpha", "DOC@example.org", pw))
        .await
        .unwrap();
    assert_eq!(ok.user.id, u.id);
    assert_eq!(s.session_by_hash(&ok.token.hash()).await.unwrap(), Some(ok.session.clone()));
    assert_eq!(ok.session.user_agent, "Firefox on Linux");
    assert_eq!(ok.session.source, "192.0.2.7");
    assert_eq!(ok.session.csrf_token.len(), 43);
    let evaluated_before = checker.evaluated();

    for (org, email, pass) in [
        ("alpha", "doc@example.org", "wrong passphrase entirely"),
        ("alpha", "nobody@example.org", pw),
        ("gamma", "doc@example.org", pw),
        ("alpha", "locked@example.org", pw),
        ("not a slug!", "not an email", pw),
    ] {
        let err =
            sign_in(s, &checker, &addresses, &clock, attempt(org, email, pass)).await.unwrap_err();
        assert!(matches!(err, SignInError::InvalidCredentials), "{org} {email}: {err:?}");
    }
    // Only the wrong password for a real, active account was evaluated.
    assert_eq!(checker.evaluated() - evaluated_before, 1);
    let kinds: Vec<(AuthEventKind, &str)> = s
        .list_auth_events(a.id, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.kind, e.outcome))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (AuthEventKind::SignInFailed, "locked"),
            (AuthEventKind::SignInFailed, "unknown_account"),
            (AuthEventKind::SignInFailed, "bad_credentials"),
            (AuthEventKind::SignIn, "ok"),
        ]
    );
}

async fn repeated_failures_back_off_and_lock_at_the_cap(db: TestDatabase) {
    let s = &db.store;
    let checker = PasswordChecker::new(2).await.unwrap();
    let clock = ManualClock::at(T0);
    let addresses = AddressThrottle::default();
    let a = tenant("alpha");
    s.create_tenant(&a).await.unwrap();
    let pw = "the right passphrase for this test";
    let hash = checker.hash(SecretString::from(pw.to_owned())).await.unwrap();
    let u = user(&a, "target@example.org", Role::Patient, Some(&hash));
    s.create_user(&u).await.unwrap();
    let wrong = || attempt("alpha", "target@example.org", "a wrong but long passphrase");
    // Five free failures, then back-off: the sixth, at the same instant, is not evaluated,
    // and even the right password is refused until the back-off passes.
    for _ in 0..5 {
        let r = sign_in(s, &checker, &addresses, &clock, wrong()).await;
        assert!(matches!(r, Err(SignInError::InvalidCredentials)));
    }
    let before = checker.evaluated();
    assert!(sign_in(s, &checker, &addresses, &clock, wrong()).await.is_err());
    let right = || attempt("alpha", "target@example.org", pw);
    assert!(sign_in(s, &checker, &addresses, &clock, right()).await.is_err());
    assert_eq!(checker.evaluated(), before);
    clock.advance(Duration::from_secs(1));
    assert!(sign_in(s, &checker, &addresses, &clock, right()).await.is_ok());
    // Keep failing, waiting out each back-off, until the cap locks the account.
    let mut evaluated = 0;
    for _ in 0..150 {
        clock.advance(Duration::from_secs(1));
        let u_now = s.user_by_id(a.id, u.id).await.unwrap().unwrap();
        let retry = throttle::account_retry_at(u_now.failed_attempts, u_now.last_failed_at);
        clock.set(retry.max(clock.now()));
        let before = checker.evaluated();
        // A fresh address each time: this exercises the per-account defences alone.
        let fresh = AddressThrottle::default();
        let _ = sign_in(s, &checker, &fresh, &clock, wrong()).await;
        evaluated += checker.evaluated() - before;
    }
    assert_eq!(evaluated, 100, "exactly the cap was evaluated");
    assert_eq!(s.user_by_id(a.id, u.id).await.unwrap().unwrap().status, UserStatus::Locked);
    // Locked: the right password is refused with the same answer.
    let r = sign_in(s, &checker, &addresses, &clock, right()).await;
    assert!(matches!(r, Err(SignInError::InvalidCredentials)));
    let events = s.list_auth_events(a.id, Some(u.id), 500).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == AuthEventKind::AccountLocked).count(), 1);
    // The documented recovery: an administrator unlocks; the owner signs in.
    s.set_user_status(a.id, u.id, UserStatus::Active).await.unwrap();
    assert!(sign_in(s, &checker, &addresses, &clock, right()).await.is_ok());
}

async fn rows_are_invisible_to_a_query_that_states_no_tenant(db: TestDatabase) {
    let s = &db.store;
    let a = tenant("alpha");
    s.create_tenant(&a).await.unwrap();
    s.create_user(&user(&a, "x@example.org", Role::Nurse, None)).await.unwrap();
    let unscoped = db.count_unscoped("users").await.unwrap();
    match s.backend() {
        // Row-level security is the second wall on PostgreSQL.
        Backend::Postgres => {
            assert!(!s.bypasses_row_level_security().await.unwrap());
            assert_eq!(unscoped, 0, "row-level security let an unscoped query see rows");
        }
        // SQLite is one process's file; the application's scoping is the wall.
        Backend::Sqlite => assert_eq!(unscoped, 1),
    }
}

async fn readiness_reports_current_migrations(db: TestDatabase) {
    let r = db.store.readiness().await;
    assert!(r.reachable && r.migrations_current, "{r:?}");
}

async fn visits_keep_presence_admission_passes_and_lockouts(db: TestDatabase) {
    use telesafe_core::visits::*;
    let s = &db.store;
    let (a, b) = (tenant("alpha"), tenant("beta"));
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let dr = user(&a, "dr@example.org", Role::Clinician, Some("x"));
    s.create_user(&dr).await.unwrap();
    let p = Patient { id: PatientId::new_v7(), tenant_id: a.id, user_id: None, created_at: T0 };
    s.create_patient(&p).await.unwrap();
    let link = OpaqueToken::generate().unwrap();
    let mut v = Visit::booked(
        a.id,
        p.id,
        vec![dr.id],
        (T0, T0.plus(Duration::from_secs(1200))),
        link.hash(),
        dr.id,
        T0,
    );
    v.appointment_id = "appt".into();
    s.create_visit(&v).await.unwrap();
    assert_eq!(s.visit(a.id, v.id).await.unwrap().as_ref(), Some(&v));
    assert_eq!(s.visit(b.id, v.id).await.unwrap(), None, "invisible to another tenant");
    assert_eq!(s.visit_by_link(&link.hash()).await.unwrap().map(|x| x.id), Some(v.id));
    let day = s.visits_between(a.id, T0, T0.plus(Duration::from_secs(60))).await.unwrap();
    assert_eq!(day.len(), 1);
    assert!(s.visits_between(b.id, T0, T0.plus(Duration::from_secs(60))).await.unwrap().is_empty());

    // Answers are claimed before they are checked: at most the limit at once, however many
    // arrive together; the wrong one that reaches the limit locks the link.
    let claims = futures_join(s, a.id, v.id, T0, 12).await;
    assert_eq!(claims, MAX_LINK_FAILURES as usize, "only the limit's worth of answers is checked");
    assert_eq!(s.link_failed(a.id, v.id, T0).await.unwrap(), MAX_LINK_FAILURES, "locks");
    let locked = s.visit(a.id, v.id).await.unwrap().unwrap();
    assert_eq!(locked.link_locked_until, Some(T0.plus(LINK_LOCKOUT)));
    assert_eq!(locked.link_failures, 0);
    assert!(!s.claim_link_attempt(a.id, v.id, T0).await.unwrap(), "locked");
    assert!(
        s.claim_link_attempt(a.id, v.id, T0.plus(LINK_LOCKOUT)).await.unwrap(),
        "unlocked after the lockout"
    );

    // A pass: found by hash until it expires; a new one ends the old one and the lock.
    let pass = |token: &OpaqueToken| VisitPass {
        hash: token.hash(),
        tenant: a.id,
        visit: v.id,
        patient: p.id,
        created_at: T0,
        expires_at: T0.plus(Duration::from_secs(3600)),
    };
    let (t1, t2) = (OpaqueToken::generate().unwrap(), OpaqueToken::generate().unwrap());
    s.issue_pass(&pass(&t1)).await.unwrap();
    assert!(s.visit_pass(&t1.hash(), T0).await.unwrap().is_some());
    assert!(s.visit(a.id, v.id).await.unwrap().unwrap().link_locked_until.is_none());
    s.issue_pass(&pass(&t2)).await.unwrap();
    assert!(s.visit_pass(&t1.hash(), T0).await.unwrap().is_none(), "the earlier pass ended");
    assert!(s.visit_pass(&t2.hash(), T0).await.unwrap().is_some());
    assert!(s.visit_pass(&t2.hash(), T0.plus(Duration::from_secs(3600))).await.unwrap().is_none());

    // Presence, admission, identity, notes, end.
    let key = pass(&t2).participant_key();
    s.set_presence(a.id, v.id, &key, Some(T0)).await.unwrap();
    let w = s.visit(a.id, v.id).await.unwrap().unwrap();
    assert_eq!(w.patient_state(T0), PatientState::Waiting);
    s.set_presence(a.id, v.id, "pass:someone-else", None).await.unwrap();
    assert_eq!(
        s.visit(a.id, v.id).await.unwrap().unwrap().present_at,
        Some(T0),
        "only the recorded key leaves"
    );
    s.admit(a.id, v.id, &key, "enc-1", T0).await.unwrap();
    s.admit(a.id, v.id, &key, "enc-2", T0.plus(Duration::from_secs(5))).await.unwrap();
    let w = s.visit(a.id, v.id).await.unwrap().unwrap();
    assert_eq!(w.patient_state(T0), PatientState::Admitted);
    assert_eq!(
        (w.status, w.started_at, w.encounter_id.as_deref()),
        (VisitStatus::InProgress, Some(T0), Some("enc-1"))
    );
    s.set_identity_method(a.id, v.id, IdentityMethod::PhotoId).await.unwrap();
    s.set_note(a.id, v.id, "doc-1").await.unwrap();
    assert!(s.end_visit(a.id, v.id, VisitStatus::Finished, T0).await.unwrap());
    assert!(!s.end_visit(a.id, v.id, VisitStatus::Finished, T0).await.unwrap(), "ends once");
    let done = s.visit(a.id, v.id).await.unwrap().unwrap();
    assert_eq!(done.identity_method, Some(IdentityMethod::PhotoId));
    assert_eq!(done.note_id.as_deref(), Some("doc-1"));
    assert_eq!(done.status, VisitStatus::Finished);
    assert!(s.visit_pass(&t2.hash(), T0).await.unwrap().is_none(), "passes end with the visit");
    assert!(matches!(s.admit(a.id, v.id, &key, "e", T0).await, Err(RepoError::NotFound)));
}

/// Claims `n` link attempts at once; returns how many were granted.
async fn futures_join(
    s: &telesafe_store::Store,
    tenant: TenantId,
    visit: telesafe_core::VisitId,
    now: Timestamp,
    n: usize,
) -> usize {
    use telesafe_core::visits::VisitRepository;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let s = s.clone();
        tasks.push(tokio::spawn(
            async move { s.claim_link_attempt(tenant, visit, now).await.unwrap() },
        ));
    }
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.unwrap());
    }
    granted
}

conformance!(
    tenants_round_trip_and_slugs_are_unique,
    users_are_unique_per_tenant_and_invisible_across_tenants,
    patients_are_listed_per_tenant,
    sessions_are_found_by_hash_touched_and_deleted,
    setup_tokens_are_single_use_and_expire,
    sign_in_opens_a_session_and_hides_which_part_was_wrong,
    sign_in_attempts_are_capped_atomically_and_lock_the_account,
    repeated_failures_back_off_and_lock_at_the_cap,
    auth_events_are_kept_per_tenant_newest_first,
    second_factors_are_single_use,
    passkeys_are_per_account_and_ceremonies_single_use,
    rows_are_invisible_to_a_query_that_states_no_tenant,
    readiness_reports_current_migrations,
    visits_keep_presence_admission_passes_and_lockouts,
);
