// Template mode, schedules and saved messages (issue 10), against the emulator's event stream.
const { test, expect } = require('@playwright/test');
const { api, newDevice, connect, counterAtLeast, axeClean, shot } = require('./helpers');

// axe-core is injected as a script, which the app's Content-Security-Policy would block.
test.use({ bypassCSP: true });

/** Types into a field that takes its value on change (the variables editor, the schedule numbers). */
async function set(page, label, value) {
  const field = page.getByLabel(label, { exact: true });
  await field.fill(value);
  await field.blur();
}

async function templateMode(page) {
  await page.getByRole('radio', { name: 'Template' }).check();
  await expect(page.getByRole('textbox', { name: 'Template', exact: true })).toBeVisible();
}

/** The device's events (the emulator lists them oldest first), with parsed bodies. */
async function events(dev) {
  const list = await api('GET', `/events?device=${dev.id}&limit=1000`);
  return list.map((e) => ({ ...e, json: JSON.parse(e.body) }));
}

test('a template with a counter and a random range sends 1, 2, 3 within the range', async ({ page }) => {
  const dev = await newDevice('e2e-tmpl');
  await connect(page, dev.cs);
  await templateMode(page);
  await page.getByRole('textbox', { name: 'Template', exact: true }).fill('{"n": $.Counter, "r": $.R}');
  // The engine's error, with its position, until the variable exists.
  await expect(page.locator('.template-mode [role=alert]')).toHaveText('Template: line 1, col 23: unknown variable $.R');
  // The new variable takes the name the error named.
  await page.getByLabel('Add a variable').selectOption('random');
  await expect(page.getByLabel('R: Name', { exact: true })).toHaveValue('R');
  await set(page, 'R: Min (inclusive)', '23');
  await set(page, 'R: Max (exclusive)', '33');
  await expect(page.locator('.template-mode [role=alert]')).toHaveCount(0);
  await expect(page.getByLabel('Next body')).toContainText('{"n": 1, "r": ');
  // The preview is the message the next send sends, random draws included.
  const previewed = JSON.parse(await page.getByLabel('Next body').innerText());
  await axeClean(page, 'the template editor is shown');
  for (let i = 0; i < 3; i++) {
    await page.getByRole('button', { name: 'Send one' }).click();
  }
  await counterAtLeast(page, 'acknowledged', 3);
  const evs = await events(dev);
  expect(evs.map((e) => e.json.n)).toEqual([1, 2, 3]);
  expect(evs[0].json).toEqual(previewed);
  for (const e of evs) {
    expect(Number.isInteger(e.json.r)).toBe(true);
    expect(e.json.r).toBeGreaterThanOrEqual(23);
    expect(e.json.r).toBeLessThan(33);
  }
  // The state survives across sends: the preview shows the next value.
  await expect(page.getByLabel('Next body')).toContainText('{"n": 4, ');
  await shot(page, 'template-mode');
});

test('a header template arrives as application properties', async ({ page }) => {
  const dev = await newDevice('e2e-tmpl-header');
  await connect(page, dev.cs);
  await templateMode(page);
  await page.getByLabel('Header template (application properties)').fill('{"unit": "C", "seq": "$.Counter"}');
  await expect(page.getByLabel('Template topic preview')).toContainText('unit=C&seq=1');
  await page.getByRole('button', { name: 'Send one' }).click();
  await counterAtLeast(page, 'acknowledged', 1);
  const [ev] = await events(dev);
  expect(ev.applicationProperties).toMatchObject({ unit: 'C', seq: '1' });
  expect(ev.json.deviceId).toBe(dev.id);
  // A body meant as JSON is checked before sending: a bad one is not sent.
  await page.getByRole('textbox', { name: 'Template', exact: true }).fill('{"n": $.Counter,}');
  await expect(page.locator('.template-mode [role=alert]')).toContainText('The rendered body is not JSON');
  await page.getByRole('button', { name: 'Send one' }).click();
  await expect(page.getByLabel('Activity log')).toContainText('not sent (telemetry): the rendered body is not JSON: line 1, col 8: trailing comma is not allowed in strict JSON');
  expect((await events(dev)).length).toBe(1);
});

test('two schedules run at once and stop on disconnect; a saved message does not take the composer\'s message properties', async ({ page }) => {
  const dev = await newDevice('e2e-tmpl-sched');
  await connect(page, dev.cs);
  // Properties of the message being composed: the draft's schedule sends them, the saved thermostat does not.
  await page.getByLabel('Correlation ID').fill('corr-1');
  await page.getByLabel('User ID').fill('user-x');
  await page.getByLabel('Set creation time ($.ctime) to now').check();
  await templateMode(page);
  await set(page, 'Every (ms)', '200');
  await set(page, 'Jitter ± (ms)', '50');
  await set(page, 'Times (0 = no limit)', '5');
  await page.getByRole('button', { name: 'Run thermostat' }).click();
  // One schedule per message: its Run waits for Stop.
  await expect(page.getByRole('button', { name: 'Run thermostat' })).toBeDisabled();
  await page.getByRole('button', { name: 'Run on a schedule' }).click();
  // Beside the button: how many run, and where their progress is.
  await expect(page.locator('.template-mode')).toContainText('2 schedules running: progress and Stop under Saved messages → Schedules');
  const runs = page.getByRole('list', { name: 'Schedules' });
  await expect(runs.getByRole('listitem').filter({ hasText: 'telemetry' })).toContainText('sent 5, acknowledged 5, pending 0');
  await expect(runs.getByRole('listitem').filter({ hasText: 'telemetry' })).toContainText('(ended)');
  await expect(runs.getByRole('listitem').filter({ hasText: 'thermostat' })).toContainText(/sent [2-9]/);
  await shot(page, 'two-schedules');
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await expect(runs.getByRole('listitem').filter({ hasText: 'thermostat' })).toContainText('(ended)');
  await page.getByRole('button', { name: 'Clear ended schedules' }).click();
  await expect(runs).toHaveCount(0);
  const evs = await events(dev);
  const drafts = evs.filter((e) => 'n' in e.json);
  expect(drafts.map((e) => e.json.n)).toEqual([1, 2, 3, 4, 5]);
  for (const e of drafts) {
    expect(e.systemProperties).toMatchObject({ 'correlation-id': 'corr-1', 'user-id': 'user-x' });
    // (IoT Hub turns $.ctime into an application property)
    expect(e.applicationProperties['iothub-creation-time-utc']).toMatch(/^\d{4}-/);
  }
  const temps = evs.filter((e) => 'temperature' in e.json);
  expect(temps.length).toBeGreaterThanOrEqual(2);
  for (const e of temps) {
    expect(e.json.temperature).toBeGreaterThanOrEqual(15);
    expect(e.json.temperature).toBeLessThanOrEqual(30);
    expect(e.applicationProperties.sensor).toBe('thermostat');
    for (const name of ['correlation-id', 'user-id']) expect(e.systemProperties[name]).toBeUndefined();
    expect(e.applicationProperties['iothub-creation-time-utc']).toBeUndefined();
    // What describes the device's telemetry as a whole still applies: a generated message id.
    expect(e.systemProperties['message-id']).toMatch(/^[0-9a-f-]{36}$/);
  }
});

test('deleting a saved message stops its schedule', async ({ page }) => {
  const dev = await newDevice('e2e-tmpl-delete');
  await connect(page, dev.cs);
  await templateMode(page);
  await page.getByRole('button', { name: 'Run machine state' }).click();
  const runs = page.getByRole('list', { name: 'Schedules' });
  const machine = runs.getByRole('listitem').filter({ hasText: 'machine state' });
  await expect(machine).toContainText(/sent [1-9]/);
  await page.getByRole('button', { name: 'Delete machine state' }).click();
  await expect(machine).toContainText('(ended)');
  await expect(page.getByRole('list', { name: 'Saved messages' })).not.toContainText('machine state');
  // Nothing more is sent once it ended (one more publish may have been acknowledged meanwhile).
  const sent = Number(/sent (\d+)/.exec(await machine.innerText())[1]);
  await expect.poll(async () => (await events(dev)).length).toBe(sent);
  await page.getByRole('button', { name: 'Disconnect' }).click();
  expect((await events(dev)).length).toBe(sent);
});

test('a saved message and the template draft survive a reload', async ({ page }) => {
  await page.goto('/');
  await templateMode(page);
  await page.getByRole('textbox', { name: 'Template', exact: true }).fill('{"kept": $.Counter}');
  await page.getByRole('textbox', { name: 'Name', exact: true }).fill('my sensor');
  await page.getByRole('button', { name: 'Save current message' }).click();
  await expect(page.locator('.saved')).toContainText('saved "my sensor"');
  // The draft goes on being edited (half written: an unknown variable) and is not saved as a message.
  await page.getByRole('textbox', { name: 'Template', exact: true }).fill('{"kept": $.Counter, "t": $.Tmp}');
  await page.getByLabel('Header template (application properties)').fill('{"h": "mine"}');
  await page.reload();
  // Back in template mode with the draft as it was left.
  await expect(page.getByRole('radio', { name: 'Template' })).toBeChecked();
  await expect(page.getByRole('textbox', { name: 'Template', exact: true })).toHaveValue('{"kept": $.Counter, "t": $.Tmp}');
  await expect(page.getByLabel('Header template (application properties)')).toHaveValue('{"h": "mine"}');
  await expect(page.locator('.template-mode [role=alert]')).toContainText('unknown variable $.Tmp');
  const library = page.getByRole('list', { name: 'Saved messages' });
  await expect(library).toContainText('my sensor');
  await expect(library).toContainText('thermostat');
  await page.getByRole('button', { name: 'Edit my sensor' }).click();
  await expect(page.getByRole('textbox', { name: 'Template', exact: true })).toHaveValue('{"kept": $.Counter}');
});

test('an Iot-Telemetry-Simulator configuration in relaxed JSON imports, and a bad file changes nothing', async ({ page }) => {
  await page.goto('/');
  const input = page.getByLabel('Import (saved messages or an Iot-Telemetry-Simulator configuration)');
  const library = page.getByRole('list', { name: 'Saved messages' });
  await expect(library.getByRole('listitem')).toHaveCount(3);
  await input.setInputFiles({ name: 'broken.json', mimeType: 'application/json', buffer: Buffer.from('{Template: "$.Temprature", Variables: [{name: "Temperature", random: true}]}') });
  await expect(page.locator('.saved')).toContainText('not imported (nothing changed): not an Iot-Telemetry-Simulator configuration: Template: line 1, col 1: unknown variable $.Temprature; did you mean $.Temperature?');
  await expect(library.getByRole('listitem')).toHaveCount(3);
  const its = `{
    // relaxed JSON, as Iot-Telemetry-Simulator reads it
    Variables: [{name: "Temp", random: true, min: 23, max: 33}, {name: 'Status', values: ['ok', 'warm']},],
    Template: '{"temp": $.Temp, "status": "$.Status", "device": "$.DeviceId"}',
    Intervals: 2500,
  }`;
  await input.setInputFiles({ name: 'plant.json', mimeType: 'application/json', buffer: Buffer.from(its) });
  await expect(page.locator('.saved')).toContainText('imported an Iot-Telemetry-Simulator configuration as "plant"');
  await expect(library.getByRole('listitem')).toHaveCount(4);
  await expect(library).toContainText('every 2500 ms, until stopped');
  await expect(page.getByRole('textbox', { name: 'Template', exact: true })).toHaveValue('{"temp": $.Temp, "status": "$.Status", "device": "$.DeviceId"}');
  await expect(page.getByLabel('Temp: Min (inclusive)')).toHaveValue('23');
  await expect(page.getByLabel('Temp: Max (exclusive)')).toHaveValue('33');
  await expect(page.getByLabel('Status: Values (comma-separated)')).toHaveValue('ok, warm');
  await expect(page.getByLabel('Next body')).toContainText('"status": "');
  // Export: one JSON file with the whole library; each message alone is what `hubsim simulate --template` reads.
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export saved messages', exact: true }).click()]);
  const file = JSON.parse(require('fs').readFileSync(await download.path(), 'utf8'));
  expect(file.messages.map((m) => m.name)).toEqual(['thermostat', 'gps tracker', 'machine state', 'plant']);
  expect(file.messages[3].template).toBe('{"temp": $.Temp, "status": "$.Status", "device": "$.DeviceId"}');
  expect(file.messages[3].variables[0]).toEqual({ name: 'Temp', random: true, min: 23, max: 33 });
});
