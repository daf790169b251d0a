//! The process's own figures under their usual names (`process_*`, as every Prometheus client
//! exports them), read from `/proc` at scrape time: resident memory, CPU seconds, open and
//! maximum file descriptors, start time. Off Linux nothing is exported. Does not own anything
//! recorded as it happens.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, 100 on every Linux
/// architecture the kernel exposes to user space.
const TICKS: f64 = 100.0;

/// What `/proc` says of this process; each figure is absent when it could not be read.
#[derive(Debug, Default, PartialEq)]
pub struct Process {
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Reads this process's figures.
pub fn read() -> Process {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let fields = stat.as_deref().map(stat_fields).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
    });
    Process {
        resident_bytes: std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| status_kib(&s, "VmRSS:"))
            .map(|kib| kib * 1024),
        // Fields after the command: utime is 14th, stime 15th, starttime 22nd (1-based).
        cpu_seconds: ticks(11)
            .zip(ticks(12))
            .map(|(u, s)| (u + s) as f64 / TICKS),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| open_files_limit(&s)),
        start_time_seconds: ticks(19)
            .zip(boot)
            .map(|(t, boot)| boot as f64 + t as f64 / TICKS),
    }
}

/// The fields of `/proc/<pid>/stat` after the command, which is in parentheses and may
/// itself hold spaces and parentheses (hence the last `)`).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn open_files_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

impl Process {
    pub fn register(self, registry: &mut Registry) {
        if let Some(v) = self.resident_bytes {
            registry.register_with_unit(
                "process_resident_memory",
                "Resident memory size",
                Unit::Bytes,
                ConstGauge::new(v as i64),
            );
        }
        if let Some(v) = self.cpu_seconds {
            registry.register_with_unit(
                "process_cpu",
                "User and system CPU time spent",
                Unit::Seconds,
                ConstCounter::new(v),
            );
        }
        if let Some(v) = self.open_fds {
            registry.register(
                "process_open_fds",
                "Open file descriptors",
                ConstGauge::new(v as i64),
            );
        }
        if let Some(v) = self.max_fds {
            registry.register(
                "process_max_fds",
                "Limit of open file descriptors",
                ConstGauge::new(v as i64),
            );
        }
        if let Some(v) = self.start_time_seconds {
            registry.register_with_unit(
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Unit::Seconds,
                ConstGauge::new(v),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1234";
        let fields = stat_fields(stat);
        assert_eq!(fields[0], "S");
        assert_eq!((fields[11], fields[12], fields[19]), ("250", "50", "1234"));
    }

    #[test]
    fn reads_this_process_on_linux() {
        if cfg!(target_os = "linux") {
            let p = read();
            assert!(p.resident_bytes.unwrap() > 0);
            assert!(p.open_fds.unwrap() > 0);
            assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let start = p.start_time_seconds.unwrap();
            assert!(start <= now + 1.0 && start > now - 86_400.0 * 365.0);
        }
    }
}
