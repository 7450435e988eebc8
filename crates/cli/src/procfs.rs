//! What Linux's `/proc` tells: where a benchmark's CPU time goes (the whole machine's busy
//! time, this process's threads grouped by thread name, a local broker's process), and
//! which process holds a file or socket open (a restore refuses while a server holds the
//! database).
//!
//! Written by hand: the figures are a few counters in `/proc/stat`, `/proc/<pid>/stat` and
//! `/proc/net/tcp`; the crates that read them (procfs, sysinfo) would add a dependency tree
//! for what is some sixty lines here. Off Linux every reading is empty: the bench prints
//! no CPU rows, and a restore relies on SQLite's lock alone.

use std::collections::HashMap;

/// Clock ticks per second for `/proc` CPU times: 100 on every Linux platform Telesafe
/// builds for (`USER_HZ`, fixed by the kernel ABI regardless of `CONFIG_HZ`).
const TICKS: f64 = 100.0;

/// CPU seconds at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The whole machine: (busy, all) in seconds, summed over CPUs.
    machine: Option<(f64, f64)>,
    /// This process's threads by name.
    threads: HashMap<String, f64>,
    /// The broker's process, if it runs on this machine.
    broker: Option<f64>,
}

/// CPU spent between two snapshots, in seconds.
#[derive(Debug, Clone, Default)]
pub struct Spent {
    pub machine_busy: f64,
    pub machine_all: f64,
    pub threads: HashMap<String, f64>,
    pub broker: Option<f64>,
}

impl Snapshot {
    /// Reads the counters now; `broker_port` is a local TCP port whose listening process
    /// is counted as the broker.
    pub fn take(broker_port: Option<u16>) -> Self {
        Self {
            machine: machine(),
            threads: threads(),
            broker: broker_port.and_then(listener).and_then(process),
        }
    }

    pub fn since(&self, before: &Snapshot) -> Spent {
        let (machine_busy, machine_all) = match (self.machine, before.machine) {
            (Some((b1, a1)), Some((b0, a0))) => (b1 - b0, a1 - a0),
            _ => (0.0, 0.0),
        };
        let threads = self
            .threads
            .iter()
            .map(|(k, v)| (k.clone(), v - before.threads.get(k).copied().unwrap_or(0.0)))
            .collect();
        let broker = self.broker.zip(before.broker).map(|(a, b)| a - b);
        Spent { machine_busy, machine_all, threads, broker }
    }
}

/// `(busy, all)` CPU seconds of the machine from the first line of `/proc/stat`
/// (`cpu user nice system idle iowait irq softirq steal ...`). Idle and iowait are not
/// busy, and neither is steal (time the hypervisor gave to another machine).
fn machine() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 8 {
        return None;
    }
    let all: f64 = fields.iter().sum();
    Some(((all - fields[3] - fields[4] - fields[7]) / TICKS, all / TICKS))
}

/// `utime + stime` in seconds from a `/proc/.../stat` line; the name sits in parentheses
/// and may itself hold spaces, so fields are counted from the last `)`.
fn times(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ticks = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
    Some((name, ticks / TICKS))
}

fn threads() -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for t in dir.flatten() {
        if let Some((name, secs)) =
            std::fs::read_to_string(t.path().join("stat")).ok().as_deref().and_then(times)
        {
            *out.entry(name).or_insert(0.0) += secs;
        }
    }
    out
}

fn process(pid: u32) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .as_deref()
        .and_then(times)
        .map(|t| t.1)
}

/// The process listening on local TCP `port`: the socket's inode from `/proc/net/tcp`
/// (and `tcp6`), then the process holding that inode among its open files.
fn listener(port: u16) -> Option<u32> {
    let wanted = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address(1) ... st(3) ... inode(9); 0A is LISTEN.
            if f.len() > 9 && f[1].ends_with(&wanted) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    holder(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()), None)
}

/// The first process (other than `except`) holding an open file whose link in
/// `/proc/<pid>/fd` satisfies `matches` (a path, or `socket:[inode]`).
pub(crate) fn holder(
    matches: impl Fn(&std::path::Path) -> bool,
    except: Option<u32>,
) -> Option<u32> {
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if Some(pid) == except {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && matches(&target)
            {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_the_name_is_read_from_the_last_parenthesis() {
        let line = "4242 (bench (device) 1) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        let (name, secs) = times(line).expect("parsed");
        assert_eq!(name, "bench (device) 1");
        assert!((secs - 3.0).abs() < 1e-9, "250 + 50 ticks are 3 s, got {secs}");
    }

    #[test]
    fn this_process_counts_cpu_it_spends() {
        let before = Snapshot::take(None);
        // A fixed amount of work (not a fixed time): its CPU cost does not depend on what
        // else the machine runs meanwhile.
        let mut x = 0u64;
        for _ in 0..300_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let spent = Snapshot::take(None).since(&before);
        let mine: f64 = spent.threads.values().sum();
        assert!(mine >= 0.05, "300 million multiply-adds showed only {mine} s of CPU");
        assert!(spent.machine_busy >= 0.05 && spent.machine_all >= spent.machine_busy);
    }
}
