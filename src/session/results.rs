//! What the session sends: partials as they come back, an utterance's early local text
//! (preview), and its final once every earlier one is out.

use std::collections::VecDeque;

use super::partials::{Answer, Ticket};
use super::stable;
use super::Session;
use crate::engine::{EngineError, FinalResult, Preview, Transcript};
use crate::protocol::ServerMessage;
use crate::storage::FinalRecord;

/// Characters of earlier finals passed to whisper as the prompt.
const PROMPT_CHARS: usize = 200;

impl Session {
    pub(super) fn prompt(&self) -> String {
        prompt_from(&self.recent_finals)
    }

    /// Sends an utterance's early local text as its last partial, unless its final is out.
    pub(super) async fn send_preview(&mut self, preview: Preview) {
        if self.last_final.is_some_and(|n| n >= preview.utterance) {
            return;
        }
        let shown = self
            .closing
            .get(&preview.utterance)
            .map(|a| a.with_text(&preview.text))
            .unwrap_or(stable::Shown {
                stable: String::new(),
                text: preview.text,
            });
        let message = ServerMessage::Partial {
            utterance: preview.utterance,
            text: shown.text,
            stable: shown.stable,
            start_ms: preview.start_ms,
            end_ms: preview.end_ms,
        };
        self.outbox.send(&message).await;
    }

    pub(super) async fn send_final(&mut self, result: FinalResult) {
        self.last_final = Some(result.utterance);
        self.closing.retain(|&n, _| n > result.utterance);
        let message = result.to_message();
        if !result.text.is_empty() {
            self.recent_finals.push_back(result.text.clone());
            if self.recent_finals.len() > 4 {
                self.recent_finals.pop_front();
            }
        }
        if result.failure.is_none() {
            self.deps
                .metrics
                .observe_final_latency(result.closed_at.elapsed(), result.source);
        }
        // Stored before it is sent: a client that saw a final can always read it back.
        if let Some(record) = FinalRecord::from_message(&message) {
            self.deps.recorder.final_ready(&self.id, &record).await;
        }
        self.outbox.send(&message).await;
    }

    pub(super) fn maybe_request_partial(&mut self) {
        // Not while the speaker pauses: the pause may be the end of the utterance, and then
        // a partial would decode the very audio of its early final at the same time, on the
        // core that final could have borrowed. It is owed until speech resumes.
        self.partial_owed = self.pipeline.pausing();
        if self.partial_owed {
            return;
        }
        let recent = &self.recent_finals;
        let prompt = || prompt_from(recent);
        let Some((request, ticket)) =
            self.partials
                .due(self.pipeline.current(), prompt, &self.params.language)
        else {
            return;
        };
        let mut request = request;
        request.session = self.key;
        let engine = self.deps.engine.clone();
        // A full engine answers a partial with `Shed` at once (counted in `on_partial`).
        let reply = Box::pin(async move { engine.transcribe(request).await });
        self.partials.submitted(ticket, reply);
    }

    pub(super) async fn on_partial(&mut self, done: (Ticket, Result<Transcript, EngineError>)) {
        let open = self.pipeline.current().map(|(n, _, _)| n);
        match self.partials.answer(done, open) {
            Answer::Send(message, lag) => {
                self.deps.metrics.observe_partial_latency(lag);
                self.outbox.send(&message).await;
            }
            Answer::Shed => self.deps.metrics.partial_shed(),
            Answer::Nothing => {}
        }
    }
}

/// The last [`PROMPT_CHARS`] characters of the session's recent finals.
fn prompt_from(recent_finals: &VecDeque<String>) -> String {
    let joined = recent_finals
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let skip = joined.chars().count().saturating_sub(PROMPT_CHARS);
    joined.chars().skip(skip).collect()
}
