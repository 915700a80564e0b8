//! `gavel extract` against the real default model: the output always parses and respects the
//! limits, windows keep the list bounded, it is deterministic, and `extract | verify` works.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use gavel::extract::{ExtractConfig, ExtractTask, Extractor};
use gavel::PromptSet;

fn fixture() -> String {
    format!("{}/tests/fixtures/extract.jsonl", env!("CARGO_MANIFEST_DIR"))
}

/// Run `gavel` with `args`, `input` on its stdin; its output.
fn gavel_with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn tasks() -> Vec<ExtractTask> {
    std::fs::read_to_string(fixture())
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            ExtractTask {
                query: v["query"].as_str().unwrap().to_string(),
                passages: v["passages"]
                    .as_array()
                    .map(|a| a.iter().map(|p| p.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[test]
fn extraction_parses_respects_the_limits_and_is_deterministic() {
    // Small limits and windows of 3 passages: 8 passages are read in 3 windows.
    let config = ExtractConfig { max_nuggets: 4, max_words: 6, window: 3, ..ExtractConfig::default() };
    let ex = Extractor::new(common::backend(), PromptSet::builtin(), config).unwrap();
    let first = ex.extract(&tasks());
    for (i, r) in first.iter().enumerate() {
        let r = r.as_ref().unwrap_or_else(|e| panic!("task {i}: {e}"));
        assert!(!r.nuggets.is_empty() && r.nuggets.len() <= 4, "task {i}: {:?}", r.nuggets);
        for n in &r.nuggets {
            let words = n.text.split_whitespace().count();
            assert!((1..=6).contains(&words), "task {i}: `{}` has {words} words", n.text);
            assert!((0.0..=1.0).contains(&n.p_vital));
        }
        // No two nuggets are the same after normalisation.
        let mut keys: Vec<String> = r.nuggets.iter().map(|n| n.text.to_lowercase()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), r.nuggets.len());
    }
    assert_eq!(first[0].as_ref().unwrap().windows, 3);
    assert_eq!(first[1].as_ref().unwrap().windows, 1, "a query alone is one window");
    // Same input, same output.
    let again = ex.extract(&tasks());
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a.as_ref().unwrap().nuggets, b.as_ref().unwrap().nuggets);
    }
}

#[test]
fn extract_then_verify_as_a_pipeline() {
    let bin = env!("CARGO_BIN_EXE_gavel");
    let dir = tempfile::tempdir().unwrap();
    let extract = Command::new(bin)
        .args(["extract", "--attach", "--max-nuggets", "5", "--input", &fixture()])
        .args(["--rubric-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(extract.status.code(), Some(0), "{}", String::from_utf8_lossy(&extract.stderr));
    let attached = String::from_utf8(extract.stdout).unwrap();
    assert_eq!(attached.lines().count(), 2);
    // Rubric files in the project's format, usable by `gavel check` and `gavel verify --rubric`.
    let rubric = dir.path().join("eiffel.json");
    let check = Command::new(bin).args(["check", rubric.to_str().unwrap()]).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));

    let out = gavel_with_stdin(&["verify"], attached.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (l, a) in lines.iter().zip(attached.lines()) {
        let a: serde_json::Value = serde_json::from_str(a).unwrap();
        assert_eq!(l["verdicts"].as_array().unwrap().len(), a["nuggets"].as_array().unwrap().len());
        assert!(l["scores"]["all_score"].is_number());
    }
}

#[test]
fn bad_extract_records_become_error_records() {
    let input = "{\"query\": \"ok?\"}\nnot json\n{\"id\": \"p\", \"query\": \"q\", \"passages\": [1]}\n";
    let out = gavel_with_stdin(&["extract", "--max-nuggets", "2"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["nuggets"].as_array().is_some_and(|n| !n.is_empty()));
    assert!(lines[1]["error"]["message"].as_str().unwrap().contains("stdin:2"));
    assert!(lines[2]["error"]["message"].as_str().unwrap().contains("passages[0]"));
    // An error record carries the id of its line, as verify's do.
    assert_eq!((lines[1]["line"].as_u64(), &lines[1]["id"]), (Some(2), &serde_json::Value::Null));
    assert_eq!((lines[2]["line"].as_u64(), lines[2]["id"].as_str()), (Some(3), Some("p")));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("3 queries") && stderr.contains("2 errors"), "{stderr}");
}

#[test]
fn a_killed_extraction_resumes_to_the_uninterrupted_output() {
    let bin = env!("CARGO_BIN_EXE_gavel");
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::fs::read_to_string(fixture()).unwrap();
    let queries: Vec<&str> = fixture.lines().collect();
    // A bad line between the queries: its error line counts as done like any other.
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, format!("{}\nnot json\n\n{}\n", queries[0], queries[1])).unwrap();
    let run = |out: &std::path::Path, resume: bool| {
        let mut c = Command::new(bin);
        c.args(["extract", "--attach", "--max-nuggets", "3", "--batch", "1", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(out);
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };
    let reference = dir.path().join("ref.jsonl");
    assert_eq!(run(&reference, false).status.code(), Some(1), "the bad line is an error record");
    let whole = std::fs::read_to_string(&reference).unwrap();
    let lines: Vec<&str> = whole.lines().collect();
    assert_eq!(lines.len(), 3);
    // Killed while writing the second line: the first is complete, the second half there.
    let out = dir.path().join("out.jsonl");
    std::fs::write(&out, format!("{}\n{}", lines[0], &lines[1][..lines[1].len() / 2])).unwrap();
    let resumed = run(&out, true);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("1 query already done, an incomplete last line removed"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), whole);
    // Nothing left to do: a second resume writes nothing more.
    run(&out, true);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), whole);
    // Without --output there is nothing to resume into.
    let refused = Command::new(bin).args(["extract", "--resume", "--input"]).arg(&input).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
}

/// Two queries of one id would write one rubric file (the second replacing the first, exit 0):
/// the second is its line's error and the first file stays; the same query again is fine. Ids that differ only in characters
/// a file name cannot hold (`a/b`, `a_b`) are two files.
#[test]
fn rubric_files_never_replace_one_another() {
    let dir = tempfile::tempdir().unwrap();
    let input = concat!(
        "{\"id\": \"same\", \"query\": \"Who designed the Eiffel Tower?\"}\n",
        "{\"id\": \"same\", \"query\": \"What is the boiling point of water?\"}\n",
        "{\"id\": \"a/b\", \"query\": \"Who wrote Hamlet?\"}\n",
        "{\"id\": \"a_b\", \"query\": \"Where is Lima?\"}\n",
        "{\"id\": \"same\", \"query\": \"Who designed the Eiffel Tower?\"}\n",
    );
    let out = gavel_with_stdin(
        &["extract", "--max-nuggets", "2", "--rubric-dir", dir.path().to_str().unwrap()],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    let errors: Vec<bool> = lines.iter().map(|l| !l["error"].is_null()).collect();
    // The same id with the same query (records of one question) is not an error.
    assert_eq!(errors, vec![false, true, false, false, false]);
    let msg = lines[1]["error"]["message"].as_str().unwrap();
    assert!(msg.contains(":2") && msg.contains("line 1") && msg.contains("\"same\""), "{msg}");
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 3, "same, a/b and a_b each have a file");
    let same: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("same.json")).unwrap()).unwrap();
    assert_eq!(same["query"], "Who designed the Eiffel Tower?");
}
