// The hubsim web app, built with trunk and served by the emulator, driven in Debian's headless Chromium.
const { test, expect } = require('@playwright/test');
const { api, newDevice, connect, subscribed, counter, counterAtLeast, shot, startRepeat } = require('./helpers');

test('an invalid connection string is explained next to the field', async ({ page }) => {
  await page.goto('/');
  await page.getByLabel('Connection string').fill('HostName=myhub.azure-devices.net;SharedAccessKey=abc');
  await expect(page.getByRole('alert').first()).toContainText('DeviceId is missing');
  await page.getByLabel('Connection string').fill('HostName=h;DeviceId=d;SharedAccessKey=not base64!');
  await expect(page.getByRole('alert').first()).toContainText('SharedAccessKey: the key is not valid base64');
  await expect(page.getByLabel('Connection string')).toHaveAttribute('aria-invalid', 'true');
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('status')).toContainText('Disconnected');
  await shot(page, 'invalid-connection-string');
});

test('a missing value is said once Connect is pressed, a wrong one as soon as it is typed', async ({ page }) => {
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  await page.getByText('…or enter the fields separately').click();
  await page.getByLabel('Host name').fill('myhub.azure-devices.net');
  await page.getByLabel('Device ID').fill('plc');
  // The key is missing, not wrong: nothing is said yet, neither now nor after a reload (the key is not remembered).
  await expect(page.getByRole('alert')).toHaveCount(0);
  await page.reload();
  await expect(page.getByLabel('Device ID')).toHaveValue('plc');
  await expect(page.getByRole('alert')).toHaveCount(0);
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('alert')).toHaveText(['device key: the key is empty']);
  await page.getByLabel('Device key').fill('not base64!');
  await expect(page.getByRole('alert')).toContainText(['device key:']);
  await expect(page.getByRole('alert')).not.toContainText(['the key is empty']);
  // A connection string of blanks is no connection string: the fields below are used, and said so.
  await page.getByLabel('Device key').fill('');
  await page.getByLabel('Connection string').fill('   ');
  for (const a of await page.getByRole('alert').all()) await expect(a).not.toHaveText('');
});

test('two clients as one device: the page stops taking turns with the other after a few and says why', async ({ page, browser }) => {
  test.setTimeout(90_000);
  const dev = await newDevice('e2e-twice');
  await connect(page, dev.cs);
  // Another client connects as the same device (another browser profile): IoT Hub closes the older connection.
  const otherContext = await browser.newContext({ baseURL: test.info().project.use.baseURL });
  const other = await otherContext.newPage();
  await connect(other, dev.cs);
  // Each reconnect closes the other's connection; after three such turns in a row one of them gives up and says why.
  const gaveUp = (p) => p.getByRole('alert').filter({ hasText: 'IoT Hub allows one connection per device' });
  await expect.poll(async () => (await gaveUp(page).count()) + (await gaveUp(other).count()), { timeout: 60_000 }).toBe(1);
  const [quitter, stayer] = (await gaveUp(page).count()) ? [page, other] : [other, page];
  await expect(quitter.getByRole('status')).toContainText('3 times in a row; not reconnecting');
  await expect(stayer.getByRole('status')).toContainText('Connected');
  // …and the one that stayed keeps its connection: the hub logs no replacement after the give-up.
  const replaced = async () => (await api('GET', `/connections?device=${dev.id}&limit=1000`)).filter((r) => r.reason === 'replaced-by-new-connection').length;
  const before = await replaced();
  await stayer.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(stayer.locator('.counters')).toContainText('acknowledged 1');
  expect(await replaced()).toBe(before);
  await otherContext.close();
});

test('a connection string whose SAS token has expired is stopped with the reason, not retried', async ({ page }) => {
  const crypto = require('crypto');
  const dev = await newDevice('e2e-expired');
  const fields = Object.fromEntries(dev.cs.split(';').map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
  const sr = encodeURIComponent(`${fields.HostName}/devices/${dev.id}`);
  const se = Math.floor(Date.now() / 1000) - 60;
  const sig = crypto.createHmac('sha256', Buffer.from(fields.SharedAccessKey, 'base64')).update(`${sr}\n${se}`).digest('base64');
  const cs = dev.cs.replace(/SharedAccessKey=[^;]*/, `SharedAccessSignature=SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`);
  await page.goto('/');
  await page.getByLabel('Connection string').fill(cs);
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('status')).toContainText('Disconnected — the SAS token of the connection string expired at ' + new Date(se * 1000).toISOString());
  await expect(page.getByRole('alert').filter({ hasText: 'cannot be renewed' })).toBeVisible();
  // Nothing was sent to the hub (no CONNECT with a dead token), and no retry is scheduled.
  expect(await api('GET', `/connections?device=${dev.id}`)).toEqual([]);
});

test('the twin is read at connect, and connecting as another device shows that device\'s, not the previous one\'s', async ({ page }) => {
  const a = await newDevice('e2e-first');
  const b = await newDevice('e2e-second');
  await api('PATCH', `/twins/${a.id}`, { properties: { desired: { only: 'first' } } });
  await connect(page, a.cs);
  const desired = page.getByRole('region', { name: 'Device twin' }).getByRole('group', { name: 'Desired properties' });
  // Read when the connection is accepted: no Get twin needed.
  await expect(desired).toContainText('"only": "first"');
  // A desired patch from the back end changes the document shown, with its version (no Get twin needed).
  await api('PATCH', `/twins/${a.id}`, { properties: { desired: { interval: 30, only: null } } });
  await expect(desired).toContainText('"interval": 30');
  await expect(desired).toContainText('"$version": 3');
  await expect(desired).not.toContainText('"only"');
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(page.locator('.counters')).toContainText('acknowledged 1');
  await page.getByLabel('Connection string').fill(b.cs);
  // Until Reconnect, the connection is still the first device's, and the page says so.
  await expect(page.locator('.stale')).toHaveText(`Connected as ${a.id} at localhost: the form now says otherwise. Reconnect to use it.`);
  await page.getByRole('button', { name: 'Reconnect' }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
  await expect(desired).toContainText('"$version": 1');
  await expect(desired).not.toContainText('first');
  await expect(page.locator('.stale')).toHaveCount(0);
  // The counters are this device's.
  await expect(page.locator('.counters')).toContainText('sent 0');
  await expect(page.locator('.counters')).toContainText('acknowledged 0');
});

test('connects and sends telemetry with application properties and content type', async ({ page }) => {
  const dev = await newDevice('e2e-telemetry');
  await connect(page, dev.cs);
  await shot(page, 'connected');
  await page.getByLabel('Payload', { exact: true }).fill('{"temperature": 30.5, "source": "e2e"}');
  await page.getByLabel('Property value').first().fill('true');
  await page.getByRole('button', { name: 'Add property' }).click();
  await page.getByLabel('Property name').nth(1).fill('site name');
  await page.getByLabel('Property value').nth(1).fill('Plant #7 / Line:3');
  await page.getByLabel('Correlation ID').fill('corr-42');
  await expect(page.getByLabel('Topic preview')).toContainText('site%20name=Plant%20%237%20%2F%20Line%3A3');
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  // PUBACK follows the durable write: once acknowledged, the event is in the emulator's log.
  await expect(page.locator('.counters')).toContainText('acknowledged 1');
  const ev = (await api('GET', `/events?device=${dev.id}`))[0];
  expect(JSON.parse(ev.body)).toEqual({ temperature: 30.5, source: 'e2e' });
  expect(ev.systemProperties['content-type']).toBe('application/json');
  expect(ev.systemProperties['content-encoding']).toBe('utf-8');
  expect(ev.systemProperties['correlation-id']).toBe('corr-42');
  expect(ev.systemProperties['message-id']).toMatch(/^[0-9a-f-]{36}$/);
  expect(ev.applicationProperties).toEqual({ alert: 'true', 'site name': 'Plant #7 / Line:3' });
  await expect(page.locator('.counters')).toContainText('acknowledged 1');
  await shot(page, 'telemetry-sent');
});

test('a C2D message appears in the inbox with all its properties', async ({ page }) => {
  const dev = await newDevice('e2e-c2d');
  await connect(page, dev.cs);
  await subscribed(page);
  await api('POST', `/devices/${dev.id}/messages/devicebound`, {
    body: '{"command":"open valve"}', messageId: 'msg-77', correlationId: 'c-77',
    contentType: 'application/json', contentEncoding: 'utf-8', ack: 'full',
    properties: { priority: 'high', 'zone-name': 'north&east' },
  });
  const inbox = page.getByRole('region', { name: 'Cloud-to-device messages' });
  await expect(inbox).toContainText('"command": "open valve"');
  for (const line of ['$.mid: msg-77', '$.cid: c-77', '$.ct: application/json', '$.ce: utf-8',
    '$.to: /devices/' + dev.id + '/messages/devicebound', 'iothub-ack: full', 'priority: high', 'zone-name: north&east']) {
    await expect(inbox).toContainText(line);
  }
  await expect(inbox).toContainText('$.exp: ');
  await shot(page, 'c2d-inbox');
});

test('a direct method gets the configured response', async ({ page }) => {
  const dev = await newDevice('e2e-method');
  await connect(page, dev.cs);
  await page.getByLabel('Method name').fill('reboot');
  await page.getByLabel('Response status').fill('202');
  await page.getByLabel('Response payload').fill('{"rebooting": true, "in": 5}');
  // What is typed survives the app's renders before it is saved (a C2D message re-renders the page; the fields
  // used to be reset to their initial text by every render).
  await subscribed(page);
  await page.getByLabel('Reported patch').fill('{"fw": "2.0"}');
  await api('POST', `/devices/${dev.id}/messages/devicebound`, { body: 'render now' });
  await expect(page.getByRole('region', { name: 'Cloud-to-device messages' })).toContainText('render now');
  await expect(page.getByLabel('Response status')).toHaveValue('202');
  await expect(page.getByLabel('Response payload')).toHaveValue('{"rebooting": true, "in": 5}');
  await expect(page.getByLabel('Reported patch')).toHaveValue('{"fw": "2.0"}');
  await page.getByRole('button', { name: 'Save answer' }).click();
  const r = await api('POST', `/twins/${dev.id}/methods`, { methodName: 'reboot', payload: { delay: 1 }, responseTimeoutInSeconds: 10 });
  expect(r).toEqual({ status: 202, payload: { rebooting: true, in: 5 } });
  await expect(page.getByLabel('Method calls')).toContainText('reboot');
  const other = await api('POST', `/twins/${dev.id}/methods`, { methodName: 'ping', responseTimeoutInSeconds: 10 });
  expect(other).toEqual({ status: 200, payload: {} });
  await shot(page, 'method');
});

test('when the hub refuses the reconnection for good, the repeat and the Plug and Play telemetry stop', async ({ page }) => {
  const dev = await newDevice('e2e-refused');
  await connect(page, dev.cs);
  await subscribed(page);
  await page.getByLabel('Built-in model').selectOption('thermostat');
  await page.getByRole('button', { name: 'Load built-in model' }).click();
  await page.getByRole('button', { name: 'Start telemetry' }).click();
  await startRepeat(page, 0, 300);
  await expect(page.getByRole('button', { name: 'Stop', exact: true })).toBeVisible();
  // The device is deleted: the hub closes the connection and refuses the next one (not authorized), which ends
  // reconnecting.
  const r = await fetch(`${process.env.HUBSIM_HTTP || 'http://127.0.0.1:8080'}/devices/${dev.id}`, {
    method: 'DELETE', headers: { authorization: process.env.HUBSIM_TOKEN, 'if-match': '*' } });
  expect(r.ok).toBe(true);
  await expect(page.getByRole('status').filter({ hasText: 'Disconnected' })).toBeVisible({ timeout: 20_000 });
  await expect(page.getByRole('button', { name: 'Start telemetry' })).toBeVisible();
  await expect(page.getByRole('button', { name: 'Start', exact: true })).toBeVisible();
});

test('what is typed in a number field survives the renders until it is committed', async ({ page }) => {
  const dev = await newDevice('e2e-typing');
  await connect(page, dev.cs);
  await subscribed(page);
  await startRepeat(page, 0, 100);
  // Every acknowledgement re-renders the page while the digits are typed one by one (the field used to be reset
  // to its stored value at each render: "12345" became "105").
  const times = page.getByLabel('Times (0 = until stopped)');
  await times.click();
  await times.press('Control+A');
  await page.keyboard.type('12345', { delay: 150 });
  await expect(times).toHaveValue('12345');
  await page.getByRole('button', { name: 'Stop', exact: true }).click();
  await expect(times).toHaveValue('12345');
});

test('a number outside its field range is refused beside the field, which keeps its value', async ({ page }) => {
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  const every = page.getByLabel('Every (ms)', { exact: true });
  const refusal = page.getByRole('alert').filter({ hasText: 'must be a whole number' });
  await every.fill('5');
  await every.blur();
  // It used to be stored and raised to 10 ms without a word when the repeat started.
  await expect(refusal).toHaveText('Every (ms): must be a whole number from 10 to 86400000, not 5; kept 1000');
  await expect(every).toHaveValue('1000');
  await expect(every).toHaveAttribute('aria-invalid', 'true');
  // The refusal is the field's description (announced with it).
  const described = await every.getAttribute('aria-describedby');
  await expect(page.locator(`#${described}`)).toHaveText(/^Every \(ms\): must be/);
  // Enter commits the field without submitting the composer (it used to send a message).
  await every.fill('');
  await every.press('Enter');
  await expect(refusal).toHaveText('Every (ms): must be a whole number from 10 to 86400000; kept 1000');
  await expect(page.getByLabel('Activity log')).not.toContainText('not sent');
  // Typing again clears the refusal, even the kept value (which makes no change to commit).
  await every.fill('1000');
  await expect(refusal).toHaveCount(0);
  await every.fill('7');
  await every.blur();
  await expect(refusal).toHaveCount(1);
  await every.fill('250');
  await every.blur();
  await expect(refusal).toHaveCount(0);
  await expect(every).toHaveValue('250');
  await expect(every).not.toHaveAttribute('aria-invalid', 'true');
  // Taken: it is what a reload shows.
  await page.reload();
  await expect(page.getByLabel('Every (ms)', { exact: true })).toHaveValue('250');
  // The saved message's schedule refuses the same way (its interval was raised to 10 ms silently).
  await page.getByRole('radio', { name: 'Template' }).check();
  const schedule = page.getByLabel('Every (ms)', { exact: true });
  await expect(schedule).toHaveValue('1000');
  await schedule.fill('3');
  await schedule.blur();
  await expect(refusal).toHaveText('Every (ms): must be a whole number from 10 to 86400000, not 3; kept 1000');
  await expect(schedule).toHaveValue('1000');
});

/** A bad keep-alive typed, then Connect pressed with `press` ('click' or 'tap') without leaving the field first:
 * the press leaves the field, whose refusal would move Connect down; the device must still connect, with the
 * kept value, and the refusal show afterwards. */
async function refuseThenPressConnect(page, press) {
  const dev = await newDevice(`e2e-refusal-${press}`);
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  await page.getByLabel('Connection string').fill(dev.cs);
  // "Advanced" is open when the app is served by the emulator.
  await page.getByLabel('Keep-alive (s)').fill('99999');
  await page.getByRole('button', { name: 'Connect', exact: true })[press]();
  await expect(page.getByRole('status')).toContainText('Connected');
  await expect(page.getByRole('alert').filter({ hasText: 'Keep-alive' })).toContainText('not 99999; kept 60');
}

test('a refusal shown when the field is left does not swallow the click that left it', async ({ page }) => {
  await refuseThenPressConnect(page, 'click');
});

test('a refusal waits for the press on a button to end, whatever renders meanwhile', async ({ page }) => {
  const dev = await newDevice('e2e-refusal-press');
  await connect(page, dev.cs);
  await subscribed(page);
  // A repeat every 100 ms renders the page all along.
  await startRepeat(page, 0, 100);
  const sas = page.getByRole('region', { name: 'SAS token' });
  const ttl = sas.getByLabel('Token lifetime (s)');
  await ttl.fill('1');
  const box = await sas.getByRole('button', { name: 'Generate SAS token' }).boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await counterAtLeast(page, 'acknowledged', (await counter(page, 'acknowledged')) + 3);
  // Pressed, and the page rendered: the kept value is back, the message waits.
  await expect(ttl).toHaveValue('3600');
  await expect(sas.getByRole('alert')).toHaveCount(0);
  await page.mouse.up();
  await expect(sas.getByLabel('Token', { exact: true })).toHaveValue(/^SharedAccessSignature sr=/);
  await expect(sas.getByRole('alert')).toHaveText('Token lifetime (s): must be a whole number from 10 to 86400, not 1; kept 3600');
  // A press whose end the page never sees (a context menu opens) does not hold refusals back.
  await ttl.fill('2');
  await page.mouse.down({ button: 'right' });
  await expect(sas.getByRole('alert')).toHaveText('Token lifetime (s): must be a whole number from 10 to 86400, not 2; kept 3600');
  await page.mouse.up({ button: 'right' });
  await page.getByRole('button', { name: 'Stop', exact: true }).click();
});

/** Opens the page in template mode with a new random-walk variable: the variables, their count, the new one's
 * fieldset and its name. */
async function newWalkVariable(page) {
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  await page.getByRole('radio', { name: 'Template' }).check();
  await page.getByLabel('Add a variable').selectOption('walk');
  const vars = page.locator('fieldset.var');
  const count = await vars.count();
  const last = vars.nth(count - 1);
  const name = (await last.getByRole('button', { name: /^Remove / }).textContent()).slice('Remove '.length);
  return { vars, count, last, name };
}

test('an error of the app shown when a field is left does not swallow the click either', async ({ page }) => {
  const { vars, count, last, name } = await newWalkVariable(page);
  await last.getByLabel(`${name}: Step`).fill('abc');
  // The variable's error ("step: not a number") appears as the press leaves the field, above the Remove button.
  await last.getByRole('button', { name: `Remove ${name}` }).click();
  await expect(vars).toHaveCount(count - 1);
});

/** A variable's error shown, the field fixed, then Remove pressed with `press` ('click' or 'tap') without leaving
 * the field: the press leaves it, the error above Remove goes, and Remove would move up from under the pointer by
 * the error's height. The variable must still be removed. */
async function fixThenPressRemove(page, press) {
  const { vars, count, last, name } = await newWalkVariable(page);
  const step = last.getByLabel(`${name}: Step`);
  await step.fill('abc');
  await step.press('Tab');
  const error = last.getByRole('alert');
  await expect(error).toBeVisible();
  const height = (await error.boundingBox()).height;
  await step.fill('2');
  const remove = last.getByRole('button', { name: `Remove ${name}` });
  const box = await remove.boundingBox();
  expect(height).toBeGreaterThan(box.height / 2);
  await remove[press]();
  await expect(vars).toHaveCount(count - 1);
  await expect(page.getByRole('alert')).toHaveCount(0);
}

test('an error of the app that goes when a field is left does not swallow the click either', async ({ page }) => {
  await fixThenPressRemove(page, 'click');
});

test.describe('on a touch screen', () => {
  test.use({ hasTouch: true });
  // A tap ends the press before the field is left: the message must still wait for the tap's click.
  test('a refusal does not swallow the tap that left the field', async ({ page }) => {
    await refuseThenPressConnect(page, 'tap');
  });
  test('an error that goes when the field is left does not swallow the tap either', async ({ page }) => {
    await fixThenPressRemove(page, 'tap');
  });
});

test('a repeat started in text mode can be followed and stopped in template mode', async ({ page }) => {
  const dev = await newDevice('e2e-repeat-mode');
  await connect(page, dev.cs);
  await subscribed(page);
  await startRepeat(page, 0, 1000);
  await page.getByRole('radio', { name: 'Template' }).check();
  const repeat = page.getByRole('group', { name: 'Sending the text payload repeatedly' });
  await expect(repeat).toContainText(' sent');
  await repeat.getByRole('button', { name: 'Stop', exact: true }).click();
  await expect(repeat).toHaveCount(0);
  await page.getByRole('radio', { name: 'Text' }).check();
  await expect(page.getByRole('button', { name: 'Start', exact: true })).toBeVisible();
});

test('telemetry sent while disconnected is logged as queued and delivered on the next connection', async ({ page }) => {
  const dev = await newDevice('e2e-queued');
  await connect(page, dev.cs);
  await subscribed(page);
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await expect(page.getByRole('status')).toContainText('Disconnected');
  await page.getByLabel('Payload', { exact: true }).fill('{"queued": true}');
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  // It was logged as plainly sent although nothing had left the browser.
  await expect(page.getByLabel('Activity log')).toContainText('QoS 1 — queued until connected');
  // The status bar says the unacknowledged message waits for the connection (it counted it as pending, as if in flight).
  await expect(page.locator('.counters')).toContainText('queued 1');
  await expect(page.locator('.counters')).not.toContainText('pending');
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.locator('.counters')).toContainText('acknowledged 1');
  const events = await api('GET', `/events?device=${dev.id}`);
  expect(events.map((e) => JSON.parse(e.body))).toEqual([{ queued: true }]);

  // Queued for one device, then another device connects: the message cannot follow; that is said, not hidden.
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(page.locator('.counters')).toContainText('queued 1');
  const other = await newDevice('e2e-queued-other');
  await page.getByLabel('Connection string').fill(other.cs);
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
  await expect(page.getByLabel('Activity log')).toContainText('1 QoS 1 message(s) waiting for the previous device or session were dropped');
  await expect(page.locator('.counters')).toContainText('pending 0');
});

test('large messages queued while disconnected all arrive on the next connection', async ({ page }) => {
  // Six QoS 1 messages of 200 KB go out together at the next CONNACK: 1.2 MB, more than the emulator takes in one
  // WebSocket message (1 MiB). Sent as one message they were refused and sent again at every reconnect, forever.
  const dev = await newDevice('e2e-queued-large');
  await connect(page, dev.cs);
  await subscribed(page);
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await expect(page.getByRole('status')).toContainText('Disconnected');
  await page.getByLabel('Payload', { exact: true }).fill(JSON.stringify({ pad: 'x'.repeat(200 * 1024) }));
  for (let i = 0; i < 6; i++) await page.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(page.locator('.counters')).toContainText('queued 6');
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.locator('.counters')).toContainText('acknowledged 6');
  await expect(page.locator('.counters')).toContainText('pending 0');
  await expect(page.getByRole('status')).toContainText('Connected');
  const events = await api('GET', `/events?device=${dev.id}`);
  expect(events.length).toBe(6);
  const log = await api('GET', `/connections?device=${dev.id}`);
  expect(log.filter((r) => r.operation === 'deviceConnect').length).toBe(2);
});

test('when the focused control disappears, the focus moves to its neighbour, not to the page', async ({ page }) => {
  const dev = await newDevice('e2e-focus');
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  // Application properties: three rows; the last removed with the keyboard gives the focus to the new last row's
  // remove button, the only one to the nearest control left (Add property, beside the empty list).
  await page.getByRole('button', { name: 'Add property' }).click();
  await page.getByRole('button', { name: 'Add property' }).click();
  await page.getByRole('button', { name: 'Remove property 3' }).focus();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('button', { name: 'Remove property 2' })).toBeFocused();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('button', { name: 'Remove property 1' })).toBeFocused();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('button', { name: 'Remove property 1' })).toHaveCount(0);
  await expect(page.getByRole('button', { name: 'Add property' })).toBeFocused();
  // The endpoint question: Cancel gives the focus back to Connect.
  await page.getByLabel('Connection string').fill(dev.cs);
  await page.getByLabel('Endpoint (set by hand)').fill(`ws://${new URL(process.env.HUBSIM_HTTP || 'http://127.0.0.1:8080').host}/$iothub/websocket`);
  await page.getByRole('button', { name: 'Connect', exact: true }).focus();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('alertdialog')).toBeVisible();
  await page.getByRole('alertdialog').getByRole('button', { name: 'Cancel' }).focus();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('alertdialog')).toHaveCount(0);
  await expect(page.getByRole('button', { name: 'Connect', exact: true })).toBeFocused();

  // A focused button the app disables (Disconnect once disconnected) leaves the focus on a control (Chromium moves
  // it to the next one itself; ui.js does when a browser drops it to the page).
  await page.getByLabel('Endpoint (set by hand)').fill('');
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
  await page.getByRole('button', { name: 'Disconnect' }).focus();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('status')).toContainText('Disconnected');
  await page.waitForFunction(() => document.activeElement && document.activeElement.matches('button, input, select, textarea, a[href], summary'));
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('status')).toContainText('Connected');

  // Start and Stop take each other's place: the focus follows, whether the user or the end of the repeat
  // replaces the button.
  await page.getByLabel('Times (0 = until stopped)').fill('0');
  await page.getByLabel('Times (0 = until stopped)').blur();
  await page.getByRole('button', { name: 'Start', exact: true }).focus();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('button', { name: 'Stop', exact: true })).toBeFocused();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('button', { name: 'Start', exact: true })).toBeFocused();
  await page.getByLabel('Times (0 = until stopped)').fill('2');
  await page.getByLabel('Times (0 = until stopped)').blur();
  await page.getByRole('button', { name: 'Start', exact: true }).focus();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('button', { name: 'Stop', exact: true })).toBeFocused();
  // The user reads elsewhere while the repeat ends: the focus follows to Start without scrolling the page back to
  // the composer (about 1 000 px up; log lines arriving meanwhile may move the page by a few lines).
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  const y = await page.evaluate(() => window.scrollY);
  await expect(page.getByRole('button', { name: 'Start', exact: true })).toBeFocused();
  expect(Math.abs((await page.evaluate(() => window.scrollY)) - y)).toBeLessThan(200);
  // A click on empty space afterwards leaves the focus (and the scroll position) to the user.
  await expect(page.locator('.counters')).toContainText('pending 0');
  const y2 = await page.evaluate(() => window.scrollY);
  await page.mouse.click(2, 2);
  await expect(page.locator('body')).toBeFocused();
  expect(await page.evaluate(() => window.scrollY)).toBe(y2);

  // A template variable removed from the middle: the focus goes to the row below, which takes its place.
  await page.getByRole('radio', { name: 'Template' }).check();
  await page.getByLabel('Add a variable').selectOption('random');
  await page.getByLabel('Add a variable').selectOption('walk');
  const removes = page.locator('fieldset.var').getByRole('button', { name: /^Remove / });
  const names = await removes.allTextContents();
  expect(names.length).toBeGreaterThanOrEqual(3);
  await removes.nth(1).focus();
  await page.keyboard.press('Enter');
  await expect(removes).toHaveCount(names.length - 1);
  await expect(page.getByRole('button', { name: names[2], exact: true })).toBeFocused();
});

test('a short-lived token is renewed without losing messages', async ({ page }) => {
  test.setTimeout(90_000);
  const dev = await newDevice('e2e-renew');
  await connect(page, dev.cs, { ttl: 10 });
  await startRepeat(page, 40, 400);
  // 40 messages at 400 ms span 16 s: the 10 s token is renewed (at 8 s) while sending.
  await counterAtLeast(page, 'acknowledged', 40);
  await expect(page.locator('.counters')).toContainText('pending 0');
  const events = await api('GET', `/events?device=${dev.id}&limit=1000`);
  const ids = new Set(events.map((x) => x.systemProperties['message-id']));
  expect(ids.size).toBe(40);
  const log = await api('GET', `/connections?device=${dev.id}`);
  const connects = log.filter((r) => r.operation === 'deviceConnect').length;
  expect(connects).toBeGreaterThanOrEqual(2);
  expect(log.some((r) => r.reason === 'token-expired')).toBe(false);
  await expect(page.locator('.counters')).toContainText('pending 0');
  await expect(page.getByRole('status')).toContainText('Connected');
  await shot(page, 'token-renewed');
});

test('QoS 2 is explained when the hub closes the connection', async ({ page }) => {
  const dev = await newDevice('e2e-qos2');
  await connect(page, dev.cs);
  await page.getByLabel('QoS').selectOption('2');
  await expect(page.getByText('IoT Hub does not support QoS 2')).toBeVisible();
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(page.getByRole('alert').filter({ hasText: 'likely cause' })).toContainText('QoS 2');
  await shot(page, 'qos2-hint');
});

test('what cannot be sent is said beside the field: a payload over 256 KB, a reported patch that is not a JSON object', async ({ page }) => {
  const dev = await newDevice('e2e-refused-here');
  await connect(page, dev.cs);
  const composer = page.getByRole('region', { name: 'Send telemetry' });
  await page.getByLabel('Payload', { exact: true }).fill('x'.repeat(256 * 1024 + 1));
  await expect(composer.getByRole('alert')).toHaveText('Payload: 262145 bytes; IoT Hub accepts at most 262144 (body and properties), so it will not be sent');
  // Not pretty-printed either (megabytes of indented lines take the browser seconds to lay out).
  await expect(composer.getByRole('button', { name: 'Pretty-print JSON' })).toBeDisabled();
  // The refusal is tied to its field: a screen reader reads it with the field.
  await expect(page.getByLabel('Payload', { exact: true })).toHaveAttribute('aria-invalid', 'true');
  await expect(page.getByLabel('Payload', { exact: true })).toHaveAccessibleDescription(/IoT Hub accepts at most 262144/);
  await page.getByLabel('Payload', { exact: true }).fill('{"ok": true}');
  await expect(page.getByLabel('Payload', { exact: true })).toHaveAttribute('aria-invalid', 'false');
  // A body that is not the JSON its content type says is pointed out (IoT Hub routing reads it as JSON).
  await page.getByLabel('Payload', { exact: true }).fill('temperature=21');
  await expect(composer).toContainText('not JSON, but the content type says application/json');
  await page.getByLabel('Payload', { exact: true }).fill('{"ok": true}');
  await expect(composer.getByRole('alert')).toHaveCount(0);

  const twin = page.getByRole('region', { name: 'Device twin' });
  const patch = twin.getByLabel('Reported patch');
  const send = twin.getByRole('button', { name: 'Send reported patch' });
  await patch.fill('[1, 2]');
  await send.click();
  await expect(twin.getByRole('alert')).toHaveText('the reported patch must be a JSON object, like {"fw": "1.0"}');
  await expect(patch).toHaveAttribute('aria-invalid', 'true');
  await expect(patch).toHaveAccessibleDescription('the reported patch must be a JSON object, like {"fw": "1.0"}');
  await patch.fill('{"fw": "2.0", "bad": }');
  await send.click();
  await expect(twin.getByRole('alert')).toHaveText('the reported patch is not JSON: line 1, col 22: unexpected character \'}\'');
  await patch.fill('{"fw": "2.0"}');
  await send.click();
  await expect(twin).toContainText(/saved as version \d+/);
  await expect(twin.getByRole('alert')).toHaveCount(0);
  await expect(patch).toHaveAttribute('aria-invalid', 'false');
  // The panel reads the twin again: the reported document shows the patch and its version.
  const reported = twin.getByRole('group', { name: 'Reported properties' });
  await expect(reported).toContainText('"fw": "2.0"');
  await expect(reported).toContainText('"$version": 2');
  // …and what the patch said stays beside it (the read after the patch used to clear it, racing this test).
  await expect(twin).toContainText('saved as version 2');
  // Nothing refused reached the hub.
  const t = await api('GET', `/twins/${dev.id}`);
  expect(t.properties.reported.fw).toBe('2.0');
  expect(t.properties.reported.$version).toBe(2);
});
