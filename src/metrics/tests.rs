//! The exposition keeps the names, labels and units it had before `prometheus-client`
//! (dashboards and alert rules query them) and every value the API records.

use super::*;

/// The value of the first line that starts with `prefix` (name plus labels).
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

/// Sample names (without labels) in the exposition.
fn sample_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn counters_and_gauges_render() {
    let m = Metrics::new();
    m.session_opened();
    m.session_opened();
    m.session_closed();
    m.session_closed();
    m.session_closed(); // unpaired: must not go below 0
    m.session_rejected();
    m.utterance_finished();
    m.partial_shed();
    m.final_loop();
    m.final_on_lent_cores();
    m.set_engine_queue_depth(5);
    m.set_session_capacity(3, 16);
    m.openai_request("http_5xx");
    m.openai_request("http_5xx");
    m.fallback("circuit_open");
    m.set_openai_circuit_open(true);
    m.set_live_workers(2);
    m.storage_error();
    m.refusal("ip_limit");
    m.refusal("ip_limit");
    let text = m.render();
    assert_eq!(
        value(&text, "whisper_refusals_total{reason=\"ip_limit\"}"),
        2.0
    );
    for reason in REFUSAL_REASONS.iter().filter(|r| **r != "ip_limit") {
        let sample = format!("whisper_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&text, &sample), 0.0, "{reason} exists from the start");
    }
    assert_eq!(value(&text, "whisper_live_workers"), 2.0);
    assert_eq!(value(&text, "whisper_storage_errors_total"), 1.0);
    assert_eq!(value(&text, "whisper_sessions_active"), 0.0);
    assert_eq!(value(&text, "whisper_sessions_total"), 2.0);
    assert_eq!(value(&text, "whisper_sessions_rejected_total"), 1.0);
    assert_eq!(value(&text, "whisper_utterances_total"), 1.0);
    assert_eq!(value(&text, "whisper_partials_shed_total"), 1.0);
    assert_eq!(value(&text, "whisper_final_loops_total"), 1.0);
    assert_eq!(value(&text, "whisper_finals_on_lent_cores_total"), 1.0);
    assert_eq!(value(&text, "whisper_engine_queue_depth"), 5.0);
    assert_eq!(value(&text, "whisper_session_slots_free"), 3.0);
    assert_eq!(value(&text, "whisper_sessions_max"), 16.0);
    assert_eq!(value(&text, "whisper_openai_circuit_open"), 1.0);
    assert_eq!(
        value(&text, "whisper_openai_requests_total{outcome=\"http_5xx\"}"),
        2.0
    );
    assert_eq!(
        value(&text, "whisper_openai_requests_total{outcome=\"ok\"}"),
        0.0
    );
    assert_eq!(
        value(&text, "whisper_fallbacks_total{reason=\"circuit_open\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "whisper_fallbacks_total{reason=\"no_api_key\"}"),
        0.0
    );
    assert!(text.contains("# TYPE whisper_final_latency_seconds histogram"));
    assert!(text.contains("# TYPE whisper_sessions_total counter"));
}

#[test]
fn histograms_are_cumulative_with_sum_and_count() {
    let m = Metrics::new();
    m.observe_final_latency(Duration::from_millis(300), Source::Openai);
    m.observe_final_latency(Duration::from_millis(1200), Source::Openai);
    m.observe_final_latency(Duration::from_secs(60), Source::Openai);
    m.observe_local_inference(Duration::from_secs(2), Duration::from_millis(200), true);
    m.observe_local_inference(Duration::ZERO, Duration::from_millis(200), false);
    m.observe_partial_latency(Duration::from_millis(150));
    let text = m.render();
    let openai = "whisper_final_latency_seconds_bucket{source=\"openai\",";
    assert_eq!(value(&text, &format!("{openai}le=\"0.25\"}}")), 0.0);
    assert_eq!(value(&text, &format!("{openai}le=\"0.5\"}}")), 1.0);
    assert_eq!(value(&text, &format!("{openai}le=\"1.5\"}}")), 2.0);
    assert_eq!(value(&text, &format!("{openai}le=\"10\"}}")), 2.0);
    assert_eq!(value(&text, &format!("{openai}le=\"+Inf\"}}")), 3.0);
    assert_eq!(
        value(
            &text,
            "whisper_final_latency_seconds_count{source=\"openai\"}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            "whisper_final_latency_seconds_sum{source=\"openai\"}"
        ),
        61.5
    );
    assert_eq!(
        value(
            &text,
            "whisper_final_latency_seconds_count{source=\"local\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&text, "whisper_local_rtf_bucket{kind=\"final\",le=\"0.1\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "whisper_local_rtf_count{kind=\"partial\"}"),
        0.0
    );
    assert_eq!(
        value(&text, "whisper_partial_latency_seconds_bucket{le=\"0.1\"}"),
        0.0
    );
    assert_eq!(
        value(&text, "whisper_partial_latency_seconds_bucket{le=\"0.2\"}"),
        1.0
    );
    assert_eq!(value(&text, "whisper_partial_latency_seconds_count"), 1.0);
}

/// Clock oddities are dropped, not recorded as a 0 or an overflow.
#[test]
fn negative_and_non_finite_observations_are_dropped() {
    let m = Metrics::new();
    m.observe_local_inference(Duration::from_nanos(1), Duration::MAX, false);
    let text = m.render();
    assert_eq!(
        value(&text, "whisper_local_rtf_count{kind=\"partial\"}"),
        1.0,
        "a huge but finite RTF lands in +Inf"
    );
    observe(&m.partial_latency, f64::NAN);
    observe(&m.partial_latency, -1.0);
    assert_eq!(
        value(&m.render(), "whisper_partial_latency_seconds_count"),
        0.0
    );
}

/// The names today's dashboards and rules use, exactly, plus the process metrics.
#[test]
fn sample_names_are_unchanged() {
    let text = Metrics::new().render();
    let names = sample_names(&text);
    let mut expected: Vec<String> = [
        "whisper_sessions_active",
        "whisper_sessions_max",
        "whisper_session_slots_free",
        "whisper_sessions_total",
        "whisper_sessions_rejected_total",
        "whisper_utterances_total",
        "whisper_partials_shed_total",
        "whisper_final_loops_total",
        "whisper_finals_on_lent_cores_total",
        "whisper_engine_queue_depth",
        "whisper_openai_circuit_open",
        "whisper_live_workers",
        "whisper_storage_errors_total",
        "whisper_openai_requests_total",
        "whisper_fallbacks_total",
        "whisper_refusals_total",
        "whisper_early_finals_total",
    ]
    .map(String::from)
    .to_vec();
    for histogram in [
        "whisper_partial_latency_seconds",
        "whisper_final_latency_seconds",
        "whisper_local_rtf",
    ] {
        for suffix in ["_bucket", "_sum", "_count"] {
            expected.push(format!("{histogram}{suffix}"));
        }
    }
    let whisper: std::collections::BTreeSet<String> = names
        .iter()
        .filter(|n| n.starts_with("whisper_"))
        .cloned()
        .collect();
    assert_eq!(whisper, expected.into_iter().collect());
    for process in ["process_cpu_seconds_total", "process_resident_memory_bytes"] {
        assert!(names.contains(process), "{process} missing in\n{text}");
    }
    assert!(value(&text, "process_resident_memory_bytes") > 1e6);
    // Every series of every fixed label set exists from the start.
    for outcome in OPENAI_OUTCOMES {
        value(
            &text,
            &format!("whisper_openai_requests_total{{outcome=\"{outcome}\"}}"),
        );
    }
    for reason in FALLBACK_REASONS {
        value(
            &text,
            &format!("whisper_fallbacks_total{{reason=\"{reason}\"}}"),
        );
    }
    for outcome in EARLY_OUTCOMES {
        value(
            &text,
            &format!("whisper_early_finals_total{{outcome=\"{outcome}\"}}"),
        );
    }
}

#[test]
fn every_sample_line_has_a_type_line() {
    let text = Metrics::new().render();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| text.contains(&format!("# TYPE {b} histogram")))
            })
            .unwrap_or(name);
        assert!(text.contains(&format!("# TYPE {base} ")), "{line}");
    }
}
