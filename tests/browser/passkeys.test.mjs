// Passkeys end to end in headless Chromium with a CDP virtual authenticator (a CTAP2
// platform authenticator with user verification): register from "My account", sign in with
// the passkey alone, use it as the second factor after a password, and show that an
// assertion made on another origin is refused by the server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { startDemo, launchBrowser, signIn } from './harness.mjs';

let demo;
let browser;
let elsewhere; // another origin on this machine: http://localhost:<port>
let elsewhereUrl;

before(async () => {
  demo = await startDemo();
  browser = await launchBrowser();
  elsewhere = createServer((_, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end('<!doctype html><title>Another site</title><p>another site</p>');
  });
  await new Promise((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
  elsewhereUrl = `http://localhost:${elsewhere.address().port}`;
});

after(async () => {
  await browser?.close();
  await demo?.stop();
  await new Promise((resolve) => elsewhere?.close(resolve));
});

/** A page whose tab has a virtual authenticator that verifies the user automatically. */
async function pageWithAuthenticator(ctx) {
  const page = await ctx.newPage();
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { page, cdp, authenticatorId };
}

async function signOut(page) {
  await page.getByRole('button', { name: 'Sign out' }).first().click();
  await page.waitForURL(/\/signin$/);
}

test('a passkey registers, signs in alone, and serves as the second factor', async () => {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  const { page, cdp, authenticatorId } = await pageWithAuthenticator(ctx);
  const email = 'nurse.kim@demo.telesafe.test';
  await signIn(page, demo.url, email, demo.password);
  assert.equal(new URL(page.url()).pathname, '/console');

  // Register from My account (the TOTP check at sign-in is recent, so no step-up).
  await page.goto(`${demo.url}/account`);
  await page.getByLabel('Name for a new passkey (optional)').fill('Test laptop');
  await Promise.all([
    page.waitForURL(/done=passkey-added/),
    page.getByRole('button', { name: 'Add a passkey' }).click(),
  ]);
  assert.equal(await page.getByRole('textbox', { name: 'Name of passkey 1' }).inputValue(), 'Test laptop');
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  assert.equal(credentials.length, 1, 'the authenticator holds one credential');
  assert.equal(credentials[0].isResidentCredential, true, 'the passkey is discoverable');
  assert.equal(credentials[0].rpId, 'localhost');

  // Sign in with the passkey alone: no organisation, email, password or code.
  await signOut(page);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/console'),
    page.getByRole('button', { name: 'Sign in with a passkey' }).click(),
  ]);
  await page.goto(`${demo.url}/account`);
  await page.getByText('Signed in with a passkey').first().waitFor();

  // After a password, the passkey answers the second-factor challenge.
  await signOut(page);
  await page.getByLabel('Organisation code').fill('demo');
  await page.getByLabel('Email address').fill(email);
  await page.getByLabel('Password', { exact: true }).fill(demo.password);
  await Promise.all([page.waitForURL(/\/mfa$/), page.getByRole('button', { name: 'Sign in', exact: true }).click()]);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/console'),
    page.getByRole('button', { name: 'Use your passkey' }).click(),
  ]);

  // Renaming works; removing needs a recent second step, which we have.
  await page.goto(`${demo.url}/account`);
  await page.getByRole('textbox', { name: 'Name of passkey 1' }).fill('Old laptop');
  await Promise.all([page.waitForURL(/done=passkey-renamed/), page.getByRole('button', { name: 'Save the name of passkey 1' }).click()]);
  assert.equal(await page.getByRole('textbox', { name: 'Name of passkey 1' }).inputValue(), 'Old laptop');
  await Promise.all([page.waitForURL(/done=passkey-removed/), page.getByRole('button', { name: 'Remove the passkey Old laptop' }).click()]);
  assert.equal(await page.getByText('You have no passkeys yet.').count(), 1);

  // The removed passkey no longer signs in, and the page says so in plain words.
  await signOut(page);
  await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
  await page.getByText('That passkey was not accepted').waitFor();
  assert.match(new URL(page.url()).pathname, /^\/signin$/);
  await ctx.close();
});

test('an assertion made for another origin is refused', async () => {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  const { page } = await pageWithAuthenticator(ctx);
  const email = 'dr.rivera@demo.telesafe.test';
  await signIn(page, demo.url, email, demo.password);
  await page.goto(`${demo.url}/account`);
  await Promise.all([page.waitForURL(/done=passkey-added/), page.getByRole('button', { name: 'Add a passkey' }).click()]);
  await signOut(page);

  // Telesafe issues a sign-in challenge; a page on another origin (same RP id, so the
  // authenticator will sign) gets the assertion and forwards it.
  const start = await page.request.post(`${demo.url}/signin/passkey/options`, { data: {} });
  assert.equal(start.status(), 200);
  const { ceremony, options } = await start.json();
  await page.goto(elsewhereUrl);
  const credential = await page.evaluate(async (opts) => {
    const fromB64url = (s) => {
      const b64 = s.replace(/-/g, '+').replace(/_/g, '/');
      return Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0)).buffer;
    };
    const toB64url = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    const pk = opts.publicKey;
    const c = await navigator.credentials.get({ publicKey: { ...pk, challenge: fromB64url(pk.challenge), allowCredentials: [] } });
    return {
      id: c.id,
      rawId: toB64url(c.rawId),
      type: c.type,
      response: {
        clientDataJSON: toB64url(c.response.clientDataJSON),
        authenticatorData: toB64url(c.response.authenticatorData),
        signature: toB64url(c.response.signature),
        userHandle: c.response.userHandle ? toB64url(c.response.userHandle) : null,
      },
      clientExtensionResults: {},
    };
  }, options);
  const clientData = JSON.parse(Buffer.from(credential.response.clientDataJSON, 'base64url'));
  assert.equal(clientData.origin, elsewhereUrl, 'the browser signed for the other origin');

  const finish = await page.request.post(`${demo.url}/signin/passkey`, { data: { ceremony, credential } });
  assert.equal(finish.status(), 401);
  assert.equal((await finish.json()).code, 'invalid_credentials');
  const cookies = finish.headersArray().filter((h) => h.name.toLowerCase() === 'set-cookie');
  assert.equal(cookies.length, 0, 'no session was issued');

  // The ceremony was used up by the refused attempt: it cannot be retried either.
  const again = await page.request.post(`${demo.url}/signin/passkey`, { data: { ceremony, credential } });
  assert.equal(again.status(), 401);
  await ctx.close();
});
