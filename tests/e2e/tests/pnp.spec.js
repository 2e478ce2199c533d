// IoT Plug and Play in the browser: the app becomes the device a DTDL model describes, against the real emulator.
const { test, expect } = require('@playwright/test');
const path = require('path');
const { api, newDevice, subscribed, counterAtLeast, axeClean, shot } = require('./helpers');

// axe-core is injected as a script, which the page's Content-Security-Policy would block.
test.use({ bypassCSP: true });

const MODEL = 'dtmi:hubsim:example:TemperatureController;1';

/** Connects with the page as it is (a model loaded): the helper's `connect` would reload the page. */
async function connectHere(page, cs) {
  await page.getByLabel('Connection string').fill(cs);
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
  await subscribed(page);
}

/** Waits until the twin's reported section satisfies `check` (the ack is written after the page sent it). */
async function reported(id, check) {
  await expect.poll(async () => check((await api('GET', `/twins/${id}`)).properties.reported), { timeout: 15_000 }).toBe(true);
  return (await api('GET', `/twins/${id}`)).properties.reported;
}

test('a device from the built-in model with components: telemetry, acks, commands', async ({ page }) => {
  test.setTimeout(90_000);
  const dev = await newDevice('e2e-pnp');
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();

  // A malformed model is refused with the element and the reason.
  await page.getByText('…or paste a DTDL interface').click();
  await page.getByLabel('Model JSON').fill(
    '{"@context": "dtmi:dtdl:context;2", "@id": "dtmi:x:y;1", "@type": "Interface", "contents": [{"@type": "Telemetry", "name": "t", "schema": "doubel"}]}');
  await page.getByRole('button', { name: 'Load pasted model' }).click();
  await expect(page.getByRole('alert').filter({ hasText: 'The model was not loaded' })).toContainText('contents[0]');
  await expect(page.getByRole('alert').filter({ hasText: 'The model was not loaded' })).toContainText('doubel');

  await page.getByLabel('Built-in model').selectOption('temperature-controller');
  await page.getByRole('button', { name: 'Load built-in model' }).click();
  const panel = page.getByRole('region', { name: 'Plug and Play model' });
  await expect(panel.getByRole('region', { name: 'thermostat1 — Living room' })).toBeVisible();
  await expect(page.getByLabel('Model ID (IoT Plug and Play)')).toHaveValue(MODEL);
  await page.getByText('…or paste a DTDL interface').click();

  // The answers chosen before connecting: thermostat2 rejects, the report command answers 31.5.
  await page.getByLabel('Answer to thermostat2 targetTemperature').selectOption('reject (400)');
  await page.getByLabel('Reason to reject thermostat2 targetTemperature').fill('too warm for the bedroom');
  await page.getByLabel('maxTemp of thermostat1*getMaxMinReport').fill('31.5');
  await page.getByLabel('value of serialNumber').fill('SN-0042');
  await page.getByLabel('value of deviceInformation manufacturer').fill('Contoso');

  await connectHere(page, dev.cs);
  expect((await api('GET', `/twins/${dev.id}`)).modelId).toBe(MODEL);
  // Read-only properties are reported on connect, a component's inside its wrapper.
  const first = await reported(dev.id, (r) => r.serialNumber === 'SN-0042' && r.deviceInformation !== undefined);
  expect(first.deviceInformation).toMatchObject({ __t: 'c', manufacturer: 'Contoso' });

  // Telemetry: one message per interface, a component's with $.sub, which the hub shows as dt-subject.
  await page.getByLabel('Telemetry every (ms)').fill('300');
  await page.getByLabel('Telemetry every (ms)').blur();
  await page.getByRole('button', { name: 'Start telemetry' }).click();
  await expect(page.getByLabel('thermostat1 temperature live value')).toContainText('°C');
  await expect(page.getByLabel('thermostat2 temperature live value')).toContainText('°C');
  await counterAtLeast(page, 'acknowledged', 6);
  await page.getByRole('button', { name: 'Stop telemetry' }).click();
  const events = await api('GET', `/events?device=${dev.id}&limit=100`);
  const subjects = new Set(events.map((e) => e.systemProperties['dt-subject']));
  expect(subjects).toEqual(new Set([undefined, 'thermostat1', 'thermostat2']));
  for (const e of events) expect(e.systemProperties['dt-dataschema']).toBe(MODEL);
  const t1 = events.find((e) => e.systemProperties['dt-subject'] === 'thermostat1');
  expect(Object.keys(JSON.parse(t1.body))).toEqual(['temperature']);
  expect(JSON.parse(t1.body).temperature).toBeGreaterThanOrEqual(15);
  // The page's charts offer each component's numbers under its own path.
  const seen = page.getByRole('region', { name: 'Charts' }).getByRole('group', { name: 'Numeric paths seen' });
  await expect(seen.getByRole('button', { name: 'Chart thermostat1.temperature' })).toBeVisible();
  await expect(seen.getByRole('button', { name: 'Chart thermostat2.temperature' })).toBeVisible();

  // A writable property changed through the service API (as `hubsim twin set-desired` does): acked by choice.
  const twin = await api('PATCH', `/twins/${dev.id}`,
    { properties: { desired: { thermostat1: { targetTemperature: 25 }, thermostat2: { targetTemperature: 30 } } } });
  const version = twin.properties.desired.$version;
  const acked = await reported(dev.id, (r) => r.thermostat2?.targetTemperature?.av === version);
  expect(acked.thermostat1.targetTemperature).toEqual({ value: 25, ac: 200, av: version, ad: 'accepted' });
  expect(acked.thermostat2.targetTemperature).toEqual({ value: 30, ac: 400, av: version, ad: 'too warm for the bedroom' });
  await expect(page.getByLabel('Twin state of thermostat1 targetTemperature')).toContainText(`200 accepted (version ${version})`);
  await expect(page.getByLabel('Twin state of thermostat1 targetTemperature')).toContainText('desired: 25');

  // A component command (as `hubsim method invoke` does): answered from the form; a wrong request gets 400.
  const r = await api('POST', `/twins/${dev.id}/methods`,
    { methodName: 'thermostat1*getMaxMinReport', payload: '2026-01-01T00:00:00Z', responseTimeoutInSeconds: 10 });
  expect(r.status).toBe(200);
  expect(r.payload.maxTemp).toBe(31.5);
  expect(Object.keys(r.payload).sort()).toEqual(['avgTemp', 'endTime', 'maxTemp', 'minTemp', 'startTime']);
  await expect(page.getByLabel('Last call of thermostat1*getMaxMinReport')).toContainText('→ 200');
  const wrong = await api('POST', `/twins/${dev.id}/methods`,
    { methodName: 'thermostat1*getMaxMinReport', payload: 42, responseTimeoutInSeconds: 10 });
  expect(wrong.status).toBe(400);
  expect(wrong.payload.error).toContain('since: expected a dateTime');
  await expect(page.getByLabel('Last call of thermostat1*getMaxMinReport')).toContainText('→ 400');

  await axeClean(page, 'a model is loaded and connected');
  await panel.screenshot({ path: path.join(__dirname, '..', '..', '..', 'docs', 'pnp.png') });
  await shot(page, 'pnp');
});

test('a desired value set while offline is acknowledged on the next connection', async ({ page }) => {
  const dev = await newDevice('e2e-pnp-offline');
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  await page.getByLabel('Built-in model').selectOption('thermostat');
  await page.getByRole('button', { name: 'Load built-in model' }).click();
  await page.getByLabel('Answer to targetTemperature').selectOption('leave pending (202)');
  await connectHere(page, dev.cs);
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'Disconnected' })).toBeVisible();
  const twin = await api('PATCH', `/twins/${dev.id}`, { properties: { desired: { targetTemperature: 23.5 } } });
  const version = twin.properties.desired.$version;
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
  const r = await reported(dev.id, (x) => x.targetTemperature?.av === version);
  expect(r.targetTemperature).toEqual({ value: 23.5, ac: 202, av: version, ad: 'pending' });
  // The pending value is answered later from the panel, with the same version.
  await page.getByRole('button', { name: 'Accept now' }).click();
  const done = await reported(dev.id, (x) => x.targetTemperature?.ac === 200);
  expect(done.targetTemperature).toEqual({ value: 23.5, ac: 200, av: version, ad: 'accepted' });
  // The twin panel shows the acknowledgement and the version the hub gave it, without a Get twin.
  const shown = page.getByRole('region', { name: 'Device twin' }).getByRole('group', { name: 'Reported properties' });
  await expect(shown).toContainText('"ac": 200');
  await expect(shown).toContainText(`"$version": ${(await api('GET', `/twins/${dev.id}`)).properties.reported.$version}`);
});

test('telemetry started before connecting keeps running and is sent once connected', async ({ page }) => {
  const dev = await newDevice('e2e-pnp-early');
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  await page.getByLabel('Built-in model').selectOption('thermostat');
  await page.getByRole('button', { name: 'Load built-in model' }).click();
  await page.getByLabel('Telemetry every (ms)').fill('300');
  await page.getByLabel('Telemetry every (ms)').blur();
  await page.getByRole('button', { name: 'Start telemetry' }).click();
  // Still running after the renders that follow (it used to be stopped at once while disconnected).
  await expect(page.getByRole('button', { name: 'Stop telemetry' })).toBeVisible();
  await connectHere(page, dev.cs);
  await expect(page.getByRole('button', { name: 'Stop telemetry' })).toBeVisible();
  await expect.poll(async () => (await api('GET', `/events?device=${dev.id}&limit=10`)).length, { timeout: 15_000 })
    .toBeGreaterThanOrEqual(2);
  await page.getByRole('button', { name: 'Stop telemetry' }).click();
});

test('a model file loads: the public Thermostat sample', async ({ page }) => {
  await page.goto('/');
  await page.getByLabel('Model file').setInputFiles(
    path.join(__dirname, '..', '..', '..', 'crates', 'hubsim-dtdl', 'tests', 'data', 'thermostat-1.json'));
  await expect(page.getByLabel('Model ID (IoT Plug and Play)')).toHaveValue('dtmi:com:example:Thermostat;1');
  const panel = page.getByRole('region', { name: 'Plug and Play model' });
  await expect(panel.getByRole('region', { name: 'Default component' })).toContainText('getMaxMinReport');
  await expect(panel.getByLabel('Twin state of targetTemperature')).toContainText('desired: none');
});
