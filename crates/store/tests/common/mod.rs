//! What the storage suites share: a fresh database per backend, a tenant, a fixed time,
//! and the macro that runs each case on SQLite and on PostgreSQL.

#![allow(dead_code, reason = "each test binary uses part of it")]

use telesafe_core::TenantId;
use telesafe_core::Timestamp;
use telesafe_core::identity::{DisplayName, Tenant, TenantSlug};
use telesafe_store::Backend;
use telesafe_store::testing::{TestDatabase, TestDbError, fresh, postgres_required};

pub const T0: Timestamp = Timestamp::from_unix_millis(1_790_000_000_000);

pub async fn db(backend: Backend) -> Option<TestDatabase> {
    match fresh(backend).await {
        Ok(db) => Some(db),
        Err(TestDbError::NoPostgres) if !postgres_required() => {
            eprintln!("SKIPPED on {}: TELESAFE_TEST_PG_URL is not set", backend.as_str());
            None
        }
        Err(e) => panic!("{} test database: {e}", backend.as_str()),
    }
}

pub fn tenant(slug: &str) -> Tenant {
    Tenant {
        id: TenantId::new_v7(),
        slug: TenantSlug::parse(slug).unwrap(),
        name: DisplayName::parse(&format!("Clinic {slug}")).unwrap(),
        created_at: T0,
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() {
                if let Some(db) = super::common::db(telesafe_store::Backend::Sqlite).await { super::$case(db).await }
            })*
        }
        mod postgres {
            $(#[tokio::test] async fn $case() {
                if let Some(db) = super::common::db(telesafe_store::Backend::Postgres).await { super::$case(db).await }
            })*
        }
    };
}
