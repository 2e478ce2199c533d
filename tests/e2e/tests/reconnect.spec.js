// Reliability: the web app keeps unacknowledged messages, reconnects with backoff after the emulator is killed
// (kill -9) and restarted, and re-sends them. This test runs its own emulator so it can kill it.
const { test, expect } = require('@playwright/test');
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { serviceToken, shot, counter, counterAtLeast, startRepeat } = require('./helpers');

const BIN = path.join(__dirname, '..', '..', '..', 'target', 'debug', 'hubsim');
const DIST = path.join(__dirname, '..', '..', '..', 'dist');
const PORTS = { mqtt: 47883, ws: 47443, http: 47080 };
const HTTP = `http://127.0.0.1:${PORTS.http}`;

/**
 * Starts the emulator and resolves with the process once it is ready: it writes its ready file (`--ready-file`)
 * before it prints anything, so its first output is the signal.
 */
function startEmulator(dir) {
  const p = spawn(BIN, ['serve', '--data', dir, '--ready-file', `${dir}.ready.json`, '--mqtt-port', String(PORTS.mqtt),
    '--ws-port', String(PORTS.ws), '--http-port', String(PORTS.http), '--web-dir', DIST], { stdio: ['ignore', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    p.stdout.once('data', () => resolve(p));
    p.stdout.resume(); // keep draining the banner so the emulator never blocks on a full pipe
    p.once('exit', (code) => reject(new Error(`the emulator exited (${code}) before it was ready`)));
  });
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
  let emu = await startEmulator(dir);
  try {
    const dev = await api('PUT', '/devices/reconnect-dev', {});
    await page.goto(`${HTTP}/`);
    await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
    await page.getByLabel('Connection string').fill(dev.connectionString);
    await page.getByRole('button', { name: 'Connect', exact: true }).click();
    await expect(page.getByRole('status')).toContainText('Connected');
    await startRepeat(page, 60, 150);
    await counterAtLeast(page, 'acknowledged', 10);

    emu.kill('SIGKILL');
    await new Promise((r) => emu.once('exit', r));
    await expect(page.getByRole('status')).toContainText('Reconnecting');
    await shot(page, 'reconnecting');
    // Messages keep being composed while the hub is down; they wait in the in-flight table. Restart only once
    // at least 5 were sent into the void.
    const sentAtKill = await counter(page, 'sent');
    await counterAtLeast(page, 'sent', sentAtKill + 5);
    // Unacknowledged while the hub is down: the status bar says they wait for the connection.
    await expect(page.locator('.counters')).toContainText(/queued [1-9]/);
    emu = await startEmulator(dir);

    await expect(page.getByRole('status')).toContainText('Connected', { timeout: 40_000 });
    // Every message acknowledged means every message durably stored.
    await counterAtLeast(page, 'acknowledged', 60);
    const events = await api('GET', '/events?device=reconnect-dev&limit=1000');
    expect(new Set(events.map((x) => x.systemProperties['message-id'])).size).toBe(60);
    await expect(page.locator('.counters')).toContainText('pending 0');
    await expect(page.locator('.counters')).toContainText('acknowledged 60');
    await shot(page, 'reconnected');
  } finally {
    emu.kill('SIGKILL');
  }
});
