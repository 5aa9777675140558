//! The text fields of a transcription request, per model family; pure so it is unit-tested.
//!
//! OpenAI's models disagree on their fields. `gpt-transcribe` (and, we assume, later `gpt-*`
//! transcription models) takes `languages[]`, `prompt` and `keywords[]` and only answers JSON.
//! `whisper-1`, `gpt-4o-transcribe`, `gpt-4o-mini-transcribe` and the OpenAI-compatible
//! servers people self-host (faster-whisper-server, LocalAI, vLLM, Groq…) take one `language`
//! and `prompt`, and want `response_format=json` to answer `{"text": …}` rather than plain text.
//! Sending a field a model does not know, or `language` together with `languages[]`, gets the
//! whole request rejected with 400, so each family gets exactly its own fields.

/// Prompts longer than this are cut to their most recent part: whisper only reads the last
/// 224 tokens of a prompt anyway, and a long history makes every upload bigger.
pub const PROMPT_MAX_CHARS: usize = 800;

/// Longest keyword kept; longer ones are not vocabulary but sentences.
pub const KEYWORD_MAX_CHARS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFamily {
    /// `gpt-transcribe` and later: `languages[]`, `prompt`, `keywords[]`.
    Languages,
    /// `whisper-1` style (also `gpt-4o-*-transcribe` and self-hosted servers): `language`, `prompt`.
    SingleLanguage,
}

impl ModelFamily {
    /// `gpt-*` models except the `gpt-4o-*` generation take `languages[]`; every other name
    /// (whisper-1, self-hosted whisper models) is whisper-1 style, the most widely implemented.
    pub fn of(model: &str) -> Self {
        let model = model.trim().to_ascii_lowercase();
        if model.starts_with("gpt-") && !model.starts_with("gpt-4o") {
            ModelFamily::Languages
        } else {
            ModelFamily::SingleLanguage
        }
    }

    pub fn takes_keywords(self) -> bool {
        self == ModelFamily::Languages
    }
}

/// Why a configured keyword was dropped (it would make OpenAI reject every request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeywordProblem {
    Markup,
    LineBreak,
    TooLong,
}

impl KeywordProblem {
    pub fn describe(self) -> &'static str {
        match self {
            KeywordProblem::Markup => "contains '<' or '>'",
            KeywordProblem::LineBreak => "contains a line break",
            KeywordProblem::TooLong => "is longer than 100 characters",
        }
    }
}

/// Splits keywords into the valid ones (deduplicated, in order) and the dropped ones.
pub fn validate_keywords(keywords: &[String]) -> (Vec<String>, Vec<(String, KeywordProblem)>) {
    let mut kept: Vec<String> = Vec::new();
    let mut dropped = Vec::new();
    for keyword in keywords {
        let keyword = keyword.trim();
        let problem = if keyword.contains(['<', '>']) {
            Some(KeywordProblem::Markup)
        } else if keyword.contains(['\r', '\n']) {
            Some(KeywordProblem::LineBreak)
        } else if keyword.chars().count() > KEYWORD_MAX_CHARS {
            Some(KeywordProblem::TooLong)
        } else {
            None
        };
        match problem {
            Some(p) => dropped.push((keyword.to_string(), p)),
            None if keyword.is_empty() || kept.iter().any(|k| k == keyword) => {}
            None => kept.push(keyword.to_string()),
        }
    }
    (kept, dropped)
}

/// The most recent `PROMPT_MAX_CHARS` of the prompt, starting at a word boundary.
pub fn trim_prompt(prompt: &str) -> &str {
    let prompt = prompt.trim();
    let chars = prompt.chars().count();
    if chars <= PROMPT_MAX_CHARS {
        return prompt;
    }
    let cut = prompt
        .char_indices()
        .nth(chars - PROMPT_MAX_CHARS)
        .map_or(0, |(i, _)| i);
    let tail = &prompt[cut..];
    // Skip the word the cut went through, if a later word starts soon enough.
    match tail.find(char::is_whitespace) {
        Some(space) if space < tail.len() / 4 => tail[space..].trim_start(),
        _ => tail,
    }
}

/// Whether a language setting names one language (rather than "auto" / nothing).
fn explicit_language(language: &str) -> Option<&str> {
    let language = language.trim();
    (!language.is_empty() && !language.eq_ignore_ascii_case("auto")).then_some(language)
}

/// The multipart text fields (everything but `file`), in sending order.
pub fn text_fields(
    family: ModelFamily,
    model: &str,
    language: &str,
    prompt: &str,
    keywords: &[String],
) -> Vec<(&'static str, String)> {
    let mut fields = vec![("model", model.to_string())];
    let language = explicit_language(language);
    match family {
        ModelFamily::Languages => {
            fields.extend(language.map(|l| ("languages[]", l.to_string())));
            fields.extend(keywords.iter().map(|k| ("keywords[]", k.clone())));
        }
        ModelFamily::SingleLanguage => {
            fields.extend(language.map(|l| ("language", l.to_string())));
            fields.push(("response_format", "json".to_string()));
        }
    }
    let prompt = trim_prompt(prompt);
    if !prompt.is_empty() {
        fields.push(("prompt", prompt.to_string()));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(fields: &[(&'static str, String)]) -> Vec<&'static str> {
        fields.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn families_by_model_name() {
        assert_eq!(ModelFamily::of("gpt-transcribe"), ModelFamily::Languages);
        assert_eq!(
            ModelFamily::of("GPT-Transcribe-2027"),
            ModelFamily::Languages
        );
        assert_eq!(ModelFamily::of("whisper-1"), ModelFamily::SingleLanguage);
        assert_eq!(
            ModelFamily::of("gpt-4o-transcribe"),
            ModelFamily::SingleLanguage
        );
        assert_eq!(
            ModelFamily::of("gpt-4o-mini-transcribe"),
            ModelFamily::SingleLanguage
        );
        assert_eq!(
            ModelFamily::of("Systran/faster-whisper-small"),
            ModelFamily::SingleLanguage
        );
    }

    #[test]
    fn gpt_transcribe_gets_languages_array_keywords_and_prompt() {
        let kw = vec!["Kubernetes".to_string(), "gRPC".to_string()];
        let f = text_fields(
            ModelFamily::Languages,
            "gpt-transcribe",
            "en",
            "earlier text",
            &kw,
        );
        assert_eq!(
            names(&f),
            ["model", "languages[]", "keywords[]", "keywords[]", "prompt"]
        );
        assert_eq!(f[1].1, "en");
        assert_eq!(f[3].1, "gRPC");
        assert!(!names(&f).contains(&"language"));
    }

    #[test]
    fn whisper_style_gets_one_language_and_json_format_never_keywords() {
        let kw = vec!["Kubernetes".to_string()];
        let f = text_fields(ModelFamily::SingleLanguage, "whisper-1", "de", "", &kw);
        assert_eq!(names(&f), ["model", "language", "response_format"]);
        assert_eq!(f[1].1, "de");
        assert_eq!(f[2].1, "json");
    }

    #[test]
    fn auto_or_empty_language_sends_no_language_field() {
        for lang in ["auto", "", "  "] {
            let f = text_fields(ModelFamily::Languages, "gpt-transcribe", lang, "p", &[]);
            assert_eq!(names(&f), ["model", "prompt"]);
            let f = text_fields(ModelFamily::SingleLanguage, "whisper-1", lang, "", &[]);
            assert_eq!(names(&f), ["model", "response_format"]);
        }
    }

    #[test]
    fn invalid_keywords_are_dropped_with_a_reason() {
        let input: Vec<String> = [
            "ok",
            " spaced ",
            "<b>",
            "a>b",
            "two\nlines",
            "c\rr",
            "",
            "ok",
            &"x".repeat(101),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (kept, dropped) = validate_keywords(&input);
        assert_eq!(kept, ["ok", "spaced"]);
        let problems: Vec<_> = dropped.iter().map(|(_, p)| *p).collect();
        use KeywordProblem::*;
        assert_eq!(problems, [Markup, Markup, LineBreak, LineBreak, TooLong]);
    }

    #[test]
    fn long_prompts_keep_their_most_recent_words() {
        let short = "hello there";
        assert_eq!(trim_prompt(short), short);
        let long = format!("{} the end", "word ".repeat(400));
        let trimmed = trim_prompt(&long);
        assert!(trimmed.chars().count() <= PROMPT_MAX_CHARS);
        assert!(trimmed.ends_with("the end"));
        assert!(
            trimmed.starts_with("word"),
            "cut at a word boundary: {trimmed:.20}"
        );
        let multibyte = "é".repeat(2 * PROMPT_MAX_CHARS);
        assert_eq!(trim_prompt(&multibyte).chars().count(), PROMPT_MAX_CHARS);
    }
}
