//! `TRANSCRIPT_RETENTION_DAYS`: a background task deletes sessions older than the limit.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{now_ms, Recorder};

/// How often old transcripts are looked for; retention is counted in days, so an hour late
/// is immaterial and the query stays rare.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
const MS_PER_DAY: i64 = 86_400_000;

/// The cutoff for `days` of retention at `now_ms`: sessions that ended before it go.
pub fn cutoff_ms(now_ms: i64, days: u32) -> i64 {
    now_ms - i64::from(days) * MS_PER_DAY
}

/// Purges once at start, then every `interval`, until `shutdown`. `days == 0` keeps
/// everything (the task is not started).
pub async fn run(recorder: Recorder, days: u32, interval: Duration, shutdown: CancellationToken) {
    let Some(store) = recorder.store().cloned() else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.purge_before(cutoff_ms(now_ms(), days)).await {
            Ok(0) => recorder.record("retention", Ok(())),
            Ok(sessions) => {
                tracing::info!(sessions, days, "retention: deleted old transcripts");
                recorder.record("retention", Ok(()));
            }
            Err(e) => recorder.record("retention", Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_is_whole_days_back() {
        assert_eq!(cutoff_ms(10 * MS_PER_DAY, 3), 7 * MS_PER_DAY);
        assert_eq!(cutoff_ms(5, 0), 5);
    }
}
