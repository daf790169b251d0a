// Per-plugin hook latency from GET /metrics (Prometheus text): parsing, the mean latency of
// each polling interval, and SVG sparklines. Pure functions apart from `sparkline`'s DOM.

/** Parses Prometheus text into samples {name, labels, value}; comments and blanks skipped. */
export function parseProm(text) {
  const samples = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3]))) labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\(["\\])/g, "$1");
    }
    const value = m[4] === "+Inf" ? Infinity : m[4] === "-Inf" ? -Infinity : Number(m[4]);
    samples.push({ name: m[1], labels, value });
  }
  return samples;
}

const SUM = "switchyard_plugin_hook_duration_seconds_sum";
const COUNT = "switchyard_plugin_hook_duration_seconds_count";

/** Per plugin, the hook duration histogram's sum (seconds) and count, all hooks together. */
export function hookTotals(samples) {
  const totals = new Map();
  for (const s of samples) {
    if (s.name !== SUM && s.name !== COUNT) continue;
    const plugin = s.labels.plugin;
    if (!plugin) continue;
    const t = totals.get(plugin) || { sum: 0, count: 0 };
    if (s.name === SUM) t.sum += s.value; else t.count += s.value;
    totals.set(plugin, t);
  }
  return totals;
}

/**
 * The mean latency (ms) of each interval between scrapes, per plugin: the histogram's sum
 * and count grow together, so their differences give the calls of that interval alone.
 * An interval without calls is null (a gap), a counter that went back (restart) starts over.
 */
export class LatencyHistory {
  constructor(points = 40) { this.points = points; this.last = new Map(); this.series = new Map(); }
  add(totals) {
    for (const [plugin, t] of totals) {
      const prev = this.last.get(plugin);
      const series = this.series.get(plugin) || [];
      if (prev) {
        const calls = t.count - prev.count;
        const seconds = t.sum - prev.sum;
        series.push(calls > 0 && seconds >= 0 ? (seconds / calls) * 1000 : null);
        while (series.length > this.points) series.shift();
      }
      this.series.set(plugin, series);
      this.last.set(plugin, t);
    }
  }
  /** The last non-null point of a plugin, or null. */
  latest(plugin) {
    const s = this.series.get(plugin) || [];
    for (let i = s.length - 1; i >= 0; i--) if (s[i] !== null) return s[i];
    return null;
  }
}

/** Points of a polyline for `values` (nulls skipped) in a width×height box, y up. */
export function sparkPoints(values, width, height, slots = values.length) {
  const present = values.filter((v) => v !== null);
  if (!present.length) return [];
  const max = Math.max(...present), min = Math.min(0, ...present);
  const span = max - min || 1;
  const step = slots > 1 ? width / (slots - 1) : 0;
  const offset = slots - values.length;
  const points = [];
  values.forEach((v, i) => {
    if (v === null) return;
    const x = (offset + i) * step;
    const y = height - 2 - ((v - min) / span) * (height - 4);
    points.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
  });
  return points;
}

const SVG = "http://www.w3.org/2000/svg";

/** An SVG sparkline of `values` (a line over a light area). */
export function sparkline(values, slots, width = 130, height = 30) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const points = sparkPoints(values, width, height, slots);
  if (points.length) {
    const text = points.map((p) => p.join(",")).join(" ");
    const area = document.createElementNS(SVG, "polygon");
    area.setAttribute("class", "area");
    area.setAttribute("points", `${points[0][0]},${height} ${text} ${points[points.length - 1][0]},${height}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.length === 1 ? `${text} ${points[0][0] + 1},${points[0][1]}` : text);
    svg.append(area, line);
  }
  return svg;
}
