//! CPU time of the firewall's threads from /proc, and the summary statistics of repeated runs.

use std::fs;

use anyhow::{Context, Result};
use serde::Serialize;

/// /proc reports times in USER_HZ, which is 100 on Linux whatever the kernel's HZ.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) of every thread of this process named `name`.
///
/// The firewall runs in-process on its own runtime; the load generators are other processes,
/// and the testbed's servers run on differently named threads, so this is the proxy's CPU alone
/// (including the kernel work done in its system calls).
pub(crate) fn thread_cpu_secs(name: &str) -> Result<f64> {
    let mut ticks = 0u64;
    for entry in fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let dir = entry?.path();
        // A thread may exit between listing and reading: skip it.
        let Ok(comm) = fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        let Ok(stat) = fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        ticks += stat_cpu_ticks(&stat).with_context(|| format!("parsing {}", dir.display()))?;
    }
    Ok(ticks as f64 / USER_HZ)
}

/// CPU seconds (utime + stime) from a `/proc/<pid>/stat` line: all threads of a process.
pub(crate) fn stat_cpu_secs(stat: &str) -> Result<f64> {
    Ok(stat_cpu_ticks(stat)? as f64 / USER_HZ)
}

/// utime + stime from a `/proc/<pid>/task/<tid>/stat` line (fields 14 and 15; the command
/// name in field 2 may contain spaces and parentheses, so count from the last `)`).
fn stat_cpu_ticks(stat: &str) -> Result<u64> {
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no ')' in stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("stat line too short")?
            .parse::<u64>()
            .context("stat field is not a number")
    };
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    Ok(field(11)? + field(12)?)
}

/// Median and range of repeated runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) runs: Vec<f64>,
}

impl Summary {
    pub(crate) fn of(runs: &[f64]) -> Summary {
        let mut sorted = runs.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Summary {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            runs: runs.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_from_the_last_paren() {
        let line = "42 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0";
        assert_eq!(stat_cpu_ticks(line).unwrap(), 281);
        assert!(stat_cpu_ticks("42 (x").is_err());
        assert!(stat_cpu_ticks("42 (x) S 1").is_err());
    }

    #[test]
    fn own_threads_have_cpu_time() {
        let name = fs::read_to_string("/proc/thread-self/comm").unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(thread_cpu_secs(name.trim_end()).unwrap() > 0.0);
        assert_eq!(thread_cpu_secs("no-such-thread-name").unwrap(), 0.0);
    }

    #[test]
    fn median_and_range() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 5.0, 4.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        assert_eq!(Summary::of(&[1.0, 2.0]).median, 1.5);
        assert!(Summary::of(&[]).median.is_nan());
    }
}
