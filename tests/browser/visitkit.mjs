// What the video-visit browser tests share: booking through the day view, joining with the
// link and date of birth, and reading what a page receives on its socket.
import assert from 'node:assert/strict';

export const DR = 'dr.rivera@demo.telesafe.test';
export const NURSE = 'nurse.kim@demo.telesafe.test';
export const WALTER = 'walter.brown@demo.telesafe.test';
// Ana López's date of birth in the demo records.
export const ANA_DOB = { day: '12', month: '5', year: '1948' };

export const ctxOptions = { ignoreHTTPSErrors: true, viewport: { width: 1000, height: 900 } };

/** "YYYY-MM-DD" and "HH:MM" in UTC, `minutes` from now. */
export function utc(minutes) {
  const d = new Date(Date.now() + minutes * 60_000);
  const iso = d.toISOString();
  return { date: iso.slice(0, 10), time: iso.slice(11, 16) };
}

/** Books a visit for Ana with Dr Rivera through the day view; returns the visit link. */
export async function book(demo, page, base, minutesFromNow, clinician = 'Dr. Sam Rivera', demos = [demo]) {
  const { date, time } = utc(minutesFromNow);
  await page.goto(`${base}/console/visits?date=${date}`);
  const allLogs = () => demos.map((d) => d.log()).join('\n');
  const before = (allLogs().match(/\/join\/[A-Za-z0-9_-]{43}/g) ?? []).length;
  await page.getByLabel('Patient', { exact: true }).selectOption({ label: 'Ana López' });
  await page.getByLabel(clinician).check();
  await page.getByLabel('Date (UTC)').fill(date);
  await page.getByLabel('Start time (UTC)').fill(time);
  await page.getByLabel('Length in minutes').fill('30');
  await page.getByRole('button', { name: 'Book the visit' }).click();
  await page.getByText('The visit is booked').waitFor();
  // The link goes to Ana through the outbox; with no mail relay configured the demo logs
  // the message for the operator to pass on.
  const until = Date.now() + 20_000;
  for (;;) {
    const links = allLogs().match(/https:\/\/localhost:\d+\/join\/[A-Za-z0-9_-]{43}/g) ?? [];
    if (links.length > before) return links[links.length - 1];
    assert.ok(Date.now() < until, 'the visit link was never sent');
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Every JSON message a page receives on its visit socket. */
export function recordSocket(page) {
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

export async function joinWithLink(page, link, dob = ANA_DOB) {
  await page.goto(link);
  await page.getByLabel('Day').fill(dob.day);
  await page.getByLabel('Month').fill(dob.month);
  await page.getByLabel('Year').fill(dob.year);
  await page.getByRole('button', { name: 'Continue' }).click();
}

export async function framesDecoded(page) {
  return Number(await page.locator('#visit').getAttribute('data-frames-decoded'));
}


/** Waits until the visit page's call is connected. */
export async function connected(page, timeout = 30_000) {
  await page.waitForFunction(() => document.getElementById('visit').dataset.connection === 'connected', null, { timeout });
}

/** Asserts that decoded video frames keep increasing on `page`. */
export async function videoFlows(page) {
  await page.waitForFunction(() => Number(document.getElementById('visit').dataset.framesDecoded) > 0, null, { timeout: 20_000 });
  // Frames keep being decoded: the count rises twice more within 20 seconds (after a
  // reconnection the first new frames arrive once the restarted ICE has renegotiated).
  let last = await framesDecoded(page);
  for (let rises = 0; rises < 2;) {
    await page.waitForFunction((n) => Number(document.getElementById('visit').dataset.framesDecoded) > n, last, { timeout: 20_000 })
      .catch(() => assert.fail(`decoded frames stopped at ${last}`));
    last = await framesDecoded(page);
    rises += 1;
  }
}
