//! The reports' bytes, pinned: a fixed labeled file and the verdicts an earlier run wrote for
//! it (tests/fixtures/report/) give report.md, report.html and metrics.json exactly as in
//! tests/snapshots/. A change to what a report says shows here as a diff to review;
//! `GAVEL_BLESS=1 cargo test --release --test report_snapshots` rewrites the snapshots.

use std::path::Path;

use gavel::eval::{build_report, collect, rescore_outputs};
use gavel::labeled::read_labeled;
use gavel::record::read_outputs;
use gavel::report::{to_html, to_json, to_markdown};

#[test]
fn reports_match_their_snapshots() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures/report");
    let labeled = read_labeled(&fixtures.join("labeled.jsonl"), None).unwrap();
    assert_eq!(labeled.tasks.len(), 15);
    let mut outputs = read_outputs(&fixtures.join("verdicts.jsonl")).unwrap();
    assert_eq!(outputs.len(), 15, "every fixture line reads back as an output record");
    // Re-deciding uncalibrated from the raw reads changes nothing the run did not write.
    let before = format!("{:?}", outputs.get(Some("factcheck-dev-0"), 1, true).map(|o| &o.verdicts));
    rescore_outputs(&labeled.tasks, &mut outputs, None);
    assert_eq!(before, format!("{:?}", outputs.get(Some("factcheck-dev-0"), 1, true).map(|o| &o.verdicts)));
    let mut input = collect("labeled.jsonl", &labeled.tasks, &outputs, labeled.failures);
    input.setup =
        vec![("model".into(), "SmolLM2-135M-Instruct.Q4_1.gguf".into()), ("calibration".into(), "none".into())];
    let report = build_report(&input);
    assert_eq!(report.failures.len(), 1, "the error record is counted as a failure");
    let bless = std::env::var_os("GAVEL_BLESS").is_some();
    let snapshots = root.join("tests/snapshots");
    for (name, got) in
        [("report.md", to_markdown(&report)), ("report.html", to_html(&report)), ("metrics.json", to_json(&report))]
    {
        let path = snapshots.join(name);
        if bless {
            std::fs::create_dir_all(&snapshots).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} missing", path.display()));
        assert!(got == expected, "{name} differs from {}; review and bless if intended", path.display());
    }
}
