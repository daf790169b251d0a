// The dashboard's pure functions (SSE framing, Prometheus parsing, latency per interval,
// sparkline geometry), run by Node from tests/it/ui.rs. Exits non-zero on the first failure.
import assert from "node:assert/strict";

const dir = process.argv[2];
const { parseSse } = await import(`${dir}/api.js`);
const { parseProm, hookTotals, LatencyHistory, sparkPoints } = await import(`${dir}/metrics.js`);

// SSE: complete events only, multi-line data, comments skipped, JSON parsed, CRLF accepted.
let r = parseSse(": subscribed\n\nevent: chunk\ndata: {\"index\":0,\"content\":\"He\"}\n\nevent: chunk\r\ndata: {\"ind");
assert.deepEqual(r.events, [{ event: "chunk", data: { index: 0, content: "He" }, id: null }]);
assert.equal(r.rest, "event: chunk\ndata: {\"ind");
r = parseSse(r.rest + "ex\":1,\"content\":\"llo\"}\n\nid: 7\ndata: line one\ndata: line two\n\n");
assert.deepEqual(r.events.map((e) => e.data), [{ index: 1, content: "llo" }, "line one\nline two"]);
assert.equal(r.events[1].event, "message");
assert.equal(r.events[1].id, "7");
assert.equal(r.rest, "");

// Prometheus text: labels with escapes, comments, infinities.
const text = `# HELP switchyard_plugin_hook_duration_seconds Time a hook call took.
# TYPE switchyard_plugin_hook_duration_seconds histogram
switchyard_plugin_hook_duration_seconds_bucket{plugin="a",hook="beforeSend",le="+Inf"} 4
switchyard_plugin_hook_duration_seconds_sum{plugin="a",hook="beforeSend"} 0.004
switchyard_plugin_hook_duration_seconds_count{plugin="a",hook="beforeSend"} 4
switchyard_plugin_hook_duration_seconds_sum{plugin="a",hook="afterReceive"} 0.002
switchyard_plugin_hook_duration_seconds_count{plugin="a",hook="afterReceive"} 4
switchyard_plugin_hook_duration_seconds_sum{plugin="q\\"uote",hook="x"} 1
switchyard_plugin_hook_duration_seconds_count{plugin="q\\"uote",hook="x"} 1
switchyard_sessions_open 2
`;
const samples = parseProm(text);
const bucket = samples.find((s) => s.name.endsWith("_bucket"));
assert.equal(bucket.value, 4);
assert.equal(bucket.labels.le, "+Inf");
assert.equal(parseProm("x_max +Inf\n")[0].value, Infinity);
assert.equal(samples.find((s) => s.name === "switchyard_sessions_open").value, 2);
const totals = hookTotals(samples);
assert.deepEqual(totals.get("a"), { sum: 0.006, count: 8 });
assert.ok(totals.has("q\"uote"));

// Latency per interval: differences of sum and count; no calls is a gap; a reset starts over.
const h = new LatencyHistory(3);
h.add(new Map([["a", { sum: 1, count: 10 }]]));
assert.deepEqual(h.series.get("a"), []);
h.add(new Map([["a", { sum: 1.02, count: 20 }]]));
h.add(new Map([["a", { sum: 1.02, count: 20 }]]));
h.add(new Map([["a", { sum: 0.5, count: 5 }]]));
h.add(new Map([["a", { sum: 0.53, count: 8 }]]));
const series = h.series.get("a");
assert.equal(series.length, 3);
assert.equal(series[0], null);
assert.equal(series[1], null);
assert.ok(Math.abs(series[2] - 10) < 1e-9, String(series[2]));
assert.ok(Math.abs(h.latest("a") - 10) < 1e-9);

// Sparkline geometry: spans the width, highest value at the top, gaps skipped.
const points = sparkPoints([1, null, 3], 100, 30);
assert.deepEqual(points.map((p) => p[0]), [0, 100]);
assert.ok(points[1][1] < points[0][1]);
assert.equal(points[1][1], 2);
assert.deepEqual(sparkPoints([null, null], 100, 30), []);
console.log("ok");
