//! The rooms of live visits on this node, and the relay that joins the nodes.
//!
//! Each socket is a participant of one visit, known by the peer id its page chose. Every
//! event (a relayed SDP, a chat line, an admission, the end) is applied to this node's
//! sockets at once and, on PostgreSQL, written to the relay and announced with NOTIFY, so
//! that every other node applies it to its own sockets too. The rules of who receives what
//! are in [`Room::apply`], and they are the same wherever the sender is connected: signaling
//! reaches admitted participants only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use telesafe_core::{Clock, TenantId, VisitId};
use telesafe_store::Store;
use tokio::sync::mpsc;

/// Who a participant is in the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Patient,
    Clinician,
}

impl Side {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::Clinician => "clinician",
        }
    }
}

/// What a socket task is told to do.
#[derive(Debug)]
pub enum Out {
    /// Send this JSON text.
    Text(String),
    /// Admitted: send `admitted` with ICE servers made for this peer.
    Admitted,
}

/// An event of one visit, applied on every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// To one peer, only if it is admitted.
    Direct { to: String, msg: Value },
    /// To every admitted peer but `except`.
    Admitted { except: String, msg: Value },
    /// To every socket of the visit (chat, which the waiting patient shares).
    All { msg: Value },
    /// To clinicians only (the waiting room's state, the identity check).
    Clinicians { msg: Value },
    /// The patient participant `key` was admitted.
    Admit { key: String },
    /// An admitted peer is present: everyone admitted learns of it, and it of them.
    /// `epoch` names this socket of the peer (node and generation), so that a late
    /// departure of an earlier socket cannot be taken for the departure of this one.
    Joined { peer: String, side: Side, name: String, epoch: String },
    /// A peer's socket closed.
    Left { peer: String, epoch: String },
    /// Patient sockets other than `peer` close (another browser took over the link).
    Supersede { peer: String },
    /// The visit is over: every socket closes.
    Ended,
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    node: String,
    tenant: String,
    visit: String,
    event: Event,
}

/// One socket of this node.
#[derive(Debug)]
pub struct Conn {
    pub side: Side,
    pub name: String,
    /// The patient participant key (pass or account); `None` for clinicians.
    pub key: Option<String>,
    pub admitted: bool,
    pub tx: mpsc::Sender<Out>,
    /// Closes the socket at once, whatever is queued (a full queue cannot hold it up).
    pub kill: Option<tokio::sync::oneshot::Sender<(u16, &'static str)>>,
    /// Distinguishes a peer's successive sockets (a reconnect replaces the entry).
    pub generation: u64,
    /// The node and generation, as pages see it (`peer-joined`, `peer-left`).
    pub epoch: String,
}

impl Conn {
    /// Stops the socket: it receives nothing more from the room, and its task closes it.
    fn stop(&mut self, code: u16, reason: &'static str) {
        self.admitted = false;
        if let Some(k) = self.kill.take() {
            let _ = k.send((code, reason));
        }
    }
}

#[derive(Debug, Default)]
struct Room {
    conns: HashMap<String, Conn>,
}

/// Events a room application produces for the relay (replies to a join).
type Replies = Vec<Event>;

impl Room {
    fn send(c: &mut Conn, msg: &Value) {
        // A socket that cannot keep up is closed rather than buffering without bound.
        if c.tx.try_send(Out::Text(msg.to_string())).is_err() {
            c.stop(1013, "too slow");
        }
    }

    fn apply(&mut self, event: &Event) -> Replies {
        let mut replies = Vec::new();
        match event {
            Event::Direct { to, msg } => {
                if let Some(c) = self.conns.get_mut(to).filter(|c| c.admitted) {
                    Self::send(c, msg);
                }
            }
            Event::Admitted { except, msg } => {
                for (_, c) in self.conns.iter_mut().filter(|(p, c)| c.admitted && *p != except) {
                    Self::send(c, msg);
                }
            }
            Event::All { msg } => self.conns.values_mut().for_each(|c| Self::send(c, msg)),
            Event::Clinicians { msg } => self
                .conns
                .values_mut()
                .filter(|c| c.side == Side::Clinician)
                .for_each(|c| Self::send(c, msg)),
            Event::Admit { key } => {
                for (peer, c) in &mut self.conns {
                    if c.side == Side::Patient && !c.admitted && c.key.as_deref() == Some(key) {
                        c.admitted = true;
                        let _ = c.tx.try_send(Out::Admitted);
                        replies.push(Event::Joined {
                            peer: peer.clone(),
                            side: c.side,
                            name: c.name.clone(),
                            epoch: c.epoch.clone(),
                        });
                    }
                }
            }
            Event::Joined { peer, side, name, epoch } => {
                let joined = json!({
                    "type": "peer-joined", "peer": peer, "role": side, "name": name, "epoch": epoch,
                });
                for (p, c) in self.conns.iter_mut().filter(|(p, c)| c.admitted && *p != peer) {
                    Self::send(c, &joined);
                    replies.push(Event::Direct {
                        to: peer.clone(),
                        msg: json!({
                            "type": "peer-joined", "peer": p, "role": c.side, "name": c.name,
                            "epoch": c.epoch,
                        }),
                    });
                }
            }
            Event::Left { peer, epoch } => {
                let left = json!({"type": "peer-left", "peer": peer, "epoch": epoch});
                for (_, c) in self.conns.iter_mut().filter(|(p, c)| c.admitted && *p != peer) {
                    Self::send(c, &left);
                }
            }
            Event::Supersede { peer } => {
                for (_, c) in
                    self.conns.iter_mut().filter(|(p, c)| c.side == Side::Patient && *p != peer)
                {
                    c.stop(4409, "joined from another browser");
                }
            }
            Event::Ended => {
                for c in self.conns.values_mut() {
                    Self::send(c, &json!({"type": "ended"}));
                    c.stop(4410, "the visit has ended");
                }
            }
        }
        replies
    }
}

/// The rooms of this node and its link to the others.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    /// Seals what goes through the relay table: SDP names network addresses, chat is
    /// patient data. Every node derives the same key from the root key.
    relay_key: telesafe_crypto::keys::SealingKey,
    rooms: Mutex<HashMap<VisitId, Room>>,
    store: Store,
    clock: Arc<dyn Clock>,
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("node", &self.inner.node).finish_non_exhaustive()
    }
}

/// Associated data of sealed relay messages.
const RELAY_AAD: &[u8] = b"telesafe/signal-relay/v1";

/// How long relayed messages are kept.
const RELAY_TTL: Duration = Duration::from_secs(60);

impl Hub {
    /// A hub for this node. On PostgreSQL it listens for the other nodes' events.
    pub fn start(
        store: Store,
        clock: Arc<dyn Clock>,
        relay_key: telesafe_crypto::keys::SealingKey,
    ) -> Self {
        let hub = Self {
            inner: Arc::new(Inner {
                node: uuid::Uuid::new_v4().to_string(),
                relay_key,
                rooms: Mutex::default(),
                store,
                clock,
                generation: std::sync::atomic::AtomicU64::new(1),
            }),
        };
        if hub.inner.store.backend() == telesafe_store::Backend::Postgres {
            tokio::spawn(hub.clone().listen());
        }
        hub
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<VisitId, Room>> {
        // A panic while holding the lock cannot leave a room half-changed in a way that
        // matters more than losing the node's sockets would.
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a socket; a socket of the same peer (a reconnect) is replaced. Returns its
    /// generation for [`Hub::leave`].
    pub fn join(&self, visit: VisitId, peer: &str, mut conn: Conn) -> (u64, String) {
        let generation = self.inner.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let epoch = format!("{}:{generation}", self.inner.node);
        conn.generation = generation;
        conn.epoch = epoch.clone();
        let old = self.rooms().entry(visit).or_default().conns.insert(peer.to_owned(), conn);
        if let Some(mut old) = old {
            old.stop(4409, "replaced by a newer connection");
        }
        (generation, epoch)
    }

    /// Removes a socket unless a newer one of the same peer replaced it. Returns whether it
    /// was removed (and its admission, for announcing the departure).
    pub fn leave(&self, visit: VisitId, peer: &str, generation: u64) -> Option<bool> {
        let mut rooms = self.rooms();
        let room = rooms.get_mut(&visit)?;
        let admitted = match room.conns.get(peer) {
            Some(c) if c.generation == generation => c.admitted,
            _ => return None,
        };
        room.conns.remove(peer);
        if room.conns.is_empty() {
            rooms.remove(&visit);
        }
        Some(admitted)
    }

    /// Whether this node's socket of `peer` is admitted.
    pub fn is_admitted(&self, visit: VisitId, peer: &str) -> bool {
        self.rooms().get(&visit).and_then(|r| r.conns.get(peer)).is_some_and(|c| c.admitted)
    }

    /// Whether another socket on this node holds the patient participant `key` (a second
    /// tab): then one closing does not mean the patient left.
    pub fn holds_key(&self, visit: VisitId, key: &str) -> bool {
        self.rooms()
            .get(&visit)
            .is_some_and(|r| r.conns.values().any(|c| c.key.as_deref() == Some(key)))
    }

    /// Sockets on this node (for metrics and the benchmark).
    pub fn sockets(&self) -> usize {
        self.rooms().values().map(|r| r.conns.len()).sum()
    }

    /// Applies an event here and relays it to the other nodes.
    pub async fn publish(&self, tenant: TenantId, visit: VisitId, event: Event) {
        let mut queue = vec![event];
        while let Some(event) = queue.pop() {
            let replies = self.apply_local(visit, &event);
            self.relay(tenant, visit, event).await;
            queue.extend(replies);
        }
    }

    fn apply_local(&self, visit: VisitId, event: &Event) -> Replies {
        match self.rooms().get_mut(&visit) {
            Some(room) => room.apply(event),
            None => Vec::new(),
        }
    }

    async fn relay(&self, tenant: TenantId, visit: VisitId, event: Event) {
        if self.inner.store.backend() != telesafe_store::Backend::Postgres {
            return;
        }
        let env = Envelope {
            node: self.inner.node.clone(),
            tenant: tenant.to_string(),
            visit: visit.to_string(),
            event,
        };
        let Ok(plain) = serde_json::to_vec(&env) else { return };
        let Ok(sealed) = self.inner.relay_key.seal(&plain, RELAY_AAD) else { return };
        let body = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sealed);
        let now = self.inner.clock.now();
        if let Err(e) = self.inner.store.relay_signal(tenant, visit, &body, now).await {
            tracing::warn!(error = %e, "signaling relay write failed");
        }
    }

    /// Applies the other nodes' events to this node's sockets, and prunes the relay.
    async fn listen(self) {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.inner.store.signal_listener().await {
                Ok(Some(mut listener)) => {
                    backoff = Duration::from_millis(250);
                    let mut last_prune = self.inner.clock.now();
                    while let Ok(n) = listener.recv().await {
                        let Ok(id) = n.payload().parse::<i64>() else { continue };
                        self.receive(id).await;
                        let now = self.inner.clock.now();
                        if now.since(last_prune) > RELAY_TTL {
                            last_prune = now;
                            let before = Self::before(now);
                            if let Err(e) = self.inner.store.prune_signals(before).await {
                                tracing::warn!(error = %e, "signaling relay prune failed");
                            }
                        }
                    }
                    tracing::warn!("signaling relay listener lost its connection; reconnecting");
                }
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "signaling relay listener failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    fn before(now: telesafe_core::Timestamp) -> telesafe_core::Timestamp {
        telesafe_core::Timestamp::from_unix_millis(
            now.unix_millis() - i64::try_from(RELAY_TTL.as_millis()).unwrap_or(0),
        )
    }

    async fn receive(&self, id: i64) {
        let body = match self.inner.store.relayed_signal(id).await {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "signaling relay read failed");
                return;
            }
        };
        let plain = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &body)
            .ok()
            .and_then(|b| self.inner.relay_key.open(&b, RELAY_AAD).ok());
        let Some(env) = plain.and_then(|p| serde_json::from_slice::<Envelope>(&p).ok()) else {
            tracing::warn!("signaling relay message did not open or parse; ignored");
            return;
        };
        if env.node == self.inner.node {
            return;
        }
        let (Ok(tenant), Ok(visit)) =
            (env.tenant.parse::<TenantId>(), env.visit.parse::<VisitId>())
        else {
            return;
        };
        // Replies (to a join) are this node's own events: applied and relayed from here.
        let replies = self.apply_local(visit, &env.event);
        for r in replies {
            Box::pin(self.publish(tenant, visit, r)).await;
        }
    }
}
