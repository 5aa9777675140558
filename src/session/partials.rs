//! Partial scheduling for one session: at most one partial in flight, latest audio wins.
//!
//! A partial is due when the open utterance holds enough audio and has grown since the last
//! request. The session asks on every tick, and until the utterance has shown some text also
//! as audio arrives: a new caption would otherwise wait up to a tick for nothing. While one is
//! in flight nothing new is queued (the next request will carry newer audio anyway). When the utterance ends its partial is dropped, queued or answered — its
//! final is on the way. The worker decodes the utterance's audio as it is when the job starts
//! ([`live`](crate::engine::live)), not as it was when the partial was asked for. None is
//! asked for while the speaker pauses (the session owes it until speech resumes), so a pause
//! that ends the utterance leaves the cores to its early final. Repetition loops are cut off before anything is sent,
//! each partial carries its committed prefix ([`stable`](super::stable)), and only changed
//! text is sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::stable::Agreement;
use crate::audio::PIPELINE_RATE;
use crate::audio::{ms_to_samples, samples_to_ms};
use crate::engine::{
    repetition, EngineError, JobKind, LiveAudio, PartialOf, TranscribeRequest, Transcript,
};
use crate::protocol::ServerMessage;

/// A partial needs at least this much new audio since the last one.
const PARTIAL_MIN_NEW_MS: u64 = 250;
/// Partials start once an utterance holds this much audio.
const PARTIAL_MIN_AUDIO_MS: u64 = 400;

/// Until an utterance shows text, its partials are asked for as audio arrives rather than on
/// the tick, up to this much audio: beyond it, what says nothing is probably not speech.
const EAGER_FIRST_PARTIAL_MS: u64 = 2_000;

/// The engine's answer to a partial request.
pub type Reply = BoxFuture<'static, Result<Transcript, EngineError>>;

/// What a requested partial covers.
pub struct Ticket {
    utterance: u64,
    start_sample: u64,
    audio_len: usize,
    submitted: Instant,
}

struct InFlight {
    ticket: Ticket,
    reply: Reply,
}

/// What to do with a finished partial.
pub enum Answer {
    /// Send it; the duration is the partial's lag (queue + inference).
    Send(ServerMessage, Duration),
    /// The engine was full and dropped it.
    Shed,
    /// Stale, empty, unchanged or failed: nothing to send.
    Nothing,
}

#[derive(Default)]
pub struct Partials {
    in_flight: Option<InFlight>,
    /// Audio length of the open utterance at its last request.
    requested_len: usize,
    last_text: String,
    agreement: Agreement,
    /// The open utterance's audio, for the worker that starts this session's partial.
    live: Arc<LiveAudio>,
}

impl Partials {
    pub fn utterance_started(&mut self) {
        self.requested_len = 0;
        self.last_text.clear();
        self.agreement = Agreement::default();
    }

    /// The open utterance ended: its committed prefix, for its last partial. A partial of it
    /// still in flight is dropped (which cancels it if no worker has started it).
    pub fn utterance_ended(&mut self) -> Agreement {
        self.in_flight = None;
        std::mem::take(&mut self.agreement)
    }

    /// The open utterance has shown no text yet (its first partial may have said nothing:
    /// 400 ms of audio can hold only the first syllable), none is in flight, and the last
    /// request was short of [`EAGER_FIRST_PARTIAL_MS`].
    pub fn awaiting_first(&self) -> bool {
        self.showed_nothing()
            && self.in_flight.is_none()
            && self.requested_len < ms_to_samples(EAGER_FIRST_PARTIAL_MS)
    }

    /// The open utterance has no caption on screen yet.
    fn showed_nothing(&self) -> bool {
        self.last_text.is_empty()
    }

    /// After the open utterance `(number, audio as it would end now)` changed: what a worker
    /// starting this session's partial will decode (nothing while it is `paused`).
    pub fn sync_live(&self, open: Option<(u64, &[f32])>, paused: bool) {
        self.live.sync(open, paused);
    }

    /// The request to make when a partial of the open utterance `(number, start, audio)` is
    /// due.
    pub fn due(
        &mut self,
        open: Option<(u64, u64, &[f32])>,
        prompt: impl FnOnce() -> String,
        language: &str,
    ) -> Option<(TranscribeRequest, Ticket)> {
        if self.in_flight.is_some() {
            return None;
        }
        let (utterance, start_sample, audio) = open?;
        let enough = audio.len() >= ms_to_samples(PARTIAL_MIN_AUDIO_MS);
        let grown = audio.len() >= self.requested_len + ms_to_samples(PARTIAL_MIN_NEW_MS);
        if !enough || !grown {
            return None;
        }
        self.requested_len = audio.len();
        let request = TranscribeRequest {
            kind: JobKind::Partial,
            session: 0, // the session sets its own key
            audio: Arc::new(audio.to_vec()),
            prompt: prompt(),
            language: language.to_string(),
            partial: Some(PartialOf {
                live: self.live.clone(),
                utterance,
                first: self.showed_nothing(),
            }),
            guess: None,
        };
        let ticket = Ticket {
            utterance,
            start_sample,
            audio_len: audio.len(),
            submitted: Instant::now(),
        };
        Some((request, ticket))
    }

    /// Records that the request of `due` was made; `reply` is the engine's answer.
    pub fn submitted(&mut self, ticket: Ticket, reply: Reply) {
        self.in_flight = Some(InFlight { ticket, reply });
    }

    /// Waits for the in-flight partial (forever when there is none). Cancel-safe: the
    /// request stays in place until its answer has been taken.
    pub async fn next(&mut self) -> (Ticket, Result<Transcript, EngineError>) {
        match self.in_flight.as_mut() {
            Some(p) => {
                let result = (&mut p.reply).await;
                let ticket = self.in_flight.take().expect("checked above").ticket;
                (ticket, result)
            }
            None => std::future::pending().await,
        }
    }

    /// Turns a finished partial into what to send, given the utterance open now.
    pub fn answer(
        &mut self,
        (mut partial, result): (Ticket, Result<Transcript, EngineError>),
        open_utterance: Option<u64>,
    ) -> Answer {
        // From the moment the newest audio it covers had arrived.
        let mut lag = partial.submitted.elapsed();
        let text = match result {
            Ok(t) => {
                // The worker decoded newer audio than the request's: what had arrived when
                // the job left the queue.
                if t.audio_samples > partial.audio_len {
                    partial.audio_len = t.audio_samples;
                    lag = lag.saturating_sub(t.waited);
                }
                self.requested_len = self.requested_len.max(partial.audio_len);
                t.text
            }
            Err(EngineError::Shed) => return Answer::Shed,
            Err(EngineError::Stale) => return Answer::Nothing,
            Err(e) => {
                tracing::warn!(error = %e, "partial failed");
                return Answer::Nothing;
            }
        };
        if open_utterance != Some(partial.utterance) {
            return Answer::Nothing;
        }
        // Never show a loop: whatever repeats is cut off (and what is left may agree).
        let secs = partial.audio_len as f64 / PIPELINE_RATE as f64;
        let text = repetition::trim(&text, secs);
        if text.is_empty() {
            return Answer::Nothing;
        }
        let mut shown = self.agreement.update(&text);
        // A hypothesis that shifted by a few words can repeat the committed prefix in its new
        // tail ("…the children saw" + "the children saw the children"): cut that too, but
        // never into the committed prefix, which only grows.
        let whole = repetition::trim(&shown.text, secs);
        if whole != shown.text {
            shown.text = if whole.len() >= shown.stable.len() {
                whole
            } else {
                shown.stable.clone()
            };
        }
        if shown.text == self.last_text {
            return Answer::Nothing;
        }
        self.last_text = shown.text.clone();
        let start_ms = samples_to_ms(partial.start_sample);
        let message = ServerMessage::Partial {
            utterance: partial.utterance,
            text: shown.text,
            stable: shown.stable,
            start_ms,
            end_ms: start_ms + samples_to_ms(partial.audio_len as u64),
        };
        Answer::Send(message, lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(p: &mut Partials, audio: &[f32], text: &str, open: Option<u64>) -> Answer {
        let (_request, ticket) = p
            .due(Some((0, 1600, audio)), String::new, "en")
            .expect("due");
        let transcript = Transcript {
            text: text.into(),
            ..Default::default()
        };
        p.submitted(ticket, Box::pin(std::future::ready(Ok(transcript))));
        let done = futures_util::FutureExt::now_or_never(p.next()).expect("answered");
        p.answer(done, open)
    }

    #[test]
    fn due_only_with_enough_new_audio_and_nothing_in_flight() {
        let mut p = Partials::default();
        let short = vec![0.1; ms_to_samples(300)];
        assert!(
            p.due(Some((0, 0, &short)), String::new, "en").is_none(),
            "too little audio"
        );
        let audio = vec![0.1; ms_to_samples(1000)];
        let (_request, ticket) = p.due(Some((0, 0, &audio)), String::new, "en").unwrap();
        p.submitted(ticket, Box::pin(std::future::pending()));
        let more = vec![0.1; ms_to_samples(2000)];
        assert!(
            p.due(Some((0, 0, &more)), String::new, "en").is_none(),
            "one in flight"
        );
        assert!(p.due(None, String::new, "en").is_none());
    }

    #[test]
    fn sends_changed_text_for_the_open_utterance_only() {
        let mut p = Partials::default();
        let a = vec![0.1; ms_to_samples(1000)];
        match answered(&mut p, &a, "hello", Some(0)) {
            Answer::Send(
                ServerMessage::Partial {
                    text,
                    start_ms,
                    end_ms,
                    ..
                },
                _,
            ) => {
                assert_eq!((text.as_str(), start_ms, end_ms), ("hello", 100, 1100));
            }
            _ => panic!("expected a partial"),
        }
        let b = vec![0.1; ms_to_samples(1500)];
        assert!(
            matches!(answered(&mut p, &b, "hello", Some(0)), Answer::Nothing),
            "unchanged"
        );
        let c = vec![0.1; ms_to_samples(2000)];
        assert!(
            matches!(
                answered(&mut p, &c, "hello world", Some(1)),
                Answer::Nothing
            ),
            "stale"
        );
    }

    #[test]
    fn a_tail_that_repeats_the_committed_prefix_is_cut() {
        let mut p = Partials::default();
        let mut sent = Vec::new();
        // Two agreeing hypotheses commit "as soon as the children saw"; the third has shifted
        // by a few words, and its tail repeats the committed end (seen at 1 stream, 2026-12-07).
        for (ms, text) in [
            (3000, "as soon as the children saw"),
            (3500, "as soon as the children saw them"),
            (
                4000,
                "and when the old foxes ran the children saw the children",
            ),
        ] {
            let audio = vec![0.1; ms_to_samples(ms)];
            if let Answer::Send(ServerMessage::Partial { text, stable, .. }, _) =
                answered(&mut p, &audio, text, Some(0))
            {
                sent.push((text, stable));
            }
        }
        for (text, stable) in &sent {
            assert!(repetition::detect(text, 4.0).is_none(), "{sent:?}");
            assert!(text.starts_with(stable.as_str()), "{sent:?}");
        }
        assert_eq!(sent.last().unwrap().1, "as soon as the children saw");
    }
}
