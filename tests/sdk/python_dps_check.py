"""The official Azure IoT Python provisioning client against hubsim's local DPS, unmodified.

For MQTT over TLS (8883) and MQTT over WebSocket (443, `websockets=True`), `ProvisioningDeviceClient` registers
with a symmetric key through an individual enrollment and through an enrollment group (device key derived as in
the SDK's sample), then `IoTHubDeviceClient` connects to the assigned hub with the result and sends a message that
must appear in the emulator's event store under the assigned device. A wrong key must be refused.

Run by `cargo xtask test` with HUBSIM_HTTP (service API), HUBSIM_TOKEN (its credential) and HUBSIM_CA (CA
certificate) set. The provisioning host (the emulator's host name) and the ID scope come from
/hubsim-emulator.json.
"""
import base64
import hashlib
import hmac
import json
import os
import time
import urllib.request

from azure.iot.device import IoTHubDeviceClient, Message, ProvisioningDeviceClient

from check_common import HTTP, TIMEOUT, api, wait_for

CA = open(os.environ["HUBSIM_CA"]).read()


def derive_device_key(group_key, registration_id):
    """As in the SDK's sample provision_symmetric_key_group.py."""
    mac = hmac.HMAC(base64.b64decode(group_key), registration_id.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("utf-8")


def provision_and_send(host, scope, registration_id, key, websockets, name):
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=host,
        registration_id=registration_id,
        id_scope=scope,
        symmetric_key=key,
        websockets=websockets,
        server_verification_cert=CA,
    )
    client.provisioning_payload = {"modelId": "dtmi:hubsim:check;1"}
    result = client.register()
    assert result.status == "assigned", result
    state = result.registration_state
    assert state.assigned_hub == host, state
    assert state.device_id == registration_id, state
    stored = api("GET", "/registrations/" + registration_id)
    assert stored["status"] == "assigned", stored
    assert stored["requestPayload"]["modelId"] == "dtmi:hubsim:check;1", stored

    hub = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key,
        hostname=state.assigned_hub,
        device_id=state.device_id,
        websockets=websockets,
        server_verification_cert=CA,
    )
    hub.connect()
    path = "/events?device=%s&limit=1000" % registration_id
    before = len(api("GET", path))
    hub.send_message(Message(json.dumps({"via": name})))
    events = wait_for("the telemetry", lambda: (lambda e: e if len(e) > before else None)(api("GET", path)))
    assert json.loads(events[-1]["body"])["via"] == name, events[-1]
    hub.shutdown()
    print("python %s: %s provisioned to %s (%s), telemetry stored" % (name, registration_id, state.assigned_hub, state.sub_status))


def main():
    with urllib.request.urlopen(HTTP + "/hubsim-emulator.json", timeout=TIMEOUT) as r:
        info = json.loads(r.read().decode())
    host, scope = info["hostName"], info["idScope"]
    assert scope.startswith("0ne"), scope
    suffix = "%x" % int(time.time() * 1000)
    group_id = "py-group-" + suffix
    group = api("PUT", "/enrollmentGroups/" + group_id, {"enrollmentGroupId": group_id, "attestation": {"type": "symmetricKey"}})
    group_key = group["attestation"]["symmetricKey"]["primaryKey"]
    for name, websockets in (("mqtt", False), ("ws", True)):
        reg = "py-ind-%s-%s" % (name, suffix)
        e = api("PUT", "/enrollments/" + reg, {"registrationId": reg, "attestation": {"type": "symmetricKey"}})
        provision_and_send(host, scope, reg, e["attestation"]["symmetricKey"]["primaryKey"], websockets, name + " individual")
        member = "py-grp-%s-%s" % (name, suffix)
        provision_and_send(host, scope, member, derive_device_key(group_key, member), websockets, name + " group")

    # A wrong key is refused.
    bad = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=host,
        registration_id="py-ind-mqtt-" + suffix,
        id_scope=scope,
        symmetric_key=derive_device_key(group_key, "x"),
        server_verification_cert=CA,
    )
    try:
        bad.register()
    except Exception as err:  # the SDK raises its own error types for a refused CONNECT
        print("python: a wrong key is refused (%s)" % type(err).__name__)
    else:
        raise AssertionError("a wrong key was accepted")


if __name__ == "__main__":
    main()
