//! Throwaway databases for tests, on either backend. Used by this crate's conformance suite
//! and by `telesafe-testkit`; never by the server.
//!
//! PostgreSQL comes from `TELESAFE_TEST_PG_URL` (an administrative URL; `scripts/test`
//! starts a throwaway cluster and sets it). Each test gets its own database, owned by a
//! non-superuser role, so row-level security applies exactly as in production.

use std::str::FromStr;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::{Backend, Pool, Store, StoreError};

/// The role tests connect as: no superuser, no BYPASSRLS.
pub const PG_APP_ROLE: &str = "telesafe_app";

/// A store on a fresh database, and what keeps it alive.
#[derive(Debug)]
pub struct TestDatabase {
    pub store: Store,
    /// The URL the store connected with (for handing to a server under test).
    pub url: String,
    /// On PostgreSQL, the administrative URL of this database (a superuser, as a database
    /// administrator would connect).
    admin: Option<PgConnectOptions>,
    /// On PostgreSQL, the server's administrative connection and this database's name, so
    /// that dropping the `TestDatabase` drops the database too (a long-lived server would
    /// otherwise fill its disk with one database per test).
    drop_with: Option<(PgConnectOptions, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((opts, name)) = self.drop_with.take() else { return };
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
        // thread with its own runtime does the one statement. FORCE ends the connections
        // the store (or a server under test) still holds.
        let worker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut c) = PgConnection::connect_with(&opts).await {
                    // `name` was generated from a UUID in `fresh_postgres`, never from input.
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                    let _ = c.close().await;
                }
            });
        });
        let _ = worker.join();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestDbError {
    #[error(
        "TELESAFE_TEST_PG_URL is not set: run the suite through scripts/test, \
         or point it at a PostgreSQL server whose user may create roles and databases"
    )]
    NoPostgres,
    #[error("test database setup failed: {0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether PostgreSQL tests must run (CI) or may be skipped with a notice (a laptop).
pub fn postgres_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A fresh, migrated database on `backend`.
pub async fn fresh(backend: Backend) -> Result<TestDatabase, TestDbError> {
    match backend {
        Backend::Sqlite => fresh_sqlite(None).await,
        Backend::Postgres => fresh_postgres(None).await,
    }
}

/// A new database migrated only up to `version`, as an older release left it (for upgrade
/// tests; `store.migrate()` then brings it up to date).
pub async fn fresh_at(backend: Backend, version: i64) -> Result<TestDatabase, TestDbError> {
    match backend {
        Backend::Sqlite => fresh_sqlite(Some(version)).await,
        Backend::Postgres => fresh_postgres(Some(version)).await,
    }
}

async fn connect_migrated(url: &str, until: Option<i64>) -> Result<Store, TestDbError> {
    let store = Store::connect(url, 4).await?;
    match until {
        Some(v) => store.migrate_to(v).await?,
        None => store.migrate().await?,
    }
    Ok(store)
}

async fn fresh_sqlite(until: Option<i64>) -> Result<TestDatabase, TestDbError> {
    let dir = tempfile::tempdir().map_err(|e| TestDbError::Setup(e.to_string()))?;
    let url = format!("sqlite://{}", dir.path().join("telesafe.db").display());
    let store = connect_migrated(&url, until).await?;
    Ok(TestDatabase { store, url, admin: None, drop_with: None, _dir: Some(dir) })
}

async fn fresh_postgres(until: Option<i64>) -> Result<TestDatabase, TestDbError> {
    let admin_url = std::env::var("TELESAFE_TEST_PG_URL").map_err(|_| TestDbError::NoPostgres)?;
    let setup = |e: sqlx::Error| TestDbError::Setup(e.to_string());
    let admin_opts = PgConnectOptions::from_str(&admin_url).map_err(setup)?;
    let mut admin = PgConnection::connect_with(&admin_opts).await.map_err(setup)?;
    // Concurrent test processes race to create the role; whoever loses sees it exist.
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PG_APP_ROLE}') THEN \
             CREATE ROLE {PG_APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{PG_APP_ROLE}'; \
           END IF; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )))
    .execute(&mut admin)
    .await;
    let name = format!("telesafe_t_{}", uuid::Uuid::new_v4().simple());
    // `name` is generated here from a UUID, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name} OWNER {PG_APP_ROLE}")))
        .execute(&mut admin)
        .await
        .map_err(setup)?;
    admin.close().await.map_err(setup)?;

    let host = admin_opts.get_host().to_owned();
    let port = admin_opts.get_port();
    let url = if host.starts_with('/') {
        format!("postgres://{PG_APP_ROLE}:{PG_APP_ROLE}@localhost:{port}/{name}?host={host}")
    } else {
        format!("postgres://{PG_APP_ROLE}:{PG_APP_ROLE}@{host}:{port}/{name}")
    };
    let store = connect_migrated(&url, until).await?;
    let admin = Some(admin_opts.clone().database(&name));
    Ok(TestDatabase { store, url, admin, drop_with: Some((admin_opts, name)), _dir: None })
}

impl TestDatabase {
    /// Counts the rows of `table` in a transaction that never states a tenant, as a query
    /// that forgot its scope would. On PostgreSQL row-level security must make this 0.
    pub async fn count_unscoped(&self, table: &str) -> Result<i64, sqlx::Error> {
        // Test-only; `table` is a literal from the suite.
        let sql = || sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        match &self.store.pool {
            Pool::Sqlite(p) => sqlx::query_scalar(sql()).fetch_one(p).await,
            Pool::Postgres(p) => sqlx::query_scalar(sql()).fetch_one(p).await,
        }
    }

    /// Runs `statements` as a database administrator would, around the application's
    /// defences: on SQLite with the audit triggers dropped, on PostgreSQL as a superuser
    /// with triggers off (`session_replication_role = replica`). For tamper tests only.
    pub async fn as_dba(&self, statements: &[String]) -> Result<(), sqlx::Error> {
        match (&self.store.pool, &self.admin) {
            (Pool::Sqlite(p), _) => {
                let mut c = p.acquire().await?;
                for t in [
                    "audit_segments_no_update",
                    "audit_segments_no_delete",
                    "audit_keys_no_update",
                    "audit_keys_no_delete",
                    "audit_heads_no_update",
                    "audit_heads_no_delete",
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER IF EXISTS {t}")))
                        .execute(&mut *c)
                        .await?;
                }
                for s in statements {
                    sqlx::query(sqlx::AssertSqlSafe(s.clone())).execute(&mut *c).await?;
                }
                Ok(())
            }
            (Pool::Postgres(_), Some(opts)) => {
                let mut c = PgConnection::connect_with(opts).await?;
                sqlx::query("SET session_replication_role = replica").execute(&mut c).await?;
                for s in statements {
                    sqlx::query(sqlx::AssertSqlSafe(s.clone())).execute(&mut c).await?;
                }
                c.close().await
            }
            (Pool::Postgres(_), None) => Err(sqlx::Error::Configuration("no admin URL".into())),
        }
    }

    /// Every value of `column` in `table`, bytes read as (lossy) UTF-8 and joined: what a
    /// stolen dump would show. Test-only; both names are literals from the suite.
    pub async fn dump_text(&self, table: &str, column: &str) -> Result<String, sqlx::Error> {
        let sql = || {
            sqlx::AssertSqlSafe(format!(
                "SELECT CAST({column} AS BLOB) FROM {table} WHERE {column} IS NOT NULL"
            ))
        };
        let sql_pg = || {
            sqlx::AssertSqlSafe(format!(
                "SELECT CAST({column} AS BYTEA) FROM {table} WHERE {column} IS NOT NULL"
            ))
        };
        let rows: Vec<Vec<u8>> = match (&self.store.pool, &self.admin) {
            (Pool::Sqlite(p), _) => sqlx::query_scalar(sql()).fetch_all(p).await?,
            // As a superuser, past row-level security: everything on disk.
            (Pool::Postgres(_), Some(opts)) => {
                let mut c = PgConnection::connect_with(opts).await?;
                let rows = sqlx::query_scalar(sql_pg()).fetch_all(&mut c).await?;
                c.close().await?;
                rows
            }
            (Pool::Postgres(_), None) => {
                return Err(sqlx::Error::Configuration("no admin URL".into()));
            }
        };
        Ok(rows
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// Runs one statement on the application's own connection (its role and privileges).
    pub async fn exec_as_app(&self, sql: &str) -> Result<(), sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.store.pool {
            Pool::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Pool::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
    }
}
