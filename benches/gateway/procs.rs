//! Child processes (the gateway, the mock upstream, nginx, the peer gateways) and what the kernel says about them:
//! CPU time (summed over threads, in nanoseconds, from `/proc/<pid>/task/*/schedstat`) and
//! resident memory (`VmRSS`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running child that prints `LISTEN <addr>` once it serves.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub name: &'static str,
}

impl Server {
    /// Starts this executable again in `role`, with `spec` (JSON) in `BENCH_SPEC`, optionally
    /// pinned to `cpus` with taskset.
    pub fn spawn_role(name: &'static str, role: &str, spec: &str, cpus: Option<&str>) -> Server {
        let exe = std::env::current_exe().expect("current executable");
        let mut cmd = match cpus.filter(|_| which("taskset")) {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(["--role", role])
            .env("BENCH_SPEC", spec)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Server::wait_listen(name, cmd.spawn().expect("spawn a bench role"))
    }

    fn wait_listen(name: &'static str, mut child: Child) -> Server {
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("LISTEN ") {
                        break addr.trim().to_string();
                    }
                }
                _ => panic!("{name} exited before listening"),
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr, name }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu_ns(&self) -> u64 {
        cpu_ns(self.pid())
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// SIGTERM, then wait (a gateway shuts down gracefully).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within 6 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A harness that panics midway leaves no child serving behind.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(program).is_file()
}

/// CPU time of every thread of `pid` so far, in nanoseconds.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Context switches of every thread of `pid` so far: (voluntary, involuntary).
pub fn context_switches(pid: u32) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let field = |status: &str, name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .fold((0, 0), |(v, i), s| {
            (
                v + field(&s, "voluntary_ctxt_switches:"),
                i + field(&s, "nonvoluntary_ctxt_switches:"),
            )
        })
}

/// CPU time of `pid` and its direct children (nginx's workers), in nanoseconds.
pub fn cpu_ns_with_children(pid: u32) -> u64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    cpu_ns(pid)
        + children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
            .map(cpu_ns)
            .sum::<u64>()
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// nginx as a bare reverse proxy to `upstream` on a free port, when nginx is installed.
pub struct Nginx {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstream: &str) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).is_file())?;
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\nerror_log {dir}/error.log error;\npid {dir}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
               upstream mock {{ server {upstream}; keepalive 256; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    keepalive_requests 1000000;\n\
                 location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
            dir = dir.path().display()
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).ok()?;
        let child = Command::new(binary)
            .args(["-p", &dir.path().display().to_string(), "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Some(Nginx {
                    child,
                    addr,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of `pid` and all its descendants (workers a node or python server may fork), in
/// nanoseconds. A descendant that exited in between is not counted.
pub fn cpu_ns_tree(pid: u32) -> u64 {
    descendants(pid).into_iter().map(cpu_ns).sum()
}

/// Resident memory of `pid` and all its descendants, in KiB.
pub fn rss_kib_tree(pid: u32) -> u64 {
    descendants(pid).into_iter().map(rss_kib).sum()
}

/// `pid` and every process below it (`/proc/<pid>/task/*/children`, recursively).
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() && all.len() < 4096 {
        let p = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.filter_map(Result::ok) {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                all.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all
}

/// An LLM gateway the harness compares switchyard with, run from a scratch install under
/// `target/bench/peers/` (see `benches/gateway/peers/install.sh`, which pins the versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// LiteLLM proxy (python, uvicorn), `litellm[proxy]` in a venv.
    LiteLlm,
    /// Portkey gateway (node), `@portkey-ai/gateway` in an npm prefix.
    Portkey,
}

/// The master key the LiteLLM proxy is started with (it refuses to start without one).
const LITELLM_KEY: &str = "sk-switchyard-bench-loopback";

/// Longest a peer may take to start (LiteLLM imports for 10–30 s on a busy machine).
const PEER_START: Duration = Duration::from_secs(180);

impl PeerKind {
    pub const ALL: [PeerKind; 2] = [PeerKind::LiteLlm, PeerKind::Portkey];

    /// The row label, with the pinned version.
    pub fn label(self) -> String {
        match self {
            PeerKind::LiteLlm => format!(
                "LiteLLM proxy {} (python, 1 worker)",
                install_pin("LITELLM_VERSION")
            ),
            PeerKind::Portkey => {
                format!("Portkey gateway {} (node)", install_pin("PORTKEY_VERSION"))
            }
        }
    }

    fn script_name(self) -> &'static str {
        match self {
            PeerKind::LiteLlm => "litellm",
            PeerKind::Portkey => "portkey",
        }
    }

    /// Where the scratch install lives.
    pub fn dir(self) -> std::path::PathBuf {
        let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/peers");
        match self {
            PeerKind::LiteLlm => peers.join("litellm-venv"),
            PeerKind::Portkey => peers.join("portkey"),
        }
    }

    /// The file that must exist for the peer to run.
    fn entry(self) -> std::path::PathBuf {
        match self {
            PeerKind::LiteLlm => self.dir().join("bin/litellm"),
            PeerKind::Portkey => self
                .dir()
                .join("node_modules/@portkey-ai/gateway/build/start-server.js"),
        }
    }

    /// Makes sure the peer is installed: with `install`, runs the install script (a no-op
    /// when the pinned version is already there; the outcome is remembered for the run), else
    /// only looks. `Err` says why the peer cannot be measured. `Ok(Some(seconds))` when this
    /// call installed it.
    pub fn ensure_installed(self, install: bool) -> Result<Option<f64>, String> {
        use std::sync::{Mutex, OnceLock};
        /// Each peer's install outcome in this run.
        type Outcomes = Vec<(PeerKind, Result<(), String>)>;
        static DONE: OnceLock<Mutex<Outcomes>> = OnceLock::new();
        let done = DONE.get_or_init(|| Mutex::new(Vec::new()));
        if let Some((_, outcome)) = done
            .lock()
            .expect("peer installs")
            .iter()
            .find(|(k, _)| *k == self)
        {
            return outcome.clone().map(|()| None);
        }
        let marker = std::fs::read_to_string(self.dir().join(".installed")).unwrap_or_default();
        let pin = match self {
            PeerKind::LiteLlm => install_pin("LITELLM_VERSION"),
            PeerKind::Portkey => install_pin("PORTKEY_VERSION"),
        };
        let outcome = if !install {
            if marker.trim().ends_with(&pin) && self.entry().is_file() {
                Ok(None)
            } else {
                Err(format!(
                    "version {pin} is not installed in {} (a full run or --install-peers installs it)",
                    self.dir().display()
                ))
            }
        } else {
            self.install()
        };
        done.lock()
            .expect("peer installs")
            .push((self, outcome.clone().map(|_| ())));
        outcome
    }

    fn install(self) -> Result<Option<f64>, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("benches/gateway/peers/install.sh");
        let dir = self.dir();
        let fresh = !dir.join(".installed").is_file();
        let log = dir.with_extension("install.log");
        let _ = std::fs::create_dir_all(dir.parent().expect("peers dir"));
        if fresh {
            eprintln!(
                "Installing {} into {} (log: {}) ...",
                self.label(),
                dir.display(),
                log.display()
            );
        }
        let began = std::time::Instant::now();
        let out = std::fs::File::create(&log)
            .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
        let status = Command::new("bash")
            .arg(&script)
            .arg(self.script_name())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !status.success() || !self.entry().is_file() {
            return Err(format!(
                "installation failed ({status}, see {}): {}",
                log.display(),
                last_line(&log)
            ));
        }
        Ok(fresh.then(|| began.elapsed().as_secs_f64()))
    }
}

/// The value of `NAME=value` in the install script (the pinned versions).
fn install_pin(name: &str) -> String {
    include_str!("peers/install.sh")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("?")
        .to_string()
}

fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .chars()
        .take(300)
        .collect()
}

/// Disk use of a directory tree, in bytes.
pub fn du_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| du_bytes(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// A running peer gateway (its own process group), configured to forward one OpenAI chat
/// model to the mock upstream.
pub struct Peer {
    child: Child,
    pub kind: PeerKind,
    pub addr: String,
    upstream: String,
    dir: tempfile::TempDir,
}

impl Peer {
    /// Starts `kind` on a free loopback port, forwarding to `upstream` (`host:port`). The peer
    /// must be installed ([`PeerKind::ensure_installed`]).
    pub fn start(kind: PeerKind, upstream: &str) -> Result<Peer, String> {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let log = dir.path().join("peer.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = match kind {
            PeerKind::LiteLlm => {
                let config = dir.path().join("litellm.yaml");
                std::fs::write(&config, litellm_config(upstream)).map_err(|e| e.to_string())?;
                let mut c = Command::new(kind.entry());
                c.arg("--config")
                    .arg(&config)
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--num_workers", "1"])
                    // Errors only: no per-request access log line.
                    .env("LITELLM_LOG", "ERROR")
                    // The bundled model cost map, not a download at start.
                    .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                    // No `.env` file is read from the working directory.
                    .env("LITELLM_MODE", "PRODUCTION")
                    .env_remove("DATABASE_URL")
                    .env_remove("REDIS_HOST")
                    .env_remove("REDIS_URL");
                c
            }
            PeerKind::Portkey => {
                let mut c = Command::new("node");
                c.arg(kind.entry())
                    .arg(format!("--port={port}"))
                    // No web UI and no log streaming.
                    .arg("--headless")
                    .env("NODE_ENV", "production");
                c
            }
        };
        let child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kind.label()))?;
        let mut peer = Peer {
            child,
            kind,
            addr: format!("127.0.0.1:{port}"),
            upstream: upstream.to_string(),
            dir,
        };
        let began = std::time::Instant::now();
        while began.elapsed() < PEER_START {
            if let Ok(Some(status)) = peer.child.try_wait() {
                return Err(format!(
                    "exited at start ({status}): {}",
                    last_line(&peer.dir.path().join("peer.log"))
                ));
            }
            if std::net::TcpStream::connect(&peer.addr).is_ok() {
                return Ok(peer);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "did not listen within {} s: {}",
            PEER_START.as_secs(),
            last_line(&peer.dir.path().join("peer.log"))
        ))
    }

    /// The OpenAI chat request `body` through this peer.
    pub fn call(&self, body: &str) -> crate::load::Call {
        let url = format!("http://{}/v1/chat/completions", self.addr);
        let call = crate::load::Call::post(url, body);
        match self.kind {
            PeerKind::LiteLlm => call.header("authorization", &format!("Bearer {LITELLM_KEY}")),
            PeerKind::Portkey => call
                .header("x-portkey-provider", "openai")
                .header(
                    "x-portkey-custom-host",
                    &format!("http://{}/v1", self.upstream),
                )
                .header("authorization", "Bearer x"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// One model, `bench`, forwarded to the mock as an OpenAI-compatible endpoint; everything
/// that is not the proxying turned off (no database, no spend or error logs, no callbacks,
/// no retries, no background health checks).
fn litellm_config(upstream: &str) -> String {
    format!(
        "model_list:\n\
         \x20 - model_name: bench\n\
         \x20   litellm_params:\n\
         \x20     model: openai/bench\n\
         \x20     api_base: http://{upstream}/v1\n\
         \x20     api_key: x\n\
         litellm_settings:\n\
         \x20 callbacks: []\n\
         \x20 success_callback: []\n\
         \x20 failure_callback: []\n\
         \x20 turn_off_message_logging: true\n\
         \x20 num_retries: 0\n\
         \x20 request_timeout: 30\n\
         general_settings:\n\
         \x20 master_key: {LITELLM_KEY}\n\
         \x20 disable_spend_logs: true\n\
         \x20 disable_error_logs: true\n\
         \x20 disable_reset_budget: true\n\
         \x20 disable_adding_master_key_hash_to_db: true\n\
         \x20 background_health_checks: false\n"
    )
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The whole process group: a server's workers go with it.
        let group = format!("-{}", self.child.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        for _ in 0..250 {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Any worker left behind in the group.
                signal("-KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal("-KILL");
        let _ = self.child.wait();
    }
}

/// A `nats-server` on a free loopback port (Debian's `nats-server`), killed on drop.
pub struct NatsServer {
    child: Child,
    pub url: String,
}

impl NatsServer {
    pub fn start() -> Result<NatsServer, String> {
        let port = free_port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("nats-server is required (Debian's `nats-server` package): {e}")
            })?;
        let nats = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        };
        wait_port(port, "nats-server")?;
        Ok(nats)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_port(port: u16, what: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(format!("{what} did not listen on {port} within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A PostgreSQL cluster of its own (Debian's `postgresql` binaries, a temporary directory, a
/// free loopback port, the server's default durability: `fsync` and `synchronous_commit` on),
/// as `tests/it/pg.rs` starts one. The server runs under a shell reading our end of a pipe:
/// when the harness drops it or exits, the shell stops the server and removes the directory.
pub struct Postgres {
    guard: Child,
    pub port: u16,
    bin: std::path::PathBuf,
}

impl Postgres {
    pub fn start() -> Result<Postgres, String> {
        const MISSING: &str = "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin: install Debian's postgresql package (.ci/run does)";
        let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|_| MISSING.to_string())?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_string_lossy().parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .collect();
        versions.sort();
        let bin = versions.pop().map(|(_, b)| b).ok_or(MISSING)?;
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let shell = |script: &str| {
            let mut c = if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--", "sh", "-c", script]);
                c
            } else {
                let mut c = Command::new("sh");
                c.args(["-c", script]);
                c
            };
            c.stdout(Stdio::null());
            c
        };
        let dir = std::env::temp_dir().join(format!("switchyard-bench-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if root {
            let _ = Command::new("chown")
                .args(["postgres:", &dir.display().to_string()])
                .status();
        }
        let data = dir.join("data");
        let initdb = shell(&format!(
            "{} -D {} -U postgres --auth=trust -E UTF8 --no-sync --no-instructions",
            bin.join("initdb").display(),
            data.display()
        ))
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        let port = free_port();
        let script = format!(
            "{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 \
             -c max_connections=200 >{dir}/log 2>&1 & pid=$!; read _; kill -INT $pid; \
             wait $pid; rm -rf {dir}",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
        );
        let guard = shell(&script)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        let pg = Postgres { guard, port, bin };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(pg.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(pg);
            }
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                return Err(format!("postgres did not become ready within 30 s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A fresh database `name` and its URL.
    pub fn database(&self, name: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("createdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "CREATE DATABASE {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// CPU time of the server and its backends so far (ns).
    pub fn cpu_ns(&self) -> u64 {
        cpu_ns_tree(self.guard.id())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Closing the pipe stops the server (fast shutdown) and removes its directory.
        drop(self.guard.stdin.take());
        let _ = self.guard.wait();
    }
}
