"""Helpers shared by the Python SDK checks: the emulator's service API with the iothubowner token the test command
passes (HUBSIM_HTTP, HUBSIM_TOKEN), and waiting for a condition."""
import json
import os
import time
import urllib.request

HTTP = os.environ["HUBSIM_HTTP"]
TOKEN = os.environ["HUBSIM_TOKEN"]
TIMEOUT = 20


def api(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Authorization": TOKEN}
    req = urllib.request.Request(HTTP + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        text = r.read().decode()
        return json.loads(text) if text else None


def wait_for(what, pred):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)
