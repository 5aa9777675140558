//! Early finals for one session: the local final of a pausing utterance, started while the
//! end-of-speech silence is still running out. Pure bookkeeping; the job itself comes from
//! [`FinalPass::start_early`](crate::engine::FinalPass::start_early).
//!
//! A pause that has filled the segmenter's kept tail fixes the audio the utterance's final
//! would get, so a decode started then gives the very text the final would: it is used only
//! when the utterance ends with exactly that audio and prompt. When speech resumes first, the
//! job is dropped (which cancels it if no worker has started it).

use crate::engine::EarlyLocal;
use crate::metrics::Metrics;

struct Pending {
    utterance: u64,
    audio_len: usize,
    prompt: String,
    job: EarlyLocal,
}

#[derive(Default)]
pub struct EarlyFinals {
    pending: Option<Pending>,
}

impl EarlyFinals {
    /// After audio arrived, with the open utterance's `(number, audio length)` and whether it
    /// is pausing: drops a job whose audio has moved on, and says whether to start one.
    pub fn wanted(&mut self, open: Option<(u64, usize)>, paused: bool, metrics: &Metrics) -> bool {
        if let Some(p) = &self.pending {
            if open != Some((p.utterance, p.audio_len)) {
                tracing::debug!(
                    utterance = p.utterance,
                    "speech resumed: early final dropped"
                );
                self.pending = None;
                metrics.early_final("dropped");
            }
        }
        paused && open.is_some() && self.pending.is_none()
    }

    pub fn started(&mut self, utterance: u64, audio_len: usize, prompt: String, job: EarlyLocal) {
        self.pending = Some(Pending {
            utterance,
            audio_len,
            prompt,
            job,
        });
    }

    /// For an utterance that ended with `audio_len` samples and `prompt`: the early job, if
    /// it decodes exactly that. Any other pending job is dropped.
    pub fn take(
        &mut self,
        utterance: u64,
        audio_len: usize,
        prompt: &str,
        metrics: &Metrics,
    ) -> Option<EarlyLocal> {
        let pending = self.pending.take()?;
        let same = (
            pending.utterance,
            pending.audio_len,
            pending.prompt.as_str(),
        ) == (utterance, audio_len, prompt);
        metrics.early_final(if same { "used" } else { "dropped" });
        same.then_some(pending.job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Transcript;
    use tokio_util::task::AbortOnDropHandle;

    fn outcomes(metrics: &Metrics) -> Vec<String> {
        let mut lines: Vec<String> = metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("whisper_early_finals_total"))
            .map(String::from)
            .collect();
        lines.sort();
        lines
    }

    fn job(text: &str) -> EarlyLocal {
        let text = text.to_string();
        EarlyLocal::from_task(AbortOnDropHandle::new(tokio::spawn(async move {
            Ok(Transcript {
                text,
                ..Transcript::default()
            })
        })))
    }

    #[tokio::test]
    async fn a_pause_starts_one_job_that_the_same_audio_and_prompt_take() {
        let mut early = EarlyFinals::default();
        let m = Metrics::new();
        assert!(
            !early.wanted(Some((0, 1600)), false, &m),
            "no pause, no job"
        );
        assert!(!early.wanted(None, true, &m), "no utterance, no job");
        assert!(early.wanted(Some((0, 1600)), true, &m));
        early.started(0, 1600, "prompt".into(), job("hello"));
        assert!(
            !early.wanted(Some((0, 1600)), true, &m),
            "one job per pause"
        );
        assert!(
            early.take(0, 1600, "other prompt", &m).is_none(),
            "prompt changed"
        );
        assert!(
            early.take(0, 1600, "prompt", &m).is_none(),
            "a mismatch drops the job"
        );
        early.started(0, 1600, "prompt".into(), job("hello"));
        let taken = early
            .take(0, 1600, "prompt", &m)
            .expect("same audio and prompt");
        assert_eq!(taken.confirmed().await.unwrap().text, "hello");
        assert_eq!(
            outcomes(&m),
            [
                r#"whisper_early_finals_total{outcome="dropped"} 1"#,
                r#"whisper_early_finals_total{outcome="used"} 1"#
            ]
        );
    }

    #[tokio::test]
    async fn speech_resuming_drops_the_job() {
        let mut early = EarlyFinals::default();
        let m = Metrics::new();
        early.started(3, 1600, String::new(), job("hello"));
        // More speech: the open utterance's audio grew, and it no longer pauses.
        assert!(!early.wanted(Some((3, 2400)), false, &m));
        assert!(
            early.take(3, 1600, "", &m).is_none(),
            "dropped when speech resumed"
        );
        // The next pause starts a new job.
        assert!(early.wanted(Some((3, 4000)), true, &m));
        assert!(outcomes(&m).contains(&r#"whisper_early_finals_total{outcome="dropped"} 1"#.into()));
    }
}
