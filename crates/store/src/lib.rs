//! Storage for Telesafe: one [`Store`] over SQLite (the embedded default: one file, WAL,
//! `synchronous=FULL`, foreign keys on) or PostgreSQL (for scale, with row-level security
//! as a second tenant wall). It implements the repository traits of `telesafe-core`.
//!
//! SQL is written once in a portable subset (`$n` placeholders, TEXT ids, BIGINT Unix
//! milliseconds) and compiled against both drivers by [`on_tx!`]; backend-specific SQL is
//! allowed only where it buys something real and lives in this crate's `tx` module. This
//! crate must never decide who may see what (that is the domain's job) and must never log
//! row contents.

mod access;
mod audit;
mod backup;
pub use backup::settle_sqlite_file;
mod clients;
mod devices;
mod identity;

mod mfa;
mod outbox;
mod passkeys;
mod records;

pub mod testing;
mod tx;
mod visits;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, PgPool, SqlitePool};
use telesafe_core::RepoError;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database.url must start with sqlite:// or postgres://")]
    UnsupportedUrl,
    #[error("could not open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("could not apply database migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("could not finish upgrading the stored data: {0}")]
    Upgrade(#[source] telesafe_core::RepoError),
}

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A connection pool on one backend. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    sqlite_path: Option<PathBuf>,
    /// SQLite: stops the background checkpointer when the last clone is dropped.
    _checkpointer: Option<Arc<Checkpointer>>,
    /// SQLite: this process's writers take turns here before `BEGIN IMMEDIATE` (see
    /// [`Store::begin_write`]).
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// How much write-ahead log a pool connection lets grow before it checkpoints itself
/// (pages of 4 KiB: 64 MiB). Only a safety net: [`Checkpointer`] keeps the log short.
const WAL_SAFETY_NET_PAGES: &str = "16384";
/// How often the checkpointer copies the write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Copies SQLite's write-ahead log into the database file from a connection of its own.
///
/// By default the connection whose commit takes the log past 1,000 pages copies it back
/// (a checkpoint, with an fsync of the database file) before that commit returns, so one
/// request waits for everyone's pages and the audit log's group commit loses a third of
/// its rate (BENCHMARKS.md). Here pool connections checkpoint only past
/// [`WAL_SAFETY_NET_PAGES`], and this task checkpoints in PASSIVE mode (it never blocks a
/// reader or a writer) every [`CHECKPOINT_EVERY`]. Written by hand: sqlx schedules no
/// checkpoints.
struct Checkpointer {
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Checkpointer {
    fn spawn(opts: SqliteConnectOptions) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut conn = match SqliteConnection::connect_with(&opts).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "no WAL checkpointer; SQLite checkpoints on commit");
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
                }
                let done: Result<(i64, i64, i64), _> =
                    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut conn).await;
                if let Err(e) = done {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                }
            }
            let _ = conn.close().await;
        });
        Self { _stop: stop }
    }
}

impl std::fmt::Debug for Store {
    // The URL can carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend()).finish_non_exhaustive()
    }
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub reachable: bool,
    pub migrations_current: bool,
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let store = Self::connect(url, max_connections).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens without migrating (for readiness checks and tools that must not change schema).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(StoreError::Connect)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a committed transaction survives power loss, which the audit
                // log's fail-closed rule depends on.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let path = opts.get_filename().to_path_buf();
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .connect_with(opts.clone().pragma("wal_autocheckpoint", WAL_SAFETY_NET_PAGES))
                .await
                .map_err(StoreError::Connect)?;
            Ok(Self {
                pool: Pool::Sqlite(pool),
                sqlite_path: Some(path),
                _checkpointer: Some(Arc::new(Checkpointer::spawn(opts))),
                write_gate: Some(Arc::new(tokio::sync::Mutex::new(()))),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url).map_err(StoreError::Connect)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(StoreError::Connect)?;
            Ok(Self {
                pool: Pool::Postgres(pool),
                sqlite_path: None,
                _checkpointer: None,
                write_gate: None,
            })
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite database file, whose permissions the server checks.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.sqlite_path.as_deref()
    }

    pub(crate) fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.pool {
            Pool::Sqlite(_) => &SQLITE_MIGRATIONS,
            Pool::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
        }
        .map_err(StoreError::Migrate)?;
        self.finish_audit_upgrade().await.map_err(StoreError::Upgrade)
    }

    /// Applies the migrations up to `version` only: for tests of upgrades from an older
    /// schema with data in it.
    pub async fn migrate_to(&self, version: i64) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run_to(version, p).await,
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run_to(version, p).await,
        }
        .map_err(StoreError::Migrate)
    }

    /// Whether the database answers and every migration this build knows has been applied.
    pub async fn readiness(&self) -> Readiness {
        let latest = self.latest_schema_version();
        match self.applied_schema_version().await {
            Ok(v) => Readiness { reachable: true, migrations_current: v >= latest },
            Err(e) => {
                let reachable = matches!(e, sqlx::Error::Database(_));
                tracing::warn!(error = %e, "readiness check failed");
                Readiness { reachable, migrations_current: false }
            }
        }
    }

    /// On PostgreSQL, whether the connected role escapes row-level security (a superuser or
    /// a role with BYPASSRLS). The server warns loudly when it does.
    pub async fn bypasses_row_level_security(&self) -> Result<bool, RepoError> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(false),
            Pool::Postgres(p) => sqlx::query_scalar::<_, bool>(
                "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
            )
            .fetch_one(p)
            .await
            .map_err(tx::repo_err),
        }
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}
