// Provisioning through the emulator's own DPS from the app, served by the emulator (same-origin WebSocket): an
// enrollment group made through the service API, the device key derived in the page, each step shown, then the
// assigned hub with telemetry in the event stream under the derived device; a wrong group key in words; and a
// remembered assignment (never the key) that goes straight to the hub after a reload.
const { test, expect } = require('@playwright/test');
const { api, axeClean, shot, HTTP } = require('./helpers');

// axe-core is injected as a script, which the page's Content-Security-Policy would block.
test.use({ bypassCSP: true });

/** A fresh enrollment group and a registration id of it. */
async function group(prefix) {
  const suffix = `${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
  const id = `${prefix}-group-${suffix}`;
  const g = await api('PUT', `/enrollmentGroups/${id}`, { enrollmentGroupId: id, attestation: { type: 'symmetricKey' } });
  return { id, key: g.attestation.symmetricKey.primaryKey, registrationId: `${prefix}-${suffix}` };
}

async function emulatorInfo() {
  return (await fetch(`${HTTP}/hubsim-emulator.json`)).json();
}

/** Opens the app in DPS mode pointed at the emulator's DPS, with `registrationId` and a group key. */
async function fillDps(page, registrationId, key) {
  await page.goto('/');
  await expect(page.getByText('served by the hubsim emulator')).toBeVisible();
  await page.getByRole('radio', { name: 'Through the Device Provisioning Service (ID scope, registration ID, key)' }).check();
  await page.getByRole('button', { name: /^Use this emulator's DPS/ }).click();
  await page.getByLabel('Registration ID', { exact: true }).fill(registrationId);
  await page.getByLabel(/^The key is an enrollment group key/).check();
  await page.getByLabel('Enrollment group key', { exact: true }).fill(key);
}

test('provisions through an enrollment group, lands on the assigned hub and sends telemetry', async ({ page }) => {
  const info = await emulatorInfo();
  const g = await group('web-dps');
  await fillDps(page, g.registrationId, g.key);
  await expect(page.getByLabel('ID scope', { exact: true })).toHaveValue(info.idScope);
  await expect(page.getByText('A group key unlocks every device of the group')).toBeVisible();
  await axeClean(page, 'the DPS form is filled');
  await page.getByRole('button', { name: 'Provision and connect' }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
  // Every step, in order, in the activity log; the list keeps one line per step.
  const log = page.getByLabel('Activity log');
  for (const step of ['DPS: connecting to DPS (', 'DPS: registering', 'DPS: assigning (asking again in 1 s)',
    `DPS: assigned to ${info.hostName} as ${g.registrationId}`]) {
    await expect(log).toContainText(step);
  }
  const steps = page.getByRole('list', { name: 'Provisioning steps' }).getByRole('listitem');
  await expect(steps).toHaveText([/^connecting to DPS \(/, 'registering', 'assigning (asking again in 1 s)',
    `assigned to ${info.hostName} as ${g.registrationId}`]);
  await expect(page.getByText(`Assigned to ${info.hostName} as ${g.registrationId}: Connect goes straight to this hub.`)).toBeVisible();
  await axeClean(page, 'provisioned and connected');
  // DPS created the device with the group's derived key; the app connected with that key and sends as it.
  const state = await api('GET', `/registrations/${g.registrationId}`);
  expect(state.status).toBe('assigned');
  expect(state.deviceId).toBe(g.registrationId);
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(page.locator('.counters')).toContainText('acknowledged 1');
  const events = await api('GET', `/events?device=${encodeURIComponent(g.registrationId)}`);
  expect(events.length).toBe(1);
  expect(JSON.parse(events[0].body)).toEqual({ temperature: 21.5, humidity: 60 });
  await shot(page, 'dps-assigned');
});

test('a wrong group key shows what DPS said, in words', async ({ page }) => {
  const g = await group('web-dps-bad');
  // A valid key, but not this group's.
  await fillDps(page, g.registrationId, Buffer.from('not the group key of this enrollment').toString('base64'));
  await page.getByRole('button', { name: 'Provision and connect' }).click();
  await expect(page.getByRole('status')).toContainText(/Disconnected — DPS (refused the connection|answered 401)/);
  await expect(page.getByRole('alert').filter({ hasText: 'Check the ID scope, the registration ID and the key' })).toBeVisible();
  const steps = page.getByRole('list', { name: 'Provisioning steps' });
  await expect(steps.locator('li.failed')).toHaveText(/DPS (refused the connection|answered 401)/);
  await expect(page.getByRole('button', { name: 'Provision and connect' })).toBeVisible();
  await shot(page, 'dps-wrong-key');
  // A key the page refuses itself is not sent, and DPS's earlier answer no longer reads as this attempt's.
  await page.getByLabel('Enrollment group key', { exact: true }).fill('notbase64!');
  await page.getByRole('button', { name: 'Provision and connect' }).click();
  await expect(page.getByRole('alert').filter({ hasText: 'base64' })).toBeVisible();
  await expect(page.getByRole('status')).toHaveText(/^\s*Disconnected\s*$/);
});

test('a remembered assignment, never the key, goes straight to the hub after a reload', async ({ page }) => {
  const info = await emulatorInfo();
  const g = await group('web-dps-keep');
  await fillDps(page, g.registrationId, g.key);
  await page.getByRole('button', { name: 'Provision and connect' }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
  await page.getByLabel('Remember the assignment on this device (hub and device ID, never the key)').check();
  const stored = await page.evaluate(() => localStorage.getItem('hubsim.settings'));
  expect(stored).toContain(`ahub=${info.hostName}`);
  expect(stored).not.toContain(encodeURIComponent(g.key));
  expect(stored).not.toContain(g.key);
  const before = await api('GET', `/registrations/${g.registrationId}`);

  await page.reload();
  await expect(page.getByText(`Assigned to ${info.hostName} as ${g.registrationId}: Connect goes straight to this hub.`)).toBeVisible();
  // The key was not stored: typed again, it is the group key, and the device key is derived from it.
  await expect(page.getByLabel('Enrollment group key', { exact: true })).toHaveValue('');
  await page.getByLabel('Enrollment group key', { exact: true }).fill(g.key);
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
  await expect(page.getByLabel('Activity log')).not.toContainText('DPS:');
  const after = await api('GET', `/registrations/${g.registrationId}`);
  expect(after.lastUpdatedDateTimeUtc).toBe(before.lastUpdatedDateTimeUtc);

  // Forgetting it provisions again on the next Connect.
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await page.getByRole('button', { name: 'Forget the assignment (provision again)' }).click();
  await page.getByRole('button', { name: 'Provision and connect' }).click();
  await expect(page.getByRole('status')).toContainText('Connected');
  await expect(page.getByLabel('Activity log')).toContainText(`DPS: assigned to ${info.hostName} as ${g.registrationId}`);
});
