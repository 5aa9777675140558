//! The local whisper.cpp engine (the only file that imports whisper-rs).
//!
//! One `WhisperContext` (the weights) is shared; each worker thread owns a `WhisperState`
//! (the KV caches and buffers) and takes jobs from the [`JobQueue`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use super::cores::Cores;
use super::{filter, repetition, Engine, EngineError, Job, JobKind, JobQueue, Transcript};
use crate::audio::PIPELINE_RATE;
use crate::config::FinalWindow;
use crate::metrics::Metrics;

/// "ggml" as the little-endian u32 at the start of every ggml whisper model.
const GGML_MAGIC: u32 = 0x6767_6d6c;
/// whisper's encoder sees 30 s as 1500 frames: 50 per second of audio.
const AUDIO_CTX_PER_SECOND: usize = 50;
/// Extra encoder frames beyond the audio (64 = 1.28 s), so words at the very end are not
/// clipped.
const AUDIO_CTX_MARGIN: usize = 64;
/// A partial's margin (24 = 0.48 s): its audio stops mid-speech anyway, and the encoder is most
/// of a partial's cost.
const PARTIAL_AUDIO_CTX_MARGIN: usize = 24;
/// whisper's full window: 30 s of encoder frames.
const FULL_AUDIO_CTX: usize = 1500;
/// whisper.cpp pads input shorter than this, and mis-decodes much shorter audio.
const MIN_AUDIO_SAMPLES: usize = PIPELINE_RATE as usize + PIPELINE_RATE as usize / 10;
/// Upper bound on partial length in tokens.
const PARTIAL_MAX_TOKENS: usize = 96;
/// Fast speech is about 4 words, 5 tokens, per second; the margin covers punctuation.
const PARTIAL_TOKENS_PER_SECOND: usize = 6;
const PARTIAL_TOKENS_MARGIN: usize = 8;
/// Sized finals may hold up to 8 tokens (about 6 words) per second: beyond the loop guard's
/// words-per-second limit, so a loop that hits the cap is still caught.
const FINAL_TOKENS_PER_SECOND: usize = 8;
const FINAL_TOKENS_MARGIN: usize = 16;
/// whisper.cpp's flash-attention kernels on the CPU: off. Measured with
/// `examples/final_window.rs --set short --modes trim --flash-attn true|false` (59 clips, 79
/// finals, one thread, AMD EPYC, 2026-12-07): 9.54 % WER against 7.21 %, for 0.61 s of
/// inference per final against 0.63 s.
pub const FLASH_ATTENTION: bool = false;
/// Finals are not decoded again at rising temperatures when whisper.cpp judges a decode poor
/// (its compression-ratio and log-probability thresholds): the loop guard cuts the loops those
/// re-decodes were for. `examples/final_window.rs --modes trim --temperature-fallback
/// true|false` (one thread, AMD EPYC, 2026-12-07), fallback off against on: short clips
/// 7.28 % against 7.70 % WER (7.21 % the day before: the re-decodes sample, so they vary), long
/// recordings 7.06 % against 6.91 % (48 against 47 word errors), and 0.69-0.74 s of inference
/// per final against 1.09 s (p95 1.4 s against 2.5 s): a 1.3 s utterance took 2.7 s with the
/// fallback and 0.4 s without.
pub const TEMPERATURE_FALLBACK: bool = false;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model file {0} not found; fetch it with `scripts/fetch-model.sh tiny.en` \
         or set WHISPER_MODEL to a ggml whisper model"
    )]
    Missing(PathBuf),
    #[error(
        "{0} is not a ggml whisper model (bad magic); fetch one with \
         `scripts/fetch-model.sh tiny.en` or convert a faster-whisper model with ct2-to-ggml"
    )]
    NotGgml(PathBuf),
    #[error("cannot read model file {0}: {1}")]
    Unreadable(PathBuf, std::io::Error),
    #[error("whisper.cpp could not load {0}: {1}")]
    Load(PathBuf, String),
}

/// What /health reports about the model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    pub path: String,
    pub kind: String,
    pub multilingual: bool,
    pub workers: usize,
    pub threads_per_worker: usize,
    /// A final that starts on an idle pool borrows the idle workers' cores.
    pub lend_idle_cores: bool,
}

/// Checks that `path` is a ggml whisper file before handing it to whisper.cpp, whose own
/// failure messages do not say what to do.
pub fn check_model_file(path: &Path) -> Result<(), ModelError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing(path.to_path_buf()),
        _ => ModelError::Unreadable(path.to_path_buf(), e),
    })?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| ModelError::NotGgml(path.to_path_buf()))?;
    if u32::from_le_bytes(magic) != GGML_MAGIC {
        return Err(ModelError::NotGgml(path.to_path_buf()));
    }
    Ok(())
}

/// How the pool is laid out and how finals are decoded.
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    pub workers: usize,
    pub threads: usize,
    pub queue_capacity: usize,
    pub final_window: FinalWindow,
    /// What a sized final that loops gets (measurement knob; the server retries).
    pub on_loop: OnLoop,
    /// Encoder frames beyond the audio for sized windows (50 per second).
    pub ctx_margin: usize,
    /// Finals decoded again at rising temperatures when whisper.cpp judges a decode poor
    /// (measurement knob, see [`TEMPERATURE_FALLBACK`]; partials never are).
    pub temperature_fallback: bool,
    /// A final that starts while no other job runs or waits takes the idle workers' cores
    /// too ([`Cores`]).
    pub lend_idle_cores: bool,
    /// whisper.cpp's flash-attention kernels (measurement knob; see [`FLASH_ATTENTION`]).
    pub flash_attn: bool,
}

/// What becomes of a sized final whose text loops. The server trims: on 2,095 words of
/// `../shared/speech` (`examples/final_window.rs`) trimming scored 7.45 % WER against 7.68 %
/// for a full-window retry and 7.30 % for the full window on every final, at 0.80 s of
/// inference per final against 1.19 s (a retry costs ~2 s on one core).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLoop {
    /// Keep the sized text with the loop cut off.
    Trim,
    /// Decode it again over the full window (its loop cut off if it loops there too):
    /// a measurement knob.
    FullWindow,
}

impl EngineOptions {
    pub fn new(
        workers: usize,
        threads: usize,
        queue_capacity: usize,
        final_window: FinalWindow,
    ) -> Self {
        Self {
            workers,
            threads,
            queue_capacity,
            final_window,
            on_loop: OnLoop::Trim,
            ctx_margin: AUDIO_CTX_MARGIN,
            temperature_fallback: TEMPERATURE_FALLBACK,
            lend_idle_cores: false,
            flash_attn: FLASH_ATTENTION,
        }
    }
}

/// The worker pool. Dropping it closes the queue and joins the workers.
pub struct LocalEngine {
    queue: Arc<JobQueue>,
    workers: Vec<JoinHandle<()>>,
    info: ModelInfo,
    /// Workers still taking jobs: one whose state could not be rebuilt after a panic leaves.
    alive: Arc<AtomicUsize>,
}

impl LocalEngine {
    /// Loads the model (blocking: call from `spawn_blocking`) and starts the workers.
    pub fn load(
        path: &Path,
        options: EngineOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ModelError> {
        let EngineOptions {
            workers,
            threads,
            queue_capacity,
            ..
        } = options;
        check_model_file(path)?;
        whisper_rs::install_logging_hooks();
        let path_str = path.to_string_lossy().to_string();
        let mut ctx_params = WhisperContextParameters::default();
        ctx_params.flash_attn(options.flash_attn);
        let ctx = WhisperContext::new_with_params(&path_str, ctx_params)
            .map_err(|e| ModelError::Load(path.to_path_buf(), e.to_string()))?;
        let info = ModelInfo {
            path: path_str,
            kind: ctx
                .model_type_readable_str()
                .unwrap_or("unknown")
                .to_string(),
            multilingual: ctx.is_multilingual(),
            workers,
            threads_per_worker: threads,
            lend_idle_cores: options.lend_idle_cores,
        };
        let total_cores = workers * threads;
        let max_per_job = if options.lend_idle_cores {
            total_cores
        } else {
            threads
        };
        let cores = Cores::new(total_cores, max_per_job);
        let ctx = Arc::new(ctx);
        let queue = Arc::new(JobQueue::new(queue_capacity));
        let mut handles = Vec::with_capacity(workers);
        let alive = Arc::new(AtomicUsize::new(0));
        for i in 0..workers {
            let state = ctx
                .create_state()
                .map_err(|e| ModelError::Load(path.to_path_buf(), e.to_string()))?;
            let worker = Worker {
                ctx: ctx.clone(),
                state,
                threads,
                cores: cores.clone(),
                options,
                queue: queue.clone(),
                metrics: metrics.clone(),
                alive: alive.clone(),
            };
            alive.fetch_add(1, Ordering::SeqCst);
            let handle = std::thread::Builder::new()
                .name(format!("whisper-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| ModelError::Load(path.to_path_buf(), e.to_string()))?;
            handles.push(handle);
        }
        Ok(Self {
            queue,
            workers: handles,
            info,
            alive,
        })
    }

    pub fn queue(&self) -> &Arc<JobQueue> {
        &self.queue
    }

    /// The handle sessions transcribe through.
    pub fn handle(&self) -> Engine {
        Engine::new(Arc::new(self.queue.clone()))
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn multilingual(&self) -> bool {
        self.info.multilingual
    }

    /// Workers still taking jobs; `/health` fails when none are left.
    pub fn live_workers(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }
}

impl Drop for LocalEngine {
    fn drop(&mut self) {
        self.queue.close();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

struct Worker {
    /// Kept to rebuild `state` after a panic left it in an unknown condition.
    ctx: Arc<WhisperContext>,
    state: WhisperState,
    threads: usize,
    cores: Arc<Cores>,
    options: EngineOptions,
    queue: Arc<JobQueue>,
    metrics: Arc<Metrics>,
    alive: Arc<AtomicUsize>,
}

impl Worker {
    fn run(mut self) {
        while let Some(mut job) = self.queue.take() {
            if job.reply.is_closed() || job.cancel.is_cancelled() {
                continue; // The session is gone or has moved on: don't spend CPU on it.
            }
            if !job.take_live_audio() {
                let _ = job.reply.send(Err(EngineError::Stale));
                continue;
            }
            let _span = job.span.clone().entered();
            // Only a final borrows, and only when nothing waits that the lent cores would delay.
            let borrow = job.kind == JobKind::Final && self.queue.depth() == 0;
            let lease = self.cores.acquire(self.threads, borrow);
            let threads = lease.threads();
            if threads > self.threads {
                self.metrics.final_on_lent_cores();
            }
            let started = Instant::now();
            // A panic in whisper-rs (it panics on a NUL in a prompt, for one) must cost this
            // job only, not the worker and with it every session's finals.
            let result = catch_unwind(AssertUnwindSafe(|| self.transcribe(&job, threads)));
            drop(lease);
            let result = match result {
                Ok(result) => result,
                Err(panic) => {
                    let _ = job
                        .reply
                        .send(Err(EngineError::Inference("inference panicked".into())));
                    if !self.recover(panic_message(&panic)) {
                        return;
                    }
                    continue;
                }
            };
            let elapsed = started.elapsed();
            let audio = Duration::from_secs_f64(job.audio.len() as f64 / PIPELINE_RATE as f64);
            self.metrics
                .observe_local_inference(audio, elapsed, job.kind == JobKind::Final);
            tracing::debug!(kind = ?job.kind, audio_ms = audio.as_millis() as u64, ms = elapsed.as_millis() as u64, queued_ms = started.duration_since(job.enqueued).as_millis() as u64, threads, "inference");
            let _ = job.reply.send(result.map(|t| Transcript {
                inference: elapsed,
                audio_samples: job.audio.len(),
                waited: started.duration_since(job.enqueued),
                threads,
                ..t
            }));
        }
        tracing::debug!(worker = ?std::thread::current().name(), "whisper worker stopped");
    }

    /// After a panic: a fresh whisper state replaces the one the panic interrupted. `false`
    /// (the worker leaves the pool) when no state can be made.
    fn recover(&mut self, message: String) -> bool {
        let worker = std::thread::current()
            .name()
            .unwrap_or("whisper")
            .to_string();
        match self.ctx.create_state() {
            Ok(state) => {
                self.state = state;
                tracing::error!(
                    worker,
                    panic = message,
                    "inference panicked; job failed, worker state rebuilt"
                );
                true
            }
            Err(e) => {
                self.alive.fetch_sub(1, Ordering::SeqCst);
                tracing::error!(worker, panic = message, error = %e, "inference panicked and the worker state cannot be rebuilt; worker stopped");
                false
            }
        }
    }

    /// The job's text. Partials and (with `FINAL_WINDOW=sized`) finals run an encoder sized
    /// to the audio, about 3-5x cheaper than the full window; a sized final that loops has
    /// its loop cut off.
    fn transcribe(&mut self, job: &Job, threads: usize) -> Result<Transcript, EngineError> {
        let secs = job.audio.len() as f64 / PIPELINE_RATE as f64;
        match (job.kind, self.options.final_window) {
            // The session cuts a partial's loops before showing it.
            (JobKind::Partial, _) => self.decode(job, Window::Sized, threads),
            (JobKind::Final, FinalWindow::Full) => self.decode(job, Window::Full, threads),
            (JobKind::Final, FinalWindow::Sized) => {
                let sized = self.decode(job, Window::Sized, threads)?;
                let Some(kind) = repetition::detect(&sized.text, secs) else {
                    return Ok(sized);
                };
                tracing::debug!(?kind, text = %sized.text, "sized final looped");
                self.metrics.final_loop();
                if self.options.on_loop == OnLoop::Trim {
                    let text = repetition::trim(&sized.text, secs);
                    return Ok(Transcript {
                        text,
                        looped: true,
                        ..sized
                    });
                }
                let mut full = self.decode(job, Window::Full, threads)?;
                full.text = repetition::trim(&full.text, secs);
                full.looped = true;
                Ok(full)
            }
        }
    }

    fn decode(
        &mut self,
        job: &Job,
        window: Window,
        threads: usize,
    ) -> Result<Transcript, EngineError> {
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(threads as i32);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        params.set_no_context(true);
        let language = (job.language != "auto").then_some(job.language.as_str());
        params.set_language(language);
        params.set_detect_language(false);
        if !job.prompt.is_empty() {
            params.set_initial_prompt(&job.prompt);
        }
        // Short input is padded with silence to whisper.cpp's minimum.
        let padded: Vec<f32>;
        let audio: &[f32] = if job.audio.len() < MIN_AUDIO_SAMPLES {
            padded = job
                .audio
                .iter()
                .copied()
                .chain(std::iter::repeat(0.0))
                .take(MIN_AUDIO_SAMPLES)
                .collect();
            &padded
        } else {
            &job.audio
        };
        if window == Window::Sized {
            // Encoder sized to the audio, one segment, no timestamps.
            let margin = match job.kind {
                JobKind::Partial => PARTIAL_AUDIO_CTX_MARGIN,
                JobKind::Final => self.options.ctx_margin,
            };
            let ctx = audio.len() * AUDIO_CTX_PER_SECOND / PIPELINE_RATE as usize + margin;
            params.set_audio_ctx(ctx.min(FULL_AUDIO_CTX) as i32);
            params.set_single_segment(true);
            params.set_no_timestamps(true);
        }
        if window == Window::Sized && job.kind == JobKind::Final {
            // A sized final that loops would otherwise decode up to 224 tokens (seconds of a
            // worker) before the guard sees it; real speech stays well under this.
            let seconds = audio.len() / PIPELINE_RATE as usize + 1;
            params.set_max_tokens((seconds * FINAL_TOKENS_PER_SECOND + FINAL_TOKENS_MARGIN) as i32);
        }
        if job.kind == JobKind::Final && !self.options.temperature_fallback {
            params.set_temperature_inc(0.0);
        }
        if job.kind == JobKind::Partial {
            // No temperature fallback: a partial is soon replaced anyway.
            params.set_temperature_inc(0.0);
            // Bounded by the audio's length: on very short audio tiny models can loop
            // ("Produce, produce, …") and hold a worker for seconds.
            let seconds = audio.len() / PIPELINE_RATE as usize;
            let tokens = (seconds * PARTIAL_TOKENS_PER_SECOND + PARTIAL_TOKENS_MARGIN)
                .min(PARTIAL_MAX_TOKENS);
            params.set_max_tokens(tokens as i32);
        }
        self.state
            .full(params, audio)
            .map_err(|e| EngineError::Inference(e.to_string()))?;
        let mut text = String::new();
        let mut no_speech_prob = 0.0f32;
        for segment in self.state.as_iter() {
            if let Ok(piece) = segment.to_str_lossy() {
                text.push_str(&piece);
            }
            no_speech_prob = no_speech_prob.max(segment.no_speech_probability());
        }
        Ok(Transcript {
            text: filter::clean(&text, no_speech_prob, &job.audio),
            no_speech_prob,
            ..Transcript::default()
        })
    }
}

/// The text of a caught panic, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".into())
}

/// How much of whisper's 30 s window the encoder runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    Sized,
    Full,
}
