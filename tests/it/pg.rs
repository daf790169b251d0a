//! A real PostgreSQL for the tests, started by the tests: one cluster per test process (made on
//! first use in a temporary directory, on a free loopback port, `fsync = off`), and a fresh
//! database per test. Needs Debian's `postgresql` package (binaries under
//! `/usr/lib/postgresql/<version>/bin`); without it the tests that need it fail saying so.
//!
//! The server runs under a small shell that reads the test process's end of a pipe: when the
//! test process exits, however it exits, the pipe closes, the shell stops the server (fast
//! shutdown) and removes the cluster's directory. No postgres process outlives the tests.
//! As root (initdb refuses to run as root) the shell runs as the `postgres` user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::Connection;

const MISSING: &str =
    "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin: install Debian's postgresql package (.ci/run does)";

/// The running cluster of this test process.
struct Cluster {
    port: u16,
    /// The shell that owns the server; its stdin is the pipe whose closing stops it.
    _guard: Mutex<Child>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The directory of the newest installed PostgreSQL's binaries.
fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| MISSING.to_string())?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or(MISSING.into())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `script` run by `sh`, as the `postgres` user when we are root.
fn shell(script: &str, root: bool) -> Command {
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    };
    command.stdout(Stdio::null());
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir()?;
    let root = is_root();
    // Not a TempDir: the shell removes it after the server stops (statics are never dropped).
    let dir = std::env::temp_dir().join(format!("switchyard-pg-{}", switchyard::util::random_id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if root {
        let chown = Command::new("chown")
            .args(["postgres:", &dir.display().to_string()])
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !chown.success() {
            return Err(format!(
                "cannot give {} to the postgres user",
                dir.display()
            ));
        }
    }
    let data = dir.join("data");
    let initdb = shell(
        &format!(
            "{} -D {} -U postgres --auth=trust -E UTF8 --no-sync --no-instructions",
            bin.join("initdb").display(),
            data.display()
        ),
        root,
    )
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
        "{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
         >{dir}/log 2>&1 & pid=$!; read _; kill -INT $pid; wait $pid; rm -rf {dir}",
        postgres = bin.join("postgres").display(),
        data = data.display(),
        dir = dir.display(),
    );
    let child = shell(&script, root)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start postgres: {e}"))?;
    let ready = wait_ready(&bin, port, &dir);
    let cluster = Cluster {
        port,
        _guard: Mutex::new(child),
    };
    ready.map(|()| cluster)
}

fn wait_ready(bin: &Path, port: u16, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    Err(format!("postgres did not become ready within 30 s:\n{log}"))
}

fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(error) => panic!("{error}"),
    }
}

/// The URL of a fresh, empty database on the test cluster. It carries a password (the
/// cluster trusts loopback, so any is accepted) so tests can check it is never shown.
pub async fn database() -> String {
    let cluster = cluster();
    let name = format!("t_{}", &switchyard::util::random_id()[..16]);
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("the test cluster accepts connections");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    conn.close().await.ok();
    format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{name}",
        cluster.port
    )
}

/// The password in every test database URL (never to be shown by the service).
pub const PASSWORD: &str = "pg-test-s3cret";
