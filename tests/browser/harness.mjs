// Starts `telesafe demo` on a free loopback port and headless Debian Chromium, for the
// browser tests. Nothing is mocked: the pages come from the real binary over real TLS.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHmac } from 'node:crypto';
import { chromium } from 'playwright-core';

const BIN = process.env.TELESAFE_BIN ?? new URL('../../target/debug/telesafe', import.meta.url).pathname;

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run',
];

/** Runs the demo; resolves with {url, password, stop()} once it prints its URL. */
export async function startDemo({ listen = '127.0.0.1:0', dataDir, databaseUrl, keep = false } = {}) {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'telesafe-browser-'));
  const args = ['demo', '--listen', listen, '--data-dir', join(dir, 'data')];
  if (databaseUrl) args.push('--database-url', databaseUrl);
  const child = spawn(BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Keep the server's log for failure reports instead of interleaving it with test output.
  let log = '';
  child.stderr.on('data', (chunk) => {
    log = (log + chunk).slice(-200_000);
  });
  const info = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`demo did not start:\n${out}`)), 120_000);
    child.on('exit', (code) => reject(new Error(`demo exited with ${code}:\n${out}\n${log}`)));

    child.stdout.on('data', (chunk) => {
      out += chunk;
      const url = out.match(/URL:\s+(\S+)/);
      const password = out.match(/Password:\s+(\S+)/);
      if (url && password && out.includes('Press Ctrl-C')) {
        clearTimeout(timer);
        resolve({ url: url[1].replace(/\/$/, ''), password: password[1] });
      }
    });
  });
  return {
    ...info,
    dir,
    /** The server's log so far (stderr). */
    log: () => log,
    /** Waits until the log matches `re`; resolves with the match. */
    async waitForLog(re, timeout = 30_000) {
      const until = Date.now() + timeout;
      for (;;) {
        const m = log.match(re);
        if (m) return m;
        if (Date.now() > until) throw new Error(`log never matched ${re}:\n${log.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      if (!keep) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser({ media = false, executablePath } = {}) {
  const args = [...CHROMIUM_ARGS];
  if (media) {
    args.push('--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      // Real host addresses in ICE candidates (no mDNS names), so peers in different
      // network namespaces can reach each other.
      '--disable-features=WebRtcHideLocalIpsWithMdns');
  }
  return chromium.launch({ executablePath: executablePath ?? process.env.CHROMIUM ?? '/usr/bin/chromium', args });
}

/** RFC 6238 TOTP (SHA-1, 6 digits, 30 s), written here independently of the server's. */
export function totp(base32, step) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const ch of base32.replace(/=+$/, '')) bits += alphabet.indexOf(ch).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(value).padStart(6, '0');
}

const secrets = new Map(); // email -> { secret, lastStep }
const currentStep = () => Math.floor(Date.now() / 30_000);

/**
 * Signs in through the real forms. Staff enrol an authenticator on first sign-in (the key
 * is read off the page); enrolled accounts answer the TOTP challenge. `onPage(label)` is
 * called on each intermediate page so tests can audit it.
 */
export async function signIn(page, base, email, password, onPage = async () => {}, organisation = 'demo') {
  await page.goto(`${base}/signin`);
  await page.getByLabel('Organisation code').fill(organisation);
  await page.getByLabel('Email address').fill(email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/signin')), page.getByRole('button', { name: 'Sign in', exact: true }).click()]);
  const path = new URL(page.url()).pathname;
  if (path === '/mfa/enroll') {
    await onPage('/mfa/enroll');
    const secret = (await page.locator('#totp-secret').innerText()).replace(/\s+/g, '');
    const step = currentStep();
    await page.getByLabel('Enter the 6-digit code the app shows').fill(totp(secret, step));
    await page.getByRole('button', { name: 'Turn on' }).click();
    await page.getByRole('heading', { name: 'Your authenticator app is set up' }).waitFor();
    await onPage('recovery codes');
    secrets.set(email, { secret, lastStep: step });
    await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/mfa')), page.getByRole('link', { name: /continue/ }).click()]);
  } else if (path === '/mfa') {
    await onPage('/mfa');
    const known = secrets.get(email);
    // Each step is accepted once and at most one step ahead of the server's clock, so a third
    // sign-in within one 30 s step waits for the clock to catch up.
    while (known.lastStep > currentStep()) await new Promise((r) => setTimeout(r, 250));
    const step = Math.max(currentStep(), known.lastStep + 1);
    await page.getByLabel('6-digit code from your authenticator app').fill(totp(known.secret, step));
    await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/mfa')), page.getByRole('button', { name: 'Continue' }).click()]);
    known.lastStep = step;
  }
}
