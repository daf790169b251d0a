//! Results: the JSON every run writes, the Markdown summary, and the targets beside them.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::load::Summary;

/// Median and range of one figure over rounds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// `median (min–max)` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub rustc: String,
    pub commit: String,
    pub profile: &'static str,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map(|kib| kib / 1024.0 / 1024.0)
            .unwrap_or(0.0);
        let run = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            cpu,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_gib,
            kernel: run("uname", &["-r"]),
            rustc: run("rustc", &["--version"]),
            commit: run("git", &["rev-parse", "--short", "HEAD"]),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

/// One S1 configuration: added latency at c=1.
#[derive(Debug, Clone, Serialize)]
pub struct S1Row {
    pub kind: String,
    pub k: usize,
    pub added_p50_us: Spread,
    pub added_p99_us: Spread,
    pub direct_p50_us: Spread,
    pub gateway_p50_us: Spread,
    pub gateway_p99_us: Spread,
    /// Gateway CPU per message, all threads (core-µs).
    pub core_us_per_msg: Spread,
    pub errors: u64,
    pub rounds: Vec<(Summary, Summary)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Slope {
    pub kind: String,
    pub us_per_hop_p50: f64,
    pub us_per_hop_p99: f64,
    pub core_us_per_hop: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct S2Point {
    pub concurrency: usize,
    pub gateway_rps: Spread,
    pub gateway_p99_us: Spread,
    pub direct_rps: Spread,
    pub direct_p99_us: Spread,
    pub core_us_per_msg: Spread,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct S2Series {
    pub label: String,
    pub points: Vec<S2Point>,
    /// The highest median throughput with median p99 < 10 ms and no errors.
    pub best: Option<(usize, f64, f64)>,
    /// A constant-rate run at half the best throughput, latency from the intended send time.
    pub open_loop: Option<OpenLoop>,
    /// A peer's sweep stops after the first concurrency whose p50 reached 10 ms (or that had
    /// errors): this one.
    pub stopped_at: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    pub rate: f64,
    /// Sessions (one request in flight each) the generator had on each side.
    pub sessions: usize,
    /// Through the server measured; `unsent` counts what the generator could not send.
    pub gateway: Summary,
    pub direct: Summary,
}

impl OpenLoop {
    /// What to say when the generator could not send every request due; `None` when it held.
    pub fn saturation(&self) -> Option<String> {
        crate::load::saturation(self.rate, self.sessions, &self.gateway, &self.direct)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct S3 {
    pub sessions: usize,
    pub k: usize,
    pub gateway_rate: Spread,
    pub gateway_p50_us: Spread,
    pub gateway_p99_us: Spread,
    pub direct_rate: Spread,
    pub direct_p50_us: Spread,
    pub direct_p99_us: Spread,
    pub errors: u64,
    pub core_us_per_msg: Spread,
    pub rounds: Vec<(Summary, Summary)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct S5 {
    pub idle_rss_kib: u64,
    pub sessions: usize,
    /// Per idle session once parked (`sessions.park_after_ms` = `park_after_ms`).
    pub bytes_per_session: f64,
    /// Per idle session with parking off (each keeps its actor).
    pub live_bytes_per_session: f64,
    pub park_after_ms: u64,
    pub scripts: usize,
    pub kib_per_script: f64,
    /// Many idle sessions held at once (full runs only).
    pub held: Option<S5Held>,
}

/// S5's second figure: the gateway holding many idle sessions at once.
#[derive(Debug, Clone, Serialize)]
pub struct S5Held {
    pub sessions: usize,
    pub rss_kib: u64,
    /// (RSS with them all − RSS with one session) / sessions.
    pub bytes_per_session: f64,
    /// Seconds to open them (32 at a time).
    pub open_s: f64,
    /// Why opening stopped short of the 100k target, if it did.
    pub stopped: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct S6 {
    pub debounce_ms: u64,
    pub save_to_new_version_ms: Spread,
    pub after_debounce_ms: Spread,
    pub failed: u64,
    pub served: u64,
    /// Files saved, and the reloads they caused (`switchyard_plugin_reloads_total`): one each.
    pub saves: usize,
    pub reloads: u64,
    /// The reload itself (`switchyard_plugin_reload_duration_seconds`): from the debounce's
    /// end to the new version swapped in.
    pub reload_ms: Spread,
}

#[derive(Debug, Clone, Serialize)]
pub struct S7 {
    pub panic_to_next_served_ms: Spread,
    pub lost: u64,
    pub skipped_plugin: u64,
    pub served: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct S8 {
    pub core_route_p50_us: Spread,
    pub plugin_route_p50_us: Spread,
    pub native_route_p50_us: Spread,
    pub tool_lookup_p50_us: Spread,
    pub script_tool_p50_us: Spread,
    pub native_tool_p50_us: Spread,
}

/// S9: one script hook called in-process the way a session's thread calls it.
#[derive(Debug, Clone, Serialize)]
pub struct S9Row {
    pub plugin: String,
    pub hook: String,
    pub us_per_call: Spread,
}

/// S10: one store and instance layout, in alternated closed-loop runs.
#[derive(Debug, Clone, Serialize)]
pub struct S10Row {
    pub label: String,
    pub instances: usize,
    pub concurrency: usize,
    pub rps: Spread,
    pub p50_us: Spread,
    pub p99_us: Spread,
    /// CPU of the gateway processes per message (µs).
    pub gateway_us_per_msg: Spread,
    /// CPU of the PostgreSQL server and its backends per message (µs; 0 with SQLite).
    pub database_us_per_msg: Spread,
    /// CPU of nats-server per message (µs; 0 without NATS).
    pub nats_us_per_msg: Spread,
    pub errors: u64,
}

/// S10's forwarding hop: the forwarded row minus the direct row, paired per round.
#[derive(Debug, Clone, Serialize)]
pub struct S10Hop {
    /// Added p50 latency (µs).
    pub added_p50_us: Spread,
    /// Added CPU of the two gateways per message (µs).
    pub added_gateway_us_per_msg: Spread,
}

/// S4: one streaming path, gateway against the direct stream, in alternated rounds.
#[derive(Debug, Clone, Serialize)]
pub struct S4Row {
    pub path: String,
    pub chunks: usize,
    pub direct_first_p50_us: Spread,
    pub gateway_first_p50_us: Spread,
    /// Added time to first chunk, p50 (gateway − direct).
    pub added_first_p50_us: Spread,
    /// Added time per chunk after the first: (added total − added first) / (chunks − 1), p50s.
    pub per_chunk_us: Spread,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub concurrency: usize,
    pub rps: f64,
    pub p99_us: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub machine: Option<Machine>,
    pub command: String,
    pub mock_ceiling: Option<Ceiling>,
    pub s1: Vec<S1Row>,
    pub s1_slopes: Vec<Slope>,
    pub s2: Vec<S2Series>,
    pub s3: Option<S3>,
    pub s4: Vec<S4Row>,
    pub s5: Option<S5>,
    pub s6: Option<S6>,
    pub s7: Option<S7>,
    pub s8: Option<S8>,
    pub s9: Vec<S9Row>,
    pub s10: Vec<S10Row>,
    pub s10_hop: Option<S10Hop>,
    pub notes: Vec<String>,
    pub failures: Vec<String>,
}

/// Least-squares slope of `y` over `x`.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// The results section of BENCHMARKS.md.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let w = &mut md;
    if let Some(m) = &r.machine {
        let _ = writeln!(w, "Machine: {} × {} ({:.0} GiB RAM), Linux {}, {}, commit {}, {} build. Gateway, mock upstream and load generator share the machine (separate processes, not pinned).\n",
            m.cores, m.cpu, m.memory_gib, m.kernel, m.rustc, m.commit, m.profile);
    }
    let _ = writeln!(w, "Command: `{}`\n", r.command);
    if let Some(c) = &r.mock_ceiling {
        let _ = writeln!(
            w,
            "Mock upstream ceiling (load generator → mock, c={}): **{:.0} req/s**, p99 {} µs.\n",
            c.concurrency, c.rps, c.p99_us
        );
    }
    if !r.s1.is_empty() {
        let _ = writeln!(w, "### S1 — added latency at c=1, zero-delay upstream (gateway − direct, µs; median (min–max) over rounds)\n");
        let _ = writeln!(w, "| chain | K | added p50 | added p99 | direct p50 | gateway p50 | gateway p99 | core-µs/msg | errors |");
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|");
        for row in &r.s1 {
            let cpu = if row.core_us_per_msg.max > 0.0 {
                row.core_us_per_msg.show(1)
            } else {
                "–".into()
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.kind,
                row.k,
                row.added_p50_us.show(0),
                row.added_p99_us.show(0),
                row.direct_p50_us.show(0),
                row.gateway_p50_us.show(0),
                row.gateway_p99_us.show(0),
                cpu,
                row.errors
            );
        }
        let _ = writeln!(w);
        for s in &r.s1_slopes {
            let _ = writeln!(w, "- {} chain: **{:.2} µs per plugin hop** at p50 ({:.2} at p99, {:.2} core-µs), least-squares over K.", s.kind, s.us_per_hop_p50, s.us_per_hop_p99, s.core_us_per_hop);
        }
        let _ = writeln!(w);
    }
    if !r.s2.is_empty() {
        let _ = writeln!(w, "### S2 — concurrency sweep, zero-delay upstream (req/s and p99 µs, medians over rounds)\n");
        for series in &r.s2 {
            let _ = writeln!(w, "**{}**\n", series.label);
            let _ = writeln!(w, "| c | gateway req/s | gateway p99 | direct req/s | direct p99 | core-µs/msg | errors |");
            let _ = writeln!(w, "|---|---|---|---|---|---|---|");
            for p in &series.points {
                let cpu = if p.core_us_per_msg.max > 0.0 {
                    p.core_us_per_msg.show(1)
                } else {
                    "–".into()
                };
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    p.concurrency,
                    p.gateway_rps.show(0),
                    p.gateway_p99_us.show(0),
                    p.direct_rps.show(0),
                    p.direct_p99_us.show(0),
                    cpu,
                    p.errors
                );
            }
            if let Some(c) = series.stopped_at {
                let _ = writeln!(w, "\nThe sweep stopped after c={c}: its p50 reached 10 ms (or it had errors), so no higher concurrency can have p99 < 10 ms.");
            }
            match series.best {
                Some((c, rps, p99)) => {
                    let _ = writeln!(w, "\nBest with p99 < 10 ms and no errors: **{rps:.0} req/s** at c={c} (p99 {p99:.0} µs).\n");
                }
                None => {
                    let _ = writeln!(w, "\nNo point had p99 < 10 ms without errors.\n");
                }
            }
            if let Some(o) = &series.open_loop {
                let _ = writeln!(w, "Open loop at a constant {:.0} req/s over {} sessions (latency from the intended send time): gateway p50 {} µs, p99 {} µs, {} errors; direct p50 {} µs, p99 {} µs.\n",
                    o.rate, o.sessions, o.gateway.p50_us, o.gateway.p99_us, o.gateway.errors, o.direct.p50_us, o.direct.p99_us);
                if let Some(saturated) = o.saturation() {
                    let _ = writeln!(w, "**Not measured at that rate**: {saturated}; the figures above leave those requests out.\n");
                }
            }
        }
    }
    side_by_side(w, r);
    if let Some(s3) = &r.s3 {
        let _ = writeln!(
            w,
            "### S3 — 20 ms upstream, {} concurrent sessions, K={}\n",
            s3.sessions, s3.k
        );
        let _ = writeln!(w, "| path | msgs/s | p50 µs | p99 µs |\n|---|---|---|---|");
        let _ = writeln!(
            w,
            "| gateway | {} | {} | {} |",
            s3.gateway_rate.show(0),
            s3.gateway_p50_us.show(0),
            s3.gateway_p99_us.show(0)
        );
        let _ = writeln!(
            w,
            "| direct | {} | {} | {} |\n",
            s3.direct_rate.show(0),
            s3.direct_p50_us.show(0),
            s3.direct_p99_us.show(0)
        );
        let _ = writeln!(
            w,
            "Errors: {}. Gateway CPU: {} core-µs per message.\n",
            s3.errors,
            s3.core_us_per_msg.show(1)
        );
    }
    if !r.s4.is_empty() {
        let _ = writeln!(w, "### S4 — streamed answers, zero-gap upstream stream (µs; median (min–max) over rounds)\n");
        let _ = writeln!(w, "| path | chunks | direct first chunk p50 | gateway first chunk p50 | added to first chunk | added per later chunk | errors |\n|---|---|---|---|---|---|---|");
        for row in &r.s4 {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.path,
                row.chunks,
                row.direct_first_p50_us.show(0),
                row.gateway_first_p50_us.show(0),
                row.added_first_p50_us.show(0),
                row.per_chunk_us.show(1),
                row.errors
            );
        }
        let _ = writeln!(w);
    }
    if let Some(s5) = &r.s5 {
        let _ = writeln!(w, "### S5 — memory (RSS)\n");
        let _ = writeln!(
            w,
            "- Idle process (no plugins): **{:.1} MiB**.",
            s5.idle_rss_kib as f64 / 1024.0
        );
        let _ = writeln!(
            w,
            "- Per idle session ({} sessions, K=8 native), parked (`park_after_ms` = {}): **{:.0} bytes**; live (parking off): **{:.0} bytes**.",
            s5.sessions, s5.park_after_ms, s5.bytes_per_session, s5.live_bytes_per_session
        );
        if let Some(held) = &s5.held {
            let _ = writeln!(
                w,
                "- {} idle sessions held (K=8 native, parked): RSS **{:.0} MiB**, **{:.0} bytes** per session (opened in {:.0} s).",
                held.sessions,
                held.rss_kib as f64 / 1024.0,
                held.bytes_per_session,
                held.open_s
            );
            if let Some(why) = &held.stopped {
                let _ = writeln!(w, "  Opening stopped short: {why}.");
            }
        }
        let _ = writeln!(
            w,
            "- Per idle script plugin ({} plugins): **{:.0} KiB**.\n",
            s5.scripts, s5.kib_per_script
        );
    }
    if let Some(s6) = &r.s6 {
        let _ = writeln!(
            w,
            "### S6 — hot reload under load (file save → first answer from the new version)\n"
        );
        let _ = writeln!(w, "- Save → new version serving: {} ms with a {} ms debounce, so **{} ms after the debounce**; the reload itself (read, compile, start, swap): {} ms.", s6.save_to_new_version_ms.show(1), s6.debounce_ms, s6.after_debounce_ms.show(1), s6.reload_ms.show(1));
        let _ = writeln!(
            w,
            "- Reloads: {} for {} saves, each timed from a quiet state (the previous version serving, no reload for three debounce windows).",
            s6.reloads, s6.saves
        );
        let _ = writeln!(
            w,
            "- Failed messages during the swaps: **{}** of {} served.\n",
            s6.failed, s6.served
        );
    }
    if let Some(s7) = &r.s7 {
        let _ = writeln!(w, "### S7 — plugin crash under load (panic → next message through the restarted plugin)\n");
        let _ = writeln!(
            w,
            "- Panic answered → next message served by the new instance: **{} ms**.",
            s7.panic_to_next_served_ms.show(2)
        );
        let _ = writeln!(w, "- Messages lost besides the one in flight: **{}** of {} served; {} were served while the plugin restarted, with its hook skipped (non-critical).\n", s7.lost, s7.served, s7.skipped_plugin);
    }
    if !r.s9.is_empty() {
        let _ = writeln!(
            w,
            "### S9 — one script hook in-process (µs per call, median (min–max) over rounds)\n"
        );
        let _ = writeln!(w, "The plugin's hook called as a session's thread calls it (`connector_hook`), with an OpenAI-shaped answer (raw body and headers) under `afterReceive`: no HTTP, no store, no other plugin.\n");
        let _ = writeln!(w, "| plugin | hook | µs per call |\n|---|---|---|");
        for row in &r.s9 {
            let _ = writeln!(
                w,
                "| {} | {} | {} |",
                row.plugin,
                row.hook,
                row.us_per_call.show(2)
            );
        }
        let _ = writeln!(w);
    }
    if !r.s10.is_empty() {
        let _ = writeln!(
            w,
            "### S10 — several instances on one PostgreSQL and one NATS (closed loop, median (min–max) over alternated rounds)\n"
        );
        let _ = writeln!(w, "Every instance on this machine (co-located: the overhead of a cluster, not its speed-up); the load generator spreads its connections round-robin over the instances, each message through its own instance's session. CPU per message is the processes' own time over the run divided by the messages answered.\n");
        let _ = writeln!(w, "| layout | c | req/s | p50 µs | p99 µs | gateway CPU µs/msg | PostgreSQL CPU µs/msg | NATS CPU µs/msg | errors |\n|---|---|---|---|---|---|---|---|---|");
        for row in &r.s10 {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.label,
                row.concurrency,
                row.rps.show(0),
                row.p50_us.show(0),
                row.p99_us.show(0),
                row.gateway_us_per_msg.show(0),
                row.database_us_per_msg.show(0),
                row.nats_us_per_msg.show(1),
                row.errors
            );
        }
        let _ = writeln!(w);
        if let Some(hop) = &r.s10_hop {
            let _ = writeln!(
                w,
                "The forwarding hop (forwarded row − direct row, paired per round): p50 +{} µs, gateway CPU +{} µs per message.\n",
                hop.added_p50_us.show(0),
                hop.added_gateway_us_per_msg.show(0)
            );
        }
    }
    if let Some(s8) = &r.s8 {
        let _ = writeln!(
            w,
            "### Plugin routes and tools (c=1, p50 µs, median (min–max) over rounds)\n"
        );
        let _ = writeln!(w, "| call | p50 |\n|---|---|");
        let _ = writeln!(
            w,
            "| `GET /livez` (core route, baseline) | {} |",
            s8.core_route_p50_us.show(0)
        );
        let _ = writeln!(
            w,
            "| `GET /plugins/ext/ping` (script route) | {} |",
            s8.plugin_route_p50_us.show(0)
        );
        let _ = writeln!(
            w,
            "| `GET /plugins/hello/greet/x` (native route) | {} |",
            s8.native_route_p50_us.show(0)
        );
        let _ = writeln!(
            w,
            "| `GET /api/tools/echo` (registry lookup, baseline) | {} |",
            s8.tool_lookup_p50_us.show(0)
        );
        let _ = writeln!(
            w,
            "| `POST /api/tools/echo/invoke` (script tool) | {} |",
            s8.script_tool_p50_us.show(0)
        );
        let _ = writeln!(
            w,
            "| `POST /api/tools/hello/invoke` (native tool) | {} |\n",
            s8.native_tool_p50_us.show(0)
        );
        let _ = writeln!(w, "Overhead of a plugin route call over a core route: script **{:.0} µs**, native **{:.0} µs**; of a tool call over a registry lookup: script **{:.0} µs**, native **{:.0} µs**.\n",
            s8.plugin_route_p50_us.median - s8.core_route_p50_us.median, s8.native_route_p50_us.median - s8.core_route_p50_us.median,
            s8.script_tool_p50_us.median - s8.tool_lookup_p50_us.median, s8.native_tool_p50_us.median - s8.tool_lookup_p50_us.median);
    }
    let _ = writeln!(w, "### Targets\n");
    let _ = writeln!(w, "| target | measured | |\n|---|---|---|");
    if let Some(k0) = r.s1.iter().find(|x| x.kind == "native" && x.k == 0) {
        let v = k0.added_p99_us.median;
        let _ = writeln!(
            w,
            "| added p99 ≤ 100 µs at K=0 | {v:.0} µs | {} |",
            mark(v <= 100.0)
        );
    }
    if let Some(s) = r.s1_slopes.iter().find(|s| s.kind == "native") {
        let _ = writeln!(
            w,
            "| ≤ 1 µs per native hop | {:.2} µs (p50 slope) | {} |",
            s.us_per_hop_p50,
            mark(s.us_per_hop_p50 <= 1.0)
        );
    }
    if let Some((_, rps, _)) =
        r.s2.iter()
            .find(|s| s.label.starts_with("K=8"))
            .and_then(|s| s.best)
    {
        let _ = writeln!(
            w,
            "| ≥ 20k msgs/s at K=8, co-located | {rps:.0} msgs/s | {} |",
            mark(rps >= 20_000.0)
        );
    }
    if let Some(s5) = &r.s5 {
        let _ = writeln!(
            w,
            "| ≤ 2 KB per idle session (parked) | {:.0} bytes | {} |",
            s5.bytes_per_session,
            mark(s5.bytes_per_session <= 2048.0)
        );
        if let Some(held) = &s5.held {
            let _ = writeln!(
                w,
                "| {} idle sessions held | {:.0} MiB RSS | {} |",
                held.sessions,
                held.rss_kib as f64 / 1024.0,
                mark(held.sessions >= 100_000 && held.stopped.is_none())
            );
        }
    }
    if let Some(s6) = &r.s6 {
        let _ = writeln!(
            w,
            "| reload ≤ 50 ms after the debounce, 0 failures | {:.1} ms, {} failed | {} |",
            s6.after_debounce_ms.median,
            s6.failed,
            mark(s6.after_debounce_ms.median <= 50.0 && s6.failed == 0)
        );
    }
    if let Some(s7) = &r.s7 {
        let _ = writeln!(
            w,
            "| crash → next message ≤ 1 ms, 0 collateral loss | {:.2} ms, {} lost | {} |",
            s7.panic_to_next_served_ms.median,
            s7.lost,
            mark(s7.panic_to_next_served_ms.median <= 1.0 && s7.lost == 0)
        );
    }
    for note in &r.notes {
        let _ = writeln!(w, "\n_{note}_");
    }
    md
}

/// The gateway next to the peers of the same run: S1's added p50 and CPU at c=1, S2's best
/// throughput with p99 < 10 ms (when that configuration had a sweep).
fn side_by_side(w: &mut String, r: &Results) {
    let is_peer = |kind: &str| {
        kind.starts_with("nginx") || kind.starts_with("LiteLLM") || kind.starts_with("Portkey")
    };
    let rows: Vec<(String, &S1Row, Option<&S2Series>)> = r
        .s1
        .iter()
        .filter_map(|row| {
            let (name, series) = match (row.kind.as_str(), row.k) {
                ("native", 0 | 8) => (
                    format!("switchyard K={} native no-op", row.k),
                    Some(format!("K={} native no-op plugins", row.k)),
                ),
                ("script", 1) => ("switchyard 1 script plugin".into(), None),
                ("script", 4) => ("switchyard 4 script plugins".into(), None),
                (kind, _) if kind.starts_with("switchyard front door") => (row.kind.clone(), None),
                ("nginx (bare proxy)", _) => (
                    row.kind.clone(),
                    Some("nginx (bare proxy, 1 worker)".into()),
                ),
                (kind, _) if is_peer(kind) => (row.kind.clone(), Some(row.kind.clone())),
                _ => return None,
            };
            let series = series.and_then(|label| r.s2.iter().find(|s| s.label == label));
            Some((name, row, series))
        })
        .collect();
    if !rows.iter().any(|(_, row, _)| is_peer(&row.kind)) {
        return;
    }
    let _ = writeln!(
        w,
        "### Side by side — switchyard and the peers, same run
"
    );
    let _ = writeln!(
        w,
        "| system | added p50, c=1 (µs) | core-µs/msg, c=1 | best msg/s with p99 < 10 ms |
|---|---|---|---|"
    );
    for (name, row, series) in rows {
        let best = match series {
            Some(s) => match s.best {
                Some((c, rps, _)) => format!("{rps:.0} (c={c})"),
                None => {
                    let c1 = s
                        .points
                        .first()
                        .map(|p| p.gateway_rps.median)
                        .unwrap_or(0.0);
                    format!("none ({c1:.0} at c=1)")
                }
            },
            None => "–".into(),
        };
        let _ = writeln!(
            w,
            "| {name} | {:.0} | {:.0} | {best} |",
            row.added_p50_us.median, row.core_us_per_msg.median
        );
    }
    let _ = writeln!(w);
}

const START: &str = "<!-- results:start -->";
const END: &str = "<!-- results:end -->";

/// Replaces the generated section of BENCHMARKS.md, keeping the hand-written text around it.
pub fn update_benchmarks_md(path: &Path, results: &str) {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{START}\n{results}\n{END}");
    let text = match (existing.find(START), existing.find(END)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{}{}", &existing[..a], block, &existing[b + END.len()..])
        }
        _ => format!("# Benchmarks\n\n{block}\n"),
    };
    std::fs::write(path, text).expect("write BENCHMARKS.md");
}
