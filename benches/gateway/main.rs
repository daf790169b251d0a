//! The benchmark harness (issue 7).
//!
//! `cargo bench --bench gateway` runs every scenario and rewrites the results section of
//! `BENCHMARKS.md`; `cargo test --bench gateway -- --smoke` runs each scenario with tiny counts
//! and fails if one errors (CI). `--only S1,S6` picks scenarios.
//!
//! S1 and S2 also measure the peers a user would otherwise pick, each as its own row: nginx
//! (the bare-proxy floor) when installed, and the LiteLLM proxy and the Portkey gateway from
//! scratch installs under `target/bench/peers/` (`benches/gateway/peers/install.sh` pins the
//! versions). A full run installs a missing peer; `--smoke` only uses one already installed
//! (`--install-peers` installs anyway, `--no-peers` skips them). A peer that cannot be
//! installed or started is reported as not measured, with the reason.
//!
//! Three processes: this harness (the load generator), the mock upstream and the gateway (this
//! executable again, with `--role`). Every latency scenario alternates a direct call to the
//! mock with the same call through the gateway, in the same run, and reports the difference:
//! the median over the rounds, with the spread (min–max).

mod load;
mod procs;
mod report;
mod roles;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

/// What `--hold` holds.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    pub c: usize,
    pub duration: Duration,
    pub store_off: bool,
    /// No-op script plugins in the session's chain.
    pub scripts: usize,
    /// No-op native plugins in the session's chain (after the scripts).
    pub natives: usize,
}

/// How much of everything a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub rounds: usize,
    pub s1_requests: u64,
    pub ks: Vec<usize>,
    pub s2_concurrency: Vec<usize>,
    pub s2_duration: Duration,
    pub s3_sessions: usize,
    pub s3_duration: Duration,
    pub s5_sessions: usize,
    pub s5_scripts: usize,
    pub s6_reloads: usize,
    pub s7_crashes: usize,
    pub s8_requests: u64,
    /// Streamed answers per round and side in S4.
    pub s4_requests: u64,
    /// S10: connections, and the length of each alternated run.
    pub s10_concurrency: usize,
    pub s10_duration: Duration,
    /// Measure the peer gateways (LiteLLM, Portkey) in S1 and S2 (`--no-peers`: not).
    pub peers: bool,
    /// Install a missing peer into `target/bench/peers/` (full runs, or `--install-peers`);
    /// otherwise a missing peer is reported as not measured.
    pub install_peers: bool,
    pub only: Option<Vec<String>>,
    /// `--hold C,SECS[,off][,scripts=K][,natives=K]`: a gateway held under a closed loop of C
    /// connections for SECS seconds (store off with `,off`; a chain of K no-op script or native
    /// plugins with `,scripts=K` / `,natives=K`, else K=0), printing its pid first so a profiler can attach (`--only HOLD`
    /// skips everything else).
    pub hold: Option<Hold>,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            smoke: false,
            rounds: 5,
            s1_requests: 2_000,
            ks: vec![0, 1, 4, 8, 16],
            s2_concurrency: vec![1, 2, 4, 8, 16, 32, 64, 128],
            s2_duration: Duration::from_millis(1_500),
            s3_sessions: 1_000,
            s3_duration: Duration::from_secs(10),
            s5_sessions: 10_000,
            s5_scripts: 20,
            s6_reloads: 5,
            s7_crashes: 5,
            s8_requests: 2_000,
            s4_requests: 300,
            s10_concurrency: 32,
            s10_duration: Duration::from_secs(3),
            peers: true,
            install_peers: true,
            only: None,
            hold: None,
        }
    }

    fn smoke() -> Plan {
        Plan {
            smoke: true,
            rounds: 1,
            s1_requests: 30,
            ks: vec![0, 1],
            s2_concurrency: vec![1, 4],
            s2_duration: Duration::from_millis(300),
            s3_sessions: 20,
            s3_duration: Duration::from_secs(1),
            s5_sessions: 50,
            s5_scripts: 2,
            s6_reloads: 1,
            s7_crashes: 1,
            s8_requests: 30,
            s4_requests: 5,
            s10_concurrency: 4,
            s10_duration: Duration::from_millis(300),
            peers: true,
            install_peers: false,
            only: None,
            hold: None,
        }
    }

    pub fn runs(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s.eq_ignore_ascii_case(scenario)))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    if let Some(role) = value("--role") {
        let spec = std::env::var("BENCH_SPEC").expect("BENCH_SPEC for a bench role");
        match role.as_str() {
            "mock" => roles::mock(serde_json::from_str(&spec).expect("mock spec")),
            "gateway" => roles::gateway(serde_json::from_str(&spec).expect("gateway spec")),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let mut plan = if args.iter().any(|a| a == "--smoke") {
        Plan::smoke()
    } else {
        Plan::full()
    };
    plan.peers = !args.iter().any(|a| a == "--no-peers");
    plan.install_peers |= args.iter().any(|a| a == "--install-peers");
    plan.only = value("--only").map(|s| s.split(',').map(str::to_owned).collect());
    plan.hold = value("--hold").map(|s| {
        let parts: Vec<&str> = s.split(',').collect();
        let c = parts
            .first()
            .and_then(|c| c.parse().ok())
            .expect("--hold C,SECS");
        let secs = parts.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
        let rest = parts.get(2..).unwrap_or_default();
        Hold {
            c,
            duration: Duration::from_secs(secs),
            store_off: rest.contains(&"off"),
            scripts: rest
                .iter()
                .find_map(|p| p.strip_prefix("scripts=")?.parse().ok())
                .unwrap_or(0),
            natives: rest
                .iter()
                .find_map(|p| p.strip_prefix("natives=")?.parse().ok())
                .unwrap_or(0),
        }
    });
    // S5 at another size (e.g. a smoke build measuring 10,000 sessions).
    if let Some(n) = value("--s5-sessions").and_then(|n| n.parse().ok()) {
        plan.s5_sessions = n;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = value("--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("BENCHMARKS.md"));

    let results = actix_web::rt::System::new().block_on(scenarios::run_all(&plan));
    let json_dir = root.join("target/bench");
    let _ = std::fs::create_dir_all(&json_dir);
    let json_path = json_dir.join(if plan.smoke {
        "smoke.json"
    } else {
        "results.json"
    });
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&results).expect("results serialise"),
    )
    .expect("write the JSON results");
    let markdown = report::markdown(&results);
    println!("{markdown}");
    eprintln!("JSON: {}", json_path.display());
    if !plan.smoke && plan.only.is_none() {
        report::update_benchmarks_md(&out, &markdown);
        eprintln!("Updated {}", out.display());
    }
    if !results.failures.is_empty() {
        eprintln!("Scenario failures:");
        for f in &results.failures {
            eprintln!("  - {f}");
        }
        std::process::exit(1);
    }
}
