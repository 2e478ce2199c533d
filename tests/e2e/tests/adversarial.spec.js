// Hostile peers and inputs against the built app: a DPS the user typed that answers with a hub of its own
// choosing, or with absurd waits; imports and templates that would expand without bound. Each case checks that
// no token goes where the user did not agree, that the tab stays responsive, and that the app says what happened.
const { test, expect } = require('@playwright/test');
const { api, newDevice, connect, subscribed, watchLongTasks } = require('./helpers');

const KEY = Buffer.from('a group key for the adversarial tests').toString('base64');

/** MQTT remaining length. */
function varint(n) {
  const out = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 128;
    out.push(b);
  } while (n > 0);
  return out;
}

function str(s) {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 255]), b]);
}

function publish(topic, payload) {
  const body = Buffer.concat([str(topic), Buffer.from(payload, 'utf8')]);
  return Buffer.concat([Buffer.from([0x30, ...varint(body.length)]), body]);
}

/** Splits a buffer into MQTT packets: [{type, flags, body}]. */
function packets(buf) {
  const out = [];
  let i = 0;
  while (i < buf.length) {
    const h = buf[i];
    let len = 0, mul = 1, j = i + 1;
    for (;;) {
      const b = buf[j++];
      len += (b & 127) * mul;
      mul *= 128;
      if (!(b & 128)) break;
    }
    out.push({ type: h >> 4, flags: h & 15, body: buf.subarray(j, j + len) });
    i = j + len;
  }
  return out;
}

/**
 * A scripted DPS on `host` (a routed WebSocket; no network): CONNACK, SUBACK, then `answer(rid, n)` for the n-th
 * request gives the topic's status part and the body. Records every URL the page opened a WebSocket to.
 */
async function fakeDps(page, host, answer) {
  const opened = [];
  await page.routeWebSocket(/.*/, (ws) => {
    opened.push(ws.url());
    if (!ws.url().startsWith(`wss://${host}/`)) {
      ws.close({ code: 1011, reason: 'not this test\'s host' });
      return;
    }
    let n = 0;
    ws.onMessage((m) => {
      for (const p of packets(Buffer.from(m))) {
        if (p.type === 1) ws.send(Buffer.from([0x20, 2, 0, 0]));
        else if (p.type === 8) ws.send(Buffer.from([0x90, 3, p.body[0], p.body[1], 1]));
        else if (p.type === 3) {
          const tl = (p.body[0] << 8) | p.body[1];
          const topic = p.body.subarray(2, 2 + tl).toString();
          if (((p.flags >> 1) & 3) === 1) {
            const id = p.body.subarray(2 + tl, 4 + tl);
            ws.send(Buffer.from([0x40, 2, id[0], id[1]]));
          }
          const rid = /\$rid=([^&]+)/.exec(topic)[1];
          n += 1;
          const [status, body, to] = answer(rid, n);
          if (status !== null) ws.send(publish(to || `$dps/registrations/res/${status}/?$rid=${rid}`, body));
        }
      }
    });
  });
  return opened;
}

const assigned = (hub) => JSON.stringify({
  operationId: 'op-1',
  status: 'assigned',
  registrationState: { registrationId: 'adv-1', assignedHub: hub, deviceId: 'adv-1', status: 'assigned' },
});

async function provisionThrough(page, dpsHost) {
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  await page.getByRole('radio', { name: 'Through the Device Provisioning Service (ID scope, registration ID, key)' }).check();
  await page.getByLabel('ID scope', { exact: true }).fill('0ne00ABCDEF');
  await page.getByLabel('Registration ID', { exact: true }).fill('adv-1');
  await page.getByLabel(/^The key is an enrollment group key/).check();
  await page.getByLabel('Enrollment group key', { exact: true }).fill(KEY);
  await page.getByLabel('Provisioning host', { exact: true }).fill(dpsHost);
  await page.getByRole('button', { name: 'Provision and connect' }).click();
  // The typed DPS is not Azure's: named and confirmed first.
  await page.getByRole('button', { name: `Send the token to ${dpsHost}` }).click();
}

test('a DPS assigning a hub the user never named gets no token there without the dialog naming it', async ({ page }) => {
  const opened = await fakeDps(page, 'dps.adversarial.test', () => ['200', assigned('evil.example')]);
  await provisionThrough(page, 'dps.adversarial.test');
  await expect(page.getByLabel('Activity log')).toContainText('DPS: assigned to evil.example as adv-1');
  const dialog = page.getByRole('alertdialog');
  await expect(dialog).toContainText('Send the token to evil.example?');
  expect(opened.filter((u) => u.includes('evil.example'))).toEqual([]);
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await expect(dialog).toHaveCount(0);
  expect(opened.filter((u) => u.includes('evil.example'))).toEqual([]);
  // Only when the user agrees does the device key's token go there.
  await page.getByRole('button', { name: /^Connect|^Provision/ }).first().click();
  await page.getByRole('button', { name: 'Send the token to evil.example' }).click();
  await expect.poll(() => opened.filter((u) => u.includes('evil.example')).length).toBeGreaterThan(0);
});

test('an imported template that would expand to a gigabyte is refused in words; the tab stays responsive', async ({ page }) => {
  await page.goto('/');
  await watchLongTasks(page);
  const its = JSON.stringify({ Variables: [{ name: 'S', customLengthString: 1000000 }], Template: '$.S'.repeat(1000) });
  await page.getByLabel('Import (saved messages or an Iot-Telemetry-Simulator configuration)')
    .setInputFiles({ name: 'bomb.json', mimeType: 'application/json', buffer: Buffer.from(its) });
  await expect(page.locator('.saved')).toContainText('imported an Iot-Telemetry-Simulator configuration as "bomb"');
  await expect(page.getByRole('alert').filter({ hasText: 'the rendered message is larger than 262144 bytes' }).first()).toBeVisible();
  // Still responsive: typing edits the template at once.
  await page.getByRole('textbox', { name: 'Template', exact: true }).fill('{"ok": 1}');
  await expect(page.getByLabel('Next body')).toContainText('{"ok": 1}');
  const longest = await page.evaluate(() => window.__longest);
  expect(longest).toBeLessThan(2000);
});

test('C2D messages with thousands of properties each do not freeze the tab', async ({ page }) => {
  test.setTimeout(240_000);
  const dev = await newDevice('e2e-props');
  await connect(page, dev.cs);
  await subscribed(page);
  await watchLongTasks(page);
  const properties = Object.fromEntries(Array.from({ length: 2000 }, (_, p) => [`p${p}`, '1']));
  const post = (i) => api('POST', `/devices/${dev.id}/messages/devicebound`, { body: `m${i}`, properties });
  const queued = async () => (await api('GET', `/devices/${dev.id}/messages/devicebound`)).length;
  for (let wave = 0; wave < 100; wave += 25) {
    await expect.poll(queued, { timeout: 60_000 }).toBeLessThanOrEqual(25);
    await Promise.all(Array.from({ length: 25 }, (_, k) => post(wave + k)));
    await expect(page.locator('.inbox .badge')).toHaveText(new RegExp(`^${wave + 25}\\b`), { timeout: 60_000 });
  }
  const [longest, busy] = await page.evaluate(() => [window.__longest, window.__busy]);
  console.log(`100 messages of 2000 properties: longest main-thread task ${Math.round(longest)} ms, long tasks ${Math.round(busy)} ms`);
  // Measured on 2 loaded cores: before the fix (every property of the 100 messages rendered and logged) 811 ms
  // longest and 4068 ms of long tasks; after it 118 ms and 449 ms.
  expect(longest).toBeLessThan(500);
  expect(busy).toBeLessThan(3000);
  const inbox = page.getByRole('region', { name: 'Cloud-to-device messages' });
  await expect(inbox.locator('.msg').first()).toContainText('… and 1950 more properties (Export messages has every one)');
  await page.getByRole('button', { name: 'Clear messages' }).click();
  await expect(inbox.locator('.msg')).toHaveCount(0);
});

for (const [what, answer, expected] of [
  ['a body that is not JSON', () => ['200', 'not json {'], /Disconnected — /],
  ['an answer on a topic that is not DPS\'s', () => ['200', '{}', 'devices/x/messages/devicebound/'], /Disconnected — provisioning failed: protocol violation by DPS: 'devices\/x\/messages\/devicebound\/' is not a DPS topic/],
  ['an enormous body', () => ['200', `{"operationId":"${'x'.repeat(2 * 1024 * 1024)}"}`], /Disconnected — /],
  ['a retry-after of 130 years', (rid, n) => (n === 1 ? ['202', JSON.stringify({ operationId: 'op', status: 'assigning' }), `$dps/registrations/res/202/?$rid=${rid}&retry-after=4100000000`] : ['200', assigned('dps.adversarial.test')]), /asking again in 600 s/],
]) {
  test(`a DPS answering with ${what} ends in words; the key is nowhere in the page's storage or log`, async ({ page }) => {
    await fakeDps(page, 'dps.adversarial.test', answer);
    await provisionThrough(page, 'dps.adversarial.test');
    const status = page.getByRole('status');
    const steps = page.getByRole('list', { name: 'Provisioning steps' });
    await expect(String(expected).includes('asking') ? steps : status).toContainText(expected);
    console.log(`${what}: ${await status.innerText()} | ${(await page.getByRole('list', { name: 'Provisioning steps' }).innerText()).replace(/\n/g, ' / ')}`);
    // Still responsive, and the group key is in no storage, link or log.
    await page.getByLabel('Registration ID', { exact: true }).fill('adv-2');
    const stored = await page.evaluate(() => JSON.stringify(Object.assign({}, localStorage)) + document.body.innerText + location.href);
    expect(stored).not.toContain(KEY);
  });
}

test('eight schedules every 10 ms keep the tab responsive, a ninth is refused, all end on disconnect', async ({ page }) => {
  test.setTimeout(120_000);
  const dev = await newDevice('e2e-sched-flood');
  await connect(page, dev.cs);
  await page.getByRole('radio', { name: 'Template' }).check();
  for (const [label, value] of [['Every (ms)', '1'], ['Jitter ± (ms)', '0'], ['Times (0 = no limit)', '0']]) {
    const field = page.getByLabel(label, { exact: true });
    await field.fill(value);
    await field.blur();
  }
  await watchLongTasks(page);
  // A message runs once at a time (its Run waits for Stop): nine names, nine schedules asked for.
  const run = page.getByRole('button', { name: 'Run on a schedule' });
  for (let i = 0; i < 9; i += 1) {
    await page.getByLabel('Name', { exact: true }).fill(`flood-${i}`);
    await run.click();
    if (i < 8) await expect(run).toBeDisabled();
  }
  await expect(page.locator('.saved')).toContainText('at most 8 schedules run at once');
  const runs = page.getByRole('list', { name: 'Schedules' });
  await expect(runs.getByRole('listitem')).toHaveCount(8);
  await page.waitForTimeout(5000);
  const t0 = Date.now();
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await expect(runs.getByRole('listitem').filter({ hasText: '(ended)' })).toHaveCount(8);
  const clickMs = Date.now() - t0;
  const [longest, busy] = await page.evaluate(() => [window.__longest, window.__busy]);
  const text = await page.locator('.counters').innerText();
  console.log(`8 schedules at 1 ms for 5 s: ${text.replace(/\n/g, ' ')}; longest task ${Math.round(longest)} ms, long tasks ${Math.round(busy)} ms, disconnect handled in ${clickMs} ms`);
  expect(longest).toBeLessThan(500);
  expect(clickMs).toBeLessThan(5000);
});

test('a browser storage that refuses the settings is said once in the log, not at every keystroke', async ({ page }) => {
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  // Fill this origin's localStorage to its quota with a key of our own.
  await page.evaluate(() => {
    let chunk = 'x'.repeat(1 << 20);
    let i = 0;
    while (chunk.length > 16) {
      try {
        localStorage.setItem('filler-' + i++, chunk);
      } catch {
        chunk = chunk.slice(0, chunk.length / 2);
      }
    }
  });
  const payload = page.getByLabel('Payload', { exact: true });
  // Each edit makes the stored settings longer than what is stored now, so none fits.
  for (const n of [1, 2, 3]) await payload.fill('x'.repeat(4000 * n));
  const log = page.getByLabel('Activity log');
  await expect(log).toContainText('the browser refused to store the settings');
  expect((await log.innerText()).split('the browser refused to store the settings').length - 1).toBe(1);
  await page.evaluate(() => localStorage.clear());
});
