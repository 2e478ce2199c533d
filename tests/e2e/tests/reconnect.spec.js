// Reliability: the web app keeps unacknowledged messages, reconnects with backoff after the emulator is killed
// (kill -9) and restarted, and re-sends them. This test runs its own emulator so it can kill it.
const { test, expect } = require('@playwright/test');
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { serviceToken, shot, until } = require('./helpers');

const BIN = path.join(__dirname, '..', '..', '..', 'target', 'debug', 'hubsim');
const DIST = path.join(__dirname, '..', '..', '..', 'dist');
const PORTS = { mqtt: 47883, ws: 47443, http: 47080 };
const HTTP = `http://127.0.0.1:${PORTS.http}`;

function startEmulator(dir) {
  const p = spawn(BIN, ['serve', '--data', dir, '--mqtt-port', String(PORTS.mqtt), '--ws-port', String(PORTS.ws),
    '--http-port', String(PORTS.http), '--web-dir', DIST], { stdio: 'ignore' });
  return p;
}

async function healthy() {
  try {
    return (await fetch(`${HTTP}/health`)).ok;
  } catch {
    return false;
  }
}

let dataDir; // the running emulator's data folder, for its service token

async function api(method, p, body) {
  const r = await fetch(HTTP + p, {
    method,
    headers: { 'content-type': 'application/json', authorization: serviceToken(dataDir) },
    body: body && JSON.stringify(body),
  });
  const t = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${t}`);
  return t ? JSON.parse(t) : null;
}

test('the app re-sends unacknowledged messages after the emulator is killed and restarted', async ({ page }) => {
  test.setTimeout(120_000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubsim-e2e-'));
  dataDir = dir;
  let emu = startEmulator(dir);
  try {
    await until(healthy, 'the emulator');
    const dev = await api('PUT', '/devices/reconnect-dev', {});
    await page.goto(`${HTTP}/`);
    await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
    await page.getByLabel('Connection string').fill(dev.connectionString);
    await page.getByRole('button', { name: 'Connect', exact: true }).click();
    await expect(page.getByRole('status')).toContainText('Connected');
    await page.getByLabel('Every (ms)').fill('150');
    await page.getByLabel('Every (ms)').blur();
    await page.getByLabel('Times (0 = until stopped)').fill('60');
    await page.getByLabel('Times (0 = until stopped)').blur();
    await page.getByRole('button', { name: 'Start' }).click();
    await until(async () => (await api('GET', '/events?device=reconnect-dev&limit=1000')).length >= 10, '10 events');

    emu.kill('SIGKILL');
    await new Promise((r) => emu.once('exit', r));
    await expect(page.getByRole('status')).toContainText('Reconnecting');
    await shot(page, 'reconnecting');
    // Messages keep being composed while the hub is down; they wait in the in-flight table. Restart only once
    // at least 5 were sent into the void.
    const sentAtKill = Number((await page.locator('.counters').innerText()).match(/sent (\d+)/)[1]);
    await until(async () => Number((await page.locator('.counters').innerText()).match(/sent (\d+)/)[1]) >= sentAtKill + 5,
      'messages sent while the emulator is down');
    emu = startEmulator(dir);
    await until(healthy, 'the restarted emulator');

    await expect(page.getByRole('status')).toContainText('Connected', { timeout: 40_000 });
    const events = await until(async () => {
      const e = await api('GET', '/events?device=reconnect-dev&limit=1000');
      return new Set(e.map((x) => x.systemProperties['message-id'])).size >= 60 ? e : null;
    }, 'all 60 messages', 60_000);
    expect(new Set(events.map((x) => x.systemProperties['message-id'])).size).toBe(60);
    await expect(page.locator('.counters')).toContainText('pending 0');
    await expect(page.locator('.counters')).toContainText('acknowledged 60');
    await shot(page, 'reconnected');
  } finally {
    emu.kill('SIGKILL');
  }
});
