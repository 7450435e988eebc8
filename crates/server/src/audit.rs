//! Recording accesses in the audit log from handlers, and serving the log's signed heads
//! and proofs.
//!
//! [`record`] is the one way a handler logs an access: it fills in who (from the session),
//! from where, in which session and request, and waits until the entry is durable. If the
//! log cannot take it, the handler gets 503 and must not answer with the data (fail closed).

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use telesafe_core::Timestamp;
use telesafe_core::audit::{ActorKind, Entry, Purpose, SignedTreeHead};
use telesafe_core::identity::Role;

use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::http::request_id;
use crate::state::AppState;

/// What was done to which record, and why.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: String,
    pub patient_id: String,
    pub purpose: Purpose,
    pub outcome: &'a str,
}

/// Who did it, as the log names them.
#[derive(Debug, Clone)]
pub struct Actor {
    pub tenant: String,
    pub kind: ActorKind,
    pub id: String,
    pub role: String,
    pub source: String,
    pub session: String,
}

impl Actor {
    /// A signed-in user, from their session.
    pub fn user(me: &CurrentUser) -> Self {
        Self {
            tenant: me.user.tenant_id.to_string(),
            kind: ActorKind::User,
            id: me.user.id.to_string(),
            role: me.role().as_str().to_owned(),
            source: me.session.source.clone(),
            session: CurrentUser::session_label(&me.session),
        }
    }

    /// An API client, by its client id; `session` is a prefix of its token's hash.
    pub fn client(
        token: &telesafe_core::identity::clients::AccessToken,
        source: Option<std::net::IpAddr>,
    ) -> Self {
        Self {
            tenant: token.tenant_id.to_string(),
            kind: ActorKind::Client,
            id: token.client_id.clone(),
            role: "client".to_owned(),
            source: source.map(|a| a.to_string()).unwrap_or_default(),
            session: token.token_hash.as_str().chars().take(16).collect(),
        }
    }
}

fn entry(state: &AppState, who: &Actor, a: &Access<'_>) -> Entry {
    Entry {
        seq: 0,
        at: state.clock.now().unix_millis(),
        tenant_id: who.tenant.clone(),
        actor_kind: who.kind,
        actor_id: who.id.clone(),
        actor_role: who.role.clone(),
        action: a.action.to_owned(),
        resource_type: a.resource_type.to_owned(),
        resource_id: a.resource_id.clone(),
        patient_id: a.patient_id.clone(),
        purpose: a.purpose,
        outcome: a.outcome.to_owned(),
        source: who.source.clone(),
        session: who.session.clone(),
        request_id: request_id::current(),
    }
}

/// Records `accesses` by `me` and returns once they are durable; 503 otherwise.
pub async fn record(
    state: &AppState,
    me: &CurrentUser,
    accesses: &[Access<'_>],
) -> Result<(), AppError> {
    record_as(state, &Actor::user(me), accesses).await
}

/// Records `accesses` by `who` and returns once they are durable; 503 otherwise.
pub async fn record_as(
    state: &AppState,
    who: &Actor,
    accesses: &[Access<'_>],
) -> Result<(), AppError> {
    let entries = accesses.iter().map(|a| entry(state, who, a)).collect();
    state.audit.record_all(entries).await.map(|_| ()).map_err(|_| AppError::Unavailable)
}

/// Records several actors' accesses in one append (one durable commit for them all): a
/// request carrying many devices' batches waits once, not once per batch.
/// When `telesafe backup create` last ran (Unix milliseconds), from the `backup` entry it
/// logs in every organisation's log, the platform's included, before copying anything;
/// `None` if never. On PostgreSQL backups are made with PostgreSQL's own tools, which leave
/// no entry, so the log is not searched.
pub async fn newest_backup_at(state: &AppState) -> Result<Option<i64>, telesafe_core::RepoError> {
    use telesafe_core::audit::{AuditFilter, AuditRepository};
    use telesafe_core::identity::{PLATFORM_SLUG, TenantRepository, TenantSlug};
    if state.store.backend() == telesafe_store::Backend::Postgres {
        return Ok(None);
    }
    let Ok(slug) = TenantSlug::parse(PLATFORM_SLUG) else { return Ok(None) };
    let Some(platform) = state.store.tenant_by_slug(&slug).await? else { return Ok(None) };
    let filter = AuditFilter {
        actor_id: Some("telesafe-cli".into()),
        action: Some("backup".into()),
        ..AuditFilter::default()
    };
    Ok(state.store.search_audit(platform.id, &filter, 1).await?.first().map(|e| e.at))
}

pub async fn record_each(
    state: &AppState,
    items: &[(&Actor, &[Access<'_>])],
) -> Result<(), AppError> {
    let entries = items
        .iter()
        .flat_map(|(who, accesses)| accesses.iter().map(|a| entry(state, who, a)))
        .collect();
    state.audit.record_all(entries).await.map(|_| ()).map_err(|_| AppError::Unavailable)
}

/// A signed tree head as served and as written to a witness file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeadJson {
    pub index: u64,
    pub size: u64,
    /// Hex SHA-256.
    pub root: String,
    /// Unix milliseconds.
    pub at: i64,
    /// Hex Ed25519 signature.
    pub signature: String,
}

impl From<&SignedTreeHead> for HeadJson {
    fn from(h: &SignedTreeHead) -> Self {
        Self {
            index: h.index,
            size: h.size,
            root: hex::encode(h.root),
            at: h.at,
            signature: hex::encode(&h.signature),
        }
    }
}

impl HeadJson {
    /// Back to a head, if the hex is well-formed.
    pub fn to_head(&self) -> Option<SignedTreeHead> {
        Some(SignedTreeHead {
            index: self.index,
            size: self.size,
            root: hex::decode(&self.root).ok()?.try_into().ok()?,
            at: self.at,
            signature: hex::decode(&self.signature).ok()?,
        })
    }
}

/// Who may read the log's heads and proofs: security officers and platform operators.
fn auditor(me: &CurrentUser) -> Result<(), AppError> {
    match me.role() {
        Role::SecurityOfficer | Role::PlatformOperator => Ok(()),
        _ => Err(AppError::Forbidden),
    }
}

#[derive(Debug, Serialize)]
pub struct LatestHead {
    #[serde(flatten)]
    head: HeadJson,
    /// Hex Ed25519 public key that verifies the heads.
    public_key: String,
}

/// `GET /api/v1/audit/head`: the latest signed tree head.
pub async fn latest_head(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Json<LatestHead>, AppError> {
    auditor(&me)?;
    use telesafe_core::audit::AuditRepository;
    let heads = state.store.heads().await?;
    let head = heads.last().ok_or(AppError::NotFound)?;
    Ok(Json(LatestHead { head: head.into(), public_key: hex::encode(state.audit.public_key()) }))
}

#[derive(Debug, Deserialize)]
pub struct InclusionQuery {
    seq: u64,
    size: u64,
}

#[derive(Debug, Serialize)]
pub struct InclusionProof {
    seq: u64,
    size: u64,
    leaf_hash: String,
    root: String,
    proof: Vec<String>,
}

/// `GET /api/v1/audit/proof/inclusion?seq=&size=`: RFC 9162 inclusion proof of an entry
/// of the caller's tenant (operators: any) in the tree of `size`.
pub async fn inclusion(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<InclusionProof>, AppError> {
    auditor(&me)?;
    use telesafe_core::audit::AuditRepository;
    let (entry, leaf) =
        state.store.audit_entries(q.seq, 1).await?.into_iter().next().ok_or(AppError::NotFound)?;
    if entry.seq != q.seq
        || (me.role() != Role::PlatformOperator && entry.tenant_id != me.user.tenant_id.to_string())
    {
        return Err(AppError::NotFound);
    }
    let (root, proof) = state.audit.inclusion(q.seq, q.size).ok_or_else(|| {
        AppError::BadRequest("seq must be below size, and size at most the log's size".into())
    })?;
    Ok(Json(InclusionProof {
        seq: q.seq,
        size: q.size,
        leaf_hash: hex::encode(leaf),
        root: hex::encode(root),
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct ConsistencyQuery {
    old: u64,
    new: u64,
}

#[derive(Debug, Serialize)]
pub struct ConsistencyProof {
    old: u64,
    new: u64,
    old_root: String,
    new_root: String,
    proof: Vec<String>,
}

/// `GET /api/v1/audit/proof/consistency?old=&new=`: RFC 9162 consistency proof.
pub async fn consistency(
    State(state): State<AppState>,
    me: CurrentUser,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, AppError> {
    auditor(&me)?;
    let (old_root, new_root, proof) = state.audit.consistency(q.old, q.new).ok_or_else(|| {
        AppError::BadRequest("old must be at most new, and new at most the log's size".into())
    })?;
    Ok(Json(ConsistencyProof {
        old: q.old,
        new: q.new,
        old_root: hex::encode(old_root),
        new_root: hex::encode(new_root),
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

/// Appends each signed head to the witness file as a JSON line (mode 0600).
pub fn witness_sink(path: std::path::PathBuf) -> telesafe_core::audit::HeadSink {
    Box::new(move |h: &SignedTreeHead| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let line = match serde_json::to_string(&HeadJson::from(h)) {
            Ok(l) => l,
            Err(_) => return,
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}").and_then(|()| f.sync_data()));
        if let Err(e) = written {
            tracing::error!(error = %e, "could not append a signed tree head to the witness file");
        }
    })
}

/// Reads a witness file (JSON lines of heads).
pub fn read_witness(path: &std::path::Path) -> Result<Vec<SignedTreeHead>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str::<HeadJson>(l)
                .ok()
                .and_then(|h| h.to_head())
                .ok_or_else(|| format!("{} line {}: not a signed tree head", path.display(), i + 1))
        })
        .collect()
}

/// How long after an authentication event it is copied: events are written by many
/// requests at once, and one written a moment late must not fall behind the copier's
/// position (an event's transaction commits within milliseconds of its time).
pub const AUTH_MIRROR_LAG_MS: i64 = 5_000;

/// Copies authentication events (sign-ins, failures, lockouts, second factors, password
/// changes, ...) into the tamper-evident audit log, in order, a few seconds behind, so
/// `telesafe audit verify` and a witness cover them as they cover access to records. The
/// copy of each event carries the event's id as its request id; the copier's position is
/// stored after each round (a crash between the two copies a round again: at least once,
/// recognisable by the event id).
pub fn spawn_auth_mirror(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match mirror_auth_events(&state).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "copying authentication events into the audit log failed; retrying")
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    })
}

/// One round of the copier: returns how many events were copied.
pub async fn mirror_auth_events(state: &AppState) -> Result<usize, AppError> {
    use telesafe_core::identity::AuthEventFeed;
    let position = state.store.mirror_position().await?;
    let until = Timestamp::from_unix_millis(state.clock.now().unix_millis() - AUTH_MIRROR_LAG_MS);
    let events = state.store.auth_events_after(position, until, 500).await?;
    let Some(last) = events.last().map(|e| (e.at, e.id)) else { return Ok(0) };
    let entries = events
        .iter()
        .map(|e| Entry {
            seq: 0,
            at: e.at.unix_millis(),
            tenant_id: e.tenant_id.to_string(),
            actor_kind: if e.user_id.is_some() { ActorKind::User } else { ActorKind::System },
            actor_id: e.user_id.map(|u| u.to_string()).unwrap_or_default(),
            actor_role: String::new(),
            action: e.kind.as_str().to_owned(),
            resource_type: "Account".to_owned(),
            resource_id: e.user_id.map(|u| u.to_string()).unwrap_or_default(),
            patient_id: String::new(),
            purpose: Purpose::Operations,
            outcome: e.outcome.to_owned(),
            source: e.source.clone(),
            session: String::new(),
            request_id: e.id.to_string(),
        })
        .collect::<Vec<_>>();
    let n = entries.len();
    state.audit.record_all(entries).await.map_err(|_| AppError::Unavailable)?;
    state.store.set_mirror_position(last).await?;
    Ok(n)
}
