// Starts `telesafe demo` on a free loopback port and headless Debian Chromium, for the
// browser tests. Nothing is mocked: the pages come from the real binary over real TLS.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.TELESAFE_BIN ?? new URL('../../target/debug/telesafe', import.meta.url).pathname;

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run',
];

/** Runs the demo; resolves with {url, password, stop()} once it prints its URL. */
export async function startDemo() {
  const dir = mkdtempSync(join(tmpdir(), 'telesafe-browser-'));
  const child = spawn(BIN, ['demo', '--listen', '127.0.0.1:0', '--data-dir', join(dir, 'data')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Keep the server's log for failure reports instead of interleaving it with test output.
  let log = '';
  child.stderr.on('data', (chunk) => {
    log = (log + chunk).slice(-20_000);
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
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

/** Signs in through the real form. */
export async function signIn(page, base, email, password) {
  await page.goto(`${base}/signin`);
  await page.getByLabel('Organisation code').fill('demo');
  await page.getByLabel('Email address').fill(email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/signin')), page.getByRole('button', { name: 'Sign in' }).click()]);
}
