// The official Azure IoT Node.js service SDK (azure-iothub), unmodified, against the hubsim emulator with only the
// connection string changed: the SDK dials https://{HostName} (port 443, the emulator's TLS WebSocket port, which
// serves the service API too) and trusts the emulator's CA through NODE_EXTRA_CA_CERTS.
//
// Registry create/get/list/update/delete, addDevices (bulk), getTwin, updateTwin with an ETag and the 412 of a
// stale one, createQuery on a tag, Client.invokeDeviceMethod on a device connected through the device SDK
// (azure-iot-device-mqtt), module identities and module twins, and the error an SDK user sees for a missing device.
// Run by `cargo xtask test` with HUBSIM_SERVICE_CS (the ready file's serviceConnectionString) and
// NODE_EXTRA_CA_CERTS set.
const { Registry, Client } = require('azure-iothub');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const CS = process.env.HUBSIM_SERVICE_CS;
if (!CS) throw new Error('HUBSIM_SERVICE_CS is not set');
const HOST = /HostName=([^;]+)/.exec(CS)[1];
const RUN = `svc-${process.pid}`;

// azure-iothub bundles its own copy of azure-iot-common's error classes, so errors are told apart by name.
function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

async function rejects(promise, what) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  throw new Error(`expected an error: ${what}`);
}

let passed = 0;
async function check(name, fn) {
  await fn();
  passed += 1;
  console.log(`  ok  ${name}`);
}

(async () => {
  const registry = Registry.fromConnectionString(CS);
  const id = `${RUN}-a`;

  await check('Registry.create generates keys; get returns the identity with an etag', async () => {
    const { responseBody: created } = await registry.create({ deviceId: id, status: 'enabled' });
    assert(created.deviceId === id, `created ${JSON.stringify(created)}`);
    assert(created.authentication.symmetricKey.primaryKey.length > 20, 'generated primary key');
    assert(created.authentication.type === 'sas', 'sas');
    const { responseBody: got } = await registry.get(id);
    assert(got.deviceId === id && got.etag && got.status === 'enabled', `get ${JSON.stringify(got)}`);
    assert(got.connectionState === 'Disconnected', 'connection state');
    assert(got.capabilities && got.capabilities.iotEdge === false, 'capabilities');
    const e = await rejects(registry.create({ deviceId: id }), 'creating twice');
    assert(e.constructor.name === 'DeviceAlreadyExistsError', `second create: ${e.constructor.name} ${e.message}`);
  });

  await check('Registry.update replaces status and reason (If-Match *)', async () => {
    const { responseBody: d } = await registry.get(id);
    d.status = 'disabled';
    d.statusReason = 'maintenance';
    const { responseBody: u } = await registry.update(d);
    assert(u.status === 'disabled' && u.statusReason === 'maintenance', `update ${JSON.stringify(u)}`);
    assert(u.etag !== d.etag, 'the etag changed');
    assert(u.authentication.symmetricKey.primaryKey === d.authentication.symmetricKey.primaryKey, 'keys kept');
    d.status = 'enabled';
    await registry.update(d);
  });

  await check('Registry.addDevices creates in bulk; list shows them', async () => {
    const bulk = [1, 2, 3].map((n) => ({ deviceId: `${RUN}-bulk-${n}` }));
    const { responseBody: r } = await registry.addDevices(bulk);
    assert(r.isSuccessful === true && r.errors.length === 0, `bulk ${JSON.stringify(r)}`);
    const { responseBody: list } = await registry.list();
    const ids = list.map((d) => d.deviceId);
    for (const b of bulk) assert(ids.includes(b.deviceId), `list has ${b.deviceId}`);
    assert(ids.includes(id), 'list has the first device');
    const e = await rejects(registry.addDevices([{ deviceId: `${RUN}-bulk-1` }]), 'bulk create of an existing id');
    assert(e.responseBody && e.responseBody.includes('DeviceAlreadyExists'), `bulk error ${e.responseBody}`);
  });

  await check('getTwin, updateTwin with the ETag, and 412 with the stale ETag', async () => {
    const { responseBody: twin } = await registry.getTwin(id);
    assert(twin.deviceId === id && twin.etag && twin.properties.desired.$version >= 1, `twin ${JSON.stringify(twin)}`);
    const patch = { tags: { location: { region: 'eu-west' }, run: RUN }, properties: { desired: { interval: 30 } } };
    const { responseBody: t2 } = await registry.updateTwin(id, patch, twin.etag);
    assert(t2.tags.location.region === 'eu-west' && t2.properties.desired.interval === 30, `updated ${JSON.stringify(t2)}`);
    assert(t2.etag !== twin.etag, 'the twin etag changed');
    const e = await rejects(registry.updateTwin(id, { tags: { x: 1 } }, twin.etag), 'stale etag');
    assert(e.constructor.name === 'InvalidEtagError', `stale etag: ${e.constructor.name} ${e.message}`);
    assert(e.response.statusCode === 412, `status ${e.response.statusCode}`);
    // The Twin object's own update uses its etag too.
    const { responseBody: t3 } = await registry.getTwin(id);
    const { result: t4 } = await t3.update({ properties: { desired: { mode: 'eco' } } });
    assert(t4.properties.desired.mode === 'eco' && t4.properties.desired.interval === 30, 'Twin.update merges');
  });

  await check('createQuery on a tag, paged', async () => {
    for (const n of [1, 2, 3]) {
      await registry.updateTwin(`${RUN}-bulk-${n}`, { tags: { run: RUN, group: n === 2 ? 'b' : 'a' } }, '*');
    }
    const q = registry.createQuery(`SELECT * FROM devices WHERE tags.run = '${RUN}' AND tags.group = 'a'`, 1);
    const found = [];
    while (q.hasMoreResults) {
      const { result } = await q.nextAsTwin();
      found.push(...result.map((t) => t.deviceId));
    }
    found.sort();
    assert(JSON.stringify(found) === JSON.stringify([`${RUN}-bulk-1`, `${RUN}-bulk-3`]), `query ${found}`);
    const count = registry.createQuery(`SELECT COUNT() AS n FROM devices WHERE tags.run = '${RUN}'`);
    const { result } = await count.next();
    assert(result[0].n === 4, `count ${JSON.stringify(result)}`);
    const e = await rejects(registry.createQuery('SELECT * FROM devices GROUP BY tags.run').next(), 'GROUP BY');
    assert(e.constructor.name === 'ArgumentError' && e.message.includes('GROUP'), `unsupported: ${e.message}`);
  });

  await check('Client.invokeDeviceMethod on a device connected with azure-iot-device-mqtt', async () => {
    const { responseBody: d } = await registry.get(id);
    const deviceCs = `HostName=${HOST};DeviceId=${id};SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`;
    const device = DeviceClient.fromConnectionString(deviceCs, Mqtt);
    await device.open();
    device.onDeviceMethod('reboot', (req, res) => res.send(200, { delay: req.payload.delay, ok: true }, () => {}));
    const client = Client.fromConnectionString(CS);
    // The method handler is registered once the SUBSCRIBE is acknowledged; retry until then.
    let result;
    for (let i = 0; i < 50 && !result; i++) {
      try {
        ({ result } = await client.invokeDeviceMethod(id, { methodName: 'reboot', payload: { delay: 5 }, responseTimeoutInSeconds: 10 }));
      } catch (e) {
        if (!(e.constructor.name === 'DeviceNotFoundError') && !String(e.responseBody).includes('DeviceNotOnline')) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assert(result && result.status === 200 && result.payload.ok === true && result.payload.delay === 5, `method ${JSON.stringify(result)}`);
    const { responseBody: live } = await registry.get(id);
    assert(live.connectionState === 'Connected', 'connected');
    await device.close();
  });

  await check('module identities and module twins (addModule, getModulesOnDevice, updateModuleTwin, removeModule)', async () => {
    const { responseBody: m } = await registry.addModule({ deviceId: id, moduleId: 'telemetry' });
    assert(m.moduleId === 'telemetry' && m.deviceId === id && m.authentication.symmetricKey.primaryKey, `module ${JSON.stringify(m)}`);
    const { responseBody: list } = await registry.getModulesOnDevice(id);
    assert(list.length === 1 && list[0].moduleId === 'telemetry', `modules ${JSON.stringify(list)}`);
    const { responseBody: twin } = await registry.getModuleTwin(id, 'telemetry');
    assert(twin.moduleId === 'telemetry' && twin.etag, `module twin ${JSON.stringify(twin)}`);
    const { responseBody: t2 } = await registry.updateModuleTwin(id, 'telemetry', { properties: { desired: { rate: 2 } } }, twin.etag);
    assert(t2.properties.desired.rate === 2, 'module desired');
    await registry.removeModule(id, 'telemetry');
    const e = await rejects(registry.getModule(id, 'telemetry'), 'removed module');
    assert(e.response.statusCode === 404 && String(e.responseBody).includes('ModuleNotFound'), `removed: ${e.responseBody}`);
  });

  await check('a missing device is DeviceNotFoundError with the service message', async () => {
    const e = await rejects(registry.get(`${RUN}-missing`), 'get missing');
    assert(e.constructor.name === 'DeviceNotFoundError', `missing: ${e.constructor.name} ${e.message}`);
    assert(e.message.includes(`${RUN}-missing`), `message: ${e.message}`);
    const e2 = await rejects(registry.getTwin(`${RUN}-missing`), 'twin of missing');
    assert(e2.constructor.name === 'DeviceNotFoundError', `missing twin: ${e2.constructor.name}`);
  });

  await check('Registry.delete (If-Match *) and removeDevices', async () => {
    await registry.delete(id);
    const e = await rejects(registry.get(id), 'get deleted');
    assert(e.constructor.name === 'DeviceNotFoundError', 'deleted');
    const { responseBody: r } = await registry.removeDevices([1, 2, 3].map((n) => ({ deviceId: `${RUN}-bulk-${n}` })), true);
    assert(r.isSuccessful === true, `remove ${JSON.stringify(r)}`);
  });

  console.log(`node service SDK (azure-iothub): ${passed} passed, 0 failed`);
  process.exit(0);
})().catch((e) => {
  console.error(`node service SDK check FAILED: ${e && e.stack ? e.stack : e}${e && e.responseBody ? `\nbody: ${e.responseBody}` : ''}`);
  process.exit(1);
});
