//! Bad input, run through the binary as a user would meet it: each case gives a clear error
//! naming the file, line or field, exits as documented, loses no data and never panics.

use std::path::Path;
use std::process::{Command, Output};

fn gavel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gavel"))
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
}

/// Records judged without the model: every nugget an exact-match check.
fn deterministic(id: &str, answer: &str) -> String {
    serde_json::json!({"id": id, "answer": answer,
        "nuggets": [{"text": "The answer is Paris", "kind": "exact_match", "answers": ["Paris"]}]})
    .to_string()
}

/// Run gavel with `args`; it must refuse to start (exit 2). Returns its stderr.
fn refused(args: &[&str]) -> String {
    let o = gavel().args(args).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    err
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().to_string()
}

#[test]
fn output_equal_to_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "in.jsonl");
    let body = deterministic("a", "Paris") + "\n";
    std::fs::write(&input, &body).unwrap();
    let err = refused(&["verify", "--input", &input, "--output", &input]);
    assert!(err.contains("--output") && err.contains("is the input"), "{err}");
    assert_eq!(std::fs::read_to_string(&input).unwrap(), body);
    // eval writes verdicts.jsonl into --out: a labeled file there is not overwritten either.
    let labeled = p(dir.path(), "verdicts.jsonl");
    std::fs::write(&labeled, &body).unwrap();
    let o = gavel().args(["eval", "--input", &labeled, "--out", &dir.path().to_string_lossy()]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    assert_eq!(std::fs::read_to_string(&labeled).unwrap(), body);
}

#[test]
fn a_tiny_context_and_a_foreign_model_fail_cleanly_before_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "in.jsonl");
    std::fs::write(&input, deterministic("a", "Paris") + "\n").unwrap();
    let o = gavel().args(["verify", "--input", &input, "--n-ctx", "64"]).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(out.is_empty(), "stdout must stay clean JSONL: {out}");
    assert!(err.contains("--n-ctx") && err.contains("at least"), "{err}");
    let fake = p(dir.path(), "model.gguf");
    std::fs::write(&fake, "<html>not a model</html>").unwrap();
    let err = refused(&["verify", "--input", &input, "--model", &fake]);
    assert!(err.contains("not a GGUF") && err.contains("model.gguf"), "{err}");
    // A truncated GGUF: the right magic, then nothing.
    std::fs::write(&fake, b"GGUF\x03\x00").unwrap();
    let err = refused(&["verify", "--input", &input, "--model", &fake]);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn broken_calibration_templates_and_labels_stop_the_run_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "in.jsonl");
    std::fs::write(&input, deterministic("a", "Paris") + "\n").unwrap();
    // A calibration whose arrays do not fit together.
    let mut cal: serde_json::Value = serde_json::from_str(include_str!("../calibration/default.json")).unwrap();
    cal["stack"]["std"].as_array_mut().unwrap().truncate(2);
    let cal_path = p(dir.path(), "cal.json");
    std::fs::write(&cal_path, cal.to_string()).unwrap();
    let err = refused(&["verify", "--input", &input, "--calibration", &cal_path]);
    assert!(err.contains("stack.std") && err.contains("cal.json"), "{err}");
    // A misspelt template override.
    let prompts = dir.path().join("prompts");
    std::fs::create_dir(&prompts).unwrap();
    std::fs::write(prompts.join("judge.sytem.jinja"), "x").unwrap();
    let err = refused(&["verify", "--input", &input, "--prompts", &prompts.to_string_lossy()]);
    assert!(err.contains("judge.sytem.jinja") && err.contains("judge.system.jinja"), "{err}");
    // The same word for every label: refused at start (exit 2), not on every record (exit 1).
    std::fs::remove_file(prompts.join("judge.sytem.jinja")).unwrap();
    std::fs::write(
        prompts.join("labels.toml"),
        "support = [\"yes\"]\npartial_support = [\"yes\"]\nnot_support = [\"yes\"]\n",
    )
    .unwrap();
    let err = refused(&["verify", "--input", &input, "--prompts", &prompts.to_string_lossy()]);
    assert!(err.contains("labels.toml") && err.contains("same token"), "{err}");
}

#[test]
fn resume_with_duplicate_ids_redoes_exactly_the_records_not_done() {
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "in.jsonl");
    let out = p(dir.path(), "out.jsonl");
    // Two records share id "x"; a BOM starts the file; CRLF ends the lines.
    let body = format!(
        "\u{feff}{}\r\n{}\r\n{}\r\n",
        deterministic("x", "Paris"),
        deterministic("x", "Lyon"),
        deterministic("y", "paris")
    );
    std::fs::write(&input, &body).unwrap();
    let o = gavel().args(["verify", "--input", &input, "--output", &out]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let full = std::fs::read_to_string(&out).unwrap();
    assert_eq!(full.lines().count(), 3, "{full}");
    // As if killed after the first record: resume must add lines 2 and 3, not skip line 2.
    std::fs::write(&out, full.lines().next().unwrap().to_string() + "\n").unwrap();
    let o = gavel().args(["verify", "--input", &input, "--output", &out, "--resume"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), full);
    // An unreadable line in the middle of the output: a clear error, nothing dropped.
    let damaged = full.replacen('\n', "\nnot json\n", 1);
    std::fs::write(&out, &damaged).unwrap();
    let err = refused(&["verify", "--input", &input, "--output", &out, "--resume"]);
    assert!(err.contains("out.jsonl:2"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), damaged);
}

#[test]
fn degenerate_counts_are_refused_before_anything_runs() {
    for args in [
        &["verify", "--batch", "0"][..],
        &["verify", "--threads", "0"],
        &["verify", "--seqs", "0"],
        &["verify", "--block-tokens", "31"],
        &["eval", "--batch", "0"],
        &["render", "--line", "0"],
        &["bench", "--records", "0", "--input", "x.jsonl"],
        &["serve", "--timeout", "0"],
        &["serve", "--queue", "0"],
    ] {
        let o = gavel().args(args).output().unwrap();
        let err = text(&o).1;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&format!("for '{}", args[1])), "{args:?}: {err}");
    }
}

#[test]
fn resume_judges_the_error_records_again() {
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "in.jsonl");
    let out = p(dir.path(), "out.jsonl");
    // Line 2 is broken; the run writes its error record and exits 1.
    let broken = format!(
        "{}\n{{\"id\":\"b\",\"answer\":\"Lyon\"}}\n{}\n",
        deterministic("a", "Paris"),
        deterministic("c", "Nice")
    );
    std::fs::write(&input, &broken).unwrap();
    let o = gavel().args(["verify", "--input", &input, "--output", &out]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert!(std::fs::read_to_string(&out).unwrap().lines().nth(1).unwrap().contains("\"error\""));
    // Resumed as it is, the record fails again and the exit code still says so (it said 0).
    let o = gavel().args(["verify", "--input", &input, "--output", &out, "--resume"]).output().unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("2 records already done, 1 error record taken out to try again"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().matches("\"error\"").count(), 1);
    // Fixed, the resumed run judges it and the file holds each record once, without errors.
    std::fs::write(&input, broken.replace("{\"id\":\"b\",\"answer\":\"Lyon\"}", &deterministic("b", "Lyon"))).unwrap();
    let o = gavel().args(["verify", "--input", &input, "--output", &out, "--resume"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let done = std::fs::read_to_string(&out).unwrap();
    let ids: Vec<String> =
        done.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string()).collect();
    assert_eq!(ids, ["\"a\"", "\"c\"", "\"b\""], "{done}");
    assert!(!done.contains("\"error\""), "{done}");
    // Resumed with another input, the records it does not hold are pointed out.
    let other = p(dir.path(), "other.jsonl");
    std::fs::write(&other, format!("{}\n{}\n", deterministic("a", "Paris"), deterministic("z", "Rome"))).unwrap();
    let o = gavel().args(["verify", "--input", &other, "--output", &out, "--resume"]).output().unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("warning: 2 records in") && err.contains("matched no record of this input"), "{err}");
}

#[test]
fn a_nul_byte_in_real_text_is_judged_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "in.jsonl");
    let rec = serde_json::json!({"id": "nul", "answer": "The claim\u{0} holds: Paris is in France.\u{7}",
        "nuggets": ["Paris is in France"]});
    std::fs::write(&input, rec.to_string() + "\n").unwrap();
    let o = gavel().args(["verify", "--input", &input, "--calibration", "none"]).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v.get("error").is_none() && v["verdicts"][0]["by"] == "llm", "{out}");
}

#[test]
fn a_degenerate_calibration_fit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let labeled = p(dir.path(), "l.jsonl");
    let verdicts = p(dir.path(), "v.jsonl");
    let recs: Vec<String> = (0..2)
        .map(|i| {
            serde_json::json!({"id": format!("r{i}"), "answer": "Paris is in France.",
                "nuggets": [{"text": "Paris is in France", "gold": "support"}]})
            .to_string()
        })
        .collect();
    std::fs::write(&labeled, recs.join("\n") + "\n").unwrap();
    let o =
        gavel().args(["verify", "--input", &labeled, "--output", &verdicts, "--calibration", "none"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let out = p(dir.path(), "cal.json");
    let err = refused(&["calibrate", "--input", &labeled, "--from", &verdicts, "-o", &out]);
    assert!(err.contains("labeled verdicts") && err.contains("at least"), "{err}");
    assert!(!Path::new(&out).exists());
}

/// A one-nugget record the model judges.
fn judged(id: &str) -> String {
    serde_json::json!({"id": id, "answer": "Paris is the capital of France.", "nuggets": ["Paris is in France"]})
        .to_string()
}

#[test]
fn an_unreadable_or_busy_verdict_cache_is_skipped_and_said() {
    let model = gavel::model_store::ensure_default_model().expect("default model (run `make model`)");
    let home = tempfile::tempdir().unwrap();
    let input = p(home.path(), "in.jsonl");
    std::fs::write(&input, judged("a") + "\n").unwrap();
    let run = || {
        gavel()
            .env("GAVEL_HOME", home.path())
            .args([
                "verify",
                "--cache",
                "--calibration",
                "none",
                "--input",
                &input,
                "--model",
                &model.to_string_lossy(),
            ])
            .output()
            .unwrap()
    };
    // A cache file that is not a database (truncated, overwritten): the run goes on without it.
    let cache = home.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("verdicts.redb"), b"this is not a redb file").unwrap();
    let o = run();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("running without the verdict cache"), "{err}");
    assert!(out.contains("\"by\":\"llm\""), "{out}");
    // A cache another process holds open: this run skips it and says so.
    std::fs::remove_file(cache.join("verdicts.redb")).unwrap();
    let held = gavel::cache::VerdictCache::open(cache.join("verdicts.redb")).unwrap();
    let o = run();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("running without the verdict cache"), "{err}");
    assert!(out.contains("\"by\":\"llm\""), "{out}");
    drop(held);
    // Free again: the run uses it and stores the verdict.
    let o = run();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert!(!text(&o).1.contains("without the verdict cache"), "{}", text(&o).1);
    let stored = gavel::cache::VerdictCache::open(cache.join("verdicts.redb")).unwrap().len().unwrap();
    assert!(stored >= 1);
    // A batch-invariant run does not read the batch-dependent entries: it stores its own.
    let o = gavel()
        .env("GAVEL_HOME", home.path())
        .args(["verify", "--cache", "--batch-invariant", "--calibration", "none", "--input", &input])
        .args(["--model", &model.to_string_lossy()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_eq!(gavel::cache::VerdictCache::open(cache.join("verdicts.redb")).unwrap().len().unwrap(), 2 * stored);
}

#[test]
fn a_flag_of_the_other_backend_is_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "in.jsonl");
    std::fs::write(&input, deterministic("a", "Paris") + "\n").unwrap();
    let err = refused(&["verify", "--input", &input, "--base-url", "http://127.0.0.1:9/v1"]);
    assert!(err.contains("--base-url") && err.contains("--backend openai"), "{err}");
    let err = refused(&[
        "verify",
        "--input",
        &input,
        "--backend",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--threads",
        "2",
    ]);
    assert!(err.contains("--threads") && err.contains("--backend embedded"), "{err}");
}

#[test]
fn calibrate_says_which_records_it_could_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let labeled = p(dir.path(), "l.jsonl");
    let verdicts = p(dir.path(), "v.jsonl");
    let recs: Vec<String> = (0..12)
        .map(|i| {
            let (nugget, gold) =
                if i % 2 == 0 { ("Paris is in France", "support") } else { ("Paris is in Spain", "not_support") };
            serde_json::json!({"id": format!("r{i}"), "answer": format!("Paris is in France. Note {i}."),
                "nuggets": [{"text": nugget, "gold": gold}]})
            .to_string()
        })
        .collect();
    std::fs::write(&labeled, recs.join("\n") + "\n").unwrap();
    let o =
        gavel().args(["verify", "--input", &labeled, "--output", &verdicts, "--calibration", "none"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    // Drop the output of the last record: the fit goes on without it and says so.
    let kept: Vec<String> = std::fs::read_to_string(&verdicts).unwrap().lines().take(11).map(str::to_string).collect();
    std::fs::write(&verdicts, kept.join("\n") + "\n").unwrap();
    let out = p(dir.path(), "cal.json");
    let o = gavel().args(["calibrate", "--input", &labeled, "--from", &verdicts, "-o", &out]).output().unwrap();
    let (stdout, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("1 were not judged or have no output") && err.contains("l.jsonl:12"), "{err}");
    assert!(stdout.contains("(11 verdicts"), "{stdout}");
}

/// A small tmpfs at `dir` (root only); `None` where this user cannot mount.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, bytes: usize) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_names_the_output_keeps_complete_records_and_resume_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "in.jsonl");
    let body: String =
        (0..3000).map(|i| deterministic(&format!("r{i}"), if i % 2 == 0 { "Paris" } else { "Rome" }) + "\n").collect();
    std::fs::write(&input, &body).unwrap();
    // A device that is always full: a clear error naming it, exit 2.
    let o = gavel().args(["verify", "--input", &input, "--output", "/dev/full"]).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("/dev/full") && err.contains("No space left on device") && err.contains("--resume"), "{err}");

    let reference = p(dir.path(), "ref.jsonl");
    let o = gavel().args(["verify", "--input", &input, "--output", &reference, "--batch", "16"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let whole = std::fs::read_to_string(&reference).unwrap();
    // A real file system that fills up part way (64 KiB, the output is larger).
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let Some(fs) = Tmpfs::mount(&small, 64 * 1024) else {
        eprintln!("not root: the tmpfs part of this test needs mount; /dev/full was checked");
        return;
    };
    let out = p(&small, "out.jsonl");
    let o = gavel().args(["verify", "--input", &input, "--output", &out, "--batch", "16"]).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&out) && err.contains("No space left on device"), "{err}");
    let partial = std::fs::read_to_string(&out).unwrap();
    assert!(partial.len() > 1000 && partial.len() < whole.len(), "{} of {} bytes", partial.len(), whole.len());
    // What is there is the reference's start; only a last line may be incomplete.
    assert!(whole.starts_with(&partial));
    // Moved to where there is room, --resume finishes it: every record once, as uninterrupted.
    let moved = p(dir.path(), "moved.jsonl");
    std::fs::write(&moved, &partial).unwrap();
    drop(fs);
    let o =
        gavel().args(["verify", "--input", &input, "--output", &moved, "--batch", "16", "--resume"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_eq!(std::fs::read_to_string(&moved).unwrap(), whole);
}

#[test]
fn a_verdict_cache_killed_mid_write_or_cut_short_never_changes_a_verdict() {
    let model = gavel::model_store::ensure_default_model().expect("default model (run `make model`)");
    let home = tempfile::tempdir().unwrap();
    let input = p(home.path(), "in.jsonl");
    let body: String = (0..24)
        .map(|i| {
            serde_json::json!({"id": format!("r{i}"), "answer": format!("Paris is the capital of France. It has {i} bridges."),
                "nuggets": ["Paris is in France", format!("Paris has {} bridges", i + 1)]})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&input, body).unwrap();
    let run = |cache: bool| {
        let mut c = gavel();
        c.env("GAVEL_HOME", home.path())
            .args(["verify", "--batch-invariant", "--batch", "4", "--calibration", "none", "--input", &input])
            .args(["--model", &model.to_string_lossy()])
            .args(if cache { &["--cache"][..] } else { &[][..] });
        c
    };
    let reference = run(false).output().unwrap();
    assert_eq!(reference.status.code(), Some(0), "{}", text(&reference).1);
    let db = home.path().join("cache").join("verdicts.redb");
    // Killed while it writes verdicts into the cache, three times at different moments.
    for delay_ms in [700, 1500, 2500] {
        let mut child =
            run(true).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let o = run(true).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        assert_eq!(o.stdout, reference.stdout, "after a kill at {delay_ms} ms");
    }
    assert!(db.exists());
    // Cut to half its length: the run still gives the same verdicts, with or without the cache.
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len / 2).unwrap();
    // (redb used to panic on such a file and end the run with exit 101.)
    let o = run(true).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("damaged") && err.contains("running without the verdict cache"), "{err}");
    assert_eq!(o.stdout, reference.stdout, "{err}");
}

/// One bad line between two good ones through `gavel verify` (every nugget a deterministic
/// check, so no model time): the bad line gets an error record that names its line and says
/// `what` (or, when `judged` is set, is judged like any other), the good ones are judged, the
/// run exits 1 (0 when judged) and never panics.
fn sandwich(bad: &[u8], what: &[&str], judged: bool) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut body = (deterministic("before", "Paris") + "\n").into_bytes();
    body.extend_from_slice(bad);
    body.push(b'\n');
    body.extend_from_slice((deterministic("after", "Rome") + "\n").as_bytes());
    std::fs::write(&input, body).unwrap();
    let o = gavel().args(["verify", "--input"]).arg(&input).output().unwrap();
    let (out, err) = text(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(if judged { 0 } else { 1 }), "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!((lines[0]["id"].as_str(), lines[0]["scores"]["all_score"].as_f64()), (Some("before"), Some(1.0)));
    assert_eq!((lines[2]["id"].as_str(), lines[2]["scores"]["all_score"].as_f64()), (Some("after"), Some(0.0)));
    assert_eq!(lines[1]["line"], 2);
    if judged {
        assert!(lines[1]["error"].is_null(), "{}", lines[1]);
    } else {
        let msg = lines[1]["error"]["message"].as_str().unwrap_or_else(|| panic!("{}", lines[1])).to_string();
        assert!(msg.contains("in.jsonl:2"), "names the line: {msg}");
        for w in what {
            assert!(msg.contains(w), "{w:?} not in {msg}");
        }
    }
}

fn exact(n: usize) -> Vec<serde_json::Value> {
    (0..n).map(|i| serde_json::json!({"text": format!("n{i}"), "kind": "exact_match", "answers": ["Paris"]})).collect()
}

macro_rules! corpus {
    ($($name:ident: $bad:expr, $what:expr, $judged:expr;)*) => {
        $(
            #[test]
            fn $name() {
                sandwich(&$bad, &$what, $judged);
            }
        )*
    };
}

corpus! {
    corpus_malformed_json: *br#"{"answer": "Paris", "nuggets": ["#, ["EOF"], false;
    corpus_not_an_object: *b"[1, 2, 3]", ["must be a JSON object", "this line is an array"], false;
    corpus_plain_text: *b"the answer is Paris", ["must be a JSON object", "this line is not JSON"], false;
    corpus_empty_gold_answers: serde_json::json!({"answer": "Paris", "gold_answers": []}).to_string().into_bytes(), ["field `gold_answers`", "is empty"], false;
    corpus_number_where_a_string_belongs: serde_json::json!({"answer": 5, "nuggets": exact(1)}).to_string().into_bytes(), ["column 11", "field `answer`", "expected a string"], false;
    corpus_missing_nuggets: serde_json::json!({"answer": "Paris"}).to_string().into_bytes(), ["nuggets"], false;
    corpus_unknown_nugget_field: serde_json::json!({"answer": "Paris", "nuggets": [{"txt": "Paris"}]}).to_string().into_bytes(), ["txt"], false;
    corpus_invalid_utf8: [b"{\"answer\": \"Par".as_slice(), &[0xff, 0xfe], b"is\", \"nuggets\": []}"].concat(), ["UTF-8"], false;
    corpus_deep_nesting: format!("{{\"answer\": \"Paris\", \"nuggets\": [], \"x\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), ["in.jsonl:2"], false;
    corpus_bad_regex: serde_json::json!({"answer": "Paris", "nuggets": [{"text": "r", "kind": "regex", "pattern": "(unclosed"}]}).to_string().into_bytes(), ["pattern"], false;
    corpus_catastrophic_regex: serde_json::json!({"answer": "Paris", "nuggets": [{"text": "r", "kind": "regex", "pattern": "\\w{1000}x{1000}\\w{1000}"}]}).to_string().into_bytes(), ["pattern"], false;
    corpus_empty_answer: serde_json::json!({"id": "e", "answer": "", "nuggets": exact(1)}).to_string().into_bytes(), [], true;
    corpus_whitespace_answer: serde_json::json!({"id": "w", "answer": " \t ", "nuggets": exact(1)}).to_string().into_bytes(), [], true;
    corpus_ten_megabyte_line: serde_json::json!({"id": "big", "answer": "Paris ".repeat(1_800_000), "nuggets": exact(1)}).to_string().into_bytes(), [], true;
    corpus_a_hundred_thousand_nuggets: serde_json::json!({"id": "many", "answer": "Paris", "nuggets": exact(100_000)}).to_string().into_bytes(), [], true;
    corpus_crlf_line: [deterministic("crlf", "Paris").as_bytes(), b"\r"].concat(), [], true;
}

#[test]
fn a_calibration_fitted_for_another_model_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "in.jsonl");
    std::fs::write(&input, deterministic("a", "Paris") + "\n").unwrap();
    let mut c = gavel::calibrate::Calibrator::shipped().expect("shipped calibration");
    c.model = "0123456789abcdef0123456789abcdef".into();
    let cal = dir.path().join("other.json");
    c.save(&cal).unwrap();
    let err = refused(&["verify", "--input", &input, "--calibration", &cal.to_string_lossy()]);
    assert!(err.contains("other.json") && err.contains("another model file"), "{err}");
}
