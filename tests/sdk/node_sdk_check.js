// The official Azure IoT Node.js device SDK against the hubsim emulator, unmodified.
// For MQTT over TLS (8883) and MQTT over WebSocket (443): connect with a device connection string and the
// emulator's CA, send telemetry with properties (checked in the emulator's event store), receive a C2D message
// with properties, answer a direct method, read the twin and patch reported properties.
// Run by `cargo xtask test` with HUBSIM_HTTP, HUBSIM_CA and HUBSIM_DEVICE set, and NODE_EXTRA_CA_CERTS=HUBSIM_CA:
// the SDK's MQTT-over-WebSocket transport does not hand its `ca` option to TLS (the TLS transport does).
const fs = require('fs');
const { Client, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');

const CA = fs.readFileSync(process.env.HUBSIM_CA, 'utf8');
const DEVICE = process.env.HUBSIM_DEVICE;

const { api, until, assert } = require('./check_common');

async function check(name, Protocol) {
  const device = await api('GET', `/devices/${DEVICE}`);
  const client = Client.fromConnectionString(device.connectionString, Protocol);
  client.setOptions({ ca: CA });
  const c2d = [];
  client.on('message', (m) => { c2d.push(m); client.complete(m, () => {}); });
  await client.open();
  client.onDeviceMethod('ping', (req, res) => res.send(200, { echo: req.payload, transport: name }, () => {}));

  const before = (await api('GET', `/events?device=${DEVICE}&limit=1000`)).length;
  const msg = new Message(JSON.stringify({ temperature: 22.5, via: name }));
  msg.messageId = `node-${name}`;
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  msg.properties.add('alert', 'high temp');
  await client.sendEvent(msg);
  const events = await until('the telemetry', async () => {
    const e = await api('GET', `/events?device=${DEVICE}&limit=1000`);
    return e.length > before ? e : null;
  });
  const ev = events[events.length - 1];
  assert(JSON.parse(ev.body).via === name, 'body');
  assert(ev.systemProperties['message-id'] === `node-${name}`, 'message id');
  assert(ev.systemProperties['content-type'] === 'application/json', 'content type');
  assert(ev.applicationProperties.alert === 'high temp', 'application property');

  await api('POST', `/devices/${DEVICE}/messages/devicebound`, {
    body: `hello ${name}`, messageId: `c2d-node-${name}`, correlationId: 'corr-n', ack: 'full',
    properties: { color: 'deep&blue' },
  });
  const m = await until('the C2D message', async () => c2d.find((x) => x.messageId === `c2d-node-${name}`));
  assert(m.data.toString() === `hello ${name}`, 'C2D body');
  assert(m.correlationId === 'corr-n', 'C2D correlation id');
  assert(m.properties.getValue('color') === 'deep&blue', 'C2D property');

  const r = await until('the method answer', async () => {
    try {
      return await api('POST', `/twins/${DEVICE}/methods`, { methodName: 'ping', payload: { n: 2 }, responseTimeoutInSeconds: 10 });
    } catch (e) {
      if (String(e).includes('404103')) return null;
      throw e;
    }
  });
  assert(r.status === 200 && r.payload.echo.n === 2 && r.payload.transport === name, `method ${JSON.stringify(r)}`);

  await api('PATCH', `/twins/${DEVICE}`, { properties: { desired: { interval: 9 } } });
  const twin = await client.getTwin();
  assert(twin.properties.desired.interval === 9, 'desired');
  await new Promise((res, rej) => twin.properties.reported.update({ lastNodeTransport: name }, (e) => (e ? rej(e) : res())));
  const t = await api('GET', `/twins/${DEVICE}`);
  assert(t.properties.reported.lastNodeTransport === name, 'reported');

  await client.close();
  console.log(`node SDK over ${name}: telemetry, C2D, method and twin OK`);
}

(async () => {
  await check('mqtt', Mqtt);
  await check('mqtt-ws', MqttWs);
  console.log('2 passed, 0 failed');
  process.exit(0);
})().catch((e) => {
  console.error(`node SDK check FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
