// Video visits end to end in headless Chromium with fake camera and microphone, against
// the real `telesafe demo` binary: booking, the link and date of birth, the waiting room,
// admission, peer-to-peer video, the verification code, and who can never get in.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDemo, launchBrowser, signIn } from './harness.mjs';

const DR = 'dr.rivera@demo.telesafe.test';
const NURSE = 'nurse.kim@demo.telesafe.test';
const WALTER = 'walter.brown@demo.telesafe.test';
// Ana López's date of birth in the demo records.
const ANA_DOB = { day: '12', month: '5', year: '1948' };

let demo;
let browser;

before(async () => {
  demo = await startDemo();
  browser = await launchBrowser({ media: true });
});

after(async () => {
  await browser?.close();
  await demo?.stop();
});

const ctxOptions = { ignoreHTTPSErrors: true, viewport: { width: 1000, height: 900 } };

/** "YYYY-MM-DD" and "HH:MM" in UTC, `minutes` from now. */
function utc(minutes) {
  const d = new Date(Date.now() + minutes * 60_000);
  const iso = d.toISOString();
  return { date: iso.slice(0, 10), time: iso.slice(11, 16) };
}

/** Books a visit for Ana with Dr Rivera through the day view; returns the visit link. */
async function book(page, base, minutesFromNow) {
  const { date, time } = utc(minutesFromNow);
  await page.goto(`${base}/console/visits?date=${date}`);
  const before = (demo.log().match(/\/join\/[A-Za-z0-9_-]{43}/g) ?? []).length;
  await page.getByLabel('Patient', { exact: true }).selectOption({ label: 'Ana López' });
  await page.getByLabel('Dr. Sam Rivera').check();
  await page.getByLabel('Date (UTC)').fill(date);
  await page.getByLabel('Start time (UTC)').fill(time);
  await page.getByLabel('Length in minutes').fill('30');
  await page.getByRole('button', { name: 'Book the visit' }).click();
  await page.getByText('The visit is booked').waitFor();
  // The link goes to Ana through the outbox; with no mail relay configured the demo logs
  // the message for the operator to pass on.
  const until = Date.now() + 20_000;
  for (;;) {
    const links = demo.log().match(/https:\/\/localhost:\d+\/join\/[A-Za-z0-9_-]{43}/g) ?? [];
    if (links.length > before) return links[links.length - 1];
    assert.ok(Date.now() < until, 'the visit link was never sent');
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Every JSON message a page receives on its visit socket. */
function recordSocket(page) {
  const received = [];
  page.on('websocket', (ws) => {
    ws.on('framereceived', (f) => {
      try {
        received.push(JSON.parse(f.payload));
      } catch {
        // not JSON: ignored
      }
    });
  });
  return received;
}

async function joinWithLink(page, link, dob = ANA_DOB) {
  await page.goto(link);
  await page.getByLabel('Day').fill(dob.day);
  await page.getByLabel('Month').fill(dob.month);
  await page.getByLabel('Year').fill(dob.year);
  await page.getByRole('button', { name: 'Continue' }).click();
}

async function framesDecoded(page) {
  return Number(await page.locator('#visit').getAttribute('data-frames-decoded'));
}

test('patient joins by link and date of birth, waits, is admitted; video flows both ways with the same code', async () => {
  const drCtx = await browser.newContext(ctxOptions);
  const dr = await drCtx.newPage();
  await signIn(dr, demo.url, DR, demo.password);
  const link = await book(dr, demo.url, 2);

  const patientCtx = await browser.newContext(ctxOptions);
  const patient = await patientCtx.newPage();
  const patientFrames = recordSocket(patient);
  // A wrong date of birth is refused with a plain message.
  await joinWithLink(patient, link, { day: '1', month: '1', year: '1950' });
  await patient.getByRole('alert').filter({ hasText: 'does not match' }).waitFor();
  await joinWithLink(patient, link);
  await patient.waitForURL(/\/visits\/[0-9a-f-]+\/check$/);
  await patient.locator('#camera-status').filter({ hasText: 'working' }).waitFor();
  await patient.getByRole('link', { name: 'Continue to the waiting room' }).click();
  await patient.waitForURL(/\/visits\/[0-9a-f-]+$/);
  const visitUrl = patient.url();
  await patient.getByRole('heading', { name: 'You are in the waiting room' }).waitFor();

  // The clinician opens the visit from the day view and sees the patient waiting.
  const drFrames = recordSocket(dr);
  await dr.goto(`${demo.url}/console/visits`);
  await dr.getByRole('link', { name: /Open the visit with Ana López/ }).first().click();
  const admit = dr.getByRole('button', { name: /Let .* in/ });
  await assert.doesNotReject(admit.waitFor());
  await dr.waitForFunction(() => !document.getElementById('admit').disabled, null, { timeout: 15_000 });

  // Chat before admission works both ways.
  await patient.getByRole('textbox', { name: 'Message' }).fill('I am here, my camera works.');
  await patient.getByRole('button', { name: 'Send' }).click();
  await dr.locator('#chat-log').getByText('I am here, my camera works.').waitFor();

  // Nobody is admitted automatically, and an un-admitted patient receives no SDP.
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(await patient.locator('#visit').getAttribute('data-admitted'), 'false');
  assert.ok(!patientFrames.some((m) => m.type === 'signal' || m.type === 'peer-joined'), 'no signaling before admission');

  await admit.click();
  for (const p of [patient, dr]) {
    await p.waitForFunction(() => document.getElementById('visit').dataset.connection === 'connected', null, { timeout: 30_000 });
  }
  // Both receive video: decoded frames keep increasing.
  for (const p of [patient, dr]) {
    await p.waitForFunction(() => Number(document.getElementById('visit').dataset.framesDecoded) > 0, null, { timeout: 20_000 });
    const a = await framesDecoded(p);
    await new Promise((r) => setTimeout(r, 2500));
    assert.ok((await framesDecoded(p)) > a, 'frames keep being decoded');
  }
  // The same verification code on both screens, computed by each browser.
  const codes = [];
  for (const p of [patient, dr]) {
    await p.waitForFunction(() => /^\d{6}$/.test(document.getElementById('visit').dataset.verifyCode ?? ''));
    codes.push(await p.locator('#visit').getAttribute('data-verify-code'));
  }
  assert.equal(codes[0], codes[1]);
  assert.ok(!drFrames.concat(patientFrames).some((m) => JSON.stringify(m).includes(codes[0]) && m.type !== 'chat'),
    'the server never sends the code');

  // The identity check is recorded.
  await dr.getByLabel('How did you confirm identity?').selectOption('photo-id');
  await dr.getByRole('button', { name: 'Record identity check' }).click();
  await dr.locator('#identity-state').filter({ hasText: /recorded/i }).waitFor();

  // Another clinic member with a valid session who is not on the appointment cannot open
  // the visit or its socket; neither can another patient.
  for (const email of [NURSE, WALTER]) {
    const ctx = await browser.newContext(ctxOptions);
    const other = await ctx.newPage();
    await signIn(other, demo.url, email, demo.password);
    const r = await other.goto(visitUrl);
    assert.equal(r.status(), 404, `${email} must not see the visit`);
    const socket = await other.evaluate(async (url) => {
      const u = new URL(url);
      const ws = new WebSocket(`wss://${u.host}${u.pathname}/socket?peer=${crypto.randomUUID()}`);
      return new Promise((resolve) => {
        const got = [];
        ws.onmessage = (e) => got.push(e.data);
        ws.onclose = (e) => resolve({ opened: got.length > 0, code: e.code, got });
        ws.onerror = () => {};
        setTimeout(() => resolve({ opened: true, got }), 5000);
      });
    }, visitUrl);
    assert.equal(socket.got.length, 0, `${email} received nothing on the socket`);
    assert.notEqual(socket.code, undefined, `${email}'s socket was refused`);
    await ctx.close();
  }

  // The clinician ends the visit; both pages say so.
  await dr.getByRole('button', { name: 'End visit' }).click();
  await dr.getByRole('button', { name: /Confirm/ }).click();
  for (const p of [patient, dr]) await p.getByRole('heading', { name: 'The visit has ended' }).waitFor();
  await drCtx.close();
  await patientCtx.close();
});

test('a visit link outside its window is refused', async () => {
  const drCtx = await browser.newContext(ctxOptions);
  const dr = await drCtx.newPage();
  await signIn(dr, demo.url, DR, demo.password);
  const link = await book(dr, demo.url, 24 * 60);
  const ctx = await browser.newContext(ctxOptions);
  const page = await ctx.newPage();
  const r = await page.goto(link);
  assert.equal(r.status(), 403);
  await page.getByRole('alert').filter({ hasText: 'opens 30 minutes before' }).waitFor();
  assert.equal(await page.getByLabel('Day').count(), 0, 'no date-of-birth form on a closed link');
  await ctx.close();
  await drCtx.close();
});
