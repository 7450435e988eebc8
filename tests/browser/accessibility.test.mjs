// Every page of the web shell passes axe-core (WCAG 2.1 A/AA rules) with no serious or
// critical violation, works at 360 px wide, and runs under the real Content-Security-Policy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { startDemo, launchBrowser, signIn } from './harness.mjs';

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

let demo;
let browser;

before(async () => {
  demo = await startDemo();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await demo?.stop();
});

/** axe needs to inject its script, so this context bypasses CSP; CSP is tested separately. */
async function axeContext(width = 1280) {
  return browser.newContext({ ignoreHTTPSErrors: true, bypassCSP: true, viewport: { width, height: 800 } });
}

async function audit(page, label) {
  await page.addScriptTag({ content: AXE });
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } }),
  );
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const detail = bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`).join('\n');
  assert.equal(bad.length, 0, `${label}: axe found serious/critical violations:\n${detail}`);
  assert.ok(result.passes.length > 10, `${label}: axe ran (${result.passes.length} rules passed)`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `${label}: page scrolls sideways by ${overflow}px`);
}

for (const width of [1280, 360]) {
  test(`sign-in page and its error state pass axe at ${width}px`, async () => {
    const ctx = await axeContext(width);
    const page = await ctx.newPage();
    await page.goto(`${demo.url}/signin`);
    await audit(page, `/signin @${width}`);
    await page.getByLabel('Organisation code').fill('demo');
    await page.getByLabel('Email address').fill('nobody@demo.telesafe.test');
    await page.getByLabel('Password', { exact: true }).fill('wrong but long enough passphrase');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByRole('alert').waitFor();
    await audit(page, `/signin error @${width}`);
    await page.goto(`${demo.url}/no-such-page`);
    await audit(page, `404 page @${width}`);
    await ctx.close();
  });
}

for (const [email, home] of [
  ['ana.lopez@demo.telesafe.test', '/portal'],
  ['dr.rivera@demo.telesafe.test', '/console'],
  ['admin@demo.telesafe.test', '/admin'],
  ['security@demo.telesafe.test', '/security'],
  ['operator@platform.telesafe.test', '/platform'],
]) {
  test(`${home} passes axe for ${email.split('@')[0]}`, async () => {
    for (const width of [1280, 360]) {
      const ctx = await axeContext(width);
      const page = await ctx.newPage();
      const org = email.endsWith("@platform.telesafe.test") ? "platform" : "demo";
      await signIn(page, demo.url, email, demo.password, (label) => audit(page, `${label} as ${home} @${width}`), org);
      assert.equal(new URL(page.url()).pathname, home);
      await audit(page, `${home} @${width}`);
      const extra = { '/portal': ['/portal/access', '/portal/record'], '/security': ['/security/audit'], '/admin': ['/admin/devices'], '/console': email.startsWith('dr.') ? ['/console/break-glass'] : [] }[home] ?? [];
      for (const path of extra) {
        await page.goto(`${demo.url}${path}`);
        await audit(page, `${path} @${width}`);
      }
      if (home === '/console') {
        // A patient's chart, with every form opened.
        await page.goto(`${demo.url}/console`);
        // The patient list's link (the home-monitoring alerts may name her too).
        await page.getByRole('cell', { name: 'Ana López' }).getByRole('link').click();
        await page.waitForURL(/\/console\/patients\//);
        await page.getByRole('heading', { level: 2, name: 'Vital signs' }).waitFor();
        await page.$$eval('details', (ds) => ds.forEach((d) => { d.open = true; }));
        await audit(page, `patient chart @${width}`);
      }
      await page.getByRole('link', { name: 'My account' }).click();
      await page.waitForURL(/\/account$/);
      await audit(page, `/account as ${home} @${width}`);
      await ctx.close();
    }
  });
}

test('pages run under the real CSP with no violation, and the page script works', async () => {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await ctx.newPage();
  const violations = [];
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text());
  });
  await page.goto(`${demo.url}/signin`);
  const pw = page.getByLabel('Password', { exact: true });
  assert.equal(await pw.getAttribute('type'), 'password');
  await page.getByLabel('Show password').check();
  assert.equal(await pw.getAttribute('type'), 'text', 'app.js ran and revealed the password');
  await signIn(page, demo.url, 'nurse.kim@demo.telesafe.test', demo.password);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/\/signin$/);
  assert.deepEqual(violations, []);
  await ctx.close();
});

test('video visit pages pass axe at 1280 and 360 px, for the clinician and the patient', async () => {
  const { book, joinWithLink, ANA_DOB } = await import('./visitkit.mjs');
  const staff = await axeContext(1280);
  const dr = await staff.newPage();
  await signIn(dr, demo.url, 'dr.rivera@demo.telesafe.test', demo.password);
  const link = await book(demo, dr, demo.url, 2);
  for (const width of [1280, 360]) {
    await dr.setViewportSize({ width, height: 800 });
    await dr.goto(`${demo.url}/console/visits`);
    await audit(dr, `/console/visits @${width}`);
    const ctx = await axeContext(width);
    const patient = await ctx.newPage();
    await patient.goto(link);
    await audit(patient, `join page @${width}`);
    await joinWithLink(patient, link, { day: '1', month: '1', year: '1950' });
    await patient.getByRole('alert').waitFor();
    await audit(patient, `join page with an error @${width}`);
    await joinWithLink(patient, link, ANA_DOB);
    await patient.waitForURL(/\/check$/);
    await audit(patient, `device check @${width}`);
    await patient.goto(patient.url().replace(/\/check$/, ''));
    await patient.getByRole('heading', { name: 'You are in the waiting room' }).waitFor();
    await audit(patient, `visit page (patient, waiting) @${width}`);
    await dr.getByRole('link', { name: /Open the visit with Ana López/ }).first().click();
    await dr.locator('#visit-status').waitFor();
    await audit(dr, `visit page (clinician) @${width}`);
    await ctx.close();
  }
  await staff.close();
});
