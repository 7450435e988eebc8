// Video visit page: the signaling socket, one RTCPeerConnection per remote participant
// ("perfect negotiation"), continuity (ICE restarts, socket reconnects), audio only, chat,
// the waiting room and the verification code. Protocol: docs/visit-signaling.md.
// The strict CSP forbids inline styles, so visibility is changed with `hidden` only.

const $ = (id) => document.getElementById(id);
const root = $('visit');
const role = root.dataset.role;
const peer = crypto.randomUUID(); // ours for this page load; kept across socket reconnects

const ui = {
  status: $('visit-status'), notice: $('media-notice'), waiting: $('waiting'),
  patientState: $('patient-state'), admit: $('admit'), remote: $('remote-videos'),
  local: $('local-video'), controls: root.querySelector('.controls'), mute: $('mute'),
  audioOnly: $('audio-only'), end: $('end'), verify: $('verify'), code: $('verify-code'),
  identityForm: $('identity-form'), identityState: $('identity-state'),
  chatLog: $('chat-log'), chatForm: $('chat-form'), chatText: $('chat-text'), ended: $('ended'),
};

// Back-off for socket reconnects and ICE restarts: 1, 2, 4, 8, then every 15 seconds.
const BACKOFF = [1, 2, 4, 8, 15];
const backoff = (attempt) => BACKOFF[Math.min(attempt, BACKOFF.length - 1)] * 1000;

// Close codes after which the page must not reconnect.
const FINAL = {
  4400: 'Something went wrong on this page. Please reload it.',
  4403: 'You cannot take part in this visit.',
  4409: 'You joined this visit from another device or window, so this one was closed.',
  4410: 'The visit has ended.',
};

let socket = null;
let welcomed = false; // the current socket has received `welcome`
let socketAttempt = 0;
let reconnectTimer = null;
let finished = false; // ended, superseded or refused: nothing more to do
let admitted = false;
let iceServers = [];
let localStream = null;
let videoOff = false; // not sending video (chosen, automatic, or no camera)
let muted = false;
const outbox = []; // messages waiting for a socket that has been welcomed
const peers = new Map(); // remote peer id -> { pc, name, polite, ... }
const timers = [];

const setStatus = (text) => { ui.status.textContent = text; };
const setNotice = (text) => { ui.notice.textContent = text; };
const warn = (what) => (err) => console.warn(`visit: ${what}`, err);

// The patient's name, for the clinician's waiting room, from the "Let NAME in" button.
const patientName = (() => {
  const m = ui.admit && /^Let (.+) in$/.exec(ui.admit.textContent.trim());
  return m ? m[1] : 'The patient';
})();

// ---------------------------------------------------------------------------------------
// The socket

function connect() {
  reconnectTimer = null;
  if (finished) return;
  const scheme = location.protocol === 'http:' ? 'ws:' : 'wss:';
  const ws = new WebSocket(`${scheme}//${location.host}${root.dataset.socket}?peer=${peer}`);
  socket = ws;
  welcomed = false;
  ws.addEventListener('message', (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch (err) { warn('unreadable message')(err); return; }
    handle(msg);
  });
  ws.addEventListener('close', (e) => {
    if (socket !== ws) return;
    socket = null;
    welcomed = false;
    if (finished) return;
    if (e.code === 4410) { endVisit(); return; }
    if (FINAL[e.code]) { stopEverything(FINAL[e.code]); return; }
    setStatus('Reconnecting to the visit… Your messages will be sent when the connection is back.');
    reconnectTimer = setTimeout(connect, backoff(socketAttempt++));
  });
}

// Reconnect at once when the device comes back online instead of waiting out the back-off.
window.addEventListener('online', () => {
  if (reconnectTimer) { clearTimeout(reconnectTimer); connect(); }
});

// Sends now if the socket is up and welcomed, otherwise queues until the next `welcome`.
function send(msg) {
  if (socket && welcomed && socket.readyState === WebSocket.OPEN && outbox.length === 0) {
    socket.send(JSON.stringify(msg));
  } else {
    outbox.push(msg);
    if (outbox.length > 500) outbox.shift();
  }
}

// Flushes the queue in paced batches: the server closes a socket that bursts more than
// 80 messages. Signaling is dropped if we are (no longer) admitted, as the server would
// refuse it with 4403.
function flush() {
  if (!socket || !welcomed || socket.readyState !== WebSocket.OPEN) return;
  for (let n = 0; n < 30 && outbox.length; n++) {
    const msg = outbox.shift();
    if (!admitted && (msg.type === 'signal' || msg.type === 'status')) continue;
    socket.send(JSON.stringify(msg));
  }
  if (outbox.length) setTimeout(flush, 1000);
}

timers.push(setInterval(() => {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send('{"type":"ping"}');
}, 15000));

function handle(msg) {
  switch (msg.type) {
    case 'welcome':
      welcomed = true;
      socketAttempt = 0;
      setAdmitted(msg.admitted, msg.iceServers);
      ui.chatLog.replaceChildren(); // the history is re-sent on every (re)connect
      for (const m of msg.chat || []) addChat(m);
      if (role === 'clinician') {
        showPatientState(msg.patient);
        if (msg.identity) showIdentity(msg.identity);
      }
      flush();
      break;
    case 'admitted': setAdmitted(true, msg.iceServers); break;
    case 'patient': showPatientState(msg.state); break;
    case 'identity': showIdentity(msg.method); break;
    case 'peer-joined': peerJoined(msg.peer, msg.name, msg.epoch); break;
    case 'peer-left': peerLeft(msg.peer, msg.epoch); break;
    case 'signal': onSignal(msg).catch(warn('signal')); break;
    case 'status': showPeerStatus(msg.from, msg.audioOnly); break;
    case 'chat': addChat(msg); break;
    case 'ended': endVisit(); break;
    case 'error': setStatus(msg.message || 'Something went wrong.'); break;
    case 'pong': break;
    default: console.warn('visit: unknown message', msg.type);
  }
}

function setAdmitted(yes, servers) {
  admitted = !!yes;
  root.dataset.admitted = String(admitted);
  if (ui.waiting) ui.waiting.hidden = admitted;
  if (servers) {
    iceServers = servers;
    // Fresh TURN credentials also serve connections that already exist (next ICE restart).
    for (const p of peers.values()) {
      try { p.pc.setConfiguration({ ...p.pc.getConfiguration(), iceServers }); } catch (err) { warn('ice servers')(err); }
    }
  }
  if (admitted && videoOff) send({ type: 'status', audioOnly: true });
  updateConnection();
}

// ---------------------------------------------------------------------------------------
// Local media: camera and microphone, else microphone only, else nothing (chat still works)

async function startMedia() {
  const md = navigator.mediaDevices;
  if (md && md.getUserMedia) {
    try {
      return await md.getUserMedia({ audio: true, video: { width: { ideal: 640 }, height: { ideal: 360 } } });
    } catch (err) {
      try {
        const stream = await md.getUserMedia({ audio: true });
        setNotice('Your camera could not be started, so you are joining with sound only.');
        return stream;
      } catch (err2) { /* fall through */ }
    }
  }
  setNotice('Your camera and microphone could not be started. You can still send messages, and you can see and hear the others.');
  return null;
}

const videoTrack = () => (localStream && localStream.getVideoTracks()[0]) || null;
const audioTrack = () => (localStream && localStream.getAudioTracks()[0]) || null;

const mediaReady = startMedia().then((stream) => {
  localStream = stream;
  if (finished) { stopTracks(); return null; }
  ui.local.srcObject = stream;
  if (!videoTrack()) {
    videoOff = true;
    ui.audioOnly.disabled = true;
    ui.audioOnly.setAttribute('aria-pressed', 'true');
    if (admitted) send({ type: 'status', audioOnly: true });
  }
  ui.local.hidden = videoOff;
  ui.mute.disabled = !audioTrack();
  return stream;
});

function stopTracks() {
  if (localStream) for (const t of localStream.getTracks()) t.stop();
}

// Audio only: the video sender sends nothing (replaceTrack(null)), so no renegotiation is
// needed and turning video back on is instant. `auto` marks the weak-connection switch.
// When video went off by itself, it is tried again after this long: a connection that
// recovered gets its video back, one that did not switches off again within 6 seconds.
const AUTO_RETRY_MS = 30_000;
let autoOffAt = 0;

function setVideoOff(off, auto = false) {
  const track = videoTrack();
  if (!track) return;
  videoOff = off;
  autoOffAt = off && auto ? Date.now() : 0;
  for (const p of peers.values()) {
    if (p.videoSender) p.videoSender.replaceTrack(off ? null : track).catch(warn('replace track'));
    p.lowSamples = 0;
  }
  ui.local.hidden = off;
  ui.audioOnly.setAttribute('aria-pressed', String(off));
  ui.audioOnly.textContent = off ? 'Turn video back on' : 'Switch to audio only';
  setNotice(auto ? 'Your connection is weak, so your video is off. Sound continues.' : '');
  if (admitted) send({ type: 'status', audioOnly: off });
}

ui.audioOnly.addEventListener('click', () => setVideoOff(!videoOff));

ui.mute.addEventListener('click', () => {
  const track = audioTrack();
  if (!track) return;
  muted = !muted;
  track.enabled = !muted;
  ui.mute.setAttribute('aria-pressed', String(muted));
  ui.mute.textContent = muted ? 'Unmute microphone' : 'Mute microphone';
});

// ---------------------------------------------------------------------------------------
// Peer connections and perfect negotiation (W3C WebRTC 1.0, section 10.7)

// connectionState, or the ICE state where a browser lacks connectionState.
function connState(pc) {
  if (pc.connectionState) return pc.connectionState;
  return { checking: 'connecting', completed: 'connected' }[pc.iceConnectionState] || pc.iceConnectionState;
}

function createPeer(id, name) {
  const pc = new RTCPeerConnection({ iceServers });
  const p = {
    id, pc, name: name || 'the other person', polite: peer > id, left: false,
    makingOffer: false, ignoreOffer: false, isSettingRemoteAnswerPending: false,
    retry: null, retryAttempt: 0, removeTimer: null, lowSamples: 0, videoSender: null,
    remoteStream: new MediaStream(), tile: null, video: null, note: null,
  };
  peers.set(id, p);

  pc.addEventListener('negotiationneeded', async () => {
    // The first offer always comes from the impolite side. Two first offers crossing would
    // make the polite side roll its own back, and Chromium then gathers no ICE candidates
    // for its answer: the call stays "new" (seen in the join benchmark). The polite side's
    // tracks go into its answer, or into an offer after the first exchange.
    if (p.polite && !pc.remoteDescription) return;
    try {
      p.makingOffer = true;
      await pc.setLocalDescription();
      sendDescription(p);
    } catch (err) { warn('offer')(err); } finally { p.makingOffer = false; }
  });
  pc.addEventListener('icecandidate', (e) => {
    send({ type: 'signal', to: id, candidate: e.candidate ? e.candidate.toJSON() : null });
  });
  pc.addEventListener('track', (e) => {
    // When remote video first arrives (for the join-to-first-frame benchmark, and for
    // support: "did video ever arrive?"). A track unmutes when its first frame comes in.
    if (e.track.kind === 'video') {
      const stamp = () => {
        if (!root.dataset.firstFrameAt) root.dataset.firstFrameAt = String(Date.now());
      };
      if (!e.track.muted) stamp();
      else e.track.addEventListener('unmute', stamp, { once: true });
    }
    ensureTile(p);
    if (!p.remoteStream.getTracks().includes(e.track)) p.remoteStream.addTrack(e.track);
    if (p.video.srcObject !== p.remoteStream) p.video.srcObject = p.remoteStream;
    playRemote(p);
  });
  pc.addEventListener('connectionstatechange', () => onConnectionChange(p));
  pc.addEventListener('iceconnectionstatechange', () => onConnectionChange(p));
  pc.addEventListener('signalingstatechange', () => {
    if (pc.signalingState === 'stable' && connState(pc) === 'connected') showCode(p);
  });

  // Tracks are added once the camera and microphone answered; adding them later simply
  // triggers another negotiation.
  mediaReady.then((stream) => {
    if (pc.signalingState === 'closed') return;
    if (!stream) {
      // No camera or microphone here: the impolite side still opens the call, to receive.
      if (!p.polite) {
        pc.addTransceiver('audio', { direction: 'recvonly' });
        pc.addTransceiver('video', { direction: 'recvonly' });
      }
      return;
    }
    for (const track of stream.getTracks()) {
      const sender = pc.addTrack(track, stream);
      if (track.kind === 'video') {
        p.videoSender = sender;
        if (videoOff) sender.replaceTrack(null).catch(warn('replace track'));
      }
    }
  }).catch(warn('add tracks'));
  return p;
}

const sendDescription = (p) => {
  const d = p.pc.localDescription;
  if (d) send({ type: 'signal', to: p.id, description: { type: d.type, sdp: d.sdp } });
};

function peerJoined(id, name, epoch) {
  if (!id || id === peer) return;
  let p = peers.get(id);
  if (!p) {
    p = createPeer(id, name);
    p.epoch = epoch;
  } else {
    p.epoch = epoch;
    // The peer's socket came back: keep the connection, repair it if it is not up.
    clearTimeout(p.removeTimer);
    p.removeTimer = null;
    p.left = false;
    if (p.tile) p.tile.hidden = false;
    if (name) p.name = name;
    if (p.video) p.video.setAttribute('aria-label', `Video of ${p.name}`);
    if (connState(p.pc) !== 'connected') restart(p);
  }
  updateConnection();
}

// The peer may come back with the same id (socket reconnect): wait 60 s before giving up.
function peerLeft(id, epoch) {
  const p = peers.get(id);
  if (!p) return;
  // The departure of an earlier socket of this peer, arriving after its new one joined
  // (possibly through another server): not a departure at all.
  if (epoch && p.epoch && epoch !== p.epoch) return;
  p.left = true;
  if (p.tile) p.tile.hidden = true; // a frozen picture would be misleading
  clearTimeout(p.retry);
  p.retry = null;
  clearTimeout(p.removeTimer);
  p.removeTimer = setTimeout(() => removePeer(id), 60000);
  updateConnection();
}

function removePeer(id) {
  const p = peers.get(id);
  if (!p) return;
  clearTimeout(p.retry);
  clearTimeout(p.removeTimer);
  p.pc.close();
  if (p.tile) p.tile.remove();
  peers.delete(id);
  if (![...peers.values()].some((q) => connState(q.pc) === 'connected')) {
    ui.verify.hidden = true;
    delete root.dataset.verifyCode;
  }
  updateConnection();
}

async function onSignal({ from, description, candidate }) {
  if (!from || from === peer) return;
  // An offer may overtake `peer-joined`; anything else from an unknown peer is stale.
  if (!peers.has(from) && !(description && description.type === 'offer')) return;
  const p = peers.get(from) || createPeer(from);
  const pc = p.pc;
  if (description) {
    const readyForOffer = !p.makingOffer && (pc.signalingState === 'stable' || p.isSettingRemoteAnswerPending);
    const offerCollision = description.type === 'offer' && !readyForOffer;
    p.ignoreOffer = !p.polite && offerCollision;
    if (p.ignoreOffer) return;
    p.isSettingRemoteAnswerPending = description.type === 'answer';
    await pc.setRemoteDescription(description); // the polite side rolls back implicitly
    p.isSettingRemoteAnswerPending = false;
    if (description.type === 'offer') {
      await pc.setLocalDescription();
      sendDescription(p);
    }
  } else if (candidate) {
    try {
      await pc.addIceCandidate(candidate);
    } catch (err) {
      if (!p.ignoreOffer) warn('ice candidate')(err);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Continuity: restart ICE when a connection is disconnected for 3 s or failed, with back-off

function onConnectionChange(p) {
  const state = connState(p.pc);
  if (state === 'connected') {
    clearTimeout(p.retry);
    p.retry = null;
    p.retryAttempt = 0;
    showCode(p);
  } else if (!p.left && !p.retry) {
    if (state === 'failed') restart(p);
    else if (state === 'disconnected') p.retry = setTimeout(() => restart(p), 3000);
  }
  updateConnection();
}

function restart(p) {
  clearTimeout(p.retry);
  p.retry = null;
  const state = connState(p.pc);
  if (p.left || state === 'connected' || state === 'closed' || finished) return;
  // Nothing negotiated yet (for example neither side has a camera or microphone).
  if (state === 'new' && p.pc.signalingState === 'stable' && !p.pc.remoteDescription) return;
  // An offer still waiting for its answer may have been lost while a socket was down:
  // send it again rather than waiting for a negotiation that cannot start.
  if (p.pc.signalingState === 'have-local-offer') sendDescription(p);
  // The impolite side restarts ICE; the polite side answers its restart offer (two
  // crossing restarts would need a rollback, see negotiationneeded). If the impolite side
  // stays silent for three rounds, the polite side restarts after all.
  else if (!p.polite || p.retryAttempt >= 3) p.pc.restartIce();
  p.retry = setTimeout(() => restart(p), backoff(p.retryAttempt++));
}

// The participant whose state the page shows: the first one still present, else the one
// that left last.
function primaryPeer() {
  let last = null;
  for (const p of peers.values()) { if (!p.left) return p; last = p; }
  return last;
}

function updateConnection() {
  if (finished) return;
  const p = primaryPeer();
  const state = p ? connState(p.pc) : 'new';
  root.dataset.connection = state;
  if (!socket || !welcomed) return; // the socket status message stays until `welcome`
  if (!admitted) setStatus('Waiting for your clinician to let you in.');
  else if (!p) setStatus('You are in the visit.');
  else if (p.left && state !== 'connected') setStatus(`${cap(p.name)} has left the visit. Waiting in case they come back…`);
  else if (state === 'connected') setStatus('Connected.');
  else if (state === 'disconnected' || state === 'failed') setStatus('Reconnecting… your connection dropped. Messages still work.');
  else if (state === 'closed') setStatus('The video connection was closed. Messages still work.');
  else setStatus('Connecting the video…');
}

const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);

// ---------------------------------------------------------------------------------------
// Verification code (docs/visit-signaling.md): SHA-256 over both DTLS fingerprints

function fingerprint(sdp) {
  const m = /^a=fingerprint:sha-256 (\S+)/im.exec(sdp || '');
  return m ? m[1].toUpperCase() : null;
}

async function verificationCode(pc) {
  const local = pc.currentLocalDescription || pc.localDescription;
  const remote = pc.currentRemoteDescription || pc.remoteDescription;
  const a = fingerprint(local && local.sdp);
  const b = fingerprint(remote && remote.sdp);
  if (!a || !b) return null;
  const [first, second] = [a, b].sort();
  const input = new TextEncoder().encode(`telesafe-verify-v1|${first}|${second}`);
  const digest = await crypto.subtle.digest('SHA-256', input);
  return String(new DataView(digest).getUint32(0, false) % 1000000).padStart(6, '0');
}

async function showCode(p) {
  try {
    const code = await verificationCode(p.pc);
    if (!code || p !== primaryPeer() || finished) return;
    ui.code.textContent = `${code.slice(0, 3)} ${code.slice(3)}`;
    root.dataset.verifyCode = code;
    ui.verify.hidden = false;
  } catch (err) { warn('verification code')(err); }
}

// ---------------------------------------------------------------------------------------
// Remote video tiles

function ensureTile(p) {
  if (p.tile) return;
  p.tile = document.createElement('div');
  p.tile.className = 'peer';
  p.video = document.createElement('video');
  p.video.autoplay = true;
  p.video.playsInline = true;
  p.video.setAttribute('playsinline', '');
  p.video.setAttribute('aria-label', `Video of ${p.name}`);
  p.note = document.createElement('p');
  p.note.className = 'peer-note';
  p.note.hidden = true;
  p.tile.append(p.video, p.note);
  ui.remote.append(p.tile);
}

// Browsers may block playback with sound until the person has used the page: offer a button.
function playRemote(p) {
  const played = p.video.play();
  if (!played) return;
  played.catch((err) => {
    if (err.name !== 'NotAllowedError' || p.tile.querySelector('button')) return;
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'secondary';
    button.textContent = `Play sound and video of ${p.name}`;
    button.addEventListener('click', () => {
      p.video.play().then(() => button.remove(), warn('play'));
    });
    p.tile.append(button);
  });
}

function showPeerStatus(from, audioOnly) {
  const p = peers.get(from);
  if (!p) return;
  ensureTile(p);
  p.note.textContent = audioOnly ? `${cap(p.name)} switched to audio only.` : '';
  p.note.hidden = !audioOnly;
}

// ---------------------------------------------------------------------------------------
// Statistics every 2 s: frames decoded (for tests and support) and outgoing bandwidth

let statsBusy = false;
timers.push(setInterval(async () => {
  if (statsBusy || finished) return;
  statsBusy = true;
  let frames = 0;
  try {
    for (const p of [...peers.values()]) {
      if (p.pc.signalingState === 'closed') continue;
      const report = await p.pc.getStats();
      let selectedId = null;
      let bitrate = null;
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'video') frames += s.framesDecoded || 0;
        if (s.type === 'transport' && s.selectedCandidatePairId) selectedId = s.selectedCandidatePairId;
      });
      report.forEach((s) => {
        const chosen = selectedId ? s.id === selectedId : (s.nominated || s.selected);
        if (s.type === 'candidate-pair' && chosen && s.state === 'succeeded'
            && typeof s.availableOutgoingBitrate === 'number') bitrate = s.availableOutgoingBitrate;
      });
      // Below 150 kbit/s for three samples (6 s) while sending video: switch to sound only.
      // Only a connected call is judged: during a drop there is no estimate to trust.
      const live = p.pc.connectionState === 'connected';
      p.lowSamples = live && bitrate !== null && bitrate < 150000 ? p.lowSamples + 1 : 0;
      if (p.lowSamples >= 3 && !videoOff && videoTrack()) setVideoOff(true, true);
    }
    root.dataset.framesDecoded = String(frames);
    if (videoOff && autoOffAt && Date.now() - autoOffAt > AUTO_RETRY_MS) {
      setVideoOff(false);
      setNotice('Trying your video again.');
    }
  } catch (err) {
    warn('stats')(err);
  } finally {
    statsBusy = false;
  }
}, 2000));

// ---------------------------------------------------------------------------------------
// Chat

function addChat({ name, text, at }) {
  const li = document.createElement('li');
  const who = document.createElement('strong');
  who.textContent = name || '';
  li.append(who, ' ');
  const when = new Date(at);
  if (at && !Number.isNaN(when.getTime())) {
    const time = document.createElement('time');
    time.dateTime = at;
    time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    li.append(time);
  }
  const body = document.createElement('p');
  body.className = 'chat-text';
  body.textContent = text || '';
  li.append(body);
  ui.chatLog.append(li);
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

ui.chatForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.chatText.value.trim();
  if (!text || text.length > 2000) return;
  send({ type: 'chat', text });
  ui.chatText.value = '';
});

ui.chatText.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.chatForm.requestSubmit();
  }
});

// ---------------------------------------------------------------------------------------
// Clinician: waiting room, identity check, ending the visit

function showPatientState(state) {
  if (!ui.patientState) return;
  const text = {
    waiting: `${patientName} is waiting.`,
    admitted: `${patientName} is in the visit.`,
  };
  ui.patientState.textContent = text[state] || `${patientName} has not arrived yet.`;
  ui.admit.disabled = state !== 'waiting';
}

if (ui.admit) {
  ui.admit.addEventListener('click', () => {
    ui.admit.disabled = true;
    send({ type: 'admit' });
  });
}

function showIdentity(method) {
  if (!ui.identityState) return;
  const option = ui.identityForm && ui.identityForm.querySelector(`option[value="${CSS.escape(method)}"]`);
  ui.identityState.textContent = `Identity check recorded: ${option ? option.textContent : method}.`;
}

if (ui.identityForm) {
  ui.identityForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const method = ui.identityForm.elements.method.value;
    const noteField = ui.identityForm.elements.note;
    const note = noteField.value.trim();
    if (method === 'other' && !note) {
      ui.identityState.textContent = 'Please describe in the note how you confirmed who the patient is: it is required for "Other".';
      noteField.focus();
      return;
    }
    send({ type: 'identity', method, note });
  });
}

if (ui.end) {
  let armed = null; // a first click arms the button for 5 seconds
  ui.end.addEventListener('click', () => {
    if (armed) {
      clearTimeout(armed);
      armed = null;
      ui.end.disabled = true;
      send({ type: 'end' });
      return;
    }
    ui.end.textContent = 'Confirm: end the visit for everyone';
    setNotice('Press the button again within 5 seconds to end the visit for everyone.');
    armed = setTimeout(() => {
      armed = null;
      ui.end.textContent = 'End visit';
      setNotice('');
    }, 5000);
  });
}

// ---------------------------------------------------------------------------------------
// The end: the visit ended, or this page may no longer take part

function stopEverything(message) {
  finished = true;
  for (const t of timers) clearInterval(t);
  clearTimeout(reconnectTimer);
  for (const id of [...peers.keys()]) removePeer(id);
  stopTracks();
  ui.local.srcObject = null;
  if (socket) { const ws = socket; socket = null; ws.close(1000); }
  for (const el of [ui.controls, ui.chatForm, ui.waiting, ui.admit, ui.identityForm]) if (el) el.hidden = true;
  root.dataset.connection = 'closed';
  setNotice('');
  setStatus(message);
}

function endVisit() {
  if (finished) return;
  stopEverything('The visit has ended.');
  ui.verify.hidden = true;
  ui.ended.hidden = false;
}

connect();
