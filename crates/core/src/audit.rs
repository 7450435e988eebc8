//! The audit log: every access to patient data (and every security-relevant action) is an
//! entry, durable before the response leaves (fail closed), and a leaf of an RFC 9162
//! Merkle tree whose heads are signed with Ed25519. Nobody who can write to the database
//! but does not hold the root key can change, remove, reorder or add an entry without
//! [`verify`] noticing; a witness that kept earlier heads also catches a truncated tail.
//!
//! Appends go through one worker per process that commits the entries of concurrent
//! requests together (group commit) and answers each request only after its commit.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use telesafe_audit::{
    ActorKind, Entry, EntryView, Frontier, Hash, HeadSigner, Purpose, Segment, SegmentBuilder,
    SignedTreeHead, Tree, leaf_hash, node_hash, search_key, verify_consistency, verify_inclusion,
};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::ids::TenantId;
use crate::repo::RepoError;

/// Most entries committed in one transaction.
pub const MAX_BATCH: usize = 4096;
/// A head is signed once this many entries arrived since the last one...
pub const HEAD_EVERY_ENTRIES: u64 = 1000;
/// ...or this long after the last one, whichever comes first.
pub const HEAD_EVERY: Duration = Duration::from_secs(10);

/// Storage for the audit log.
pub trait AuditRepository: Send + Sync {
    /// Stores segments whose entries continue the log, and `head` (signed over entries
    /// already committed) with them, in one transaction; `Conflict` when a `seq` is taken
    /// (another process appended first). A busy log thus writes no transaction of its own
    /// for its heads. Returns whether the head was stored: not when another process took
    /// its index first (the segments are stored all the same).
    fn append_segments(
        &self,
        segments: &[Segment],
        head: Option<&SignedTreeHead>,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Appends entries (with their leaf hashes) whose `seq` continues the log, each tenant's
    /// consecutive run as one segment.
    fn append_audit(
        &self,
        entries: &[(Entry, Hash)],
    ) -> impl Future<Output = Result<(), RepoError>> + Send {
        let segments: Vec<Segment> = entries
            .chunk_by(|(a, _), (b, _)| a.tenant_id == b.tenant_id)
            .map(Segment::build)
            .collect();
        async move { self.append_segments(&segments, None).await.map(|_| ()) }
    }
    /// Stored entries with their stored leaf hashes, from `from` in `seq` order.
    fn audit_entries(
        &self,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(Entry, Hash)>, RepoError>> + Send;
    /// Stored segments in `seq` order, those starting in `from..from + span`, or else the
    /// first one starting after `from` (so a gap is seen, not skipped), with their keys.
    fn audit_segments(
        &self,
        from: u64,
        span: u64,
    ) -> impl Future<Output = Result<Vec<Segment>, RepoError>> + Send;
    /// How many entries there are (the next `seq`).
    fn audit_size(&self) -> impl Future<Output = Result<u64, RepoError>> + Send;
    fn save_head(&self, h: &SignedTreeHead) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// The head with the highest index.
    fn last_head(&self) -> impl Future<Output = Result<Option<SignedTreeHead>, RepoError>> + Send {
        async move { Ok(self.heads().await?.pop()) }
    }
    /// Every signed head, by index.
    fn heads(&self) -> impl Future<Output = Result<Vec<SignedTreeHead>, RepoError>> + Send;
    /// A tenant's entries matching `filter`, newest first.
    fn search_audit(
        &self,
        tenant: TenantId,
        filter: &AuditFilter,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Entry>, RepoError>> + Send;
}

/// What an audit search narrows to (all optional).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_id: Option<String>,
    pub patient_id: Option<String>,
    pub action: Option<String>,
    /// Unix milliseconds, inclusive.
    pub from: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The entry could not be made durable: the request that caused it must fail.
    #[error("the audit log is unavailable")]
    Unavailable,
}

/// One request's entries, answered with the `seq`s they were given (consecutive).
struct Pending {
    entries: Vec<Entry>,
    done: oneshot::Sender<Result<std::ops::Range<u64>, AuditError>>,
}

#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is an append; boxing would cost an allocation per entry"
)]
enum Msg {
    Append(Pending),
    /// Sign a head over everything committed so far, now.
    SignNow(oneshot::Sender<Option<SignedTreeHead>>),
}

/// The process's handle on the audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    tree: Arc<Mutex<Tree>>,
    public_key: Arc<Vec<u8>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("size", &self.size()).finish_non_exhaustive()
    }
}

/// Called after each signed head (for example to append it to a witness file).
pub type HeadSink = Box<dyn Fn(&SignedTreeHead) + Send + Sync>;

impl AuditLog {
    /// Loads the tree from storage and starts the append worker.
    pub async fn open<R>(
        repo: R,
        signer: HeadSigner,
        clock: Arc<dyn Clock>,
        on_head: Option<HeadSink>,
    ) -> Result<Self, RepoError>
    where
        R: AuditRepository + Clone + 'static,
    {
        let mut tree = Tree::new();
        catch_up(&repo, &mut tree).await?;
        let tree = Arc::new(Mutex::new(tree));
        let public_key = Arc::new(signer.public_key().to_vec());
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let last = repo.last_head().await?;
        let worker = Worker {
            repo,
            signer,
            clock,
            tree: tree.clone(),
            last_head: last,
            on_head,
            head_due: false,
            head_waiters: Vec::new(),
        };
        tokio::spawn(worker.run(rx));
        Ok(Self { tx, tree, public_key })
    }

    /// Appends `entry` and waits until it is durable; returns its `seq`. An error means
    /// the entry is not in the log, and the caller must not answer with the data.
    pub async fn record(&self, entry: Entry) -> Result<u64, AuditError> {
        Ok(self.append(vec![entry]).await?.start)
    }

    async fn append(&self, entries: Vec<Entry>) -> Result<std::ops::Range<u64>, AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Append(Pending { entries, done }))
            .await
            .map_err(|_| AuditError::Unavailable)?;
        wait.await.map_err(|_| AuditError::Unavailable)?
    }

    /// Signs a head over everything committed so far (at shutdown, and in tests); `None`
    /// when nothing was added since the last head or it could not be stored.
    pub async fn sign_now(&self) -> Option<SignedTreeHead> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::SignNow(done)).await.ok()?;
        wait.await.ok().flatten()
    }

    /// Appends several entries (one request touching several patients) and waits until all
    /// are durable. They are committed together, in this order, with consecutive `seq`s.
    pub async fn record_all(&self, entries: Vec<Entry>) -> Result<Vec<u64>, AuditError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.append(entries).await?.collect())
    }

    /// How many entries this process knows of.
    pub fn size(&self) -> u64 {
        self.tree.lock().map(|t| t.size()).unwrap_or(0)
    }

    /// The public key that verifies this log's heads.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The root at `size` and the inclusion proof of entry `seq` in it.
    pub fn inclusion(&self, seq: u64, size: u64) -> Option<(Hash, Vec<Hash>)> {
        let t = self.tree.lock().ok()?;
        Some((t.root_at(size).ok()?, t.inclusion_proof(seq, size).ok()?))
    }

    /// The consistency proof between two sizes, with both roots.
    pub fn consistency(&self, old: u64, new: u64) -> Option<(Hash, Hash, Vec<Hash>)> {
        let t = self.tree.lock().ok()?;
        Some((t.root_at(old).ok()?, t.root_at(new).ok()?, t.consistency_proof(old, new).ok()?))
    }
}

/// Brings `tree` up to what storage holds (entries appended by another process), from the
/// stored leaf hashes.
async fn catch_up<R: AuditRepository>(repo: &R, tree: &mut Tree) -> Result<(), RepoError> {
    loop {
        let segments = repo.audit_segments(tree.size(), READ_SPAN).await?;
        if segments.is_empty() {
            return Ok(());
        }
        for s in segments {
            if s.first_seq != tree.size() {
                return Err(RepoError::Backend("the audit log has a gap".into()));
            }
            for i in 0..s.count as usize {
                tree.push(s.stored_leaf(i));
            }
        }
    }
}

/// Entries per read when walking the log.
const READ_SPAN: u64 = 65_536;

fn tenant_of(p: &Pending) -> &str {
    p.entries.first().map_or("", |e| e.tenant_id.as_str())
}

struct Worker<R> {
    repo: R,
    signer: HeadSigner,
    clock: Arc<dyn Clock>,
    tree: Arc<Mutex<Tree>>,
    /// The last head stored.
    last_head: Option<SignedTreeHead>,
    on_head: Option<HeadSink>,
    /// The timer found a head due while a commit was under way.
    head_due: bool,
    /// Callers of [`AuditLog::sign_now`] waiting for the next head.
    head_waiters: Vec<oneshot::Sender<Option<SignedTreeHead>>>,
}

/// A batch numbered from `first`, encoded into segments and hashed, ready to store; and
/// the signed head that rides in the same transaction, with those waiting for it.
struct Prepared {
    batch: Vec<Pending>,
    first: u64,
    segments: Vec<Segment>,
    hashes: Vec<Hash>,
    head: Option<SignedTreeHead>,
    head_waiters: Vec<oneshot::Sender<Option<SignedTreeHead>>>,
}

impl Prepared {
    /// Numbers the batch from `first`, each entry in place (`seq` is part of what is
    /// hashed), and encodes each once, straight into its segment, hashing it from there.
    fn new(mut batch: Vec<Pending>, first: u64) -> Self {
        let total = batch.iter().map(|p| p.entries.len()).sum();
        // Sized before numbering: room for each `seq` at its widest (20 digits).
        let bytes: usize =
            batch.iter().flat_map(|p| &p.entries).map(|e| e.encoded_len() + 20).sum();
        let mut segments: Vec<Segment> = Vec::new();
        let mut open: Option<SegmentBuilder> = None;
        let mut hashes = Vec::with_capacity(total);
        for (seq, e) in (first..).zip(batch.iter_mut().flat_map(|p| &mut p.entries)) {
            e.seq = seq;
            let builder = match open.take() {
                Some(b) if b.tenant_id() == e.tenant_id => b,
                other => {
                    segments.extend(other.map(SegmentBuilder::finish));
                    let mut b = SegmentBuilder::new(seq, &e.tenant_id);
                    b.reserve(total - hashes.len(), bytes);
                    b
                }
            };
            hashes.push(open.insert(builder).append(e));
        }
        segments.extend(open.map(SegmentBuilder::finish));
        Self { batch, first, segments, hashes, head: None, head_waiters: Vec::new() }
    }

    fn end(&self) -> u64 {
        self.first + self.hashes.len() as u64
    }

    /// Answers every request of the batch.
    fn answer(self, result: Result<(), AuditError>) {
        let mut next = self.first;
        for p in self.batch {
            let end = next + p.entries.len() as u64;
            let _ = p.done.send(result.clone().map(|()| next..end));
            next = end;
        }
    }
}

/// A commit under way: whether its head was stored, when it is done.
type Commit = tokio::task::JoinHandle<Result<bool, RepoError>>;

/// How long a batch whose place other processes keep taking is moved to the new end
/// before its requests fail closed.
const CONFLICT_PATIENCE: Duration = Duration::from_secs(5);

impl<R: AuditRepository + Clone + 'static> Worker<R> {
    /// Group commit, pipelined: while one batch is being stored, the next is collected,
    /// numbered, encoded and hashed, and it is stored as soon as the first is durable. A
    /// request is answered only after its own batch's commit. A signed head due after a
    /// commit rides in the next one's transaction (or in one of its own when the log is
    /// idle), so heads never stall the pipeline.
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut tick = tokio::time::interval(HEAD_EVERY);
        let mut in_flight: Option<(Prepared, Commit)> = None;
        let mut queued: Option<Prepared> = None;
        loop {
            tokio::select! {
                biased;
                done = async {
                    match in_flight.as_mut() {
                        Some((_, commit)) => commit.await,
                        None => std::future::pending().await,
                    }
                }, if in_flight.is_some() => {
                    let Some((prepared, _)) = in_flight.take() else { continue };
                    let result = done.unwrap_or_else(|e| Err(RepoError::Backend(e.to_string())));
                    in_flight = self.finish(prepared, result, queued.take()).await;
                }
                msg = rx.recv(), if queued.is_none() => {
                    let Some(first) = msg else { return };
                    let mut batch = Vec::new();
                    let mut entries = 0;
                    let mut next = Some(first);
                    while let Some(msg) = next {
                        match msg {
                            Msg::Append(p) => {
                                entries += p.entries.len();
                                batch.push(p);
                            }
                            // A head over what is committed now (an entry whose `record`
                            // returned is committed), answered once it is stored.
                            Msg::SignNow(done) => self.head_waiters.push(done),
                        }
                        next = if entries < MAX_BATCH { rx.try_recv().ok() } else { None };
                    }
                    if batch.is_empty() {
                        if in_flight.is_none() {
                            in_flight = self.head_alone();
                        }
                        continue;
                    }
                    // Each tenant's entries consecutive, so each is one segment (and stays
                    // readable under PostgreSQL's row-level security); the order within a
                    // tenant is kept.
                    batch.sort_by(|a, b| tenant_of(a).cmp(tenant_of(b)));
                    match &in_flight {
                        Some((ahead, _)) => queued = Some(Prepared::new(batch, ahead.end())),
                        None => {
                            let mut p = Prepared::new(batch, self.size());
                            self.attach_head(&mut p);
                            in_flight = Some(self.start(p));
                        }
                    }
                }
                _ = tick.tick() => {
                    if self.due_by_time() {
                        self.head_due = true;
                        if in_flight.is_none() {
                            in_flight = self.head_alone();
                        }
                    }
                }
            }
        }
    }

    fn size(&self) -> u64 {
        self.tree.lock().map(|t| t.size()).unwrap_or(0)
    }

    /// Starts storing `p` (and its head), renumbered first if the log is no longer where it
    /// expected.
    fn start(&self, mut p: Prepared) -> (Prepared, Commit) {
        let size = self.size();
        if p.first != size {
            let (head, waiters) = (p.head.take(), std::mem::take(&mut p.head_waiters));
            p = Prepared::new(p.batch, size);
            (p.head, p.head_waiters) = (head, waiters);
        }
        let repo = self.repo.clone();
        let segments = std::mem::take(&mut p.segments);
        let head = p.head.clone();
        (p, tokio::spawn(async move { repo.append_segments(&segments, head.as_ref()).await }))
    }

    /// After a commit: grows the tree, starts the queued batch (with a head, if one is
    /// due), then answers (so the next commit is already under way while this batch is
    /// answered and freed).
    async fn finish(
        &mut self,
        mut prepared: Prepared,
        mut result: Result<bool, RepoError>,
        queued: Option<Prepared>,
    ) -> Option<(Prepared, Commit)> {
        // Another process appended: catch up and try again at the new end. Several nodes
        // appending all the time can take the end again and again (a node whose next batch
        // is ready commits it at once), so each retry waits a short random while that
        // doubles, and the batch fails only when the patience runs out. The head goes
        // along: it covers entries committed before, wherever this batch lands.
        let patience = std::time::Instant::now() + CONFLICT_PATIENCE;
        let mut pause = Duration::from_micros(250);
        while matches!(result, Err(RepoError::Conflict)) {
            if std::time::Instant::now() >= patience {
                break;
            }
            let jitter = u32::from(uuid::Uuid::new_v4().as_bytes()[0]) + 1;
            tokio::time::sleep(pause * jitter / 128).await;
            pause = (pause * 2).min(Duration::from_millis(20));
            let mut tree = self.tree.lock().map(|t| t.clone()).unwrap_or_default();
            if let Err(e) = catch_up(&self.repo, &mut tree).await {
                result = Err(e);
                break;
            }
            if let Ok(mut t) = self.tree.lock() {
                *t = tree;
            }
            let (again, commit) = self.start(prepared);
            prepared = again;
            result = commit.await.unwrap_or_else(|e| Err(RepoError::Backend(e.to_string())));
        }
        if result.is_ok()
            && let Ok(mut t) = self.tree.lock()
        {
            for h in &prepared.hashes {
                t.push(*h);
            }
        }
        let head = prepared.head.take();
        let mut waiters = std::mem::take(&mut prepared.head_waiters);
        match (&result, head) {
            (Ok(true), Some(h)) => {
                if let Some(sink) = &self.on_head {
                    sink(&h);
                }
                for w in waiters.drain(..) {
                    let _ = w.send(Some(h.clone()));
                }
                self.last_head = Some(h);
            }
            // Another process signed with this index first: sign again after its head
            // (for those waiting, too).
            (Ok(_), Some(_)) => {
                self.head_waiters.append(&mut waiters);
                match self.repo.last_head().await {
                    Ok(last) => self.last_head = last.or(self.last_head.take()),
                    Err(e) => {
                        tracing::error!(error = %e, "could not read the last signed tree head")
                    }
                }
            }
            (Ok(_), None) => {}
            (Err(e), _) => {
                tracing::error!(error = %e, entries = prepared.hashes.len(), "audit append failed; the requests fail closed");
            }
        }
        for w in waiters {
            let _ = w.send(None);
        }
        let next = match queued {
            Some(mut q) => {
                self.attach_head(&mut q);
                Some(self.start(q))
            }
            None => self.head_alone(),
        };
        prepared.answer(result.map(|_| ()).map_err(|_| AuditError::Unavailable));
        next
    }

    /// Whether the timer should ask for a head: [`HEAD_EVERY`] has passed since the last
    /// one (whether entries were added is for [`Worker::sign`] to see).
    fn due_by_time(&self) -> bool {
        let now = self.clock.now().unix_millis();
        let last_at = self.last_head.as_ref().map_or(i64::MIN, |h| h.at);
        now.saturating_sub(last_at) >= i64::try_from(HEAD_EVERY.as_millis()).unwrap_or(0)
    }

    /// Signs a head over everything committed and gives it to `p` when one is due: enough
    /// entries since the last, the timer asked, or someone waits for one. Waiters are
    /// answered `None` when nothing was added since the last head.
    fn attach_head(&mut self, p: &mut Prepared) {
        let size = self.size();
        let last_size = self.last_head.as_ref().map_or(0, |h| h.size);
        let due = self.head_due
            || !self.head_waiters.is_empty()
            || size - last_size.min(size) >= HEAD_EVERY_ENTRIES;
        if !due {
            return;
        }
        self.head_due = false;
        let waiters = std::mem::take(&mut self.head_waiters);
        match self.sign() {
            Some(h) => {
                p.head = Some(h);
                p.head_waiters = waiters;
            }
            None => {
                for w in waiters {
                    let _ = w.send(None);
                }
            }
        }
    }

    /// A commit of a head alone, when one is due and no batch is there to carry it.
    fn head_alone(&mut self) -> Option<(Prepared, Commit)> {
        let mut p = Prepared::new(Vec::new(), self.size());
        self.attach_head(&mut p);
        p.head.is_some().then(|| self.start(p))
    }

    /// A head over everything committed, unless the last head already covers it all.
    fn sign(&self) -> Option<SignedTreeHead> {
        let now = self.clock.now().unix_millis();
        let (size, root) = {
            let t = self.tree.lock().ok()?;
            (t.size(), t.root_at(t.size()).ok()?)
        };
        if size == 0 || self.last_head.as_ref().is_some_and(|h| h.size >= size) {
            return None;
        }
        let next_index = self.last_head.as_ref().map_or(0, |h| h.index + 1);
        Some(self.signer.sign(next_index, size, now, root))
    }
}

/// Signs a head over everything stored now (for `telesafe audit sign-head`, and tests).
pub async fn sign_head_now<R: AuditRepository>(
    repo: &R,
    signer: &HeadSigner,
    at: i64,
) -> Result<SignedTreeHead, RepoError> {
    let mut tree = Tree::new();
    catch_up(repo, &mut tree).await?;
    let index = repo.last_head().await?.map_or(0, |h| h.index + 1);
    let root = tree.root_at(tree.size()).map_err(|e| RepoError::Backend(e.to_string()))?;
    let head = signer.sign(index, tree.size(), at, root);
    repo.save_head(&head).await?;
    Ok(head)
}

/// What verification found wrong: the first problem, naming the entry or head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "entry {seq}: its contents do not match its recorded hash (changed after it was written)"
    )]
    EntryChanged { seq: u64 },
    #[error(
        "entry {seq}: the tenant, times or search keys stored beside it do not match it (changed after it was written)"
    )]
    IndexChanged { seq: u64 },
    #[error("entry {expected} is missing (the next stored entry is {found})")]
    EntryMissing { expected: u64, found: u64 },
    #[error("signed head {index}: the signature is not valid for this log's key")]
    BadSignature { index: u64 },
    #[error(
        "signed head {index}: out of order (expected head {expected}); a head was replaced or removed"
    )]
    HeadOutOfOrder { index: u64, expected: u64 },
    #[error(
        "signed head {index} (size {size}): the entries do not hash to its root; an entry before {size} was changed, added, removed or reordered"
    )]
    RootMismatch { index: u64, size: u64 },
    #[error(
        "signed head {index} covers {size} entries but the log ends at {end}: entries were removed from the end"
    )]
    Truncated { index: u64, size: u64, end: u64 },
    #[error("witness head {index} (size {size}): the log does not match what the witness saw")]
    WitnessMismatch { index: u64, size: u64 },
    #[error(
        "witness head {index} covers {size} entries but the log ends at {end}: the log was cut back"
    )]
    WitnessTruncated { index: u64, size: u64, end: u64 },
    #[error("witness head {index}: the signature is not valid for this log's key")]
    WitnessBadSignature { index: u64 },
    #[error("reading the log failed: {0}")]
    Read(String),
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub heads: u64,
    pub witness_heads: u64,
    pub root: Hash,
}

/// Recomputes every leaf and every signed head's root from the stored entries, checks
/// every signature (with `public_key`, which must come from the root key, never from the
/// database), and checks the witness's heads. `progress(done, total)` is called per batch.
pub async fn verify<R: AuditRepository + Clone + 'static>(
    repo: &R,
    public_key: &[u8],
    witness: &[SignedTreeHead],
    mut progress: impl FnMut(u64, u64),
) -> Result<Verified, VerifyError> {
    let read = |e: RepoError| VerifyError::Read(e.to_string());
    let heads = repo.heads().await.map_err(read)?;
    for (i, h) in heads.iter().enumerate() {
        let expected = i as u64;
        if !h.verify(public_key) {
            return Err(VerifyError::BadSignature { index: h.index });
        }
        if h.index != expected {
            return Err(VerifyError::HeadOutOfOrder { index: h.index, expected });
        }
    }
    for w in witness {
        if !w.verify(public_key) {
            return Err(VerifyError::WitnessBadSignature { index: w.index });
        }
    }
    // Checkpoints: the sizes at which a root must match, in order.
    let mut checks: Vec<(u64, Hash, Result<(), VerifyError>)> = Vec::new();
    for h in &heads {
        checks.push((
            h.size,
            h.root,
            Err(VerifyError::RootMismatch { index: h.index, size: h.size }),
        ));
    }
    for w in witness {
        checks.push((
            w.size,
            w.root,
            Err(VerifyError::WitnessMismatch { index: w.index, size: w.size }),
        ));
    }
    checks.sort_by_key(|c| c.0);
    let total = repo.audit_size().await.map_err(read)?;
    let mut frontier = Frontier::default();
    let mut next_check = 0;
    let check =
        |frontier: &Frontier, next: &mut usize, checks: &[(u64, Hash, Result<(), VerifyError>)]| {
            while let Some((size, root, err)) = checks.get(*next) {
                if *size != frontier.size() {
                    break;
                }
                if frontier.root() != *root {
                    return err.clone();
                }
                *next += 1;
            }
            Ok(())
        };
    check(&frontier, &mut next_check, &checks)?;
    // The next read runs on another task while this one checks what it has, so reading
    // and hashing overlap.
    let fetch = |from: u64| {
        let repo = repo.clone();
        tokio::spawn(async move { repo.audit_segments(from, READ_SPAN).await })
    };
    let joined = |r: Result<Result<Vec<Segment>, RepoError>, tokio::task::JoinError>| {
        r.map_err(|e| VerifyError::Read(e.to_string()))?.map_err(read)
    };
    let mut current = joined(fetch(0).await)?;
    while let Some(last) = current.last() {
        let next = fetch(last.first_seq + u64::from(last.count));
        for segment in &current {
            let first = segment.first_seq;
            if first != frontier.size() {
                return Err(VerifyError::EntryMissing { expected: frontier.size(), found: first });
            }
            let (items, broken) = segment.split();
            let mut seen = SegmentFacts::default();
            for (i, (fresh, view)) in
                telesafe_audit::segment::examine(&items).into_iter().enumerate()
            {
                let seq = first + i as u64;
                if fresh != segment.stored_leaf(i) {
                    return Err(VerifyError::EntryChanged { seq });
                }
                let Some(view) = view else {
                    return Err(VerifyError::EntryChanged { seq });
                };
                if view.seq != seq || view.tenant_id != segment.tenant_id {
                    return Err(VerifyError::IndexChanged { seq });
                }
                seen.add(&view);
                frontier.push(fresh);
                check(&frontier, &mut next_check, &checks)?;
            }
            if let Some(i) = broken {
                return Err(VerifyError::EntryChanged { seq: first + i as u64 });
            }
            if !seen.matches(segment) {
                return Err(VerifyError::IndexChanged { seq: first });
            }
        }
        progress(frontier.size(), total.max(frontier.size()));
        current = joined(next.await)?;
    }
    let end = frontier.size();
    if let Some(h) = heads.iter().find(|h| h.size > end) {
        return Err(VerifyError::Truncated { index: h.index, size: h.size, end });
    }
    if let Some(w) = witness.iter().find(|w| w.size > end) {
        return Err(VerifyError::WitnessTruncated { index: w.index, size: w.size, end });
    }
    Ok(Verified {
        entries: end,
        heads: heads.len() as u64,
        witness_heads: witness.len() as u64,
        root: frontier.root(),
    })
}

/// What a segment's entries say its stored columns and keys must be.
#[derive(Default)]
struct SegmentFacts<'a> {
    min_at: Option<i64>,
    max_at: Option<i64>,
    patients: Vec<&'a str>,
    actors: Vec<&'a str>,
}

impl<'a> SegmentFacts<'a> {
    fn add(&mut self, e: &EntryView<'a>) {
        self.min_at = Some(self.min_at.map_or(e.at, |m| m.min(e.at)));
        self.max_at = Some(self.max_at.map_or(e.at, |m| m.max(e.at)));
        // Segments mostly name a few patients and actors many times: skip the repeats of
        // the last one cheaply, dedup the rest at the end.
        if !e.patient_id.is_empty() && self.patients.last() != Some(&e.patient_id) {
            self.patients.push(e.patient_id);
        }
        if !e.actor_id.is_empty() && self.actors.last() != Some(&e.actor_id) {
            self.actors.push(e.actor_id);
        }
    }

    fn matches(mut self, s: &Segment) -> bool {
        if self.min_at != Some(s.min_at) || self.max_at != Some(s.max_at) {
            return false;
        }
        for v in [&mut self.patients, &mut self.actors] {
            v.sort_unstable();
            v.dedup();
        }
        let mut expected: Vec<i64> = self
            .patients
            .iter()
            .map(|p| search_key(&s.tenant_id, b'p', p))
            .chain(self.actors.iter().map(|a| search_key(&s.tenant_id, b'a', a)))
            .collect();
        expected.sort_unstable();
        expected.dedup();
        expected == s.keys
    }
}
