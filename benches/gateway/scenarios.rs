//! The scenarios (S1–S8). Each
//! starts the processes it needs, measures, stops them, and records what it found; a scenario
//! that cannot measure records a failure instead of a number.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::load::{self, Call, Stop};
use crate::procs::{NatsServer, Nginx, Peer, PeerKind, Postgres, Server};
use crate::report::*;
use crate::roles::{self, GatewaySpec, MockSpec};
use crate::Plan;

/// The message every scenario sends: JSON text, so the rewrite plugins have work to do.
const MESSAGE: &str = r#"{"text":"hello from the benchmark, please answer briefly"}"#;

fn direct_body() -> String {
    json!({ "model": "bench", "message": MESSAGE }).to_string()
}

/// The OpenAI chat request sent to the peer gateways (and, for their rows, straight to the
/// mock): the same message as a user turn.
fn chat_body() -> String {
    json!({ "model": "bench", "messages": [{ "role": "user", "content": MESSAGE }] }).to_string()
}

fn gateway_body(message: &str) -> String {
    json!({ "message": message }).to_string()
}

fn mock(delay_ms: u64) -> Server {
    let spec = serde_json::to_string(&MockSpec {
        delay_ms,
        // Two workers so the mock is never the bottleneck (its ceiling is reported).
        workers: 2,
    })
    .expect("spec");
    Server::spawn_role("mock", "mock", &spec, None)
}

/// A gateway process with its own plugin directory, data directory and targets file.
struct Gateway {
    server: Server,
    base: String,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn start(upstream: &str, spec: GatewaySpec, scripts: &[(String, String)]) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let core = dir.path().join("plugins/core");
        for (id, source) in scripts {
            std::fs::create_dir_all(core.join(id)).expect("plugin dir");
            std::fs::write(core.join(id).join("index.js"), source).expect("plugin file");
        }
        std::fs::create_dir_all(&core).expect("core dir");
        let targets = dir.path().join("targets.toml");
        std::fs::write(
            &targets,
            format!(
                r#"[[targets]]
id = "mock"
name = "Mock upstream"
connectorType = "HTTP_REST"
endpoint = "http://{upstream}/v1/chat/completions"
timeoutMs = 30000
requestTemplate = {{ messagePath = "message", structure = {{ model = "bench" }} }}
responseTemplate = {{ responsePath = "$.choices[0].message.content", tokenUsagePath = "$.usage" }}

[[targets]]
id = "stream-sse"
name = "Mock stream, SSE connector"
connectorType = "SSE"
endpoint = "http://{upstream}/v1/stream"
timeoutMs = 30000
requestTemplate = {{ messagePath = "message", structure = {{ model = "bench", stream = true }} }}
responseTemplate = {{ responsePath = "choices[0].delta.content" }}

[[targets]]
id = "stream-rest"
name = "Mock stream, HTTP_REST streaming"
connectorType = "HTTP_REST"
endpoint = "http://{upstream}/v1/stream"
timeoutMs = 30000
requestTemplate = {{ messagePath = "message", structure = {{ model = "bench", stream = true }} }}
responseTemplate = {{ responsePath = "choices[0].delta.content" }}
"#
            ),
        )
        .expect("targets file");
        let spec = GatewaySpec {
            plugins_dir: dir.path().join("plugins").display().to_string(),
            data_dir: dir.path().join("data").display().to_string(),
            targets_file: targets.display().to_string(),
            max_sessions: spec.max_sessions.max(50_000),
            ..spec
        };
        let server = Server::spawn_role(
            "gateway",
            "gateway",
            &serde_json::to_string(&spec).expect("spec"),
            None,
        );
        Gateway {
            base: format!("http://{}", server.addr),
            server,
            dir,
        }
    }

    fn plugin_file(&self, id: &str) -> std::path::PathBuf {
        self.dir
            .path()
            .join("plugins/core")
            .join(id)
            .join("index.js")
    }

    /// Opens `n` sessions on the mock target with `plugins`, 32 at a time.
    async fn sessions(&self, client: &awc::Client, plugins: &[String], n: usize) -> Vec<String> {
        let body = json!({
            "targetId": "mock",
            "plugins": plugins.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
        })
        .to_string();
        let call = Call::post(format!("{}/api/sessions", self.base), &body);
        let mut ids = Vec::with_capacity(n);
        while ids.len() < n {
            let batch = (n - ids.len()).min(32);
            let opened =
                futures::future::join_all((0..batch).map(|_| load::send(client, &call))).await;
            for reply in opened {
                let reply = reply.unwrap_or_else(|e| panic!("cannot open a session: {e}"));
                let v: Value = serde_json::from_slice(&reply).expect("session JSON");
                ids.push(v["id"].as_str().expect("session id").to_string());
            }
        }
        ids
    }

    fn message(&self, session: &str, message: &str) -> Call {
        Call::post(
            format!("{}/api/sessions/{session}/messages", self.base),
            &gateway_body(message),
        )
    }

    fn stop(self) {
        self.server.stop();
    }

    /// Waits (up to 30 s) until `n` sessions are parked (`switchyard_sessions_parked`).
    async fn all_parked(&self, client: &awc::Client, n: usize) {
        let call = Call::get(format!("{}/metrics", self.base));
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(30) {
            let parked = load::send(client, &call).await.ok().and_then(|text| {
                String::from_utf8_lossy(&text).lines().find_map(|l| {
                    l.strip_prefix("switchyard_sessions_parked ")?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
            });
            if parked.is_some_and(|p| p >= n) {
                return;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("S5: fewer than {n} sessions parked after 30 s");
    }
}

fn direct(mock_addr: &str) -> Call {
    Call::post(
        format!("http://{mock_addr}/v1/chat/completions"),
        &direct_body(),
    )
}

fn script_chain(k: usize) -> Vec<(String, String)> {
    (1..=k)
        .map(|i| {
            let id = format!("s-{i}");
            let source = roles::script_noop(&id);
            (id, source)
        })
        .collect()
}

pub async fn run_all(plan: &Plan) -> Results {
    let mut r = Results {
        machine: Some(Machine::describe()),
        command: if plan.smoke {
            "cargo test --bench gateway -- --smoke".into()
        } else {
            "cargo bench --bench gateway".into()
        },
        ..Default::default()
    };
    let upstream = mock(0);
    let client = load::client(256);
    // The mock's own ceiling, so a gateway figure is never the mock's.
    let calls = vec![direct(&upstream.addr); 32];
    let _ = load::closed_loop(&client, &calls, Stop::Each(20)).await;
    let ceiling = load::closed_loop(&client, &calls, Stop::For(plan.s2_duration * 2)).await;
    if ceiling.errors > 0 {
        r.failures
            .push(format!("mock ceiling: {:?}", ceiling.first_error));
    }
    let c = ceiling.summary();
    r.mock_ceiling = Some(Ceiling {
        concurrency: 32,
        rps: c.rps,
        p99_us: c.p99_us,
    });
    if plan.runs("S1") {
        s1(plan, &upstream.addr, &mut r).await;
    }
    if plan.runs("S2") {
        s2(plan, &upstream.addr, &mut r).await;
    }
    if plan.runs("S3") {
        s3(plan, &mut r).await;
    }
    if plan.runs("S4") {
        s4(plan, &upstream.addr, &mut r).await;
    }
    if plan.runs("S5") {
        s5(plan, &upstream.addr, &mut r).await;
    }
    if plan.runs("S6") {
        s6(plan, &upstream.addr, &mut r).await;
    }
    if plan.runs("S7") {
        s7(plan, &upstream.addr, &mut r).await;
    }
    if plan.runs("S8") {
        s8(plan, &upstream.addr, &mut r).await;
    }
    if plan.runs("S9") {
        s9(plan, &mut r).await;
    }
    if plan.runs("S10") {
        s10(plan, &upstream.addr, &mut r).await;
    }
    if let Some(h) = plan.hold {
        hold(&upstream.addr, h).await;
    }
    upstream.stop();
    r
}

/// Alternating direct and gateway rounds of `n` sequential requests each.
async fn abab(
    plan: &Plan,
    client: &awc::Client,
    direct: &Call,
    through: &Call,
    cpu_of: Option<&dyn Fn() -> u64>,
    kind: &str,
    k: usize,
) -> S1Row {
    let warm = (plan.s1_requests / 10).max(10);
    let _ = load::closed_loop(client, std::slice::from_ref(direct), Stop::Each(warm)).await;
    let _ = load::closed_loop(client, std::slice::from_ref(through), Stop::Each(warm)).await;
    let mut rounds = Vec::new();
    let mut cpu = Vec::new();
    let mut errors = 0;
    for _ in 0..plan.rounds {
        let d = load::closed_loop(
            client,
            std::slice::from_ref(direct),
            Stop::Each(plan.s1_requests),
        )
        .await;
        let before = cpu_of.map(|f| f());
        let g = load::closed_loop(
            client,
            std::slice::from_ref(through),
            Stop::Each(plan.s1_requests),
        )
        .await;
        if let (Some(f), Some(before)) = (cpu_of, before) {
            cpu.push(f().saturating_sub(before) as f64 / 1000.0 / g.ok.max(1) as f64);
        }
        errors += d.errors + g.errors;
        if let Some(e) = g.first_error.as_ref().or(d.first_error.as_ref()) {
            eprintln!("{kind} K={k}: {e}");
        }
        rounds.push((d.summary(), g.summary()));
    }
    let pick = |f: &dyn Fn(&(load::Summary, load::Summary)) -> f64| {
        Spread::of(&rounds.iter().map(f).collect::<Vec<_>>())
    };
    S1Row {
        kind: kind.to_string(),
        k,
        added_p50_us: pick(&|(d, g)| g.p50_us as f64 - d.p50_us as f64),
        added_p99_us: pick(&|(d, g)| g.p99_us as f64 - d.p99_us as f64),
        direct_p50_us: pick(&|(d, _)| d.p50_us as f64),
        gateway_p50_us: pick(&|(_, g)| g.p50_us as f64),
        gateway_p99_us: pick(&|(_, g)| g.p99_us as f64),
        core_us_per_msg: Spread::of(&cpu),
        errors,
        rounds,
    }
}

/// A gateway's spec and the script plugins written into its plugin directory.
type Setup = (GatewaySpec, Vec<(String, String)>);

/// One S1 row: a fresh gateway with `spec` and `scripts`, one session through `plugins`,
/// alternating rounds against the direct call.
#[allow(clippy::too_many_arguments)]
async fn s1_row(
    plan: &Plan,
    client: &awc::Client,
    upstream: &str,
    direct: &Call,
    (spec, scripts): Setup,
    plugins: &[String],
    (kind, k): (&str, usize),
    r: &mut Results,
) {
    let gw = Gateway::start(upstream, spec, &scripts);
    let session = gw.sessions(client, plugins, 1).await.remove(0);
    let through = gw.message(&session, MESSAGE);
    let pid = gw.server.pid();
    let cpu = move || crate::procs::cpu_ns(pid);
    let row = abab(plan, client, direct, &through, Some(&cpu), kind, k).await;
    if row.errors > 0 {
        r.failures
            .push(format!("S1 {kind} K={k}: {} errors", row.errors));
    }
    r.s1.push(row);
    gw.stop();
}

async fn s1(plan: &Plan, upstream: &str, r: &mut Results) {
    let client = load::client(8);
    let direct = direct(upstream);
    for kind in ["native", "script"] {
        for &k in &plan.ks {
            let (setup, ids): (Setup, Vec<String>) = if kind == "native" {
                let spec = GatewaySpec {
                    noop: k,
                    ..Default::default()
                };
                (
                    (spec, Vec::new()),
                    (1..=k).map(|i| format!("noop-{i}")).collect(),
                )
            } else {
                let chain = script_chain(k);
                let ids = chain.iter().map(|(id, _)| id.clone()).collect();
                ((GatewaySpec::default(), chain), ids)
            };
            s1_row(plan, &client, upstream, &direct, setup, &ids, (kind, k), r).await;
        }
    }
    // What the store (session and transcript writes) costs on this path.
    let no_store = GatewaySpec {
        store: false,
        ..Default::default()
    };
    let setup = (no_store, Vec::new());
    s1_row(
        plan,
        &client,
        upstream,
        &direct,
        setup,
        &[],
        ("native, store off", 0),
        r,
    )
    .await;
    // The reply waits for its transcript's commit (`store.durability = "acknowledged"`).
    let acknowledged = GatewaySpec {
        durability: "acknowledged".into(),
        ..Default::default()
    };
    s1_row(
        plan,
        &client,
        upstream,
        &direct,
        (acknowledged, Vec::new()),
        &[],
        ("native, acknowledged", 0),
        r,
    )
    .await;
    // The realistic plugin, native and script: parse, rewrite and re-serialise the message.
    let js = (
        "js-rewrite".to_string(),
        roles::script_rewrite("js-rewrite"),
    );
    for (kind, scripts, id) in [
        ("native rewrite", Vec::new(), "rewrite"),
        ("script rewrite", vec![js], "js-rewrite"),
    ] {
        let spec = GatewaySpec {
            fixtures: true,
            ..Default::default()
        };
        let plugins = [id.to_string()];
        s1_row(
            plan,
            &client,
            upstream,
            &direct,
            (spec, scripts),
            &plugins,
            (kind, 1),
            r,
        )
        .await;
    }
    // The floor a bare proxy hop costs.
    match Nginx::start(upstream) {
        Some(nginx) => {
            let through = Call::post(
                format!("http://{}/v1/chat/completions", nginx.addr),
                &direct_body(),
            );
            let pid = nginx.pid();
            let cpu = move || crate::procs::cpu_ns_with_children(pid);
            let row = abab(
                plan,
                &client,
                &direct,
                &through,
                Some(&cpu),
                "nginx (bare proxy)",
                0,
            )
            .await;
            if row.errors > 0 {
                r.failures.push(format!("S1 nginx: {} errors", row.errors));
            }
            r.s1.push(row);
        }
        None => r
            .notes
            .push("nginx is not installed: the bare-proxy floor was not measured.".into()),
    }
    for kind in PeerKind::ALL {
        s1_peer(plan, &client, upstream, kind, r).await;
    }
    s1_front_door(plan, &client, upstream, r).await;
    for kind in ["native", "script"] {
        let rows: Vec<&S1Row> = r.s1.iter().filter(|x| x.kind == kind).collect();
        if rows.len() < 2 {
            continue;
        }
        let fit = |f: &dyn Fn(&S1Row) -> f64| {
            slope(&rows.iter().map(|x| (x.k as f64, f(x))).collect::<Vec<_>>())
        };
        r.s1_slopes.push(Slope {
            kind: kind.to_string(),
            us_per_hop_p50: fit(&|x| x.added_p50_us.median),
            us_per_hop_p99: fit(&|x| x.added_p99_us.median),
            core_us_per_hop: fit(&|x| x.core_us_per_msg.median),
        });
    }
}

/// One concurrency sweep: at each c, alternating direct and gateway rounds.
async fn sweep(
    plan: &Plan,
    client: &awc::Client,
    direct: &Call,
    through: &[Call],
    cpu_of: Option<&dyn Fn() -> u64>,
    label: &str,
    stop_past_10ms: bool,
) -> S2Series {
    let mut points: Vec<S2Point> = Vec::new();
    let mut stopped_at = None;
    // The last level's median p50 (µs): once it is 10 ms, no higher c can have p99 < 10 ms.
    let mut last_p50 = 0.0;
    for &c in &plan.s2_concurrency {
        if let Some(last) = points.last().filter(|_| stop_past_10ms) {
            if last.errors > 0 || last_p50 >= 10_000.0 {
                stopped_at = Some(last.concurrency);
                break;
            }
        }
        let directs = vec![direct.clone(); c];
        let mut rows = Vec::new();
        let mut cpu = Vec::new();
        let mut errors = 0;
        for _ in 0..plan.rounds {
            let d = load::closed_loop(client, &directs, Stop::For(plan.s2_duration)).await;
            let before = cpu_of.map(|f| f());
            let g = load::closed_loop(client, &through[..c], Stop::For(plan.s2_duration)).await;
            if let (Some(f), Some(before)) = (cpu_of, before) {
                cpu.push(f().saturating_sub(before) as f64 / 1000.0 / g.ok.max(1) as f64);
            }
            errors += g.errors + d.errors;
            if let Some(e) = g.first_error.as_ref().or(d.first_error.as_ref()) {
                eprintln!("{label} c={c}: {e}");
            }
            rows.push((d.summary(), g.summary()));
        }
        let pick = |f: &dyn Fn(&(load::Summary, load::Summary)) -> f64| {
            Spread::of(&rows.iter().map(f).collect::<Vec<_>>())
        };
        last_p50 = pick(&|(_, g)| g.p50_us as f64).median;
        points.push(S2Point {
            concurrency: c,
            gateway_rps: pick(&|(_, g)| g.rps),
            gateway_p99_us: pick(&|(_, g)| g.p99_us as f64),
            direct_rps: pick(&|(d, _)| d.rps),
            direct_p99_us: pick(&|(d, _)| d.p99_us as f64),
            core_us_per_msg: Spread::of(&cpu),
            errors,
        });
    }
    let best = points
        .iter()
        .filter(|p| p.errors == 0 && p.gateway_p99_us.median < 10_000.0)
        .max_by(|a, b| a.gateway_rps.median.total_cmp(&b.gateway_rps.median))
        .map(|p| (p.concurrency, p.gateway_rps.median, p.gateway_p99_us.median));
    S2Series {
        label: label.to_string(),
        points,
        best,
        open_loop: None,
        stopped_at,
    }
}

/// The open-loop step of a finished sweep: half its best closed-loop throughput as a constant
/// rate, and the sessions that rate needs (`load::open_loop_sessions`, from the best point's
/// p99). `None` when no point qualified.
fn open_loop_plan(series: &S2Series) -> Option<(f64, usize)> {
    let (_, rps, p99_us) = series.best?;
    let rate = (rps / 2.0).max(50.0);
    let p99 = Duration::from_micros(p99_us.max(0.0) as u64);
    Some((
        rate,
        load::open_loop_sessions(rate, p99, load::OPEN_LOOP_MAX_SESSIONS),
    ))
}

/// Runs the open-loop step at `rate`, straight to the mock and through `through` (one session
/// each, as many as the plan gave), each side on a client with a connection per session, and
/// records it in `series`. Requests the generator could not send are reported as such, in a
/// note; only the gateway's own errors count as errors.
async fn open_loop_step(
    plan: &Plan,
    series: &mut S2Series,
    direct: &Call,
    through: &[Call],
    rate: f64,
    r: &mut Results,
) {
    let duration = plan.s2_duration * 2;
    let client = load::client(through.len());
    let directs = vec![direct.clone(); through.len()];
    // A few connections each way first, so the run does not start by opening them.
    let warm = through.len().min(16);
    let _ = load::closed_loop(&client, &directs[..warm], Stop::Each(2)).await;
    let _ = load::closed_loop(&client, &through[..warm], Stop::Each(2)).await;
    let d = load::open_loop(&client, &directs, rate, duration).await;
    let g = load::open_loop(&client, through, rate, duration).await;
    let label = &series.label;
    for (what, run) in [("gateway", &g), ("direct", &d)] {
        if run.errors > 0 {
            eprintln!(
                "{label} open loop ({what}): {} errors ({:?})",
                run.errors, run.first_error
            );
        }
    }
    let open = OpenLoop {
        rate,
        sessions: through.len(),
        gateway: g.summary(),
        direct: d.summary(),
    };
    if let Some(line) = open.saturation() {
        r.notes.push(format!("S2 {label}: {line}"));
    }
    series.open_loop = Some(open);
}

async fn s2(plan: &Plan, upstream: &str, r: &mut Results) {
    let max_c = plan.s2_concurrency.iter().copied().max().unwrap_or(1);
    let client = load::client(max_c * 2 + 8);
    let direct = direct(upstream);
    for (k, durability) in [(0usize, "batched"), (0, "acknowledged"), (8, "batched")] {
        let gw = Gateway::start(
            upstream,
            GatewaySpec {
                noop: k,
                durability: durability.into(),
                ..Default::default()
            },
            &[],
        );
        let ids: Vec<String> = (1..=k).map(|i| format!("noop-{i}")).collect();
        let sessions = gw.sessions(&client, &ids, max_c).await;
        let mut through: Vec<Call> = sessions.iter().map(|s| gw.message(s, MESSAGE)).collect();
        let pid = gw.server.pid();
        let cpu = move || crate::procs::cpu_ns(pid);
        let mut series = sweep(
            plan,
            &client,
            &direct,
            &through,
            Some(&cpu),
            &match durability {
                "batched" => format!("K={k} native no-op plugins"),
                _ => format!("K={k} native no-op plugins, durability {durability}"),
            },
            false,
        )
        .await;
        if let Some((rate, n)) = open_loop_plan(&series) {
            // One request in flight per session: as many as the rate needs.
            let more = gw
                .sessions(&client, &ids, n.saturating_sub(through.len()))
                .await;
            through.extend(more.iter().map(|s| gw.message(s, MESSAGE)));
            through.truncate(n);
            open_loop_step(plan, &mut series, &direct, &through, rate, r).await;
        }
        // Only the gateway's own errors fail the run (not a generator that ran dry).
        if series.points.iter().any(|p| p.errors > 0)
            || series
                .open_loop
                .as_ref()
                .is_some_and(|o| o.gateway.errors > 0)
        {
            r.failures
                .push(format!("S2 K={k} ({durability}): errors in the sweep"));
        }
        r.s2.push(series);
        gw.stop();
    }
    if let Some(nginx) = Nginx::start(upstream) {
        let call = Call::post(
            format!("http://{}/v1/chat/completions", nginx.addr),
            &direct_body(),
        );
        let through = vec![call.clone(); max_c];
        let pid = nginx.pid();
        let cpu = move || crate::procs::cpu_ns_with_children(pid);
        let mut series = sweep(
            plan,
            &client,
            &direct,
            &through,
            Some(&cpu),
            "nginx (bare proxy, 1 worker)",
            false,
        )
        .await;
        if let Some((rate, n)) = open_loop_plan(&series) {
            open_loop_step(plan, &mut series, &direct, &vec![call; n], rate, r).await;
        }
        if series.points.iter().any(|p| p.errors > 0) {
            r.failures.push("S2 nginx: errors in the sweep".into());
        }
        r.s2.push(series);
    }
    for kind in PeerKind::ALL {
        s2_peer(plan, &client, upstream, max_c, kind, r).await;
    }
}

/// Installs (when the plan allows) and starts a peer; `None`, with a note saying why, when it
/// cannot be measured.
fn start_peer(
    plan: &Plan,
    upstream: &str,
    kind: PeerKind,
    scenario: &str,
    r: &mut Results,
) -> Option<Peer> {
    let label = kind.label();
    if !plan.peers {
        r.notes
            .push(format!("{scenario} {label}: not measured (--no-peers)."));
        return None;
    }
    match kind.ensure_installed(plan.install_peers) {
        Ok(Some(seconds)) => r.notes.push(format!(
            "{label}: installed for this run in {seconds:.0} s ({:.0} MB on disk).",
            crate::procs::du_bytes(&kind.dir()) as f64 / 1e6
        )),
        Ok(None) => {}
        Err(e) => {
            r.notes
                .push(format!("{scenario} {label}: not measured: {e}."));
            return None;
        }
    }
    eprintln!("{scenario}: starting {label} ...");
    match Peer::start(kind, upstream) {
        Ok(peer) => Some(peer),
        Err(e) => {
            r.notes
                .push(format!("{scenario} {label}: not measured: it {e}."));
            None
        }
    }
}

/// A peer's S1 row: alternating rounds of the same chat request straight to the mock and
/// through the peer. A slow peer gets fewer requests per round (about 3 s' worth, at least
/// 200), so a 10 ms proxy does not take minutes.
async fn s1_peer(
    plan: &Plan,
    client: &awc::Client,
    upstream: &str,
    kind: PeerKind,
    r: &mut Results,
) {
    let Some(peer) = start_peer(plan, upstream, kind, "S1", r) else {
        return;
    };
    let label = kind.label();
    let direct = Call::post(
        format!("http://{upstream}/v1/chat/completions"),
        &chat_body(),
    );
    let through = peer.call(&chat_body());
    // First calls (imports, connection pools), then an estimate of its latency.
    let probe = load::closed_loop(client, std::slice::from_ref(&through), Stop::Each(20)).await;
    if probe.ok == 0 {
        r.notes.push(format!(
            "S1 {label}: not measured: no answer ({}).",
            probe.first_error.unwrap_or_default()
        ));
        return;
    }
    let mean_us = probe.hist.mean().max(1.0);
    let per_round = ((3e6 / mean_us) as u64).clamp(plan.s1_requests.min(200), plan.s1_requests);
    let peer_plan = Plan {
        s1_requests: per_round,
        ..plan.clone()
    };
    let pid = peer.pid();
    let cpu = move || crate::procs::cpu_ns_tree(pid);
    let row = abab(&peer_plan, client, &direct, &through, Some(&cpu), &label, 0).await;
    if row.errors > 0 {
        r.notes
            .push(format!("S1 {label}: {} errors (see the row).", row.errors));
    }
    if per_round < plan.s1_requests {
        r.notes.push(format!(
            "S1 {label}: {per_round} requests per round and side (a slow peer: about 3 s' worth)."
        ));
    }
    r.notes.push(format!(
        "S1 {label}: {:.0} MiB resident (VmRSS, process tree) after its rounds.",
        crate::procs::rss_kib_tree(pid) as f64 / 1024.0
    ));
    r.s1.push(row);
}

/// The row to read beside the peers: the same OpenAI request through switchyard's front door
/// (`POST /v1/chat/completions`, a model route to the mock's OpenAI API, no plugin, no key),
/// against the same request sent straight to the mock.
async fn s1_front_door(plan: &Plan, client: &awc::Client, upstream: &str, r: &mut Results) {
    const LABEL: &str = "switchyard front door (OpenAI /v1/chat/completions)";
    let spec = GatewaySpec {
        frontdoor_open: true,
        ..GatewaySpec::default()
    };
    let gw = Gateway::start(upstream, spec, &[]);
    let route = json!({
        "name": "bench",
        "inference": { "provider": "openai", "modelId": "bench", "endpoint": format!("http://{upstream}/v1") },
    });
    let create = Call::post(format!("{}/api/models", gw.base), &route.to_string());
    if let Err(e) = load::send(client, &create).await {
        r.failures
            .push(format!("S1 front door: the model route was refused: {e}"));
        gw.stop();
        return;
    }
    let direct = Call::post(
        format!("http://{upstream}/v1/chat/completions"),
        &chat_body(),
    );
    let through = Call::post(format!("{}/v1/chat/completions", gw.base), &chat_body());
    match load::send(client, &through).await {
        Ok(body)
            if serde_json::from_slice::<Value>(&body)
                .is_ok_and(|v| v["choices"][0]["message"]["content"].is_string()) => {}
        other => {
            r.failures
                .push(format!("S1 front door: not an OpenAI answer: {other:?}"));
            gw.stop();
            return;
        }
    }
    let pid = gw.server.pid();
    let cpu = move || crate::procs::cpu_ns(pid);
    // Without a conversation key each request has a session of its own (opened, used,
    // closed); with `X-Session-ID` the requests of one conversation share one.
    let conversation = through.clone().header("x-session-id", "bench-conversation");
    for (label, call) in [
        (LABEL.to_string(), through),
        (
            format!("{LABEL}, one conversation (X-Session-ID)"),
            conversation,
        ),
    ] {
        let row = abab(plan, client, &direct, &call, Some(&cpu), &label, 0).await;
        if row.errors > 0 {
            r.failures
                .push(format!("S1 {label}: {} errors", row.errors));
        }
        r.s1.push(row);
    }
    gw.stop();
}

/// A peer's S2 series: the same sweep as the gateway's, stopping after the first concurrency
/// whose p50 is 10 ms or more (or that had errors): beyond it a closed loop only queues, so
/// no higher concurrency can have p99 < 10 ms, and a slow peer does not spend minutes there.
async fn s2_peer(
    plan: &Plan,
    client: &awc::Client,
    upstream: &str,
    connections: usize,
    kind: PeerKind,
    r: &mut Results,
) {
    let Some(peer) = start_peer(plan, upstream, kind, "S2", r) else {
        return;
    };
    let label = kind.label();
    let direct = Call::post(
        format!("http://{upstream}/v1/chat/completions"),
        &chat_body(),
    );
    let through = vec![peer.call(&chat_body()); connections];
    // First calls (imports, connection pools) outside the measurement.
    let _ = load::closed_loop(client, &through[..4.min(connections)], Stop::Each(10)).await;
    let pid = peer.pid();
    let cpu = move || crate::procs::cpu_ns_tree(pid);
    let mut series = sweep(plan, client, &direct, &through, Some(&cpu), &label, true).await;
    if let Some((rate, n)) = open_loop_plan(&series) {
        let calls = vec![peer.call(&chat_body()); n];
        open_loop_step(plan, &mut series, &direct, &calls, rate, r).await;
    }
    if series.points.iter().any(|p| p.errors > 0)
        || series
            .open_loop
            .as_ref()
            .is_some_and(|o| o.gateway.errors > 0)
    {
        r.notes
            .push(format!("S2 {label}: errors in the sweep (see its table)."));
    }
    r.s2.push(series);
}

async fn s3(plan: &Plan, r: &mut Results) {
    let slow = mock(20);
    let k = 8;
    let gw = Gateway::start(
        &slow.addr,
        GatewaySpec {
            noop: k,
            ..Default::default()
        },
        &[],
    );
    let n = plan.s3_sessions;
    let client = load::client(n + 16);
    let ids: Vec<String> = (1..=k).map(|i| format!("noop-{i}")).collect();
    let sessions = gw.sessions(&client, &ids, n).await;
    let through: Vec<Call> = sessions.iter().map(|s| gw.message(s, MESSAGE)).collect();
    let directs = vec![direct(&slow.addr); n];
    // Alternating rounds, the run's duration split between them.
    let each = plan.s3_duration / plan.rounds as u32;
    let mut rounds = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..plan.rounds {
        let d = load::closed_loop(&client, &directs, Stop::For(each)).await;
        let before = gw.server.cpu_ns();
        let g = load::closed_loop(&client, &through, Stop::For(each)).await;
        cpu.push((gw.server.cpu_ns() - before) as f64 / 1000.0 / g.ok.max(1) as f64);
        if g.errors > 0 || d.errors > 0 {
            r.failures.push(format!(
                "S3: {} gateway errors ({:?}), {} direct errors",
                g.errors, g.first_error, d.errors
            ));
        }
        rounds.push((d.summary(), g.summary()));
    }
    let pick = |f: &dyn Fn(&(load::Summary, load::Summary)) -> f64| {
        Spread::of(&rounds.iter().map(f).collect::<Vec<_>>())
    };
    r.s3 = Some(S3 {
        sessions: n,
        k,
        gateway_rate: pick(&|(_, g)| g.rps),
        gateway_p50_us: pick(&|(_, g)| g.p50_us as f64),
        gateway_p99_us: pick(&|(_, g)| g.p99_us as f64),
        direct_rate: pick(&|(d, _)| d.rps),
        direct_p50_us: pick(&|(d, _)| d.p50_us as f64),
        direct_p99_us: pick(&|(d, _)| d.p99_us as f64),
        errors: rounds.iter().map(|(d, g)| d.errors + g.errors).sum(),
        core_us_per_msg: Spread::of(&cpu),
        rounds,
    });
    gw.stop();
    slow.stop();
}

/// One S4 round's p50s: direct first chunk and end, gateway first chunk and end (µs).
type StreamRound = (f64, f64, f64, f64);

/// S4: streamed answers. Alternates the direct stream from the mock with the same stream
/// through a gateway session (SSE connector, then HTTP_REST streaming), `s4_requests` each per
/// round, and reports the added time to the first chunk and per later chunk.
async fn s4(plan: &Plan, upstream: &str, r: &mut Results) {
    let client = load::client(8);
    let gw = Gateway::start(upstream, GatewaySpec::default(), &[]);
    let n = roles::STREAM_CHUNKS;
    let gateway_addr = gw.base.trim_start_matches("http://").to_string();
    for (path, target) in [
        ("SSE connector", "stream-sse"),
        ("HTTP_REST, stream", "stream-rest"),
    ] {
        let body = json!({ "targetId": target }).to_string();
        let opened = load::send(
            &client,
            &Call::post(format!("{}/api/sessions", gw.base), &body),
        )
        .await;
        let session = match opened.map(|b| serde_json::from_slice::<Value>(&b)) {
            Ok(Ok(v)) => v["id"].as_str().unwrap_or_default().to_string(),
            other => {
                r.failures
                    .push(format!("S4 {path}: cannot open a session: {other:?}"));
                continue;
            }
        };
        let mut direct = load::RawStream::new(upstream);
        let mut through = load::RawStream::new(&gateway_addr);
        let direct_body = direct_body();
        let through_path = format!("/api/sessions/{session}/messages");
        let through_body = gateway_body(MESSAGE);
        let mut rounds: Vec<StreamRound> = Vec::new();
        let mut errors = 0;
        for round in 0..=plan.rounds {
            let mut sides = Vec::new();
            for (conn, url, body, marker) in [
                (
                    &mut direct,
                    "/v1/stream",
                    direct_body.as_str(),
                    &b"data:"[..],
                ),
                (
                    &mut through,
                    through_path.as_str(),
                    through_body.as_str(),
                    &b"event: chunk"[..],
                ),
            ] {
                let (mut firsts, mut totals) = (Vec::new(), Vec::new());
                for _ in 0..plan.s4_requests {
                    match conn.send(url, body, marker).await {
                        Ok(s) => {
                            firsts.push(s.first_us as f64);
                            totals.push(s.total_us as f64);
                        }
                        Err(e) => {
                            if errors == 0 {
                                eprintln!("S4 {path}: {e}");
                            }
                            errors += 1;
                        }
                    }
                }
                sides.push((Spread::of(&firsts).median, Spread::of(&totals).median));
            }
            // Round 0 warms both sides up.
            if round > 0 {
                rounds.push((sides[0].0, sides[0].1, sides[1].0, sides[1].1));
            }
        }
        if errors > 0 {
            r.failures.push(format!("S4 {path}: {errors} errors"));
        }
        let pick =
            |f: &dyn Fn(&StreamRound) -> f64| Spread::of(&rounds.iter().map(f).collect::<Vec<_>>());
        let later = (n.max(2) - 1) as f64;
        r.s4.push(S4Row {
            path: path.to_string(),
            chunks: n,
            direct_first_p50_us: pick(&|x| x.0),
            gateway_first_p50_us: pick(&|x| x.2),
            added_first_p50_us: pick(&|x| x.2 - x.0),
            per_chunk_us: pick(&|x| ((x.3 - x.2) - (x.1 - x.0)) / later),
            errors,
        });
    }
    gw.stop();
}

async fn settle() {
    actix_web::rt::time::sleep(Duration::from_millis(700)).await;
}

async fn s5(plan: &Plan, upstream: &str, r: &mut Results) {
    let client = load::client(64);
    let idle = Gateway::start(upstream, GatewaySpec::default(), &[]);
    settle().await;
    let idle_rss = idle.server.rss_kib();
    idle.stop();

    let k = 8;
    let ids: Vec<String> = (1..=k).map(|i| format!("noop-{i}")).collect();
    let n = plan.s5_sessions;

    // Live: parking off, every idle session keeps its actor (the figure before parking).
    let gw = Gateway::start(
        upstream,
        GatewaySpec {
            noop: k,
            max_sessions: n + 1,
            // Held sessions must outlive the time it takes to open them all.
            idle_timeout_ms: 3_600_000,
            env: vec![("SWITCHYARD__SESSIONS__PARK_AFTER_MS".into(), "0".into())],
            ..Default::default()
        },
        &[],
    );
    // One session first, so lazily built things (pools, statements) are not counted per session.
    let _ = gw.sessions(&client, &ids, 1).await;
    settle().await;
    let before = gw.server.rss_kib();
    let _ = gw.sessions(&client, &ids, n).await;
    settle().await;
    let after = gw.server.rss_kib();
    gw.stop();
    let live_bytes = (after.saturating_sub(before) * 1024) as f64 / n as f64;

    // Parked: idle sessions park after S5_PARK_AFTER_MS. They are opened in batches, each
    // waiting until the ones before it parked, so the figure is what parked sessions hold (with
    // at most one batch live at a time, as a gateway whose sessions idle does), not the
    // allocator's high-water mark of all of them live at once.
    // A full run also holds 100,000 idle sessions; a smoke run stays tiny.
    let held = if plan.smoke { 0 } else { S5_HELD };
    let gw = Gateway::start(
        upstream,
        GatewaySpec {
            noop: k,
            max_sessions: held.max(n) + 1,
            idle_timeout_ms: 3_600_000,
            env: vec![(
                "SWITCHYARD__SESSIONS__PARK_AFTER_MS".into(),
                S5_PARK_AFTER_MS.to_string(),
            )],
            ..Default::default()
        },
        &[],
    );
    let _ = gw.sessions(&client, &ids, 1).await;
    gw.all_parked(&client, 1).await;
    settle().await;
    let before = gw.server.rss_kib();
    let mut open = 0;
    while open < n {
        let batch = (n - open).min(S5_BATCH);
        let _ = gw.sessions(&client, &ids, batch).await;
        open += batch;
        gw.all_parked(&client, open + 1).await;
    }
    settle().await;
    let after = gw.server.rss_kib();
    let parked_bytes = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    let held_row = if held > n {
        // Opened here rather than by `Gateway::sessions`, so that a refusal or the time limit
        // ends this row with what was held instead of losing the scenario.
        let body = json!({
            "targetId": "mock",
            "plugins": ids.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
        })
        .to_string();
        let call = Call::post(format!("{}/api/sessions", gw.base), &body);
        let began = Instant::now();
        let (mut open, mut stopped) = (n, None);
        while open < held && stopped.is_none() {
            if began.elapsed() > S5_HELD_LIMIT {
                stopped = Some(format!("time limit ({} s)", S5_HELD_LIMIT.as_secs()));
                break;
            }
            let batch = (held - open).min(32);
            let replies =
                futures::future::join_all((0..batch).map(|_| load::send(&client, &call))).await;
            for reply in replies {
                match reply {
                    Ok(_) => open += 1,
                    Err(e) => {
                        stopped.get_or_insert(e);
                    }
                }
            }
            if open % S5_BATCH < 32 {
                gw.all_parked(&client, open + 1).await;
            }
        }
        let opened_in = began.elapsed();
        gw.all_parked(&client, open + 1).await;
        settle().await;
        let rss = gw.server.rss_kib();
        Some(S5Held {
            sessions: open,
            rss_kib: rss,
            bytes_per_session: (rss.saturating_sub(before) * 1024) as f64 / open as f64,
            open_s: opened_in.as_secs_f64(),
            stopped,
        })
    } else {
        None
    };
    gw.stop();

    let none = Gateway::start(upstream, GatewaySpec::default(), &[]);
    settle().await;
    let base = none.server.rss_kib();
    none.stop();
    let scripts = script_chain(plan.s5_scripts);
    let many = Gateway::start(upstream, GatewaySpec::default(), &scripts);
    settle().await;
    let with = many.server.rss_kib();
    many.stop();
    r.s5 = Some(S5 {
        idle_rss_kib: idle_rss,
        sessions: n,
        bytes_per_session: parked_bytes,
        live_bytes_per_session: live_bytes,
        park_after_ms: S5_PARK_AFTER_MS,
        scripts: plan.s5_scripts,
        kib_per_script: with.saturating_sub(base) as f64 / plan.s5_scripts as f64,
        held: held_row,
    });
}

/// Idle sessions S5 holds at once on a full run (the 100k target).
const S5_HELD: usize = 100_000;

/// S5's `sessions.park_after_ms` for its parked figures.
const S5_PARK_AFTER_MS: u64 = 300;

/// Sessions S5 opens before waiting for them to park.
const S5_BATCH: usize = 250;

/// How long S5 may take to open them.
const S5_HELD_LIMIT: Duration = Duration::from_secs(720);

/// Answers seen by background load: when, and the body (or the error).
type Seen = Rc<RefCell<Vec<(Instant, Result<String, String>)>>>;

/// Keeps `calls` busy (one connection each) until `stop` is set, recording every answer.
fn background(
    client: &awc::Client,
    calls: Vec<Call>,
    seen: Seen,
    stop: Rc<RefCell<bool>>,
) -> Vec<actix_web::rt::task::JoinHandle<()>> {
    calls
        .into_iter()
        .map(|call| {
            let (client, seen, stop) = (client.clone(), seen.clone(), stop.clone());
            actix_web::rt::spawn(async move {
                while !*stop.borrow() {
                    let outcome = load::send(&client, &call).await;
                    let outcome = outcome.map(|b| String::from_utf8_lossy(&b).into_owned());
                    seen.borrow_mut().push((Instant::now(), outcome));
                }
            })
        })
        .collect()
}

async fn wait_for(
    seen: &Seen,
    since: Instant,
    what: impl Fn(&str) -> bool,
    limit: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let found = seen
            .borrow()
            .iter()
            .find(|(at, o)| *at >= since && o.as_ref().is_ok_and(|b| what(b)))
            .map(|(at, _)| *at);
        if found.is_some() {
            return found;
        }
        actix_web::rt::time::sleep(Duration::from_micros(200)).await;
    }
    None
}

/// Reloads of a plugin so far, ended either way, and the seconds they took, from a scrape
/// (`switchyard_plugin_reloads_total`, `switchyard_plugin_reload_duration_seconds_sum`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reloads {
    count: u64,
    seconds: f64,
}

/// Plugin `id`'s [`Reloads`]; `None` when the scrape failed.
async fn reloads_of(client: &awc::Client, gw: &Gateway, id: &str) -> Option<Reloads> {
    let text = load::send(client, &Call::get(format!("{}/metrics", gw.base)))
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&text);
    let label = format!("plugin=\"{id}\"");
    let sum = |metric: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(metric) && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Some(Reloads {
        count: sum("switchyard_plugin_reloads_total{") as u64,
        seconds: sum("switchyard_plugin_reload_duration_seconds_sum{"),
    })
}

/// Waits until plugin `id`'s reloads have not moved for `quiet` (up to 10 s) and returns them;
/// `None` when they kept moving (or the metrics could not be read).
async fn reloads_settled(
    client: &awc::Client,
    gw: &Gateway,
    id: &str,
    quiet: Duration,
) -> Option<Reloads> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = reloads_of(client, gw, id).await?;
    let mut since = Instant::now();
    while Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        let now = reloads_of(client, gw, id).await?;
        if now.count != last.count {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return Some(now);
        }
    }
    None
}

/// S6: each save is timed from a quiet state: the previous version answering, its reload done
/// and no reload for three debounce windows, so the reload that serves the new version can
/// only have been started by this save. Each save must cause exactly one reload, and no
/// version may answer before its save's debounce has passed.
async fn s6(plan: &Plan, upstream: &str, r: &mut Results) {
    let debounce = 100;
    let id = "stamp";
    let gw = Gateway::start(
        upstream,
        GatewaySpec {
            hot_reload_ms: debounce,
            ..Default::default()
        },
        &[(id.to_string(), roles::script_versioned(id, "1.0.0"))],
    );
    let client = load::client(16);
    let sessions = gw.sessions(&client, &[id.to_string()], 8).await;
    let calls: Vec<Call> = sessions.iter().map(|s| gw.message(s, MESSAGE)).collect();
    let seen: Seen = Rc::default();
    let stop = Rc::new(RefCell::new(false));
    let tasks = background(&client, calls, seen.clone(), stop.clone());
    let quiet = Duration::from_millis(debounce * 3);
    let mut latencies = Vec::new();
    let (mut saves, mut reloads) = (0, 0);
    let mut reload_ms = Vec::new();
    for i in 0..plan.s6_reloads {
        let Some(before) = reloads_settled(&client, &gw, id, quiet).await else {
            r.failures
                .push("S6: the plugin kept reloading (or /metrics failed) without a save".into());
            break;
        };
        let version = format!("1.0.{}", i + 1);
        let saved = Instant::now();
        std::fs::write(gw.plugin_file(id), roles::script_versioned(id, &version))
            .expect("save the plugin");
        saves += 1;
        let marker = format!("[{version}]");
        match wait_for(
            &seen,
            saved,
            |b| b.contains(&marker),
            Duration::from_secs(10),
        )
        .await
        {
            Some(at) => {
                let ms = at.duration_since(saved).as_secs_f64() * 1000.0;
                if ms < debounce as f64 {
                    r.failures.push(format!(
                        "S6: version {version} answered {ms:.1} ms after its save, within the \
                         {debounce} ms debounce: a reload this save did not start"
                    ));
                }
                latencies.push(ms);
            }
            None => r
                .failures
                .push(format!("S6: version {version} never answered")),
        }
        match reloads_settled(&client, &gw, id, quiet).await {
            Some(after) => {
                let caused = after.count.saturating_sub(before.count);
                reloads += caused;
                if caused == 1 {
                    reload_ms.push((after.seconds - before.seconds) * 1000.0);
                } else {
                    r.failures.push(format!(
                        "S6: saving version {version} caused {caused} reloads, not 1"
                    ));
                }
            }
            None => r.failures.push(format!(
                "S6: the reloads after saving version {version} never settled"
            )),
        }
    }
    *stop.borrow_mut() = true;
    for t in tasks {
        let _ = t.await;
    }
    let seen = seen.borrow();
    let failed = seen.iter().filter(|(_, o)| o.is_err()).count() as u64;
    if failed > 0 {
        r.failures
            .push(format!("S6: {failed} messages failed during reloads"));
    }
    let after: Vec<f64> = latencies.iter().map(|l| l - debounce as f64).collect();
    r.s6 = Some(S6 {
        debounce_ms: debounce,
        save_to_new_version_ms: Spread::of(&latencies),
        after_debounce_ms: Spread::of(&after),
        failed,
        served: seen.len() as u64,
        saves,
        reloads,
        reload_ms: Spread::of(&reload_ms),
    });
    gw.stop();
}

/// Whether an answer went through the crash plugin's `beforeSend` (not skipped).
fn crash_hook_ran(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["plugins"].as_array().map(|hooks| {
                hooks.iter().any(|h| {
                    h["plugin"] == "crash" && h["hook"] == "beforeSend" && h["outcome"] == "ok"
                })
            })
        })
        .unwrap_or(false)
}

async fn s7(plan: &Plan, upstream: &str, r: &mut Results) {
    let gw = Gateway::start(
        upstream,
        GatewaySpec {
            fixtures: true,
            backoff_min_ms: 0,
            ..Default::default()
        },
        &[],
    );
    let client = load::client(16);
    let plugins = ["crash".to_string()];
    let sessions = gw.sessions(&client, &plugins, 9).await;
    let calls: Vec<Call> = sessions[1..]
        .iter()
        .map(|s| gw.message(s, MESSAGE))
        .collect();
    let trigger = gw.message(&sessions[0], "panic");
    let seen: Seen = Rc::default();
    let stop = Rc::new(RefCell::new(false));
    let tasks = background(&client, calls, seen.clone(), stop.clone());
    let mut recover = Vec::new();
    let mut windows = Vec::new();
    for _ in 0..plan.s7_crashes {
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
        let sent = Instant::now();
        // The message in flight when the plugin panics: it fails (or skips the plugin).
        let _ = load::send(&client, &trigger).await;
        let answered = Instant::now();
        match wait_for(&seen, answered, crash_hook_ran, Duration::from_secs(10)).await {
            Some(at) => {
                recover.push(at.duration_since(answered).as_secs_f64() * 1000.0);
                windows.push((sent, at));
            }
            None => r
                .failures
                .push("S7: no message went through the restarted plugin".into()),
        }
    }
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    *stop.borrow_mut() = true;
    for t in tasks {
        let _ = t.await;
    }
    let seen = seen.borrow();
    let lost = seen.iter().filter(|(_, o)| o.is_err()).count() as u64;
    let skipped = seen
        .iter()
        .filter(|(at, o)| {
            windows.iter().any(|(a, b)| at >= a && at <= b)
                && o.as_ref().is_ok_and(|b| !crash_hook_ran(b))
        })
        .count() as u64;
    if lost > 0 {
        r.failures.push(format!(
            "S7: {lost} messages lost besides the one in flight"
        ));
    }
    r.s7 = Some(S7 {
        panic_to_next_served_ms: Spread::of(&recover),
        lost,
        skipped_plugin: skipped,
        served: seen.len() as u64,
    });
    gw.stop();
}

/// c=1 p50 of `call`, one figure per round.
async fn p50s(
    plan: &Plan,
    client: &awc::Client,
    call: &Call,
    r: &mut Results,
    what: &str,
) -> Spread {
    let _ = load::closed_loop(client, std::slice::from_ref(call), Stop::Each(20)).await;
    let mut values = Vec::new();
    for _ in 0..plan.rounds {
        let run = load::closed_loop(
            client,
            std::slice::from_ref(call),
            Stop::Each(plan.s8_requests),
        )
        .await;
        if run.errors > 0 {
            r.failures.push(format!(
                "S8 {what}: {} errors ({:?})",
                run.errors, run.first_error
            ));
        }
        values.push(run.summary().p50_us as f64);
    }
    Spread::of(&values)
}

async fn s8(plan: &Plan, upstream: &str, r: &mut Results) {
    let gw = Gateway::start(
        upstream,
        GatewaySpec::default(),
        &[("ext".to_string(), roles::script_extension())],
    );
    let client = load::client(4);
    let measure = |base: &str, calls: &[(&'static str, &str, Option<&str>)]| {
        calls
            .iter()
            .map(|(what, path, body)| {
                let url = format!("{base}{path}");
                let call = match body {
                    Some(body) => Call::post(url, body),
                    None => Call::get(url),
                };
                (*what, call)
            })
            .collect::<Vec<_>>()
    };
    let mut p50 = Vec::new();
    for (what, call) in measure(
        &gw.base,
        &[
            ("livez", "/livez", None),
            ("script route", "/plugins/ext/ping", None),
            ("tool lookup", "/api/tools/echo", None),
            (
                "script tool",
                "/api/tools/echo/invoke",
                Some(r#"{"params":{"a":1}}"#),
            ),
        ],
    ) {
        p50.push(p50s(plan, &client, &call, r, what).await);
    }
    gw.stop();
    // The native `hello` plugin is a built-in: a second gateway with it selected.
    let native = Gateway::start_with_native(upstream, &["event-logger", "hello"]);
    for (what, call) in measure(
        &native.base,
        &[
            ("native route", "/plugins/hello/greet/x", None),
            (
                "native tool",
                "/api/tools/hello/invoke",
                Some(r#"{"params":{"name":"x"}}"#),
            ),
        ],
    ) {
        p50.push(p50s(plan, &client, &call, r, what).await);
    }
    native.stop();
    let [core_route, plugin_route, tool_lookup, script_tool, native_route, native_tool] = p50[..]
    else {
        unreachable!("six calls measured")
    };
    r.s8 = Some(S8 {
        core_route_p50_us: core_route,
        plugin_route_p50_us: plugin_route,
        native_route_p50_us: native_route,
        tool_lookup_p50_us: tool_lookup,
        script_tool_p50_us: script_tool,
        native_tool_p50_us: native_tool,
    });
}

impl Gateway {
    /// A gateway with built-in native plugins selected (`plugins.native`).
    fn start_with_native(upstream: &str, native: &[&str]) -> Gateway {
        Gateway::start(
            upstream,
            GatewaySpec {
                native: native.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            &[],
        )
    }
}

/// S9: a script plugin's hooks called in-process, as a session's thread calls them, so a hook's
/// own cost is seen without HTTP, the store or the upstream around it.
async fn s9(plan: &Plan, r: &mut Results) {
    use switchyard::plugin::{Hook, HookContext, Plugin};
    use switchyard::script::{engine::Limits, PluginPolicy, ScriptPlugin, ScriptStatus};
    let calls = if plan.smoke { 50 } else { 20_000 };
    let raw = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there! How can I help you today?"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}});
    let headers = json!({"content-type": "application/json", "date": "Thu, 26 Nov 2026 21:00:00 GMT", "content-length": "300", "x-request-id": "abc"});
    let before = json!({"message": "{\"text\":\"hello world\"}", "metadata": {"model": "bench"}});
    let after = json!({"response": {"content": "Hello there! How can I help you today?",
        "metadata": {"responseTimeMs": 3, "rawResponse": raw, "headers": headers, "tokenUsage": {"promptTokens": 9}}}});
    let policy = |_: &[&str]| PluginPolicy {
        limits: Limits {
            memory_limit_bytes: 64 << 20,
            call_timeout: Duration::from_secs(1),
            max_stack_bytes: 512 << 10,
            max_host_calls: 100,
        },
        fetch: Default::default(),
        hooks_on_session_thread: true,
    };
    let fixtures = [
        (
            "no-op",
            roles::script_noop("p"),
            vec![Hook::BeforeSend, Hook::AfterReceive],
        ),
        (
            "JSON rewrite",
            roles::script_rewrite("p"),
            vec![Hook::BeforeSend],
        ),
    ];
    for (plugin, source, hooks) in fixtures {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let plugin_dir = dir.path().join("p");
        std::fs::create_dir_all(&plugin_dir).expect("the plugin's directory");
        std::fs::write(plugin_dir.join("index.js"), source).expect("the plugin's source");
        let Some(found) = switchyard::script::source_for(dir.path(), "p") else {
            r.failures
                .push("S9: the fixture plugin was not found".into());
            return;
        };
        let loaded = ScriptPlugin::load(&found, &policy, ScriptStatus::new(found.clone()));
        if let Some(error) = loaded.load_error() {
            r.failures.push(format!("S9 {plugin}: {error}"));
            continue;
        }
        for hook in hooks {
            let input = if hook == Hook::BeforeSend {
                &before
            } else {
                &after
            };
            let mut per_call = Vec::new();
            for _ in 0..plan.rounds {
                let began = Instant::now();
                for _ in 0..calls {
                    let mut ctx = HookContext {
                        session_id: "s-1".into(),
                        target_id: "t-1".into(),
                        connector_type: "HTTP_REST".into(),
                        state: Default::default(),
                        plugin_config: Default::default(),
                    };
                    // The pipeline lends each plugin the input, as this does.
                    if let Err(e) = loaded.connector_hook("p", hook, input, &mut ctx).await {
                        r.failures.push(format!("S9 {plugin} {}: {e}", hook.name()));
                        return;
                    }
                }
                per_call.push(began.elapsed().as_secs_f64() * 1e6 / calls as f64);
            }
            r.s9.push(S9Row {
                plugin: plugin.into(),
                hook: hook.name().into(),
                us_per_call: Spread::of(&per_call),
            });
        }
    }
}

/// The cluster's shared `store.secret_key` (64 hex digits; a bench fixture, not a secret).
const S10_KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// One S10 layout: the gateways it loads and what else it counts the CPU of.
struct Layout<'a> {
    label: String,
    gateways: Vec<&'a Gateway>,
    calls: Vec<Call>,
    postgres: bool,
    nats: bool,
}

/// S10: throughput of 1, 2 and 3 instances on one PostgreSQL and one NATS, and one instance
/// on SQLite against one on PostgreSQL, every layout running at once and measured in
/// alternated rounds. Needs nats-server and PostgreSQL's binaries: without them it fails,
/// saying what to install.
async fn s10(plan: &Plan, upstream: &str, r: &mut Results) {
    let (pg, nats) = match (Postgres::start(), NatsServer::start()) {
        (Ok(pg), Ok(nats)) => (pg, nats),
        (Err(e), _) | (_, Err(e)) => {
            r.failures.push(format!("S10: {e}"));
            return;
        }
    };
    let (alone_url, cluster_url) = match (pg.database("bench_alone"), pg.database("bench_cluster"))
    {
        (Ok(a), Ok(c)) => (a, c),
        (Err(e), _) | (_, Err(e)) => {
            r.failures.push(format!("S10: {e}"));
            return;
        }
    };
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let sqlite = Gateway::start(upstream, GatewaySpec::default(), &[]);
    let alone = Gateway::start(
        upstream,
        GatewaySpec {
            env: env(&[("SWITCHYARD__STORE__URL", &alone_url)]),
            ..Default::default()
        },
        &[],
    );
    // One after the other: the first one migrates the shared database.
    let members: Vec<Gateway> = (1..=3)
        .map(|i| {
            Gateway::start(
                upstream,
                GatewaySpec {
                    env: env(&[
                        ("SWITCHYARD__STORE__URL", &cluster_url),
                        ("SWITCHYARD__BROKER__NATS_URL", &nats.url),
                        ("SWITCHYARD__SERVER__INSTANCE_ID", &format!("gw-{i}")),
                        // One database, one key for what it holds sealed.
                        ("SWITCHYARD__STORE__SECRET_KEY", S10_KEY),
                    ]),
                    ..Default::default()
                },
                &[],
            )
        })
        .collect();
    let c = plan.s10_concurrency;
    let client = load::client(c * 2 + 8);
    let mut sessions = Vec::new();
    for gw in [&sqlite, &alone].into_iter().chain(members.iter()) {
        sessions.push(gw.sessions(&client, &[], c).await);
    }
    let one = |gw: &Gateway, ids: &[String]| -> Vec<Call> {
        ids.iter().map(|s| gw.message(s, MESSAGE)).collect()
    };
    let mut layouts = vec![
        Layout {
            label: "1 instance, SQLite".into(),
            gateways: vec![&sqlite],
            calls: one(&sqlite, &sessions[0]),
            postgres: false,
            nats: false,
        },
        Layout {
            label: "1 instance, PostgreSQL".into(),
            gateways: vec![&alone],
            calls: one(&alone, &sessions[1]),
            postgres: true,
            nats: false,
        },
    ];
    for k in 1..=3 {
        // Connection i goes to instance i mod k, on that instance's own sessions.
        let calls = (0..c)
            .map(|i| members[i % k].message(&sessions[2 + i % k][i / k], MESSAGE))
            .collect();
        layouts.push(Layout {
            label: format!(
                "{k} instance{}, PostgreSQL + NATS",
                if k > 1 { "s" } else { "" }
            ),
            gateways: members[..k].iter().collect(),
            calls,
            postgres: true,
            nats: true,
        });
    }
    // The forwarding hop: gw-1's sessions through gw-1 itself, then through gw-2 (which
    // forwards each message to gw-1, their owner). Both count the CPU of both instances, so
    // the difference is the hop's.
    let direct = layouts.len();
    for (label, via) in [
        ("gw-1's sessions through gw-1 (direct)", &members[0]),
        ("gw-1's sessions through gw-2 (forwarded)", &members[1]),
    ] {
        layouts.push(Layout {
            label: label.into(),
            gateways: members[..2].iter().collect(),
            calls: sessions[2]
                .iter()
                .map(|s| via.message(s, MESSAGE))
                .collect(),
            postgres: true,
            nats: true,
        });
    }
    let forwarded = direct + 1;
    // Warm every layout once, then alternate: each round runs every layout in turn.
    for layout in &layouts {
        let _ = load::closed_loop(&client, &layout.calls, Stop::Each(10)).await;
    }
    let mut samples: Vec<Vec<[f64; 6]>> = vec![Vec::new(); layouts.len()];
    let mut errors = vec![0u64; layouts.len()];
    for _ in 0..plan.rounds {
        for (i, layout) in layouts.iter_mut().enumerate() {
            let gateway_cpu = |gws: &[&Gateway]| gws.iter().map(|g| g.server.cpu_ns()).sum::<u64>();
            let (g0, p0, n0) = (
                gateway_cpu(&layout.gateways),
                pg.cpu_ns(),
                crate::procs::cpu_ns(nats.pid()),
            );
            let run = load::closed_loop(&client, &layout.calls, Stop::For(plan.s10_duration)).await;
            let ok = run.ok.max(1) as f64;
            let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / 1000.0 / ok;
            let g = per(gateway_cpu(&layout.gateways), g0);
            let p = if layout.postgres {
                per(pg.cpu_ns(), p0)
            } else {
                0.0
            };
            let n = if layout.nats {
                per(crate::procs::cpu_ns(nats.pid()), n0)
            } else {
                0.0
            };
            if let Some(e) = &run.first_error {
                eprintln!("S10 {}: {e}", layout.label);
            }
            errors[i] += run.errors;
            let summary = run.summary();
            samples[i].push([
                summary.rps,
                summary.p99_us as f64,
                g,
                p,
                n,
                summary.p50_us as f64,
            ]);
        }
    }
    for (i, layout) in layouts.iter().enumerate() {
        let pick = |k: usize| Spread::of(&samples[i].iter().map(|s| s[k]).collect::<Vec<_>>());
        if errors[i] > 0 {
            r.failures
                .push(format!("S10 {}: {} errors", layout.label, errors[i]));
        }
        r.s10.push(S10Row {
            label: layout.label.clone(),
            instances: layout.gateways.len(),
            concurrency: c,
            rps: pick(0),
            p50_us: pick(5),
            p99_us: pick(1),
            gateway_us_per_msg: pick(2),
            database_us_per_msg: pick(3),
            nats_us_per_msg: pick(4),
            errors: errors[i],
        });
    }
    // The hop, round by round (each round ran both rows back to back).
    let paired = |k: usize| -> Vec<f64> {
        samples[forwarded]
            .iter()
            .zip(&samples[direct])
            .map(|(f, d)| f[k] - d[k])
            .collect()
    };
    r.s10_hop = Some(S10Hop {
        added_p50_us: Spread::of(&paired(5)),
        added_gateway_us_per_msg: Spread::of(&paired(2)),
    });
    drop(layouts);
    sqlite.stop();
    alone.stop();
    for gw in members {
        gw.stop();
    }
    drop(nats);
    drop(pg);
}

/// `--hold`: a gateway (K=0, or a chain of no-op script plugins) under a closed loop of `c` connections for `duration`, for a
/// profiler. Prints the gateway's pid before the load starts (`HOLD pid <pid>`), then
/// msg/s, p50/p99, core-µs and context switches per message over the whole hold.
async fn hold(upstream: &str, h: crate::Hold) {
    let crate::Hold {
        c,
        duration,
        store_off,
        scripts,
        natives,
    } = h;
    let client = load::client(c * 2 + 8);
    let chain = script_chain(scripts);
    let gw = Gateway::start(
        upstream,
        GatewaySpec {
            store: !store_off,
            noop: natives,
            ..Default::default()
        },
        &chain,
    );
    let ids: Vec<String> = chain
        .iter()
        .map(|(id, _)| id.clone())
        .chain((1..=natives).map(|i| format!("noop-{i}")))
        .collect();
    let sessions = gw.sessions(&client, &ids, c).await;
    let through: Vec<Call> = sessions.iter().map(|s| gw.message(s, MESSAGE)).collect();
    let _ = load::closed_loop(&client, &through, Stop::Each(200)).await;
    let pid = gw.server.pid();
    eprintln!("HOLD pid {pid}");
    let (cpu0, cs0) = (
        crate::procs::cpu_ns(pid),
        crate::procs::context_switches(pid),
    );
    let run = load::closed_loop(&client, &through, Stop::For(duration)).await;
    let (cpu1, cs1) = (
        crate::procs::cpu_ns(pid),
        crate::procs::context_switches(pid),
    );
    let s = run.summary();
    let n = s.requests.max(1) as f64;
    eprintln!(
        "HOLD c={c} scripts={scripts} natives={natives} store={} msgs={} msg/s={:.0} p50={}us p99={}us core-us/msg={:.1} \
         ctxsw/msg={:.2} (voluntary {:.2}, involuntary {:.2}) errors={}",
        if store_off { "off" } else { "on" },
        s.requests,
        s.rps,
        s.p50_us,
        s.p99_us,
        (cpu1 - cpu0) as f64 / 1000.0 / n,
        (cs1.0 + cs1.1 - cs0.0 - cs0.1) as f64 / n,
        (cs1.0 - cs0.0) as f64 / n,
        (cs1.1 - cs0.1) as f64 / n,
        s.errors,
    );
    gw.stop();
}
