// Helpers shared by the end-to-end tests: the emulator's service API and screenshots kept as artefacts.
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

async function api(method, p, body) {
  const r = await fetch(HTTP + p, {
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
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  await page.getByLabel('Connection string').fill(cs);
  if (options.ttl) {
    await page.getByLabel('Token lifetime (s)').first().fill(String(options.ttl));
    await page.getByLabel('Token lifetime (s)').first().blur();
  }
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Polls `fn` until it returns a truthy value. */
async function until(fn, what, ms = 20_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

module.exports = { serviceToken, api, newDevice, connect, shot, until, HTTP };
