//! OAuth 2.0 client credentials, introspection and revocation, as an integrator meets them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed step must fail the test loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use telesafe_core::{Clock, ManualClock, Timestamp};
use telesafe_proto::{ErrorBody, ErrorCode};
use telesafe_testkit::{DbBackend, both_backends, start};

mod common;
#[allow(unused_imports, reason = "each suite uses a different subset")]
use common::*;

async fn oauth_client_credentials_reach_the_api_until_expired_or_revoked(backend: DbBackend) {
    use telesafe_core::identity::clients::{self, ClientRepository, Scope};
    let t0 = Timestamp::from_unix_millis(1_790_000_000_000);
    let clock = ManualClock::at(t0);
    let Some(s) = start(backend, Arc::new(clock.clone())).await else { return };
    let store = &s.state.store;
    let tenant = s.clinic.tenant.id;
    let scopes = Scope::parse_list("system/Patient.read system/Observation.read").unwrap();
    let reg = clients::register_client(store, tenant, "Lab integration", scopes, t0).await.unwrap();
    let (id, secret) = (reg.client.client_id.clone(), reg.secret.reveal().to_owned());
    let c = s.client();
    let token_req = |scope: Option<&'static str>, secret: String| {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(sc) = scope {
            form.push(("scope", sc));
        }
        c.post(s.url("/oauth2/token")).basic_auth(&id, Some(secret)).form(&form).send()
    };

    let r = token_req(None, secret.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "system/Observation.read system/Patient.read");
    let token = body["access_token"].as_str().unwrap().to_owned();

    let me = c.get(s.url("/api/v1/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["kind"], "client");
    assert_eq!(me["client_id"], id.as_str());

    // Wrong secret, unknown grant, a scope beyond the grant.
    let r = token_req(None, "x".repeat(43)).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_client");
    let r = c
        .post(s.url("/oauth2/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "unsupported_grant_type");
    let r = token_req(Some("system/*.write"), secret.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_scope");
    let narrow: serde_json::Value =
        token_req(Some("system/Patient.read"), secret.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(narrow["scope"], "system/Patient.read");

    // Introspection by the client itself; another tenant's client learns nothing.
    let intro = |who: &str, pw: &str, t: &str| {
        c.post(s.url("/oauth2/introspect")).basic_auth(who, Some(pw)).form(&[("token", t)]).send()
    };
    let v: serde_json::Value = intro(&id, &secret, &token).await.unwrap().json().await.unwrap();
    assert_eq!(v["active"], true);
    assert_eq!(v["client_id"], id.as_str());
    let other = telesafe_core::identity::Tenant {
        id: telesafe_core::TenantId::new_v7(),
        slug: telesafe_core::identity::TenantSlug::parse("other-clinic").unwrap(),
        name: telesafe_core::identity::DisplayName::parse("Other").unwrap(),
        created_at: t0,
    };
    telesafe_core::identity::TenantRepository::create_tenant(store, &other).await.unwrap();
    let foreign = clients::register_client(store, other.id, "Other", vec![], t0).await.unwrap();
    let v: serde_json::Value = intro(&foreign.client.client_id, foreign.secret.reveal(), &token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!({"active": false}));

    // Expiry: 15 minutes.
    clock.advance(Duration::from_secs(15 * 60));
    let r = c.get(s.url("/api/v1/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));
    assert_eq!(r.json::<ErrorBody>().await.unwrap().code, ErrorCode::InvalidToken);

    // Revocation of a token (RFC 7009), then of the whole client.
    let fresh: serde_json::Value =
        token_req(None, secret.clone()).await.unwrap().json().await.unwrap();
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    let r = c
        .post(s.url("/oauth2/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", fresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.get(s.url("/api/v1/me")).bearer_auth(&fresh).send().await.unwrap().status(), 401);
    let v: serde_json::Value = intro(&id, &secret, &fresh).await.unwrap().json().await.unwrap();
    assert_eq!(v["active"], false);
    let third: serde_json::Value =
        token_req(None, secret.clone()).await.unwrap().json().await.unwrap();
    let third = third["access_token"].as_str().unwrap().to_owned();
    assert!(store.revoke_client(tenant, &id, clock.now()).await.unwrap());
    assert_eq!(c.get(s.url("/api/v1/me")).bearer_auth(&third).send().await.unwrap().status(), 401);
    assert_eq!(token_req(None, secret.clone()).await.unwrap().status(), 401);
    // A malformed Authorization header is refused, not ignored.
    let r = c.get(s.url("/api/v1/me")).header("authorization", "Token abc").send().await.unwrap();
    assert_eq!(r.status(), 401);
}

both_backends!(oauth_client_credentials_reach_the_api_until_expired_or_revoked,);
