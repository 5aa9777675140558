//! The open utterance's audio, shared by a session with the worker that takes its partial.
//!
//! A partial is asked for on a tick, but on a busy pool it waits in the queue behind finals,
//! a second or more at eight streams on two cores; the audio it was asked with is that old
//! when a worker starts it, and so is the caption it produces. The session mirrors its open
//! utterance here as frames arrive, and the worker decodes what is here when it starts the
//! job ([`Job::take_live_audio`](super::Job::take_live_audio)): a partial then lags by its
//! inference, not by its wait. An utterance's first partial goes ahead of partials of
//! captions already on screen ([`JobQueue`](super::JobQueue)): a new speaker shows up first.
//! A partial taken while its utterance pauses past the kept tail is skipped: its audio is
//! then the audio of the final that the pause is about to start, so on a busy pool it would
//! only hold a worker that final needs (and when speech resumes, the next partial follows).

use std::sync::{Arc, Mutex, MutexGuard};

/// One session's open utterance, as it would end now.
#[derive(Debug, Default)]
pub struct LiveAudio {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    utterance: Option<u64>,
    samples: Vec<f32>,
    /// The utterance pauses past its kept tail: its audio is what its final would get.
    paused: bool,
}

/// What a partial is of: one utterance of a session, and its live audio.
#[derive(Clone, Debug)]
pub struct PartialOf {
    pub live: Arc<LiveAudio>,
    pub utterance: u64,
    /// No partial of this utterance has been shown yet.
    pub first: bool,
}

impl LiveAudio {
    /// The state is plain samples, whole after any panic (every write is one call), so a
    /// poisoned lock is recovered.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mirrors the session's open utterance `(number, its audio as it would end now)`, and
    /// whether it pauses past its kept tail. That audio only grows while the utterance is
    /// open, so only what is new is copied.
    pub fn sync(&self, open: Option<(u64, &[f32])>, paused: bool) {
        let mut state = self.lock();
        state.paused = paused;
        let Some((utterance, audio)) = open else {
            state.utterance = None;
            state.samples.clear();
            return;
        };
        if state.utterance != Some(utterance) || audio.len() < state.samples.len() {
            state.utterance = Some(utterance);
            state.samples.clear();
        }
        let have = state.samples.len();
        state.samples.extend_from_slice(&audio[have..]);
    }

    /// The audio of `utterance` now; `None` once it has ended, or while it pauses past its
    /// kept tail (a partial would decode its final's audio).
    pub fn snapshot(&self, utterance: u64) -> Option<Arc<Vec<f32>>> {
        let state = self.lock();
        (state.utterance == Some(utterance) && !state.paused)
            .then(|| Arc::new(state.samples.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_the_open_utterance_and_forgets_an_ended_one() {
        let live = LiveAudio::default();
        let audio: Vec<f32> = (0..100).map(|i| i as f32).collect();
        live.sync(Some((3, &audio[..40])), false);
        live.sync(Some((3, &audio[..70])), false);
        assert_eq!(live.snapshot(3).unwrap().as_slice(), &audio[..70]);
        assert!(live.snapshot(2).is_none(), "another utterance");
        live.sync(Some((3, &audio[..70])), true);
        assert!(live.snapshot(3).is_none(), "pausing: its final is near");
        live.sync(Some((3, &audio[..80])), false);
        assert_eq!(
            live.snapshot(3).unwrap().as_slice(),
            &audio[..80],
            "resumed"
        );
        // The next utterance starts over.
        live.sync(Some((4, &audio[50..60])), false);
        assert_eq!(live.snapshot(4).unwrap().as_slice(), &audio[50..60]);
        assert!(live.snapshot(3).is_none(), "ended");
        live.sync(None, false);
        assert!(live.snapshot(4).is_none(), "ended, none open");
    }
}
