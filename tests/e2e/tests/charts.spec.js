// Charts of the numbers sent and received, and the exports of the inbox and the activity log, against the
// emulator. The charts are asserted through the SVG's point marks (their data-v values and the polyline's
// points), never through pixels.
const { test, expect } = require('@playwright/test');
const fs = require('fs');
const path = require('path');
const { api, newDevice, connect, subscribed, axeClean, shot } = require('./helpers');

// axe is injected as a script, which the page's Content-Security-Policy would refuse.
test.use({ bypassCSP: true });

/** An RFC 4180 parser (quoted fields with doubled quotes, CRLF records), enough to read the exports back. */
function parseCsv(text) {
  // A UTF-8 byte order mark first: what Excel needs to read the file as UTF-8.
  expect(text.charCodeAt(0), 'the CSV starts with a byte order mark').toBe(0xfeff);
  text = text.slice(1);
  const rows = [];
  let row = [], cell = '', quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i++; } else if (c === '"') quoted = false; else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(cell); cell = ''; }
    else if (c === '\r' && text[i + 1] === '\n') { row.push(cell); rows.push(row); row = []; cell = ''; i++; }
    else cell += c;
  }
  expect(row.length === 0 && cell === '', 'the CSV ends with CRLF').toBe(true);
  return rows;
}

async function download(page, button) {
  const [d] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: button }).click()]);
  return { name: d.suggestedFilename(), text: fs.readFileSync(await d.path(), 'utf8') };
}

/** The values of a chart's point marks, oldest first. */
function values(chart) {
  return chart.locator('circle').evaluateAll((cs) => cs.map((c) => c.getAttribute('data-v')));
}

/** The y coordinates of a chart's polyline (smaller is higher). */
async function lineYs(chart) {
  const points = await chart.locator('polyline').getAttribute('points');
  return points.split(' ').map((p) => Number(p.split(',')[1]));
}

async function send(page, body, n) {
  await page.getByLabel('Payload', { exact: true }).fill(body);
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(page.locator('.counters')).toContainText(`sent ${n}`);
}

test('the numbers sent are charted by JSON path; hover, keys, last N and pause', async ({ page }) => {
  const dev = await newDevice('e2e-chart');
  await connect(page, dev.cs);
  const temps = [20.5, 22, 19.25];
  for (const [i, t] of temps.entries()) {
    await send(page, JSON.stringify({ temperature: t, position: { lat: 47.5 + i, lon: -122 }, name: 'probe' }), i + 1);
  }
  const charts = page.getByRole('region', { name: 'Charts' });
  const seen = charts.getByRole('group', { name: 'Numeric paths seen' });
  await expect(seen.getByRole('button')).toHaveText(['+ temperature', '+ position.lat', '+ position.lon']);

  // Picked from the offered paths, and typed.
  await seen.getByRole('button', { name: 'Chart temperature' }).click();
  await charts.getByLabel('JSON path').fill('position.lat');
  await charts.getByRole('button', { name: 'Add chart' }).click();
  const temp = charts.locator('figure.chart').nth(0);
  const lat = charts.locator('figure.chart').nth(1);
  await expect(temp.locator('figcaption')).toContainText('temperature');
  await expect(temp.locator('circle')).toHaveCount(3);
  expect(await values(temp)).toEqual(['20.5', '22', '19.25']);
  expect(await values(lat)).toEqual(['47.5', '48.5', '49.5']);
  const [y0, y1, y2] = await lineYs(temp);
  expect(y1 < y0 && y0 < y2, `22 above 20.5 above 19.25: ${[y0, y1, y2]}`).toBe(true);
  await expect(temp.getByRole('img')).toHaveAttribute('aria-label', 'temperature: 3 points from 19.25 to 22');

  // Hover shows the value and the time; so does the keyboard.
  await temp.locator('circle').nth(1).hover();
  await expect(temp.locator('.readout')).toHaveText(/^22 at \d\d:\d\d:\d\d\.\d{3}$/);
  await temp.getByRole('img').focus();
  await page.keyboard.press('ArrowLeft');
  await expect(temp.locator('.readout')).toHaveText(/^20\.5 at /);
  await page.keyboard.press('End');
  await expect(temp.locator('.readout')).toHaveText(/^19\.25 at /);

  await axeClean(page, 'two charts are shown');

  // The last N points only.
  await charts.getByLabel('Points shown').fill('2');
  await charts.getByLabel('Points shown').blur();
  await expect(temp.locator('circle')).toHaveCount(2);
  expect(await values(temp)).toEqual(['22', '19.25']);

  // Paused, the chart stands still while the numbers are still recorded; they appear on resume.
  await charts.getByRole('button', { name: 'Pause' }).click();
  await send(page, '{"temperature": 30}', 4);
  await expect(charts.getByRole('button', { name: 'Resume' })).toBeVisible();
  expect(await values(temp)).toEqual(['22', '19.25']);
  await charts.getByRole('button', { name: 'Resume' }).click();
  await expect(temp.locator('circle')).toHaveCount(2);
  expect(await values(temp)).toEqual(['19.25', '30']);

  // Bad input is explained; a chart can be removed.
  await charts.getByLabel('Points shown').fill('1');
  await charts.getByLabel('Points shown').blur();
  await expect(charts.getByRole('alert')).toHaveText('Points shown: must be a whole number from 2 to 300, not 1; kept 2');
  await charts.getByRole('button', { name: 'Add chart' }).click();
  await expect(charts.getByRole('alert').filter({ hasText: 'JSON path' })).toContainText('Enter the JSON path of a number');
  await charts.getByRole('button', { name: 'Remove the chart of position.lat' }).click();
  await expect(charts.locator('figure.chart')).toHaveCount(1);
  // JSONPath's root names the same field; a path charted already is said, not silently ignored.
  await charts.getByLabel('JSON path').fill('$.position.lat');
  await charts.getByRole('button', { name: 'Add chart' }).click();
  await expect(charts.locator('figure.chart')).toHaveCount(2);
  await expect(charts.locator('figure.chart').nth(1).locator('figcaption')).toContainText('position.lat');
  await charts.getByLabel('JSON path').fill('temperature');
  await charts.getByRole('button', { name: 'Add chart' }).click();
  await expect(charts.getByRole('alert').filter({ hasText: 'charted already' })).toHaveText('That path is charted already.');
  // JSONPath beyond the root would name nothing: refused, not charted empty for ever.
  for (const p of ['$..temperature', "position['lat']", '.temperature']) {
    await charts.getByLabel('JSON path').fill(p);
    await charts.getByRole('button', { name: 'Add chart' }).click();
    await expect(charts.getByRole('alert').filter({ hasText: 'JSON path' })).toContainText('as the buttons show it');
  }
  await expect(charts.locator('figure.chart')).toHaveCount(2);
  await charts.getByRole('button', { name: 'Remove the chart of position.lat' }).click();
  await expect(charts.locator('figure.chart')).toHaveCount(1);
  await shot(page, 'charts');

  // HUBSIM_DOCS=1 also writes the README's picture: a drifting temperature, one point hovered.
  if (process.env.HUBSIM_DOCS) {
    await charts.getByLabel('Points shown').fill('36');
    await charts.getByLabel('Points shown').blur();
    for (let i = 0; i < 36; i++) {
      const t = Math.round((21 + 2 * Math.sin(i / 4) + (i % 3) * 0.2) * 100) / 100;
      await send(page, JSON.stringify({ temperature: t, position: { lat: 47.6, lon: -122.3 } }), 5 + i);
    }
    await expect(temp.locator('circle')).toHaveCount(36);
    await temp.locator('circle').nth(25).hover();
    await expect(temp.locator('.readout')).toContainText(' at ');
    await charts.screenshot({ path: path.join(__dirname, '..', '..', '..', 'docs', 'chart.png') });
  }
});

test('a name with a dot is its own series, not the nested path it reads as', async ({ page }) => {
  const dev = await newDevice('e2e-chart-dot');
  await connect(page, dev.cs);
  for (const [i, n] of [1, 2].entries()) await send(page, JSON.stringify({ 'a.b': n, a: { b: 10 * n } }), i + 1);
  const charts = page.getByRole('region', { name: 'Charts' });
  const seen = charts.getByRole('group', { name: 'Numeric paths seen' });
  await expect(seen.getByRole('button')).toHaveText(['+ ["a.b"]', '+ a.b']);
  await seen.getByRole('button', { name: 'Chart ["a.b"]' }).click();
  await charts.getByLabel('JSON path').fill('a.b');
  await charts.getByRole('button', { name: 'Add chart' }).click();
  expect(await values(charts.locator('figure.chart').nth(0))).toEqual(['1', '2']);
  expect(await values(charts.locator('figure.chart').nth(1))).toEqual(['10', '20']);
  // The bracketed form can be typed too; it is the same chart.
  await charts.getByLabel('JSON path').fill('["a.b"]');
  await charts.getByRole('button', { name: 'Add chart' }).click();
  await expect(charts.getByRole('alert').filter({ hasText: 'charted already' })).toHaveText('That path is charted already.');
});

/** The exports' time: local date and time with the offset from UTC (ISO 8601), so days can be told apart. */
const STAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$/;

test('C2D and desired numbers are charted, and the inbox exports as CSV (a row per message) and the log as JSON', async ({ page }) => {
  const dev = await newDevice('e2e-export');
  await connect(page, dev.cs);
  await subscribed(page);
  const sent = [
    { body: '{"level": 1}', messageId: 'm1', properties: { a: '1' } },
    { body: '{"level": 2.5, "note": "x,y"}', messageId: 'm2', properties: { b: '-2.5' } },
    { body: '{"level": -3}', messageId: 'm3', properties: { a: '+cmd|x', c: null } },
  ];
  for (const m of sent) await api('POST', `/devices/${dev.id}/messages/devicebound`, m);
  const inbox = page.getByRole('region', { name: 'Cloud-to-device messages' });
  await expect(inbox.locator('.msg')).toHaveCount(3);

  const charts = page.getByRole('region', { name: 'Charts' });
  await charts.getByLabel('Source').selectOption('c2d');
  await charts.getByRole('button', { name: 'Chart level' }).click();
  const level = charts.locator('figure.chart').first();
  await expect(level.locator('figcaption')).toContainText('cloud-to-device messages');
  expect(await values(level)).toEqual(['1', '2.5', '-3']);

  // Desired properties are charted too ($version is metadata, not a field).
  await api('PATCH', `/twins/${dev.id}`, { properties: { desired: { targetTemperature: 21, fan: { speed: 3 } } } });
  await api('PATCH', `/twins/${dev.id}`, { properties: { desired: { targetTemperature: 23.5 } } });
  await charts.getByLabel('Source').selectOption('desired');
  // (in the order of the hub's patch)
  const offered = charts.getByRole('group', { name: 'Numeric paths seen' }).getByRole('button');
  await expect(offered).toHaveCount(2);
  expect((await offered.allInnerTexts()).sort()).toEqual(['+ fan.speed', '+ targetTemperature']);
  await charts.getByRole('button', { name: 'Chart targetTemperature' }).click();
  await expect(charts.locator('figure.chart').nth(1).locator('circle')).toHaveCount(2);
  expect(await values(charts.locator('figure.chart').nth(1))).toEqual(['21', '23.5']);

  const csv = await download(page, 'Export messages as CSV');
  expect(csv.name).toBe('hubsim-c2d.csv');
  const [header, ...rows] = parseCsv(csv.text);
  expect(header.slice(0, 3)).toEqual(['time', 'body', 'body kind']);
  for (const name of ['$.mid', '$.to', 'a', 'b', 'c']) expect(header).toContain(name);
  expect(rows).toHaveLength(3);
  const col = (name) => rows.map((r) => r[header.indexOf(name)]);
  expect(col('$.mid')).toEqual(['m1', 'm2', 'm3']);
  expect(col('$.to')).toEqual(Array(3).fill(`/devices/${dev.id}/messages/devicebound`));
  // The bodies as received (the inbox shows them pretty-printed).
  expect(col('body')).toEqual(sent.map((m) => m.body));
  expect(col('body kind')).toEqual(['json', 'json', 'json']);
  // A formula is guarded; a plain negative number is left as it is.
  expect(col('a')).toEqual(['1', '', "'+cmd|x"]);
  expect(col('b')).toEqual(['', '-2.5', '']);
  expect(col('c')).toEqual(['', '', '']);
  for (const r of rows) {
    expect(r).toHaveLength(header.length);
    expect(r[0]).toMatch(STAMP);
  }

  const json = await download(page, 'Export messages as JSON');
  expect(JSON.parse(json.text).map((m) => m.applicationProperties)).toEqual([{ a: '1' }, { b: '-2.5' }, { a: '+cmd|x', c: null }]);

  const log = await download(page, 'Export log as JSON');
  expect(log.name).toBe('hubsim-activity.json');
  const entries = JSON.parse(log.text);
  expect(entries[0]).toEqual({ time: expect.stringMatching(STAMP), kind: expect.any(String), text: expect.any(String) });
  // The page shows the time of day; the element carries the whole stamp.
  const shown = page.getByRole('region', { name: 'Cloud-to-device messages' }).locator('.msg time').first();
  await expect(shown).toHaveText(/^\d\d:\d\d:\d\d$/);
  expect(await shown.getAttribute('datetime')).toMatch(STAMP);
  const received = entries.filter((e) => e.kind === 'received' && e.text.startsWith('cloud-to-device message: '));
  expect(received).toHaveLength(3);
  expect(received[2].text).toContain('(properties: a="+cmd|x", c=null)');
  expect(entries.map((e) => e.kind)).toContain('connection');

  const logCsv = await download(page, 'Export log as CSV');
  const [logHeader, ...logRows] = parseCsv(logCsv.text);
  expect(logHeader).toEqual(['time', 'kind', 'text']);
  expect(logRows.map((r) => r[2])).toEqual(entries.map((e) => e.text));
});
