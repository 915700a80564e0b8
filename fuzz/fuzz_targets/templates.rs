//! Label words and judge templates: the input is `labels.toml`, a NUL byte, then the judge's user
//! template. Loading and rendering give a prompt or an error, never a panic or a hang (fuel).
#![no_main]
use gavel::prompt::{JudgeVars, PromptSet};
use gavel::JudgeMode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (labels, user) = text.split_once('\0').unwrap_or((text, "{{ nugget }}"));
    let texts = [("labels.toml".to_string(), labels.to_string()), ("judge.user.jinja".to_string(), user.to_string())];
    let Ok(set) = PromptSet::with_texts(texts) else { return };
    let gold = vec!["Paris".to_string()];
    let vars = JudgeVars { query: Some("capital of France?"), answer: "Paris.", nugget: "Paris", gold_answers: &gold };
    for mode in [JudgeMode::Scored, JudgeMode::Reasoned] {
        let _ = set.render_judge(mode, &vars);
    }
});
