//! The `gavel` binary end to end: exit codes, stdout, stderr.

use std::io::Write;
use std::process::{Command, Stdio};

fn gavel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gavel"))
}

/// gavel with SIGINT at its default disposition, whatever this test process inherited: tests run
/// from a script's background job (`make test &`) inherit SIGINT ignored, and gavel keeps an
/// ignored SIGINT ignored, so an interrupt test would see a run that never stops.
fn gavel_with_sigint_default() -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = gavel();
    // SAFETY: between fork and exec only `signal`, which is async-signal-safe, is called.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    c
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn malformed_lines_become_error_records_and_the_run_goes_on() {
    let out = gavel().args(["verify", "--input", &fixture("mixed.jsonl")]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // One output line per non-blank input line, in order.
    let line_nos: Vec<u64> = lines.iter().map(|l| l["line"].as_u64().unwrap()).collect();
    assert_eq!(line_nos, vec![1, 2, 3, 5, 6]);
    assert!(lines[0]["error"].is_null());
    assert!(lines[0]["scores"]["all_score"].is_number());
    assert_eq!(lines[0]["verdicts"][1]["by"], "numeric");
    assert_eq!(lines[1]["error"]["kind"], "parse");
    assert!(lines[1]["error"]["message"].as_str().unwrap().contains("mixed.jsonl:2"));
    assert_eq!(lines[2]["id"], "no-answer");
    assert!(lines[2]["error"]["message"].as_str().unwrap().contains("answer"));
    assert!(lines[3]["error"]["message"].as_str().unwrap().contains("nuggets[0].kind"));
    assert_eq!(lines[4]["correct"], true);
    assert_eq!(lines[4]["verdicts"][0]["by"], "exact_match");
    assert!(stderr.contains("5 records") && stderr.contains("3 errors") && stderr.contains("verdicts/s"), "{stderr}");
}

#[test]
fn stdin_to_file_and_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.jsonl");
    let mut child = gavel()
        .args(["verify", "--output", out_path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"answer": "Paris is the capital of France.", "nuggets": ["Paris is the capital of France", {"kind": "contains", "answers": ["Paris"]}]}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&out_path).unwrap();
    let rec: serde_json::Value = serde_json::from_str(written.trim()).unwrap();
    assert_eq!(rec["verdicts"].as_array().unwrap().len(), 2);
    assert_eq!(rec["verdicts"][1]["label"], "support");
}

#[test]
fn bad_rubric_fails_fast_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let rubric = dir.path().join("r.json");
    std::fs::write(&rubric, r#"{"nuggets": [{"text": "a", "importance": "urgent"}]}"#).unwrap();
    let out = gavel()
        .args(["verify", "--rubric", rubric.to_str().unwrap(), "--input", &fixture("mixed.jsonl")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("r.json") && stderr.contains("nuggets[0].importance"), "{stderr}");

    let out = gavel().args(["check", rubric.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));

    // A folder is checked file by file: the good one passes, the bad one is named.
    std::fs::write(dir.path().join("good.toml"), "[[nuggets]]\ntext = \"a\"\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a rubric").unwrap();
    let out = gavel().args(["check", dir.path().to_str().unwrap()]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains("good.toml: ok, id `good`, 1 nugget (1 needs the model)"), "{stdout}");
    assert!(stderr.contains("r.json") && !stderr.contains("notes.txt"), "{stderr}");
    // Two rubrics of one id, which serve --rubrics refuses, are refused here too.
    std::fs::write(dir.path().join("r.json"), r#"{"id": "good", "nuggets": ["b"]}"#).unwrap();
    let out = gavel().args(["check", dir.path().to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("id `good` is also the id of"), "{stderr}");
}

#[test]
fn a_labeled_file_without_gold_labels_fails_before_the_model_runs() {
    // The labels beside the nuggets instead of on them: the records parse, none carries `gold`.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("unlabeled.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"u1\", \"answer\": \"Paris is in France.\", \"nuggets\": [\"Paris is in France\"], \"labels\": [\"support\"]}\n\
         {\"id\": \"u2\", \"answer\": \"Paris\", \"gold_answers\": [\"Paris\"], \"golden\": \"correct\"}\n",
    )
    .unwrap();
    let out_dir = dir.path().join("report");
    let out = gavel()
        .args(["eval", "--input", input.to_str().unwrap(), "--out", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unlabeled.jsonl") && stderr.contains("`gold`") && stderr.contains("2 records"),
        "{stderr}"
    );
    assert!(!out_dir.join("verdicts.jsonl").exists(), "the model ran");

    let out = gavel()
        .args(["calibrate", "--input", input.to_str().unwrap(), "-o", dir.path().join("c.json").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unlabeled.jsonl") && stderr.contains("`gold`"), "{stderr}");
    assert!(!stderr.contains("calibrate: 2/2"), "the model ran: {stderr}");

    // Too few labels for a fit: refused before the model runs, not after judging them all.
    let few = dir.path().join("few.jsonl");
    std::fs::write(
        &few,
        "{\"id\": \"f1\", \"answer\": \"Paris is in France.\", \"nuggets\": [{\"text\": \"Paris is in France\", \"gold\": \"support\"}]}\n",
    )
    .unwrap();
    let out = gavel()
        .args(["calibrate", "--input", few.to_str().unwrap(), "-o", dir.path().join("c.json").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("1 gold label in all") && stderr.contains("at least 10"), "{stderr}");
    assert!(!stderr.contains("calibrate: 1/1"), "the model ran: {stderr}");

    // Gold labels as numbers: no record parses, and the error says why, before the model runs.
    let numbers = dir.path().join("numbers.jsonl");
    std::fs::write(
        &numbers,
        "{\"answer\": \"Paris is in France.\", \"nuggets\": [{\"text\": \"Paris is in France\", \"gold\": 1}]}\n"
            .repeat(3),
    )
    .unwrap();
    let out = gavel()
        .args(["calibrate", "--input", numbers.to_str().unwrap(), "-o", dir.path().join("c.json").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("3 records did not parse") && stderr.contains("numbers.jsonl:1") && stderr.contains("a number"),
        "{stderr}"
    );

    // Nothing to evaluate (an empty file, or a part that holds no record): said, not reported.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let out = gavel()
        .args(["eval", "--input", empty.to_str().unwrap(), "--part", "b", "--out", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("empty.jsonl (part b)") && stderr.contains("no record to evaluate"), "{stderr}");
    assert!(!out_dir.join("report.md").exists());
}

#[test]
fn eval_with_a_part_judges_only_that_half() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("labeled.jsonl");
    let cities = ["Paris", "Rome", "Madrid", "Berlin", "Vienna", "Lisbon", "Athens", "Dublin"];
    let body: String = cities
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{{\"id\": \"r{i}\", \"query\": \"Where is {c}?\", \"answer\": \"{c} is a capital city in Europe.\", \
                 \"nuggets\": [{{\"text\": \"{c} is a capital\", \"gold\": \"support\"}}]}}\n"
            )
        })
        .collect();
    std::fs::write(&input, body).unwrap();
    let judged = |part: &str| -> Vec<String> {
        let out_dir = dir.path().join(part);
        let out = gavel()
            .args(["eval", "--input", input.to_str().unwrap(), "--part", part, "--out", out_dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let verdicts = std::fs::read_to_string(out_dir.join("verdicts.jsonl")).unwrap();
        let ids: Vec<String> = verdicts
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
            .collect();
        // The report counts what was judged: one verdict per record here.
        let metrics: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("metrics.json")).unwrap()).unwrap();
        let n = Some(ids.len() as u64);
        assert_eq!((metrics["records"].as_u64(), metrics["rubric"]["model2"]["n"].as_u64()), (n, n), "{metrics}");
        ids
    };
    let (a, b) = (judged("a"), judged("b"));
    // An output that holds both halves: resuming part a finds all of its records done and
    // counts only those as skipped.
    let both = dir.path().join("both");
    std::fs::create_dir_all(&both).unwrap();
    let verdicts = |part: &str| std::fs::read_to_string(dir.path().join(part).join("verdicts.jsonl")).unwrap();
    std::fs::write(both.join("verdicts.jsonl"), verdicts("b") + &verdicts("a")).unwrap();
    let out = gavel()
        .args(["eval", "--input", input.to_str().unwrap(), "--part", "a", "--resume", "--out", both.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("{} skipped (already done)", a.len())), "{stderr}");
    // Each half judged alone: no record in both, none left out, neither half empty.
    assert!(!a.is_empty() && !b.is_empty(), "a {a:?}, b {b:?}");
    assert!(a.iter().all(|id| !b.contains(id)), "a {a:?}, b {b:?}");
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort();
    let mut want: Vec<String> = (0..cities.len()).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(all, want);
}

#[test]
fn dry_run_prints_the_prompt_without_judging() {
    let out = gavel().args(["verify", "--dry-run", "--input", &fixture("mixed.jsonl")]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.contains("shared prefix")
            && stdout.contains("Statement:\n===== nugget 0 suffix =====\n Fleming discovered penicillin"),
        "{stdout}"
    );
    assert!(stdout.contains("<|im_start|>assistant"), "{stdout}");
}

/// `render` lists only the flags that change a prompt; the engine's knobs are still accepted, so
/// a script can pass one set of flags to `verify` and `render`.
#[test]
fn render_lists_only_the_flags_that_change_a_prompt() {
    let help = gavel().args(["render", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for shown in ["--input", "--line", "--model", "--prompts", "--base-url"] {
        assert!(help.contains(shown), "{shown} missing from: {help}");
    }
    for hidden in
        ["--threads", "--seqs", "--wave-tokens", "--batch-invariant", "--hidden", "--in-flight", "--top-logprobs"]
    {
        assert!(!help.contains(hidden), "{hidden} listed in: {help}");
    }
    let out =
        gavel().args(["render", "--input", &fixture("mixed.jsonl"), "--threads", "2", "--seqs", "8"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("===== nugget 0 suffix ====="));
}

#[test]
fn a_run_without_the_likelihood_reads_says_the_calibration_misses_them() {
    let longform = format!("{}/examples/longform.jsonl", env!("CARGO_MANIFEST_DIR"));
    let run = |extra: &[&str]| {
        let o = gavel().args(["verify", "--input", &longform]).args(extra).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    // The shipped calibration reads pmi_low3 and window_pmi_mean.
    let err = run(&["--no-likelihood"]);
    assert!(
        err.contains("warning: the calibration reads the nugget's likelihood (")
            && err.contains("pmi_low3")
            && err.contains("window_pmi_mean")
            && err.contains("--no-likelihood skips them"),
        "{err}"
    );
    assert!(!run(&[]).contains("warning"), "a run that reads them is not warned");
    assert!(!run(&["--no-likelihood", "--calibration", "none"]).contains("warning"));
    // Reasoned mode: the calibration decides nothing, so nothing to warn of.
    assert!(!run(&["--no-likelihood", "--mode", "reasoned"]).contains("warning"));
}

#[test]
fn a_closed_output_stops_the_run_and_says_so() {
    // 90 records, one per batch (more than a pipe's buffer holds): the pipe closes long
    // before the last is judged.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let longform = std::fs::read_to_string(format!("{}/examples/longform.jsonl", env!("CARGO_MANIFEST_DIR"))).unwrap();
    std::fs::write(&input, longform.repeat(30)).unwrap();
    let mut child = gavel()
        .args(["verify", "--input", input.to_str().unwrap(), "--batch", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe, as `| head -1` does.
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(first.contains("\"line\":1"), "{first}");
    assert_eq!(o.status.code(), Some(141), "{err}");
    assert!(err.contains("the output was closed (broken pipe)"), "{err}");
}

#[test]
fn a_report_whose_reader_went_away_ends_as_unix_tools_do() {
    use std::os::unix::process::ExitStatusExt;
    // 1,000 rubrics print more than a pipe holds, so the reader is gone before the last line.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..1000 {
        std::fs::write(dir.path().join(format!("r{i:04}.json")), format!(r#"{{"id": "r{i}", "nuggets": ["a"]}}"#))
            .unwrap();
    }
    let mut child = gavel().args(["check", dir.path().to_str().unwrap()]).stdout(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    // Killed by SIGPIPE (Rust's default is to ignore it and panic on the failed print: 101).
    assert_eq!(status.signal(), Some(13), "{status:?}");
}

#[test]
fn missing_model_file_is_a_clear_error() {
    let out = gavel()
        .args(["verify", "--model", "/nonexistent/model.gguf", "--input", &fixture("mixed.jsonl")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("/nonexistent/model.gguf") && stderr.contains("no such file"), "{stderr}");
}

/// Sixty short records of two nuggets each in `dir`/in.jsonl, and the path of an output beside.
fn sixty_records(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut text = String::new();
    for i in 0..60 {
        let rec = serde_json::json!({"id": format!("r{i}"), "query": "Where is the Eiffel Tower?",
            "answer": format!("The Eiffel Tower stands in Paris. Record {i} adds that it opened in 1889."),
            "nuggets": ["The tower is in Paris", format!("The tower opened in {}", 1880 + i % 20)]});
        text.push_str(&format!("{rec}\n"));
    }
    std::fs::write(dir.join("in.jsonl"), text).unwrap();
    (dir.join("in.jsonl"), dir.join("out.jsonl"))
}

/// Wait until `output` holds `n` lines while `child` runs; a run that ends first fails the test,
/// and one that writes nothing for 300 s is killed before the test fails, so it does not outlive
/// the test.
fn wait_for_lines(child: &mut std::process::Child, output: &std::path::Path, n: usize) {
    let start = std::time::Instant::now();
    while std::fs::read_to_string(output).map(|s| s.lines().count()).unwrap_or(0) < n {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the interrupt");
        if start.elapsed() > std::time::Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no {n} records written in 300 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_killed_run_resumes_with_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = sixty_records(dir.path());
    let args = ["verify", "--batch", "2", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let mut child = gavel().args(args).stderr(Stdio::null()).spawn().unwrap();
    // Kill it (SIGKILL: no chance to clean up) once some records are on disk.
    let start = std::time::Instant::now();
    loop {
        let done = std::fs::read_to_string(&output).map(|s| s.lines().count()).unwrap_or(0);
        if done >= 6 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(start.elapsed() < std::time::Duration::from_secs(300));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = std::fs::read_to_string(&output).unwrap();
    let kept = before.lines().count();
    assert!(kept < 60, "the run finished before the kill");
    // A torn last line, as a crash in the middle of a write leaves it.
    std::fs::OpenOptions::new().append(true).open(&output).unwrap().write_all(b"{\"line\":61,\"id\":\"r4").unwrap();

    let out = gavel().args(args).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let after = std::fs::read_to_string(&output).unwrap();
    let mut ids: Vec<String> = after
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every line is whole JSON")["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 60, "every record once:\n{after}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 60, "no record twice");
    // The records written before the kill are kept as they were.
    let whole = &before[..before.rfind('\n').map_or(0, |i| i + 1)];
    assert!(after.starts_with(whole));
}

#[test]
fn an_interrupt_writes_the_batch_in_flight_and_says_how_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = sixty_records(dir.path());
    let args = ["verify", "--batch", "2", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let signal = |child: &std::process::Child| {
        let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    };
    let lines = || -> Vec<serde_json::Value> {
        let body = std::fs::read_to_string(&output).unwrap();
        assert!(body.is_empty() || body.ends_with('\n'), "a torn last line:\n{body}");
        body.lines().map(|l| serde_json::from_str(l).expect("every line is whole JSON")).collect()
    };

    // One interrupt: the batch in flight is finished and written, then the run stops.
    let mut child = gavel_with_sigint_default().args(args).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_lines(&mut child, &output, 4);
    signal(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopping after the batch in flight") && stderr.contains("--resume"), "{stderr}");
    let first = lines();
    assert!(first.len() >= 4 && first.len() < 60, "{} records", first.len());
    assert_eq!(first.len() % 2, 0, "whole batches of 2 only: {} records", first.len());

    // Two interrupts: the second stops at once, without waiting for the batch in flight (20
    // records: seconds of work, against 100 ms between the signals).
    let (i, o) = (input.to_str().unwrap(), output.to_str().unwrap());
    let args20 = ["verify", "--batch", "20", "--input", i, "--output", o, "--resume"];
    let mut child = gavel_with_sigint_default().args(args20).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_lines(&mut child, &output, first.len() + 1);
    signal(&child);
    std::thread::sleep(std::time::Duration::from_millis(100));
    signal(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("gavel: stopped") && !stderr.contains("every finished record"), "{stderr}");

    // What was written is kept; the rest is judged once.
    let out = gavel().args(args).arg("--resume").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let all = lines();
    assert_eq!(&all[..first.len()], &first[..]);
    let mut ids: Vec<String> = all.iter().map(|l| l["id"].to_string()).collect();
    assert_eq!(ids.len(), 60);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 60, "no record twice");
}

#[test]
fn a_run_started_with_sigint_ignored_keeps_it_ignored() {
    // A background job of a script inherits SIGINT ignored; the handler must not take it over.
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = sixty_records(dir.path());
    let script = format!(
        "trap '' INT; exec {} verify --batch 2 --input {} --output {}",
        env!("CARGO_BIN_EXE_gavel"),
        input.display(),
        output.display()
    );
    let mut child = Command::new("sh").args(["-c", &script]).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_lines(&mut child, &output, 2);
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let at_kill = std::fs::read_to_string(&output).unwrap().lines().count();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(at_kill < 60, "the run had finished before the interrupt");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("interrupted"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 60);
}

#[test]
fn calibrate_fits_long_and_short_form_stacks_from_several_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().to_string();
    let passage = "The Eiffel Tower was completed in 1889 in Paris. It is 330 metres tall and made of wrought iron.";
    let long: Vec<String> = [
        ("The Eiffel Tower was completed in 1889", "support"),
        ("The Eiffel Tower is in Paris", "support"),
        ("The tower is about 330 metres tall", "partial_support"),
        ("The tower is made of steel and glass", "not_support"),
        ("The Eiffel Tower is in Berlin", "not_support"),
        ("It was completed in 1920", "not_support"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (n, g))| {
        serde_json::json!({"id": format!("l{i}"), "answer": passage, "nuggets": [{"text": n, "gold": g}]}).to_string()
    })
    .collect();
    let short: Vec<String> = [
        ("what is the capital of france", "Paris, of course", "Paris", "correct"),
        ("what is the capital of france", "It is Lyon", "Paris", "incorrect"),
        ("when was the eiffel tower completed", "In 1889", "1889", "correct"),
        ("when was the eiffel tower completed", "In the 1920s", "1889", "incorrect"),
        ("who designed the eiffel tower", "Gustave Eiffel's firm", "Gustave Eiffel", "correct"),
        ("who designed the eiffel tower", "Le Corbusier", "Gustave Eiffel", "incorrect"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (q, a, g, l))| {
        serde_json::json!({"id": format!("s{i}"), "query": q, "answer": a, "gold_answers": [g], "gold": l}).to_string()
    })
    .collect();
    std::fs::write(p("long.jsonl"), long.join("\n") + "\n").unwrap();
    std::fs::write(p("short.jsonl"), short.join("\n") + "\n").unwrap();
    for (input, out) in [("long.jsonl", "long.out.jsonl"), ("short.jsonl", "short.out.jsonl")] {
        let o = gavel()
            .args(["verify", "--calibration", "none", "--short-form", "llm", "--input", &p(input), "--output", &p(out)])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = gavel()
        .args(["calibrate", "--input", &p("long.jsonl"), "--from", &p("long.out.jsonl")])
        .args(["--input", &p("short.jsonl"), "--from", &p("short.out.jsonl")])
        .args(["--features-out", &p("features.csv"), "-o", &p("cal.json")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let cal: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("cal.json")).unwrap()).unwrap();
    // The long-form features, penalty and head are chosen on held-out folds, said on stdout
    // (the chosen line starred), and the chosen stack is the one saved.
    let said = String::from_utf8_lossy(&o.stdout);
    let head = if cal["stack"].get("ordinal").is_some() { "ordinal" } else { "multinomial" };
    let chosen = said.lines().find(|l| l.trim_start().starts_with('*')).unwrap_or_else(|| panic!("{said}"));
    assert!(chosen.contains(head), "{said}");
    assert_eq!(
        cal["stack"]["features"].as_str().map(str::to_lowercase),
        chosen.split_whitespace().nth(1).map(|s| {
            // Debug names (AlignedNoModel) against the file's snake_case (aligned_no_model).
            s.chars()
                .enumerate()
                .flat_map(|(i, c)| if c.is_uppercase() && i > 0 { vec!['_', c] } else { vec![c] })
                .collect::<String>()
                .to_lowercase()
        }),
        "{said}"
    );
    assert_eq!(cal["n"], 12);
    // Both stacks fitted: the label-vote calibration's in-sample scores say they decide nothing.
    assert!(said.contains("label votes alone (decides nothing while both stacks apply)"), "{said}");
    assert!(cal["fitted_on"].as_str().unwrap().contains("long.jsonl + short.jsonl"), "{}", cal["fitted_on"]);
    assert_eq!(cal["stack"]["labels"].as_array().unwrap().len(), 3, "long-form gold has partial_support");
    assert_eq!(cal["short_stack"]["labels"].as_array().unwrap().len(), 2, "short-form is correct/incorrect");
    // One CSV row per labeled verdict, every model feature read (the PMI too).
    let csv = std::fs::read_to_string(p("features.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 13);
    let col = rows[0].iter().position(|c| *c == "pmi_mean").expect("pmi_mean column");
    assert!(rows[1..].iter().all(|r| r[col].parse::<f64>().is_ok_and(f64::is_finite)), "{csv}");
    // The calibration applies: eval reports each short-form stage.
    let o = gavel()
        .args(["eval", "--input", &p("short.jsonl"), "--from", &p("short.out.jsonl")])
        .args(["--calibration", &p("cal.json"), "--out", &p("report")])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("EM, then contains, then model (hybrid)") && md.contains("short.jsonl"), "{md}");
    // A reader of the ranking that goes away (`| head`) does not cost the fit: it is saved.
    let mut child = gavel()
        .args(["calibrate", "--input", &p("long.jsonl"), "--from", &p("long.out.jsonl")])
        .args(["--input", &p("short.jsonl"), "--from", &p("short.out.jsonl"), "-o", &p("cal2.json")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(p("cal2.json")).unwrap().contains("\"short_stack\""));
    // One --from per --input, or a clear error.
    let o = gavel()
        .args(["calibrate", "--input", &p("long.jsonl"), "--input", &p("short.jsonl"), "--from", &p("long.out.jsonl")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--from"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Labels from too few queries to hold any out: the fit says that it chose nothing on held-out
/// data, instead of a table of NaN scores; with two files, it chooses by leaving each out.
#[test]
fn a_fit_with_nothing_to_hold_out_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // Twelve answers to one question: one query, so one fold.
    let input = dir.path().join("one-query.jsonl");
    let records: String = (0..12)
        .map(|i| {
            let (answer, gold) = if i % 2 == 0 {
                (format!("Canberra is the capital of Australia ({i})."), "support")
            } else {
                (format!("Sydney is the largest city of Australia ({i})."), "not_support")
            };
            format!(
                "{{\"id\": \"r{i}\", \"query\": \"What is the capital of Australia?\", \"answer\": \"{answer}\", \
                 \"nuggets\": [{{\"text\": \"Canberra is the capital of Australia\", \"gold\": \"{gold}\"}}]}}\n"
            )
        })
        .collect();
    std::fs::write(&input, records).unwrap();
    let judged = dir.path().join("judged");
    let out = gavel()
        .args(["eval", "--input", input.to_str().unwrap(), "--calibration", "none", "--no-cache"])
        .args(["--out", judged.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = gavel()
        .args([
            "calibrate",
            "--input",
            input.to_str().unwrap(),
            "--from",
            judged.join("verdicts.jsonl").to_str().unwrap(),
        ])
        .args(["--learning-curve", "-o", dir.path().join("c.json").to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("NOT chosen on held-out data") && stdout.contains("label more queries"), "{stdout}");
    assert!(stdout.contains("not measured, no fold to hold out"), "{stdout}");
    // Not "inf" alone: the temporary folder's random name may hold it.
    assert!(!stdout.contains("NaN") && !stdout.contains("[inf") && !stdout.contains("-inf"), "{stdout}");

    // The same twelve answers as two files (the verdicts are found by id): no fold by query, so
    // the choice is by leaving each file out alone.
    let text = std::fs::read_to_string(&input).unwrap();
    let halves = [("a.jsonl", 0), ("b.jsonl", 1)].map(|(name, half)| {
        let path = dir.path().join(name);
        let lines: String = text
            .lines()
            .enumerate()
            .filter(|(i, _)| (i % 4 < 2) == (half == 0))
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(&path, lines).unwrap();
        path
    });
    let verdicts = judged.join("verdicts.jsonl");
    let mut args: Vec<&std::ffi::OsStr> = vec!["calibrate".as_ref()];
    for half in &halves {
        args.extend(["--input".as_ref(), half.as_os_str(), "--from".as_ref(), verdicts.as_os_str()]);
    }
    let c = dir.path().join("c2.json");
    args.extend(["-o".as_ref(), c.as_os_str()]);
    let out = gavel().args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("each input file left out in turn (the labels come from too few queries"), "{stdout}");
    assert!(stdout.contains("folds n/a  left-out file") && !stdout.contains("NaN"), "{stdout}");
}

/// A calibration whose stack holds a hidden-state head makes `verify` read hidden states
/// without `--hidden`, and writes them into the verdicts.
#[test]
fn a_calibration_with_a_head_turns_the_hidden_reads_on() {
    use gavel::head::{Head, HiddenPool};
    use gavel::stack::{FeatureSet, HIDDEN_LOGIT};
    let dir = tempfile::tempdir().unwrap();
    let mut c = gavel::calibrate::Calibrator::shipped().expect("shipped calibration");
    let s = c.stack.as_mut().unwrap();
    s.features = FeatureSet::AlignedHidden;
    s.names.push(HIDDEN_LOGIT.into());
    s.mean.push(0.0);
    s.std.push(1.0);
    for row in &mut s.weights {
        row.push(0.0);
    }
    if let Some(w) = s.ordinal.as_mut().and_then(|o| o.partial_weights.as_mut()) {
        w.push(0.0);
    }
    let d = 576;
    s.head = Some(Head {
        pool: HiddenPool::Last,
        mean: vec![0.0; d],
        std: vec![1.0; d],
        weights: vec![0.0; d],
        bias: 0.0,
        l2: 1.0,
    });
    let cal = dir.path().join("head.json");
    c.save(&cal).unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, r#"{"answer": "Paris is the capital of France.", "nuggets": ["Paris is in France"]}"#)
        .unwrap();
    let run = |cal: &str| {
        let o = gavel().args(["verify", "--calibration", cal, "--input"]).arg(&input).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["verdicts"][0]["raw"]["hidden"]["last"].as_array().map(Vec::len)
    };
    assert_eq!(run(&cal.to_string_lossy()), Some(d));
    assert_eq!(run("auto"), None, "the shipped calibration has no head: no reads");
}

#[test]
fn bench_samples_raw_prefill_across_the_run_and_splits_the_token_budget() {
    // Five records in batches of one: samples before batches 0, 1, 2, 3 and after the last.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let text = std::fs::read_to_string(format!("{}/examples/longform.jsonl", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let five: Vec<&str> = lines.iter().cycle().take(5).copied().collect();
    std::fs::write(&input, five.join("\n")).unwrap();
    let out = gavel()
        .args([
            "bench",
            "--input",
            input.to_str().unwrap(),
            "--records",
            "5",
            "--batch",
            "1",
            "--prefill-tokens",
            "256",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let samples: Vec<f64> = report["prefill_samples"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(samples.len(), 5, "{stdout}");
    assert!(samples.iter().all(|&x| x.is_finite() && x > 0.0), "{samples:?}");
    let median = report["prefill_tokens_per_sec"].as_f64().unwrap();
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(median, sorted[2], "the median sample");
    let n = report["prefill_tokens"].as_u64().unwrap();
    assert!(n > 0 && n <= 256, "prefill tokens {n}");
    let ratio = report["ratio"].as_f64().unwrap();
    let tps = report["prompt_tokens_per_sec"].as_f64().unwrap();
    assert!((ratio - tps / median).abs() < 1e-9);
    // The budget's parts add up to the unique prompt tokens; each verdict's nugget is counted.
    let b = &report["budget"];
    let parts: u64 = ["head", "prefix", "suffix", "baseline"].iter().map(|k| b[k].as_u64().unwrap()).sum();
    assert_eq!(parts, report["prompt_tokens"].as_u64().unwrap());
    assert!(report["verdicts"].as_u64().unwrap() > 0 && report["nugget_tokens"].as_u64().unwrap() > 0);
    assert!(stdout.contains("median of 5 samples"), "{stdout}");
}

/// `--input` naming a pipe (`<(...)`, /dev/stdin, a FIFO) is read once, as it comes: counting
/// its lines first drained it, and the run judged 0 records and exited 0.
#[test]
fn an_input_path_that_is_a_pipe_is_judged() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.jsonl");
    let mut child = gavel()
        .args(["verify", "--input", "/dev/stdin", "--output", out_path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let record =
        r#"{"answer": "Paris is the capital of France.", "nuggets": [{"kind": "contains", "answers": ["Paris"]}]}"#;
    child.stdin.take().unwrap().write_all(format!("{record}\n{record}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(written.lines().count(), 2, "{written}");
}

/// An output that is the input under another name (a hard link) is refused before anything
/// is written; it was truncated, and the run judged 0 records.
#[test]
fn an_output_hard_linked_to_the_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let body = "{\"answer\": \"a\", \"nuggets\": [\"a\"]}\n";
    std::fs::write(&input, body).unwrap();
    let link = dir.path().join("out.jsonl");
    std::fs::hard_link(&input, &link).unwrap();
    let out = gavel()
        .args(["verify", "--input", input.to_str().unwrap(), "--output", link.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--output") && stderr.contains("is the input"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&input).unwrap(), body);
}

/// `calibrate` refuses to write its fit or its features over a file it reads, and features
/// into a missing folder (the fit makes its own), before it judges anything; it overwrote its
/// labeled input.
#[test]
fn calibrate_refuses_outputs_over_its_inputs_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let labeled = dir.path().join("labeled.jsonl");
    std::fs::copy(fixture("report/labeled.jsonl"), &labeled).unwrap();
    let before = std::fs::read_to_string(&labeled).unwrap();
    let l = labeled.to_str().unwrap();
    let nowhere = dir.path().join("missing/features.csv");
    for (flag, path) in [("-o", l), ("--features-out", l), ("--features-out", nowhere.to_str().unwrap())] {
        let out = gavel().args(["calibrate", "--input", l, flag, path]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {path}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
        assert!(!stderr.contains("records"), "nothing judged first: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(&labeled).unwrap(), before);
}

/// A line that is not UTF-8 is that line's error in `render` and `bench`, named by its line;
/// the others are read (the whole file failed, "stream did not contain valid UTF-8", and bench
/// stopped at the first bad record).
#[test]
fn render_and_bench_read_around_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("enc.jsonl");
    let mut body = br#"{"answer":"Paris is in France.","nuggets":["Paris is in France"]}"#.to_vec();
    body.extend_from_slice(b"\n{\"answer\":\"bad \xff byte\",\"nuggets\":[\"x\"]}\n");
    body.extend_from_slice(br#"{"answer":"Lima is in Peru.","nuggets":["Lima is in Peru"]}"#);
    std::fs::write(&input, body).unwrap();
    let i = input.to_str().unwrap();
    let ok = gavel().args(["render", "--input", i, "--line", "3"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("Lima is in Peru"));
    let bad = gavel().args(["render", "--input", i, "--line", "2"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("enc.jsonl:2") && stderr.contains("UTF-8"), "{stderr}");
    let bench = gavel().args(["bench", "--input", i, "--records", "3", "--prefill-tokens", "64"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&bench.stderr);
    assert_eq!(bench.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("left out: ") && stderr.contains("enc.jsonl:2"), "{stderr}");
    assert!(String::from_utf8_lossy(&bench.stdout).contains("records            2"));
}

/// Flags given a value they cannot take are refused at start, naming the flag: `--top-logprobs`
/// below one per label (every verdict was a uniform guess), `eval --out` naming a file ("File
/// exists"). And `render --input -` reads stdin.
#[test]
fn small_refusals_name_their_flag_and_render_reads_stdin() {
    let out = gavel()
        .args(["verify", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--top-logprobs", "2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--top-logprobs") && stderr.contains("at least 3"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, "").unwrap();
    let out = gavel()
        .args(["eval", "--input", &fixture("report/labeled.jsonl"), "--out", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--out") && stderr.contains("is a file"), "{stderr}");
    let mut child = gavel()
        .args(["render", "--input", "-", "--line", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"answer": "Lima is in Peru.", "nuggets": ["Lima is in Peru"]}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Lima is in Peru"));
}
