// Video visits end to end in headless Chromium with fake camera and microphone, against
// the real `telesafe demo` binary: booking, the link and date of birth, the waiting room,
// admission, peer-to-peer video, the verification code, and who can never get in.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDemo, launchBrowser, signIn } from './harness.mjs';
import { DR, NURSE, WALTER, ctxOptions, book, recordSocket, joinWithLink, connected, videoFlows } from './visitkit.mjs';


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

test('patient joins by link and date of birth, waits, is admitted; video flows both ways with the same code', async () => {
  const drCtx = await browser.newContext(ctxOptions);
  const dr = await drCtx.newPage();
  await signIn(dr, demo.url, DR, demo.password);
  const link = await book(demo, dr, demo.url, 2);

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

  // The clinician's day view (still open since booking) shows her waiting, without a
  // reload; then the clinician opens the visit.
  await dr.locator('[data-field=waiting]').filter({ hasText: 'Waiting' }).first().waitFor({ timeout: 15_000 });
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
  for (const p of [patient, dr]) await connected(p);
  // Both receive video: decoded frames keep increasing.
  for (const p of [patient, dr]) await videoFlows(p);
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
  const link = await book(demo, dr, demo.url, 24 * 60);
  const ctx = await browser.newContext(ctxOptions);
  const page = await ctx.newPage();
  const r = await page.goto(link);
  assert.equal(r.status(), 403);
  await page.getByRole('alert').filter({ hasText: 'opens 30 minutes before' }).waitFor();
  assert.equal(await page.getByLabel('Day').count(), 0, 'no date-of-birth form on a closed link');
  await ctx.close();
  await drCtx.close();
});
