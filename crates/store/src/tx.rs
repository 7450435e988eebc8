//! Transactions scoped to a tenant, and the macro that writes a query once for both
//! backends.

use sqlx::{Postgres, Sqlite, Transaction};
use telesafe_core::{RepoError, TenantId};

use crate::{Pool, Store};

/// A transaction on either backend.
pub(crate) enum Tx {
    /// With this process's turn at the write gate, for a write transaction.
    Sqlite(Transaction<'static, Sqlite>, Option<tokio::sync::OwnedMutexGuard<()>>),
    Postgres(Transaction<'static, Postgres>),
}

/// Whose data a transaction may touch.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    /// One tenant's rows only.
    Tenant(TenantId),
    /// Platform tables and the lookups that precede knowing the tenant.
    Platform,
}

/// Runs `$body` with `$c` bound to the backend's transaction, type-checking the same code
/// once per backend. The body must evaluate to the same type on both.
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::tx::Tx::Sqlite($c, _) => $body,
            $crate::tx::Tx::Postgres($c) => $body,
        }
    };
}
pub(crate) use on_tx;

pub(crate) fn repo_err(e: sqlx::Error) -> RepoError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => RepoError::Conflict,
        sqlx::Error::RowNotFound => RepoError::NotFound,
        _ => RepoError::Backend(e.to_string()),
    }
}

impl Store {
    /// Begins a transaction limited to `scope`. On PostgreSQL the scope is also handed to
    /// row-level security, transaction-local (`set_config(..., true)`), so it cannot leak to
    /// the next user of the pooled connection.
    pub(crate) async fn begin(&self, scope: Scope) -> Result<Tx, RepoError> {
        self.begin_as(scope, false).await
    }

    /// Like [`Store::begin`], for a transaction that writes: on SQLite it takes the write
    /// lock at the start (`BEGIN IMMEDIATE`), so it waits its turn instead of failing when
    /// another writer committed between its read and its write (SQLITE_BUSY_SNAPSHOT).
    /// PostgreSQL needs nothing extra.
    ///
    /// On SQLite this process's writers first take turns at an in-process gate (a fair
    /// async mutex held until the transaction ends), written here because SQLite's own
    /// wait for a lock held by another connection is its busy handler, which sleeps 1, 2,
    /// 5, 10 ms and more between attempts: two group-committing writers (the audit log and
    /// the device writer) lost most of their time asleep that way, each waiting out a
    /// lock released long before. At the gate the next writer starts the moment the last
    /// one ends. Writers in other processes (the CLI beside a running server) still meet
    /// the busy timeout.
    pub(crate) async fn begin_write(&self, scope: Scope) -> Result<Tx, RepoError> {
        self.begin_as(scope, true).await
    }

    async fn begin_as(&self, scope: Scope, write: bool) -> Result<Tx, RepoError> {
        match &self.pool {
            Pool::Sqlite(p) if write => {
                let turn = match &self.write_gate {
                    Some(gate) => Some(gate.clone().lock_owned().await),
                    None => None,
                };
                Ok(Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await.map_err(repo_err)?, turn))
            }
            Pool::Sqlite(p) => Ok(Tx::Sqlite(p.begin().await.map_err(repo_err)?, None)),
            Pool::Postgres(p) => {
                let mut tx = p.begin().await.map_err(repo_err)?;
                let (tenant, scope) = match scope {
                    Scope::Tenant(t) => (t.to_string(), "tenant"),
                    Scope::Platform => (String::new(), "platform"),
                };
                sqlx::query(
                    "SELECT set_config('telesafe.tenant_id', $1, true), \
                            set_config('telesafe.scope', $2, true)",
                )
                .bind(tenant)
                .bind(scope)
                .execute(&mut *tx)
                .await
                .map_err(repo_err)?;
                Ok(Tx::Postgres(tx))
            }
        }
    }
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), RepoError> {
        match self {
            Tx::Sqlite(t, _turn) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
        .map_err(repo_err)
    }
}

/// `rows` tuples of `cols` placeholders, with a constant spliced in before column `at` if
/// given. SQLite gets anonymous `?` (sqlx looks up every named parameter with a linear scan
/// of the statement's names, which makes `$N` quadratic in a multi-row statement: measured
/// at two thirds of the device path's time); PostgreSQL gets `$N`.
pub(crate) fn placeholders(
    tx: &Tx,
    rows: usize,
    cols: usize,
    constant: Option<(usize, &str)>,
) -> String {
    let sqlite = matches!(tx, Tx::Sqlite(..));
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            if let Some((at, value)) = constant
                && at == c
            {
                out.push_str(value);
                out.push_str(", ");
            }
            if sqlite {
                out.push('?');
            } else {
                out.push_str(&format!("${}", r * cols + c + 1));
            }
        }
        out.push(')');
    }
    out
}
