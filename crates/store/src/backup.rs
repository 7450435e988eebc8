//! What a backup needs from the database: a consistent copy taken while servers run, the
//! schema version it holds, and SQLite's own check of a file's structure.

use std::path::Path;

use telesafe_core::RepoError;

use crate::tx::repo_err;
use crate::{Pool, Store};

impl Store {
    /// Writes a consistent copy of the whole SQLite database to `path` (which must not
    /// exist) with `VACUUM INTO`: one read transaction, so concurrent writers neither wait
    /// nor show half in the copy, and the copy is compacted (no free pages, no WAL).
    /// PostgreSQL has its own tools for this; asking here is an error.
    pub async fn snapshot_into(&self, path: &Path) -> Result<(), RepoError> {
        let Pool::Sqlite(p) = &self.pool else {
            return Err(RepoError::Backend("snapshots are taken of SQLite databases only".into()));
        };
        let path = path
            .to_str()
            .ok_or_else(|| RepoError::Backend("the snapshot path is not valid UTF-8".into()))?;
        sqlx::query("VACUUM INTO $1").bind(path).execute(p).await.map_err(repo_err)?;
        Ok(())
    }

    /// The newest migration applied to this database (0 for an empty one).
    pub async fn schema_version(&self) -> Result<i64, RepoError> {
        self.applied_schema_version().await.map_err(repo_err)
    }

    /// [`Store::schema_version`] with the driver's error, which readiness tells apart
    /// (a database that answers with an error is reachable).
    pub(crate) async fn applied_schema_version(&self) -> Result<i64, sqlx::Error> {
        const SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";
        match &self.pool {
            Pool::Sqlite(p) => sqlx::query_scalar(SQL).fetch_one(p).await,
            Pool::Postgres(p) => sqlx::query_scalar(SQL).fetch_one(p).await,
        }
    }

    /// The newest migration this build knows.
    pub fn latest_schema_version(&self) -> i64 {
        self.migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// SQLite's `PRAGMA integrity_check` over the whole file: every page, index and
    /// constraint. Returns the problems it names; empty when the file is sound. Nothing to
    /// check on PostgreSQL, which checks its own pages.
    pub async fn integrity_problems(&self) -> Result<Vec<String>, RepoError> {
        let Pool::Sqlite(p) = &self.pool else { return Ok(Vec::new()) };
        let rows: Vec<String> =
            sqlx::query_scalar("PRAGMA integrity_check").fetch_all(p).await.map_err(repo_err)?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }
}

/// Folds the write-ahead log of the SQLite file at `path` into the file itself and leaves
/// it in rollback-journal mode, so that the file alone holds every committed transaction
/// and can be moved or copied on its own (servers switch it back to WAL when they open
/// it). It needs the only connection: while another is open SQLite keeps the log, so this
/// retries for up to `wait` (for stragglers such as a closed store's checkpointer), then
/// fails, which also proves that no server has the file open at that moment.
pub async fn settle_sqlite_file(path: &Path, wait: std::time::Duration) -> Result<(), RepoError> {
    use sqlx::Connection;
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path).create_if_missing(false);
    let tries = (wait.as_millis() / 100).max(1);
    for _ in 0..tries {
        let mut c = sqlx::sqlite::SqliteConnection::connect_with(&opts).await.map_err(repo_err)?;
        let mode: Result<String, _> =
            sqlx::query_scalar("PRAGMA journal_mode = DELETE").fetch_one(&mut c).await;
        let _ = c.close().await;
        if mode.is_ok_and(|m| m.eq_ignore_ascii_case("delete")) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(RepoError::Backend(format!(
        "{} is still open elsewhere; its write-ahead log could not be folded in",
        path.display()
    )))
}
