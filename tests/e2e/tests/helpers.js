// Helpers shared by the end-to-end tests: the emulator's service API, conditions in the page to wait on (no
// polling loops of our own: Playwright's web-first assertions and waitForFunction on a real condition), the axe
// accessibility scan, and screenshots kept as artefacts.
const { expect } = require('@playwright/test');
const path = require('path');

const HTTP = process.env.HUBSIM_HTTP || 'http://127.0.0.1:8080';

/** An iothubowner service token for an emulator whose data folder is `dir` (for tests that run their own). */
function serviceToken(dir, host = 'localhost', ttl = 3600) {
  const crypto = require('crypto');
  const fs = require('fs');
  const owner = JSON.parse(fs.readFileSync(path.join(dir, 'policies.json'), 'utf8')).find((p) => p.keyName === 'iothubowner');
  const sr = encodeURIComponent(host);
  const se = Math.floor(Date.now() / 1000) + ttl;
  const sig = crypto.createHmac('sha256', Buffer.from(owner.primaryKey, 'base64')).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=iothubowner`;
}
const SHOTS = path.join(__dirname, '..', '..', '..', 'target', 'e2e-screenshots');

async function api(method, p, body, base = HTTP) {
  const r = await fetch(base + p, {
    method,
    headers: { 'content-type': 'application/json', authorization: process.env.HUBSIM_TOKEN },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: HTTP ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Creates a fresh device and returns its connection string. */
async function newDevice(prefix) {
  const id = `${prefix}-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
  const d = await api('PUT', `/devices/${id}`, {});
  return { id, cs: d.connectionString };
}

async function connect(page, cs, options = {}) {
  await page.goto(options.url || '/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  await page.getByLabel('Connection string').fill(cs);
  if (options.ttl) {
    await page.getByLabel('Token lifetime (s)').first().fill(String(options.ttl));
    await page.getByLabel('Token lifetime (s)').first().blur();
  }
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
}

/** Starts the composer's repeat: `times` messages (0: until stopped) every `every` ms. */
async function startRepeat(page, times, every) {
  await page.getByLabel('Every (ms)', { exact: true }).fill(String(every));
  await page.getByLabel('Every (ms)', { exact: true }).blur();
  await page.getByLabel('Times (0 = until stopped)').fill(String(times));
  await page.getByLabel('Times (0 = until stopped)').blur();
  await page.getByRole('button', { name: 'Start', exact: true }).click();
}

/** Waits until the app logged its subscriptions (C2D, methods, twin): the hub now delivers everything. */
async function subscribed(page) {
  await expect(page.getByLabel('Activity log')).toContainText(
    'subscribed to cloud-to-device messages, direct methods, twin responses, desired property updates');
}

/** A counter of the status bar ("sent", "acknowledged", "pending" while connected or "queued" while not). */
async function counter(page, name) {
  const text = await page.locator('.counters').innerText();
  return Number(text.match(new RegExp(`${name} (\\d+)`))[1]);
}

/** Waits until the status bar's counter `name` reaches `n`. */
async function counterAtLeast(page, name, n, timeout = 60_000) {
  await page.waitForFunction(([name, n]) => {
    const m = document.querySelector('.counters')?.innerText.match(new RegExp(`${name} (\\d+)`));
    return m && Number(m[1]) >= n;
  }, [name, n], { timeout });
}

/** Runs axe-core on the page and fails with every violation, named and located. */
async function axeClean(page, state) {
  await page.addScriptTag({ path: require.resolve('axe-core') });
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
  expect(violations, `axe violations when ${state}`).toEqual([]);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Records long main-thread tasks (> 50 ms, what a user feels as a frozen tab). */
async function watchLongTasks(page) {
  await page.evaluate(() => {
    window.__longest = 0;
    window.__busy = 0;
    new PerformanceObserver((l) => l.getEntries().forEach((e) => {
      window.__longest = Math.max(window.__longest, e.duration);
      window.__busy += e.duration;
    })).observe({ type: 'longtask' });
  });
}

module.exports = { serviceToken, api, newDevice, connect, subscribed, counter, counterAtLeast, axeClean, shot, HTTP, watchLongTasks, startRepeat };
