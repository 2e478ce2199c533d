// Helpers shared by the Node SDK checks: the emulator's service API (with the iothubowner token the test command
// passes), waiting for a condition, and assertions that name what failed.
const HTTP = process.env.HUBSIM_HTTP;

async function api(method, p, body) {
  const r = await fetch(HTTP + p, {
    method,
    headers: { 'content-type': 'application/json', authorization: process.env.HUBSIM_TOKEN },
    body: body && JSON.stringify(body),
  });
  const t = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: HTTP ${r.status} ${t}`);
  return t ? JSON.parse(t) : null;
}

async function until(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

module.exports = { HTTP, api, until, assert };
