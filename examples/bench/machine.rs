//! What the process costs (/proc/self) and what it ran on (cores, load, CPU, git revision).
//! The server runs in this process, so these are the server's figures plus the small cost of
//! the benchmark's own WebSocket clients.

use serde::Serialize;

/// Linux's USER_HZ, the unit of utime/stime in /proc/self/stat (100 on every common build).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds this process has used.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / CLOCK_TICKS_PER_SECOND
}

/// A `VmXxx:` line of /proc/self/status, in MB.
fn status_mb(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn rss_mb() -> Option<f64> {
    status_mb("VmRSS:")
}

/// Peak RSS since the last [`reset_peak_rss`] (or process start).
pub fn peak_rss_mb() -> Option<f64> {
    status_mb("VmHWM:")
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0: "5" in clear_refs), so each level gets its
/// own peak. Returns false when the kernel refused, and the peak is then the process's.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN));
    [(); 3].map(|_| it.next().unwrap_or(f64::NAN))
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub git_revision: String,
    pub date_utc: String,
}

fn command(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or("unknown".into(), |s| s.trim().to_string());
        let mut git_revision = command("git", &["rev-parse", "--short=12", "HEAD"]);
        if !command("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
            git_revision.push_str("-dirty");
        }
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            git_revision,
            date_utc: command("date", &["-u", "+%Y-%m-%d %H:%M"]),
        }
    }
}

/// Unlabelled counters (e.g. `whisper_partials_shed_total`) from one scrape of the server's
/// /metrics; `None` for a counter missing or when the scrape fails.
pub async fn counters<const N: usize>(metrics_url: &str, names: [&str; N]) -> [Option<f64>; N] {
    let text = match reqwest::get(metrics_url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    names.map(|name| crate::common::find_sample(&text, name))
}
