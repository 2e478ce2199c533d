"""The official Azure IoT Python device SDK against the hubsim emulator, unmodified.

For each transport (MQTT over TLS on 8883, MQTT over WebSocket on 443) it connects with a device connection string
and `server_verification_cert`, sends telemetry with properties (checked in the emulator's event store), receives
a C2D message with properties, answers a direct method, and reads and patches the twin.

Run by `cargo xtask test` with HUBSIM_HTTP (service API), HUBSIM_TOKEN (its credential), HUBSIM_CA (CA certificate) and HUBSIM_DEVICE set.
"""
import json
import os
import sys
import threading
import time
import urllib.request

from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse

from check_common import HTTP, TIMEOUT, api, wait_for

CA = open(os.environ["HUBSIM_CA"]).read()
DEVICE = os.environ["HUBSIM_DEVICE"]


def check(transport_name, websockets):
    device = api("GET", "/devices/" + DEVICE)
    cs = device["connectionString"]
    client = IoTHubDeviceClient.create_from_connection_string(cs, websockets=websockets, server_verification_cert=CA)
    received = []
    got_c2d = threading.Event()

    def on_message(msg):
        received.append(msg)
        got_c2d.set()

    def on_method(req):
        payload = {"echo": req.payload, "transport": transport_name}
        client.send_method_response(MethodResponse.create_from_method_request(req, 200, payload))

    client.on_message_received = on_message
    client.on_method_request_received = on_method
    client.connect()

    # Telemetry with application and system properties.
    before = len(api("GET", "/events?device=%s&limit=1000" % DEVICE))
    msg = Message(json.dumps({"temperature": 21.5, "via": transport_name}))
    msg.message_id = "py-" + transport_name
    msg.content_type = "application/json"
    msg.content_encoding = "utf-8"
    msg.custom_properties["alert"] = "high temp"
    msg.custom_properties["unit"] = "°C/s"
    client.send_message(msg)
    events = wait_for("the telemetry in the event store",
                      lambda: (lambda e: e if len(e) > before else None)(api("GET", "/events?device=%s&limit=1000" % DEVICE)))
    ev = events[-1]
    assert json.loads(ev["body"])["via"] == transport_name, ev
    assert ev["systemProperties"]["message-id"] == "py-" + transport_name, ev
    assert ev["systemProperties"]["content-type"] == "application/json", ev
    assert ev["applicationProperties"]["alert"] == "high temp", ev
    assert ev["applicationProperties"]["unit"] == "°C/s", ev

    # C2D with properties.
    api("POST", "/devices/%s/messages/devicebound" % DEVICE, {
        "body": "hello " + transport_name, "messageId": "c2d-" + transport_name, "correlationId": "corr-1",
        "contentType": "text/plain", "contentEncoding": "utf-8", "ack": "full",
        "properties": {"color": "deep&blue", "count": "3"}})
    assert got_c2d.wait(TIMEOUT), "no C2D message"
    m = received[-1]
    assert m.data.decode() == "hello " + transport_name, m.data
    assert m.message_id == "c2d-" + transport_name, m.message_id
    assert m.correlation_id == "corr-1", m.correlation_id
    assert m.content_type == "text/plain", m.content_type
    assert m.custom_properties.get("color") == "deep&blue", m.custom_properties
    assert m.custom_properties.get("count") == "3", m.custom_properties

    # Direct method.
    r = api("POST", "/twins/%s/methods" % DEVICE, {"methodName": "ping", "payload": {"n": 1}, "responseTimeoutInSeconds": 10})
    assert r["status"] == 200 and r["payload"] == {"echo": {"n": 1}, "transport": transport_name}, r

    # Twin.
    api("PATCH", "/twins/" + DEVICE, {"properties": {"desired": {"interval": 7}}})
    twin = client.get_twin()
    assert twin["desired"]["interval"] == 7, twin
    client.patch_twin_reported_properties({"lastTransport": transport_name})
    t = api("GET", "/twins/" + DEVICE)
    assert t["properties"]["reported"]["lastTransport"] == transport_name, t

    client.shutdown()
    print("python SDK over %s: telemetry, C2D, method and twin OK" % transport_name)


def main():
    check("mqtt", websockets=False)
    check("websockets", websockets=True)
    print("2 passed, 0 failed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure as one line and a non-zero exit
        print("python SDK check FAILED: %r" % (e,), file=sys.stderr)
        sys.exit(1)
