//! The run's record (JSON with every raw figure) and docs/benchmarks.md, generated from it.

use serde::Serialize;

use crate::machine::Machine;
use crate::score::{Figures, Spread};

#[derive(Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub command: String,
    pub machine: Machine,
    pub model: String,
    /// Server settings that shape the figures.
    pub server: serde_json::Value,
    pub load_average_start: [f64; 3],
    pub load_average_end: [f64; 3],
    pub clips: Vec<serde_json::Value>,
    /// Seconds of audio each stream plays per level (every clip once).
    pub audio_s_per_stream: f64,
    pub idle_rss_mb: Option<f64>,
    pub offline: Option<Offline>,
    pub levels: Vec<Level>,
    pub wall_s: f64,
}

/// The accuracy reference: the local engine's final mode on each whole clip, one at a time.
#[derive(Debug, Default, Serialize)]
pub struct Offline {
    pub wer: Option<f64>,
    pub word_errors: usize,
    pub reference_words: usize,
    pub finals_with_loop: usize,
    /// Wall time per clip.
    pub inference_s: Spread,
    pub per_clip: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct Level {
    /// `local` finals, or `openai` (the fake OpenAI-compatible upstream on loopback).
    pub finals: String,
    pub streams: usize,
    pub wall_s: f64,
    /// Process CPU (server plus the benchmark's clients) during the level.
    pub cpu_s: f64,
    pub rss_start_mb: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    /// Whether the peak is this level's own (VmHWM was reset at its start).
    pub peak_rss_is_per_level: bool,
    pub partials_shed: Option<f64>,
    /// Sized local finals that looped and were decoded again over the full window.
    pub final_loops: Option<f64>,
    /// Local finals that borrowed idle workers' cores (`LEND_IDLE_CORES`).
    pub finals_on_lent_cores: Option<f64>,
    /// Early local finals whose text became the final, and those dropped (speech resumed).
    pub early_finals_used: Option<f64>,
    pub early_finals_dropped: Option<f64>,
    pub load_average_start: [f64; 3],
    pub load_average_end: [f64; 3],
    pub figures: Figures,
}

fn secs(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.2}"))
}

fn pair(s: &Spread) -> String {
    if s.n == 0 {
        return "—".into();
    }
    format!("{} / {} s", secs(s.p50), secs(s.p95))
}

fn pct(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "—".into();
    }
    format!(
        "{:.1} % ({part} of {whole})",
        100.0 * part as f64 / whole as f64
    )
}

fn wer(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{:.1} %", 100.0 * v))
}

/// The Markdown table: one column for the offline reference, one per level.
pub fn table(r: &Report) -> String {
    let mut head = vec!["".to_string()];
    let mut rows: Vec<(&str, Vec<String>)> = vec![
        ("word error rate of finals", vec![]),
        ("final latency after end of speech p50 / p95", vec![]),
        (
            "of which after the utterance ended (queue + inference) p50 / p95",
            vec![],
        ),
        ("partial lag p50 / p95", vec![]),
        ("first-partial delay p50 / p95", vec![]),
        ("partials with a repetition loop", vec![]),
        ("finals with a repetition loop", vec![]),
        (
            "utterances whose committed text the final contradicted",
            vec![],
        ),
        ("clips that got no partial", vec![]),
        ("clips with a final lost", vec![]),
        ("finals by source", vec![]),
        ("partials shed", vec![]),
        ("local finals whose loop was cut off (loop guard)", vec![]),
        ("local finals on lent cores", vec![]),
        ("early local finals used / dropped", vec![]),
        ("CPU seconds (per second of audio)", vec![]),
        ("peak RSS", vec![]),
        ("load average at start → end", vec![]),
    ];
    if let Some(o) = &r.offline {
        head.push("offline whole clip".into());
        let cells = [
            wer(o.wer),
            format!("(inference {})", pair(&o.inference_s)),
            "—".into(),
            "—".into(),
            "—".into(),
            "—".into(),
            format!("{} of {}", o.finals_with_loop, o.per_clip.len()),
        ];
        for (i, row) in rows.iter_mut().enumerate() {
            row.1
                .push(cells.get(i).cloned().unwrap_or_else(|| "—".into()));
        }
    }
    for l in &r.levels {
        let f = &l.figures;
        let name = if l.finals == "openai" {
            "OpenAI-compatible"
        } else {
            "local"
        };
        head.push(format!(
            "{name}, {} stream{}",
            l.streams,
            if l.streams == 1 { "" } else { "s" }
        ));
        let audio = r.audio_s_per_stream * l.streams as f64;
        // The fake answers every request of a clip with its whole reference, so a clip the
        // VAD splits gets its text twice: the figure says nothing about accuracy.
        let wer_cell = if l.finals == "openai" {
            "— (fake upstream)".into()
        } else {
            wer(f.wer)
        };
        let sources: Vec<String> = f
            .final_sources
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        let cells = [
            wer_cell,
            pair(&f.final_latency_s),
            pair(&f.final_server_latency_s),
            pair(&f.partial_lag_s),
            pair(&f.first_partial_delay_s),
            pct(f.partials_with_loop, f.partials),
            pct(f.finals_with_loop, f.finals),
            if f.utterances_with_stable == 0 {
                "— (no `stable` field)".into()
            } else {
                pct(f.utterances_contradicted, f.utterances_with_stable)
            },
            format!("{} of {}", f.clips_without_partial, f.plays),
            format!("{} of {}", f.finals_lost, f.plays),
            sources.join(", "),
            l.partials_shed.map_or("—".into(), |v| format!("{v:.0}")),
            l.final_loops.map_or("—".into(), |v| format!("{v:.0}")),
            l.finals_on_lent_cores
                .map_or("—".into(), |v| format!("{v:.0}")),
            match (l.early_finals_used, l.early_finals_dropped) {
                (Some(u), Some(d)) => format!("{u:.0} / {d:.0}"),
                _ => "—".into(),
            },
            format!("{:.0} ({:.2})", l.cpu_s, l.cpu_s / audio.max(1e-9)),
            l.peak_rss_mb.map_or("—".into(), |v| {
                format!(
                    "{v:.0} MB{}",
                    if l.peak_rss_is_per_level {
                        ""
                    } else {
                        " (process)"
                    }
                )
            }),
            format!(
                "{:.2} → {:.2}",
                l.load_average_start[0], l.load_average_end[0]
            ),
        ];
        for (row, cell) in rows.iter_mut().zip(cells) {
            row.1.push(cell);
        }
    }
    let mut out = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for (name, cells) in rows {
        out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    out
}

/// docs/benchmarks.md: how to run, what is measured, and the table of this run.
pub fn markdown(r: &Report, json_name: &str, runs: &[String]) -> String {
    let m = &r.machine;
    let clips: Vec<String> = r
        .clips
        .iter()
        .filter_map(|c| c["name"].as_str().map(|n| format!("`{n}`")))
        .collect();
    let mut md = String::new();
    md.push_str(include_str!("intro.md"));
    md.push_str(&format!(
        "\n## Latest run: `{}`\n\n\
         `{}` — {} UTC, git `{}`, {} cores ({}), model `{}`, load average {:.2} at start and {:.2} at end \
         (1 min), {:.0} s in all. Idle RSS with the model loaded: {}. Server: {}.\n\n\
         Clips ({}, {:.0} s of audio per stream and level): {}.\n\n",
        r.label,
        r.command,
        m.date_utc,
        m.git_revision,
        m.nproc,
        m.cpu,
        r.model,
        r.load_average_start[0],
        r.load_average_end[0],
        r.wall_s,
        r.idle_rss_mb.map_or("—".into(), |v| format!("{v:.0} MB")),
        r.server,
        clips.len(),
        r.audio_s_per_stream,
        clips.join(", "),
    ));
    md.push_str(&table(r));
    md.push_str(&format!(
        "\nRaw figures: [`benchmarks/{json_name}`](benchmarks/{json_name}). \
         Plot: ![final latency and partial lag against concurrent streams](benchmarks/latency.svg)\n"
    ));
    if !runs.is_empty() {
        md.push_str("\nAll recorded runs: ");
        let links: Vec<String> = runs
            .iter()
            .map(|n| format!("[`{n}`](benchmarks/{n})"))
            .collect();
        md.push_str(&links.join(", "));
        md.push('\n');
    }
    md
}
