//! The daemon's own CPU time and memory, read from `/proc/self/stat` and
//! `/proc/self/status`, for the health monitor (`crate::monitor`) and `/metrics`
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`).
//!
//! Why parsed here rather than taken from a crate: two fields of two small files are all
//! that is needed, and the parsing (the command name in `stat` may hold spaces and
//! parentheses) is easy to get wrong, so it is one tested function each.

/// CPU time and memory of this process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcStat {
    /// User plus system CPU time, in seconds.
    pub cpu_secs: f64,
    /// Resident set size (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size (`VmHWM`), in bytes.
    pub peak_rss_bytes: u64,
    /// Threads of the process.
    pub threads: u64,
}

/// This process now; `None` where `/proc` cannot be read (not Linux, or hidden).
pub fn read_self() -> Option<ProcStat> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let mut p = parse_status(&status);
    p.cpu_secs = parse_cpu_ticks(&stat)? as f64 / ticks;
    Some(p)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks. The
/// command name (field 2) is in parentheses and may itself contain spaces and `)`, so the
/// fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so utime (14) is index 11.
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS`, `VmHWM` (kB in the file, bytes here) and `Threads` of `/proc/PID/status`;
/// absent lines read as 0 (a kernel thread has no `VmRSS`).
pub fn parse_status(status: &str) -> ProcStat {
    let mut p = ProcStat::default();
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let n = || -> u64 {
            value
                .split_ascii_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        match key {
            "VmRSS" => p.rss_bytes = n().saturating_mul(1024),
            "VmHWM" => p.peak_rss_bytes = n().saturating_mul(1024),
            "Threads" => p.threads = n(),
            _ => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_last_parenthesis() {
        // A command name with spaces and a `)` of its own.
        let stat = "4242 (evil) name (x) S 1 4242 4242 0 -1 4194560 1234 0 5 0 731 269 0 0 20 0 9 0 12345 987654 321 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        assert_eq!(
            parse_cpu_ticks("1 (init) S 1 1 1 0 -1 0 0 0 0 0 7 3 0"),
            Some(10)
        );
        assert_eq!(parse_cpu_ticks("1 (cut) S 1 1"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis here"), None);
    }

    #[test]
    fn status_gives_rss_peak_and_threads_in_bytes() {
        let status = "Name:\tblobmount\nState:\tS (sleeping)\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n";
        let p = parse_status(status);
        assert_eq!(p.rss_bytes, 10240 * 1024);
        assert_eq!(p.peak_rss_bytes, 20480 * 1024);
        assert_eq!(p.threads, 7);
        assert_eq!(parse_status("Name:\tkthreadd\n"), ProcStat::default());
    }

    #[test]
    fn this_process_reads_itself() {
        let p = read_self().expect("/proc/self");
        assert!(p.rss_bytes > 0 && p.threads >= 1, "{p:?}");
        assert!(p.peak_rss_bytes >= p.rss_bytes, "{p:?}");
    }
}
