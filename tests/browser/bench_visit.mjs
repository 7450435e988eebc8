// Benchmark (not a test): join-to-first-frame of a video visit in headless Chromium over
// loopback, side by side with a bare WebRTC baseline in the same run.
//
//   cd tests/browser && TELESAFE_BIN=../../target/release/telesafe node bench_visit.mjs [rounds]
//
// "Join" is the clinician's click on "Let … in" (the patient already waits); "first frame"
// is the first decoded video frame on the patient's page. The baseline is two
// RTCPeerConnections in one page exchanging SDP directly (no server, no socket): the least
// any browser call can take on this machine.
import { startDemo, launchBrowser, signIn } from './harness.mjs';
import { DR, ctxOptions, book, joinWithLink } from './visitkit.mjs';

const rounds = Number(process.argv[2] ?? 5);
const demo = await startDemo();
const browser = await launchBrowser({ media: true });

async function baseline() {
  const page = await (await browser.newContext(ctxOptions)).newPage();
  // A blank page on the same HTTPS origin, served by the test itself (the real pages
  // refuse the camera outside visits).
  await page.route(`${demo.url}/baseline`, (r) => r.fulfill({ contentType: 'text/html', body: '<!doctype html><title>baseline</title>' }));
  await page.goto(`${demo.url}/baseline`);
  const ms = await page.evaluate(async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    const t0 = performance.now();
    const a = new RTCPeerConnection();
    const b = new RTCPeerConnection();
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    for (const t of stream.getTracks()) a.addTrack(t, stream);
    const first = new Promise((resolve) => {
      b.ontrack = () => {
        const poll = async () => {
          const r = await b.getStats();
          let f = 0;
          r.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') f += s.framesDecoded || 0; });
          if (f > 0) resolve(performance.now() - t0); else setTimeout(poll, 10);
        };
        poll();
      };
    });
    await a.setLocalDescription();
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription();
    await a.setRemoteDescription(b.localDescription);
    return first;
  });
  await page.context().close();
  return ms;
}

async function visit(dr) {
  const link = await book(demo, dr, demo.url, 2);
  const ctx = await browser.newContext(ctxOptions);
  const patient = await ctx.newPage();
  await joinWithLink(patient, link);
  await patient.waitForURL(/\/check$/);
  await patient.goto(patient.url().replace(/\/check$/, ''));
  await dr.goto(`${demo.url}/console/visits`);
  await dr.getByRole('link', { name: /Open the visit with Ana López/ }).last().click();
  await dr.waitForFunction(() => !document.getElementById('admit').disabled, null, { timeout: 20_000 });
  const t0 = Date.now();
  await dr.getByRole('button', { name: /Let .* in/ }).click();
  // The page stamps its first shown remote frame (requestVideoFrameCallback); both clocks
  // are this machine's.
  await patient.waitForFunction(() => document.getElementById('visit').dataset.firstFrameAt, null, { timeout: 20_000 });
  const first = Number(await patient.locator('#visit').getAttribute('data-first-frame-at'));
  // End the visit so the next round starts clean.
  await dr.getByRole('button', { name: 'End visit' }).click();
  await dr.getByRole('button', { name: /Confirm/ }).click();
  await ctx.close();
  return first - t0;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  const dr = await (await browser.newContext(ctxOptions)).newPage();
  await signIn(dr, demo.url, DR, demo.password);
  const base = [];
  const ours = [];
  for (let i = 0; i < rounds; i++) {
    base.push(await baseline());
    // A fresh clinician tab per round (same signed-in context).
    const tab = await dr.context().newPage();
    ours.push(await visit(tab));
    await tab.close();
  }
  const b = median(base);
  const o = median(ours);
  console.log(`rounds: ${rounds}`);
  console.log(`bare WebRTC in one page, first frame: median ${b.toFixed(0)} ms (${base.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`Telesafe admit → first frame:       median ${o.toFixed(0)} ms (${ours.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`ratio: ${(o / b).toFixed(2)}× the baseline; target ≤ 2000 ms`);
} finally {
  await browser.close();
  await demo.stop();
}
