//! Prompt rendering as fixture files: `tests/prompts/NAME.json` holds the mode and variables,
//! `NAME.txt` the expected messages. A new case is a new pair of files.
//! `GAVEL_BLESS=1 cargo test --release --test prompt_fixtures` rewrites the expected files.

use gavel::prompt::{JudgeMode, JudgeVars, PromptSet};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    mode: JudgeMode,
    query: Option<String>,
    answer: String,
    nugget: String,
    #[serde(default)]
    gold_answers: Vec<String>,
}

#[test]
fn prompt_fixtures_render_as_expected() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prompts");
    let prompts = PromptSet::builtin();
    let bless = std::env::var_os("GAVEL_BLESS").is_some();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let case: Case = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let vars = JudgeVars {
            query: case.query.as_deref(),
            answer: &case.answer,
            nugget: &case.nugget,
            gold_answers: &case.gold_answers,
        };
        let prompt = prompts.render_judge(case.mode, &vars).unwrap();
        let mut got: String = prompt.messages.iter().map(|m| format!("[{}]\n{}\n", m.role, m.content)).collect();
        if !prompt.reply_start.is_empty() {
            got.push_str(&format!("[assistant, continued by the model]\n{}\n", prompt.reply_start));
        }
        let expected_path = path.with_extension("txt");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
        }
        let expected =
            std::fs::read_to_string(&expected_path).unwrap_or_else(|_| panic!("{} missing", expected_path.display()));
        assert_eq!(got, expected, "{}", path.display());
        n += 1;
    }
    assert!(n >= 3, "found {n} fixtures");
}
