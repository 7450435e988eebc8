//! One participant's signaling socket: authenticated like the visit page, checked frame by
//! frame, rate limited, and joined to the visit's room in the [`Hub`](super::hub::Hub).

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use telesafe_core::audit::Purpose;
use telesafe_core::visits::{PatientState, Visit, VisitRepository, VisitStatus};
use tokio::sync::mpsc;

use super::hub::{Conn, Event, Out, Side};
use super::messages::{self, ClientMsg, RateLimit};
use super::{Participant, Who, record};
use crate::fhir::{FhirError, Session};
use crate::state::AppState;

/// A page pings every 15 s; a socket silent for this long is gone.
const IDLE: Duration = Duration::from_secs(60);
/// A page that does not take a message within this long is closed (it stopped reading).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a live socket re-checks that its session or pass still holds.
const RECHECK: Duration = Duration::from_secs(30);

/// Why the socket closes.
struct Closing(u16, String);

impl Closing {
    fn invalid(reason: impl Into<String>) -> Self {
        Self(4400, reason.into())
    }
    fn forbidden(reason: &str) -> Self {
        Self(4403, reason.to_owned())
    }
}

/// The ICE servers for an admitted peer: the configured STUN URLs, and TURN with
/// credentials in the coturn REST scheme valid until the visit's window closes.
pub(crate) fn ice_servers(state: &AppState, visit: &Visit, peer: &str) -> Value {
    use hmac::Mac;
    let v = &state.config.video;
    let mut servers = Vec::new();
    if !v.stun_urls.is_empty() {
        servers.push(json!({"urls": v.stun_urls}));
    }
    if !v.turn_urls.is_empty()
        && let Some(secret) =
            v.turn_secret_file.as_ref().and_then(|f| std::fs::read_to_string(f).ok())
    {
        let expiry = visit.window().1.unix_millis() / 1000;
        let username = format!("{expiry}:{peer}");
        if let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.trim().as_bytes()) {
            mac.update(username.as_bytes());
            let credential = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                mac.finalize().into_bytes(),
            );
            servers
                .push(json!({"urls": v.turn_urls, "username": username, "credential": credential}));
        }
    }
    json!(servers)
}

struct Socket {
    state: AppState,
    who: Participant,
    peer: String,
    side: Side,
    key: Option<String>,
    name: String,
    tx: mpsc::Sender<Out>,
    /// This socket of the peer, as `peer-joined` and `peer-left` name it.
    epoch: String,
    /// When the patient's presence was last written.
    presence_at: Instant,
}

pub(crate) async fn run(state: AppState, ws: WebSocket, who: Participant, peer: String) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Out>(256);
    let (kill, mut killed) = tokio::sync::oneshot::channel::<(u16, &'static str)>();
    let (side, key, name) = match &who.who {
        Who::Clinician(me) => (Side::Clinician, None, me.user.display_name.as_str().to_owned()),
        Who::Patient(_) | Who::Guest(_) => (Side::Patient, who.key.clone(), "Patient".to_owned()),
    };
    let visit = who.visit.clone();
    let hub = state.visits.clone();
    let admitted = side == Side::Clinician || key.as_deref().is_some_and(|k| visit.is_admitted(k));
    let conn = Conn {
        side,
        name: name.clone(),
        key: key.clone(),
        admitted,
        tx: tx.clone(),
        kill: Some(kill),
        generation: 0,
        epoch: String::new(),
    };
    let (generation, epoch) = hub.join(visit.id, &peer, conn);
    let mut s = Socket {
        state: state.clone(),
        who,
        peer,
        side,
        key,
        name,
        tx,
        epoch,
        presence_at: Instant::now(),
    };
    let closing = match s.start(admitted).await {
        Ok(()) => s.serve(&mut sink, &mut stream, &mut rx, &mut killed).await,
        Err(c) => c,
    };
    let frame = CloseFrame { code: closing.0, reason: messages::close_reason(&closing.1).into() };
    let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    s.finish(generation).await;
}

impl Socket {
    fn visit(&self) -> &Visit {
        &self.who.visit
    }

    fn send(&self, v: Value) {
        let _ = self.tx.try_send(Out::Text(v.to_string()));
    }

    async fn publish(&self, event: Event) {
        let v = self.visit();
        self.state.visits.publish(v.tenant, v.id, event).await;
    }

    async fn session(&self) -> Result<Session, FhirError> {
        match &self.who.who {
            Who::Clinician(me) | Who::Patient(me) => Session::for_user(&self.state, me).await,
            Who::Guest(pass) => Session::for_guest(&self.state, pass, &self.who.source).await,
        }
    }

    async fn fresh_visit(&mut self) -> Result<Visit, Closing> {
        let v = self.visit();
        match self.state.store.visit(v.tenant, v.id).await {
            Ok(Some(v)) => {
                self.who.visit = v.clone();
                Ok(v)
            }
            Ok(None) => Err(Closing(4410, "the visit no longer exists".into())),
            Err(e) => {
                tracing::warn!(error = %e, "visit read failed");
                Err(Closing(1011, "storage unavailable".into()))
            }
        }
    }

    /// Presence, the other browsers of the link, the welcome, and the join announcement.
    async fn start(&mut self, admitted: bool) -> Result<(), Closing> {
        let now = self.state.clock.now();
        if let Some(key) = self.key.clone() {
            let v = self.visit();
            if let Err(e) = self.state.store.set_presence(v.tenant, v.id, &key, Some(now)).await {
                tracing::warn!(error = %e, "visit presence write failed");
            }
            self.publish(Event::Supersede { peer: self.peer.clone() }).await;
        }
        // Read again after joining the room: an admission that happened in between is
        // either in this read or delivered to the room.
        let visit = self.fresh_visit().await?;
        // Admitted when the socket joined (a clinician, or a patient coming back): it
        // announces itself below. Admitted in between: the admission announces it.
        let announce = admitted;
        let mut admitted = admitted;
        if let Some(key) = &self.key
            && !admitted
            && visit.is_admitted(key)
        {
            admitted = true;
            self.publish(Event::Admit { key: key.clone() }).await;
        }
        // A patient not yet admitted who came by the link sees only what was said since
        // their pass: a forwarded link shows a stranger nothing said before.
        let since = match (&self.who.who, admitted) {
            (Who::Guest(pass), false) => Some(pass.created_at),
            _ => None,
        };
        let chat = match self.session().await {
            Ok(mut session) => record::history(&mut session, &visit, since).await,
            Err(e) => Err(e),
        };
        let chat = chat.map_err(|e| {
            tracing::warn!(status = %e.status, "visit chat history unavailable");
            Closing(1011, "the visit's messages could not be loaded".into())
        })?;
        let mut welcome = json!({
            "type": "welcome",
            "you": self.peer,
            "role": self.side,
            "admitted": admitted,
            "chat": chat,
        });
        if admitted {
            welcome["iceServers"] = ice_servers(&self.state, &visit, &self.peer);
        }
        if self.side == Side::Clinician {
            welcome["patient"] = json!(visit.patient_state(now).as_str());
            welcome["identity"] = json!(visit.identity_method.map(|m| m.as_str()));
        }
        self.send(welcome);
        if self.key.is_some() {
            let state = visit.patient_state(now);
            self.publish(Event::Clinicians {
                msg: json!({"type": "patient", "state": state.as_str()}),
            })
            .await;
        }
        if announce {
            self.publish(Event::Joined {
                peer: self.peer.clone(),
                side: self.side,
                name: self.name.clone(),
                epoch: self.epoch.clone(),
            })
            .await;
        }
        Ok(())
    }

    async fn serve(
        &mut self,
        sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
        rx: &mut mpsc::Receiver<Out>,
        killed: &mut tokio::sync::oneshot::Receiver<(u16, &'static str)>,
    ) -> Closing {
        let mut limit = RateLimit::new(80, 40);
        // Chat is stored and audited line by line: a person types, a script floods.
        let mut chat_limit = RateLimit::new(5, 1);
        let mut last_frame = Instant::now();
        let mut last_check = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                frame = stream.next() => {
                    last_frame = Instant::now();
                    let text = match frame {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                            return Closing(1000, String::new());
                        }
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Binary(_))) => {
                            return Closing::invalid("binary frames are not accepted");
                        }
                        Some(Ok(_)) => continue,
                    };
                    if text.len() > messages::MAX_FRAME {
                        return Closing::invalid("message too large");
                    }
                    if !limit.take(Instant::now()) {
                        return Closing(4408, "too many messages".into());
                    }
                    let msg = match messages::parse(text.as_str()) {
                        Ok(m) => m,
                        Err(reason) => return Closing::invalid(reason),
                    };
                    if matches!(msg, ClientMsg::Chat { .. }) && !chat_limit.take(Instant::now()) {
                        self.error("too-fast", "You are sending messages too fast. Please wait a moment.");
                        continue;
                    }
                    if let Err(c) = self.handle(msg).await {
                        return c;
                    }
                }
                closing = &mut *killed => {
                    return match closing {
                        Ok((code, reason)) => Closing(code, reason.to_owned()),
                        Err(_) => Closing(1011, String::new()),
                    };
                }
                out = rx.recv() => {
                    let text = match out {
                        Some(Out::Text(t)) => t,
                        Some(Out::Admitted) => {
                            let visit = self.visit().clone();
                            let ice = ice_servers(&self.state, &visit, &self.peer);
                            json!({"type": "admitted", "iceServers": ice}).to_string()
                        }
                        None => return Closing(1011, String::new()),
                    };
                    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text.into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Closing(1000, String::new()),
                        Err(_) => return Closing(1013, "the page stopped reading".into()),
                    }
                }
                _ = tick.tick() => {
                    if last_frame.elapsed() > IDLE {
                        return Closing(1001, "no message for a minute".into());
                    }
                    if last_check.elapsed() > RECHECK {
                        last_check = Instant::now();
                        if let Err(c) = self.still_allowed().await {
                            return c;
                        }
                    }
                }
            }
        }
    }

    /// The session or pass still holds and the visit is still open.
    async fn still_allowed(&mut self) -> Result<(), Closing> {
        let ok = super::still_valid(&self.state, &self.who).await.map_err(|e| {
            tracing::warn!(error = %e, "visit participant re-check failed");
            Closing(1011, "storage unavailable".into())
        })?;
        if !ok {
            return Err(Closing(4401, "your sign-in or visit pass has ended".into()));
        }
        let v = self.fresh_visit().await?;
        if !v.joinable(self.state.clock.now()) {
            return Err(Closing(4410, "the visit has ended".into()));
        }
        Ok(())
    }

    fn clinician(&self) -> Result<&crate::auth::CurrentUser, Closing> {
        match &self.who.who {
            Who::Clinician(me) => Ok(me),
            _ => Err(Closing::forbidden("only a clinician of the visit may do this")),
        }
    }

    fn error(&self, code: &str, message: &str) {
        self.send(json!({"type": "error", "code": code, "message": message}));
    }

    async fn handle(&mut self, msg: ClientMsg) -> Result<(), Closing> {
        match msg {
            ClientMsg::Ping => {
                self.send(json!({"type": "pong"}));
                if let Some(key) = self.key.clone()
                    && self.presence_at.elapsed() > Duration::from_secs(10)
                {
                    self.presence_at = Instant::now();
                    let (v, now) = (self.visit(), self.state.clock.now());
                    if let Err(e) =
                        self.state.store.set_presence(v.tenant, v.id, &key, Some(now)).await
                    {
                        tracing::warn!(error = %e, "visit presence write failed");
                    }
                }
            }
            ClientMsg::Signal { to, payload } => {
                let v = self.visit();
                if !self.state.visits.is_admitted(v.id, &self.peer) {
                    return Err(Closing::forbidden("not admitted yet"));
                }
                let mut msg = payload;
                msg["type"] = json!("signal");
                msg["from"] = json!(self.peer);
                self.publish(Event::Direct { to, msg }).await;
            }
            ClientMsg::Status { audio_only } => {
                if !self.state.visits.is_admitted(self.visit().id, &self.peer) {
                    return Err(Closing::forbidden("not admitted yet"));
                }
                let msg = json!({"type": "status", "from": self.peer, "audioOnly": audio_only});
                self.publish(Event::Admitted { except: self.peer.clone(), msg }).await;
            }
            ClientMsg::Chat { text } => self.chat(&text).await,
            ClientMsg::Admit => self.admit().await?,
            ClientMsg::Identity { method, note } => {
                let me = self.clinician()?.clone();
                let visit = self.fresh_visit().await?;
                if visit.encounter_id.is_none() {
                    self.error(
                        "not-started",
                        "Let the patient in before recording the identity check.",
                    );
                    return Ok(());
                }
                let now = self.state.clock.now();
                let done = match self.session().await {
                    Ok(mut s) => {
                        record::record_identity(&mut s, &visit, method, &note, me.user.id, now)
                            .await
                    }
                    Err(e) => Err(e),
                };
                match done {
                    Ok(()) => {
                        if let Err(e) = self
                            .state
                            .store
                            .set_identity_method(visit.tenant, visit.id, method)
                            .await
                        {
                            tracing::warn!(error = %e, "visit identity method write failed");
                        }
                        let msg = json!({"type": "identity", "method": method.as_str()});
                        self.publish(Event::Clinicians { msg }).await;
                    }
                    Err(e) => {
                        tracing::warn!(status = %e.status, "identity check not recorded");
                        self.error(
                            "not-saved",
                            "The identity check could not be saved. Please try again.",
                        );
                    }
                }
            }
            ClientMsg::End => self.end().await?,
        }
        Ok(())
    }

    async fn chat(&mut self, text: &str) {
        let sender = match &self.who.who {
            Who::Clinician(me) => {
                record::Sender::Clinician(me.user.id, me.user.display_name.as_str().to_owned())
            }
            Who::Patient(_) | Who::Guest(_) => record::Sender::Patient(self.visit().patient),
        };
        let visit = self.visit().clone();
        let now = self.state.clock.now();
        let line = match self.session().await {
            Ok(mut s) => record::chat(&mut s, &visit, &sender, text, now).await,
            Err(e) => Err(e),
        };
        match line {
            Ok(line) => {
                let mut msg = json!(line);
                msg["type"] = json!("chat");
                self.publish(Event::All { msg }).await;
            }
            // Fail closed: a message that is not stored is not sent either.
            Err(e) => {
                tracing::warn!(status = %e.status, "visit chat message not stored");
                self.error("not-sent", "Your message could not be sent. Please try again.");
            }
        }
    }

    async fn admit(&mut self) -> Result<(), Closing> {
        let me = self.clinician()?.clone();
        let visit = self.fresh_visit().await?;
        let now = self.state.clock.now();
        let (Some(key), PatientState::Waiting) =
            (visit.present_key.clone(), visit.patient_state(now))
        else {
            self.error("nobody-waiting", "Nobody is in the waiting room.");
            return Ok(());
        };
        let result = async {
            let mut s = self.session().await?;
            let encounter = match &visit.encounter_id {
                Some(e) => e.clone(),
                None => {
                    let names = super::clinician_names(&self.state, &visit).await?;
                    record::open_encounter(&mut s, &visit, &names, now).await?
                }
            };
            s.audit_one(
                "admit",
                "Appointment",
                &visit.appointment_id,
                Some(visit.patient),
                Purpose::Treatment,
                "success",
            )
            .await?;
            self.state.store.admit(visit.tenant, visit.id, &key, &encounter, now).await?;
            Ok::<_, FhirError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(status = %e.status, admitted_by = %me.user.id, "admission failed");
            self.error("not-admitted", "The patient could not be let in. Please try again.");
            return Ok(());
        }
        self.fresh_visit().await?;
        self.publish(Event::Admit { key }).await;
        let msg = json!({"type": "patient", "state": PatientState::Admitted.as_str()});
        self.publish(Event::Clinicians { msg }).await;
        Ok(())
    }

    async fn end(&mut self) -> Result<(), Closing> {
        self.clinician()?;
        let visit = self.fresh_visit().await?;
        let now = self.state.clock.now();
        if visit.encounter_id.is_some() {
            let closed = match self.session().await {
                Ok(mut s) => record::close_encounter(&mut s, &visit, now).await,
                Err(e) => Err(e),
            };
            if let Err(e) = closed {
                tracing::warn!(status = %e.status, "encounter not closed");
                self.error("not-ended", "The visit could not be ended. Please try again.");
                return Ok(());
            }
        }
        let status =
            if visit.started_at.is_some() { VisitStatus::Finished } else { VisitStatus::Cancelled };
        if let Err(e) = self.state.store.end_visit(visit.tenant, visit.id, status, now).await {
            tracing::warn!(error = %e, "visit end not stored");
            self.error("not-ended", "The visit could not be ended. Please try again.");
            return Ok(());
        }
        self.publish(Event::Ended).await;
        Ok(())
    }

    /// Leaves the room and tells the others.
    async fn finish(&mut self, generation: u64) {
        let v = self.visit().clone();
        let Some(was_admitted) = self.state.visits.leave(v.id, &self.peer, generation) else {
            return; // replaced by a newer socket of the same page
        };
        if was_admitted {
            self.publish(Event::Left { peer: self.peer.clone(), epoch: self.epoch.clone() }).await;
        }
        if let Some(key) = self.key.as_ref().filter(|k| !self.state.visits.holds_key(v.id, k)) {
            if let Err(e) = self.state.store.set_presence(v.tenant, v.id, key, None).await {
                tracing::warn!(error = %e, "visit presence write failed");
            }
            // Another browser of the patient may have taken over: say what the waiting
            // room now holds, not merely that this socket left.
            let now = self.state.clock.now();
            let state = match self.state.store.visit(v.tenant, v.id).await {
                Ok(Some(fresh)) => fresh.patient_state(now),
                _ => PatientState::Absent,
            };
            let msg = json!({"type": "patient", "state": state.as_str()});
            self.publish(Event::Clinicians { msg }).await;
        }
    }
}
