//! What the gateway process spends: its CPU time (user + system, all
//! threads) and its resident memory, read from `/proc/<pid>`. Read-only:
//! it never signals or otherwise touches the process.

use std::time::Duration;

use anyhow::Context;

/// The gateway's CPU time and resident set at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    /// utime + stime of every thread so far.
    pub(crate) cpu: Duration,
    /// `VmRSS`, in KB.
    pub(crate) rss_kb: u64,
}

/// Reads a process's usage from `/proc`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pid: i32,
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of
    /// utime and stime.
    ticks_per_second: u64,
}

impl Probe {
    pub(crate) fn new(pid: i32) -> anyhow::Result<Self> {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .context("sysconf(_SC_CLK_TCK)")?
            .context("_SC_CLK_TCK has no value")?;
        Ok(Self {
            pid,
            ticks_per_second: u64::try_from(ticks)?.max(1),
        })
    }

    pub(crate) fn sample(&self) -> anyhow::Result<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("reading /proc/{}/stat", self.pid))?;
        // The command name (field 2) is in parentheses and may hold
        // spaces: count fields after its closing parenthesis, where the
        // state is field 3, utime field 14 and stime field 15.
        let after_name = stat
            .rsplit_once(')')
            .context("no command name in /proc/<pid>/stat")?
            .1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| -> anyhow::Result<u64> {
            fields
                .get(n - 3)
                .with_context(|| format!("/proc/<pid>/stat has no field {n}"))?
                .parse()
                .with_context(|| format!("field {n} of /proc/<pid>/stat"))
        };
        let ticks = field(14)? + field(15)?;
        let cpu = Duration::from_micros(ticks * 1_000_000 / self.ticks_per_second);
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("reading /proc/{}/status", self.pid))?;
        let rss_kb = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .context("no VmRSS in /proc/<pid>/status")?
            .parse()?;
        Ok(Usage { cpu, rss_kb })
    }
}

impl Usage {
    /// CPU time spent between `self` and `later`.
    pub(crate) fn cpu_until(&self, later: &Usage) -> Duration {
        later.cpu.saturating_sub(self.cpu)
    }
}
