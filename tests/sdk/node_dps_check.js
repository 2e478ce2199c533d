// The official Azure IoT Node.js provisioning client against hubsim's local DPS, unmodified:
// azure-iot-provisioning-device with azure-iot-provisioning-device-mqtt (`Mqtt` on 8883 and `MqttWs` on 443) and
// azure-iot-security-symmetric-key. For each transport it registers through an individual enrollment and through
// an enrollment group (key derived as in the SDK's sample), then connects to the assigned hub with the result and
// sends a message that must appear in the emulator's event store under the assigned device.
// Run by `cargo xtask test` with HUBSIM_HTTP (service API), HUBSIM_TOKEN (its credential) and
// NODE_EXTRA_CA_CERTS=HUBSIM_CA: the provisioning transports take no `ca` option, so Node's own setting is used.
// The provisioning host is the emulator's host name (read from /hubsim-emulator.json, with the ID scope).
const crypto = require('crypto');
const { Client, Message } = require('azure-iot-device');
const HubMqtt = require('azure-iot-device-mqtt');
const { Mqtt, MqttWs } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');


const { HTTP, api, until, assert } = require('./check_common');

// As in the SDK's sample register_symkeygroup.js.
function computeDerivedSymmetricKey(masterKey, regId) {
  return crypto.createHmac('SHA256', Buffer.from(masterKey, 'base64')).update(regId, 'utf8').digest('base64');
}

async function provisionAndSend(host, scope, registrationId, key, Transport, HubTransport, name) {
  const security = new SymmetricKeySecurityClient(registrationId, key);
  const client = ProvisioningDeviceClient.create(host, scope, new Transport(), security);
  client.setProvisioningPayload({ modelId: 'dtmi:hubsim:check;1' });
  const result = await client.register();
  assert(result.assignedHub === host, `assigned hub ${result.assignedHub}`);
  assert(result.deviceId === registrationId, `device id ${result.deviceId}`);
  const state = await api('GET', `/registrations/${registrationId}`);
  assert(state.status === 'assigned', `registration state ${JSON.stringify(state)}`);
  assert(state.requestPayload && state.requestPayload.modelId === 'dtmi:hubsim:check;1', 'the payload reached DPS');

  const cs = `HostName=${result.assignedHub};DeviceId=${result.deviceId};SharedAccessKey=${key}`;
  const hub = Client.fromConnectionString(cs, HubTransport);
  await hub.open();
  const before = (await api('GET', `/events?device=${registrationId}&limit=1000`)).length;
  await hub.sendEvent(new Message(JSON.stringify({ via: name })));
  const events = await until('the telemetry', async () => {
    const e = await api('GET', `/events?device=${registrationId}&limit=1000`);
    return e.length > before ? e : null;
  });
  assert(JSON.parse(events[events.length - 1].body).via === name, 'body');
  await hub.close();
  console.log(`node ${name}: ${registrationId} provisioned to ${result.assignedHub} (${result.substatus}), telemetry stored`);
}

async function main() {
  const info = await (await fetch(`${HTTP}/hubsim-emulator.json`)).json();
  const host = info.hostName;
  const scope = info.idScope;
  assert(scope && scope.startsWith('0ne'), `ID scope ${scope}`);
  const suffix = Date.now().toString(36);
  const group = await api('PUT', `/enrollmentGroups/node-group-${suffix}`, { enrollmentGroupId: `node-group-${suffix}`, attestation: { type: 'symmetricKey' } });
  for (const [name, Transport, HubTransport] of [['mqtt', Mqtt, HubMqtt.Mqtt], ['ws', MqttWs, HubMqtt.MqttWs]]) {
    const regId = `node-ind-${name}-${suffix}`;
    const e = await api('PUT', `/enrollments/${regId}`, { registrationId: regId, attestation: { type: 'symmetricKey' } });
    await provisionAndSend(host, scope, regId, e.attestation.symmetricKey.primaryKey, Transport, HubTransport, `${name} individual`);
    const member = `node-grp-${name}-${suffix}`;
    const derived = computeDerivedSymmetricKey(group.attestation.symmetricKey.primaryKey, member);
    await provisionAndSend(host, scope, member, derived, Transport, HubTransport, `${name} group`);
  }

  // A wrong key is refused.
  const bad = new SymmetricKeySecurityClient(`node-ind-mqtt-${suffix}`, computeDerivedSymmetricKey(group.attestation.symmetricKey.primaryKey, 'x'));
  let refused = null;
  try {
    await ProvisioningDeviceClient.create(host, scope, new Mqtt(), bad).register();
  } catch (err) {
    refused = err;
  }
  assert(refused, 'a wrong key was accepted');
  console.log(`node: a wrong key is refused (${refused.name || refused.message})`);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
