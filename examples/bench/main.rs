//! The benchmark (issue 8's proof): in one run on the same clips, the offline reference
//! (whisper.cpp on each whole clip), the real in-process server with local finals at several
//! numbers of concurrent real-time streams, and the server with an OpenAI-compatible upstream
//! on loopback (tests/fake_openai). Writes docs/benchmarks/<label>.json (every raw figure),
//! docs/benchmarks/latency.svg and docs/benchmarks.md.
//!
//! ```sh
//! cargo run --release --example bench                       # the full run (~20 min, idle machine)
//! cargo run --release --example bench -- --levels 1,2 --limit 3 --skip-openai --label smoke
//! ```
//! Server settings come from the environment like the server's (`VAD_SILENCE_MS=300 …`).
//! Not a CI test: timings on a shared machine are noise; the load average is recorded.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../support/corpus.rs"]
mod corpus;
#[path = "../../tests/fake_openai/mod.rs"]
mod fake_openai;

mod clips;
mod machine;
mod offline;
mod player;
mod report;
mod score;
mod svg;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

use clips::Clip;
use player::NowPlaying;
use report::{Level, Report};

/// Short clips in the default set (plus the sonnet): about 160 s of audio per stream and
/// level, so the default run fits in ~20 minutes.
const DEFAULT_LIMIT: usize = 12;
/// Counters read from /metrics before and after each level.
const SHED: &str = "whisper_partials_shed_total";
const LOOPS: &str = "whisper_final_loops_total";
const LENT_CORES: &str = "whisper_finals_on_lent_cores_total";
const EARLY_USED: &str = r#"whisper_early_finals_total{outcome="used"}"#;
const EARLY_DROPPED: &str = r#"whisper_early_finals_total{outcome="dropped"}"#;
/// Counters read before and after each level; the level reports their growth.
const COUNTED: [&str; 5] = [SHED, LOOPS, LENT_CORES, EARLY_USED, EARLY_DROPPED];

#[derive(Parser, Debug)]
#[command(
    about = "Streaming benchmark: WER, latency, partial quality and cost per concurrency level"
)]
struct Args {
    /// Concurrent real-time streams per level, local finals.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,12")]
    levels: Vec<usize>,
    /// Concurrent streams with the OpenAI-compatible upstream (the fake answers each request
    /// with the playing clip's reference text when one stream plays).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    openai_levels: Vec<usize>,
    /// How long the fake upstream takes to answer, in milliseconds.
    #[arg(long, default_value_t = 400)]
    openai_delay_ms: u64,
    /// Clips: `mixed` (short clips + the sonnet), `short` or `long`.
    #[arg(long, default_value = "mixed")]
    set: String,
    /// Short clips (spread over the set); with `--set long`, long recordings.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    limit: usize,
    /// Names docs/benchmarks/<label>.json (default: today's date).
    #[arg(long)]
    label: Option<String>,
    #[arg(long)]
    skip_offline: bool,
    #[arg(long)]
    skip_openai: bool,
    /// The microphone's sample rate (s16le, mono, 20 ms frames).
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
}

/// Plays one level against `server` and measures it.
async fn level(
    server: &common::TestServer,
    clips: &Arc<Vec<Clip>>,
    args: &Args,
    config: &whisper_api::Config,
    (finals, streams): (&str, usize),
    now_playing: Option<NowPlaying>,
) -> Level {
    let metrics_url = server.http_url("/metrics");
    let url = server.ws_url(&format!("?sample_rate={}", args.rate));
    let per_level = machine::reset_peak_rss();
    let (rss_start_mb, load_average_start) = (machine::rss_mb(), machine::load_average());
    let before = machine::counters(&metrics_url, COUNTED).await;
    let (cpu0, t0) = (machine::cpu_seconds(), Instant::now());
    let tail_ms = u64::from(config.vad_silence_ms);
    let plays = player::run_level(&url, clips, args.rate, tail_ms, streams, now_playing).await;
    let (cpu_s, wall_s) = (machine::cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    let after = machine::counters(&metrics_url, COUNTED).await;
    let [shed, loops, lent, early_used, early_dropped] =
        std::array::from_fn(|i| before[i].zip(after[i]).map(|(a, b)| b - a));
    let figures = score::score(&plays, clips, f64::from(config.vad_preroll_ms));
    let level = Level {
        finals: finals.into(),
        streams,
        wall_s,
        cpu_s,
        rss_start_mb,
        peak_rss_mb: machine::peak_rss_mb(),
        peak_rss_is_per_level: per_level,
        partials_shed: shed,
        final_loops: loops,
        finals_on_lent_cores: lent,
        early_finals_used: early_used,
        early_finals_dropped: early_dropped,
        load_average_start,
        load_average_end: machine::load_average(),
        figures,
    };
    let f = &level.figures;
    let p = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    println!(
        "{finals} x{streams}: WER {} final {}/{} s, lag {}/{} s, first partial {} s, loops {}/{}, \
         lost {}, shed {:?}, cpu {cpu_s:.0} s, wall {wall_s:.0} s, load {:.2}→{:.2}",
        f.wer.map_or("-".into(), |w| format!("{:.1}%", 100.0 * w)),
        p(f.final_latency_s.p50),
        p(f.final_latency_s.p95),
        p(f.partial_lag_s.p50),
        p(f.partial_lag_s.p95),
        p(f.first_partial_delay_s.p50),
        f.partials_with_loop,
        f.partials,
        f.finals_lost,
        level.partials_shed,
        level.load_average_start[0],
        level.load_average_end[0],
    );
    level
}

fn server_config(max_streams: usize) -> whisper_api::Config {
    let mut config = common::test_config();
    config.max_sessions = config.max_sessions.max(max_streams + 1);
    // Tests turn lending off (they run several servers on the same cores); the benchmark runs
    // one server that owns the machine, as deployed: the default, or LEND_IDLE_CORES.
    config.lend_idle_cores = whisper_api::Config::defaults().lend_idle_cores;
    config
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // `RUST_LOG=whisper_api::engine=debug` shows each job's queue wait, threads and time.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let started = Instant::now();
    let load_average_start = machine::load_average();
    let machine = machine::Machine::probe();
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| machine.date_utc[..10.min(machine.date_utc.len())].to_string());
    let paths = clips::select(&args.set, args.limit).unwrap_or_else(|e| panic!("{e}"));
    let clips: Arc<Vec<Clip>> = Arc::new(paths.iter().map(|p| Clip::load(p, args.rate)).collect());
    let audio_s_per_stream: f64 = clips.iter().map(|c| c.secs).sum();
    println!(
        "{} clips, {audio_s_per_stream:.0} s of audio per stream and level; load {:.2}",
        clips.len(),
        load_average_start[0]
    );
    let max_streams = args
        .levels
        .iter()
        .chain(&args.openai_levels)
        .copied()
        .max()
        .unwrap_or(1);
    let config = server_config(max_streams);
    let (workers, threads) = config.engine_shape();
    let server_settings = serde_json::json!({
        "workers": workers, "threads_per_worker": threads, "lend_idle_cores": config.lend_idle_cores, "final_window": config.final_window, "vad_silence_ms": config.vad_silence_ms,
        "partial_interval_ms": config.partial_interval_ms, "engine_queue": config.engine_queue,
        "sample_rate": args.rate, "frame_ms": player::FRAME_MS,
    });

    let mut levels = Vec::new();
    let server = common::TestServer::start(config.clone()).await;
    // Let start-up allocations settle before reading the idle footprint.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss_mb = machine::rss_mb();
    for &n in &args.levels {
        levels.push(level(&server, &clips, &args, &config, ("local", n), None).await);
    }
    server.shutdown().await.expect("server stops");

    if !args.skip_openai && !args.openai_levels.is_empty() {
        let fake = fake_openai::FakeOpenAi::start().await;
        let now_playing: NowPlaying = Arc::new(Mutex::new(vec![None; max_streams]));
        let (playing, refs) = (now_playing.clone(), clips.clone());
        let delay = Duration::from_millis(args.openai_delay_ms);
        fake.respond_with(move |_| {
            let playing = playing.lock().unwrap();
            let mut clips = playing.iter().flatten();
            let text = match (clips.next(), clips.next()) {
                (Some(&one), None) => refs[one].reference.clone(),
                _ => fake_openai::DEFAULT_TEXT.to_string(),
            };
            fake_openai::Reply::text(text).after(delay)
        });
        let mut config = config.clone();
        fake.configure(&mut config);
        let server = common::TestServer::start(config.clone()).await;
        for &n in &args.openai_levels {
            let np = Some(now_playing.clone());
            levels.push(level(&server, &clips, &args, &config, ("openai", n), np).await);
        }
        server.shutdown().await.expect("server stops");
    }

    let offline = if args.skip_offline {
        None
    } else {
        Some(
            offline::run(
                &clips,
                config.whisper_model.clone(),
                threads,
                &config.language,
            )
            .await,
        )
    };

    let report = Report {
        label: label.clone(),
        command: std::iter::once("cargo run --release --example bench --".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        machine,
        model: config.whisper_model.file_name().map_or("?".into(), |n| n.to_string_lossy().into_owned()),
        server: server_settings,
        load_average_start,
        load_average_end: machine::load_average(),
        clips: clips
            .iter()
            .map(|c| serde_json::json!({"name": c.name, "secs": c.secs, "words": common::normalise(&c.reference).len()}))
            .collect(),
        audio_s_per_stream,
        idle_rss_mb,
        offline,
        levels,
        wall_s: started.elapsed().as_secs_f64(),
    };
    write_outputs(&report, &label);
}

/// docs/benchmarks/<label>.json, docs/benchmarks/latency.svg, docs/benchmarks.md.
fn write_outputs(report: &Report, label: &str) {
    let docs = common::repo_root().join("docs");
    let dir = docs.join("benchmarks");
    std::fs::create_dir_all(&dir).expect("create docs/benchmarks");
    let json_name = format!("{label}.json");
    let json = serde_json::to_string_pretty(report).expect("report serialises");
    std::fs::write(dir.join(&json_name), json + "\n").expect("write json");
    let local: Vec<&Level> = report
        .levels
        .iter()
        .filter(|l| l.finals == "local")
        .collect();
    let line = |name: &str, pick: &dyn Fn(&Level) -> Option<f64>| svg::Series {
        name: name.into(),
        points: local.iter().map(|l| (l.streams as f64, pick(l))).collect(),
    };
    let series = [
        line("final latency p50", &|l| l.figures.final_latency_s.p50),
        line("final latency p95", &|l| l.figures.final_latency_s.p95),
        line("partial lag p95", &|l| l.figures.partial_lag_s.p95),
    ];
    let title = format!(
        "Local finals, {} ({}, {} cores, load {:.1}→{:.1})",
        report.model,
        label,
        report.machine.nproc,
        report.load_average_start[0],
        report.load_average_end[0]
    );
    std::fs::write(dir.join("latency.svg"), svg::plot(&title, &series)).expect("write svg");
    let mut runs: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    runs.retain(|n| n.ends_with(".json"));
    runs.sort();
    let md = report::markdown(report, &json_name, &runs);
    std::fs::write(docs.join("benchmarks.md"), md).expect("write benchmarks.md");
    println!("wrote docs/benchmarks/{json_name}, docs/benchmarks/latency.svg, docs/benchmarks.md");
    println!("{}", report::table(report));
}
