// Device check before a video visit: camera preview, microphone level and a rough
// connection test against /healthz. Nothing leaves the browser except those requests.

const $ = (id) => document.getElementById(id);
const preview = $('preview');
const cameraStatus = $('camera-status');
const micStatus = $('mic-status');
const micLevel = $('mic-level');
const networkStatus = $('network-status');

let stream = null;
let audioContext = null;
let frame = 0;

function stop() {
  cancelAnimationFrame(frame);
  if (stream) for (const track of stream.getTracks()) track.stop();
  stream = null;
  preview.srcObject = null;
  if (audioContext) audioContext.close().catch(() => {});
  audioContext = null;
  micLevel.value = 0;
}

async function getMedia() {
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) return null;
  try {
    return await md.getUserMedia({ audio: true, video: { width: { ideal: 640 }, height: { ideal: 360 } } });
  } catch {
    try { return await md.getUserMedia({ audio: true }); } catch { return null; }
  }
}

// Shows the loudness (RMS of the waveform, scaled so speech fills the bar) every frame.
function watchMicrophone(track) {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return;
  audioContext = new Ctx();
  const analyser = audioContext.createAnalyser();
  analyser.fftSize = 1024;
  audioContext.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const tick = () => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    micLevel.value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
    frame = requestAnimationFrame(tick);
  };
  tick();
}

async function checkDevices() {
  stop();
  cameraStatus.textContent = micStatus.textContent = 'checking…';
  stream = await getMedia();
  const video = stream && stream.getVideoTracks()[0];
  const audio = stream && stream.getAudioTracks()[0];
  preview.srcObject = video ? stream : null;
  preview.hidden = !video;
  cameraStatus.textContent = video ? 'working' : 'not available (you can join with sound only)';
  micStatus.textContent = audio ? 'working — speak and watch the bar' : 'not available';
  if (audio) {
    try { watchMicrophone(audio); } catch (err) { console.warn('device check: microphone level', err); }
  }
}

// Five sequential requests; the median round trip is robust to one slow outlier.
async function checkNetwork() {
  networkStatus.textContent = 'checking…';
  const times = [];
  try {
    for (let i = 0; i < 5; i++) {
      const start = performance.now();
      const resp = await fetch('/healthz', { cache: 'no-store' });
      await resp.arrayBuffer();
      times.push(performance.now() - start);
    }
  } catch {
    networkStatus.textContent = 'offline';
    return;
  }
  times.sort((a, b) => a - b);
  const rtt = times[2];
  networkStatus.textContent = rtt < 150 ? 'good' : rtt < 400 ? 'fair' : 'slow — video may switch to sound only';
}

function runChecks() {
  checkDevices().catch((err) => console.warn('device check', err));
  checkNetwork();
}

$('start-check').addEventListener('click', runChecks);
// Release the camera and microphone before the visit page asks for them again.
$('continue').addEventListener('click', stop);
window.addEventListener('pagehide', stop);
runChecks();
