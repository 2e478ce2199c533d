"""The official Azure IoT Python service SDK (azure-iot-hub), unmodified, against the hubsim emulator with only the
connection string changed: `IoTHubRegistryManager` dials https://{HostName} (port 443) and trusts the emulator's CA
through REQUESTS_CA_BUNDLE.

Registry calls (create with SAS, get, update with ETag, list, bulk create, statistics, delete), twin calls (get,
update with the ETag and the 412 of a stale one, replace, query), `invoke_device_method` on a device connected
through the device SDK (azure-iot-device), and the error for a missing device. `send_c2d_message` needs AMQP
(uamqp), which hubsim does not serve yet, so it is not called.

Run by `cargo xtask test` with HUBSIM_SERVICE_CS (the ready file's serviceConnectionString) and REQUESTS_CA_BUNDLE.
"""
import os
import sys
import time

from azure.iot.device import IoTHubDeviceClient, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, ExportImportDevice, QuerySpecification, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

CS = os.environ["HUBSIM_SERVICE_CS"]
HOST = dict(p.split("=", 1) for p in CS.split(";"))["HostName"]
RUN = "pysvc-%d" % os.getpid()
PASSED = []


def check(name):
    def wrap(fn):
        fn()
        PASSED.append(name)
        print("  ok  " + name)
        return fn

    return wrap


def expect_error(status, fn):
    try:
        fn()
    except HttpOperationError as e:
        assert e.response.status_code == status, "%s: %s" % (e.response.status_code, e.response.text)
        return e
    raise AssertionError("expected HTTP %d" % status)


rm = IoTHubRegistryManager.from_connection_string(CS)
ID = RUN + "-a"


@check("create_device_with_sas, get_device, update_device_with_sas with the etag")
def _():
    d = rm.create_device_with_sas(ID, None, None, "enabled")
    assert d.device_id == ID and d.authentication.symmetric_key.primary_key, d
    assert d.etag and d.connection_state == "Disconnected" and d.capabilities.iot_edge is False, d
    got = rm.get_device(ID)
    assert got.etag == d.etag and got.status == "enabled", got
    e = expect_error(409, lambda: rm.create_device_with_sas(ID, None, None, "enabled"))
    assert "DeviceAlreadyExists" in e.response.text, e.response.text
    key = got.authentication.symmetric_key
    u = rm.update_device_with_sas(ID, got.etag, key.primary_key, key.secondary_key, "disabled")
    assert u.status == "disabled" and u.etag != got.etag, u
    expect_error(412, lambda: rm.update_device_with_sas(ID, got.etag, key.primary_key, key.secondary_key, "enabled"))
    rm.update_device_with_sas(ID, "*", key.primary_key, key.secondary_key, "enabled")


@check("bulk_create_or_update_devices, get_devices, get_device_registry_statistics")
def _():
    bulk = [ExportImportDevice(id="%s-bulk-%d" % (RUN, n), import_mode="create") for n in (1, 2)]
    r = rm.bulk_create_or_update_devices(bulk)
    assert r.is_successful and not r.errors, r
    ids = [d.device_id for d in rm.get_devices()]
    assert ID in ids and RUN + "-bulk-1" in ids and RUN + "-bulk-2" in ids, ids
    assert len(rm.get_devices(1)) == 1
    stats = rm.get_device_registry_statistics()
    assert stats.total_device_count >= 3 and stats.enabled_device_count >= 3, stats
    again = rm.bulk_create_or_update_devices([ExportImportDevice(id=RUN + "-bulk-1", import_mode="create")])
    assert not again.is_successful and again.errors[0].error_code == "DeviceAlreadyExists", again


@check("get_twin, update_twin with the etag (412 when stale), replace_twin, query_iot_hub on a tag")
def _():
    t = rm.get_twin(ID)
    assert t.device_id == ID and t.etag and t.properties.desired["$version"] >= 1, t
    t2 = rm.update_twin(ID, Twin(tags={"site": RUN}, properties=TwinProperties(desired={"rate": 5})), t.etag)
    assert t2.tags["site"] == RUN and t2.properties.desired["rate"] == 5 and t2.etag != t.etag, t2
    expect_error(412, lambda: rm.update_twin(ID, Twin(tags={"x": 1}), t.etag))
    t3 = rm.replace_twin(ID, Twin(tags={"site": RUN, "kind": "sensor"}, properties=TwinProperties(desired={"mode": "eco"})))
    assert "rate" not in t3.properties.desired and t3.properties.desired["mode"] == "eco", t3
    q = rm.query_iot_hub(QuerySpecification(query="SELECT * FROM devices WHERE tags.site = '%s'" % RUN))
    assert [x.device_id for x in q.items] == [ID], q.items
    q = rm.query_iot_hub(QuerySpecification(query="SELECT * FROM devices WHERE tags.kind = 'nothing'"))
    assert q.items == [], q.items
    e = expect_error(400, lambda: rm.query_iot_hub(QuerySpecification(query="SELECT * FROM devices ORDER BY deviceId")))
    assert "ORDER" in e.response.text, e.response.text


@check("invoke_device_method on a device connected with azure-iot-device")
def _():
    d = rm.get_device(ID)
    cs = "HostName=%s;DeviceId=%s;SharedAccessKey=%s" % (HOST, ID, d.authentication.symmetric_key.primary_key)
    device = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=open(os.environ["REQUESTS_CA_BUNDLE"]).read())
    device.connect()

    def on_method(req):
        device.send_method_response(MethodResponse.create_from_method_request(req, 200, {"got": req.payload}))

    device.on_method_request_received = on_method
    try:
        result = None
        for _ in range(50):
            try:
                result = rm.invoke_device_method(ID, CloudToDeviceMethod(method_name="blink", payload={"n": 3}, response_timeout_in_seconds=10))
                break
            except HttpOperationError as e:
                if "DeviceNotOnline" not in e.response.text:
                    raise
                time.sleep(0.1)
        assert result is not None and result.status == 200 and result.payload == {"got": {"n": 3}}, result
        assert rm.get_service_statistics().connected_device_count >= 1
    finally:
        device.shutdown()


@check("a missing device is HTTP 404 with IoT Hub's DeviceNotFound body")
def _():
    e = expect_error(404, lambda: rm.get_device(RUN + "-missing"))
    assert "ErrorCode:DeviceNotFound;" in e.response.text, e.response.text


@check("delete_device (If-Match *) and with a stale etag")
def _():
    d = rm.get_device(RUN + "-bulk-1")
    rm.update_device_with_sas(d.device_id, "*", None, None, "disabled")
    expect_error(412, lambda: rm.delete_device(d.device_id, d.etag))
    for i in (ID, RUN + "-bulk-1", RUN + "-bulk-2"):
        rm.delete_device(i)
    expect_error(404, lambda: rm.get_device(ID))


print("python service SDK (azure-iot-hub): %d passed, 0 failed" % len(PASSED))
sys.exit(0)
