//! Child processes (the gateway, the mock upstream, nginx) and what the kernel says about them:
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
