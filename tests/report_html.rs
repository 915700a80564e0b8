//! The HTML report in a real headless browser (Debian's chromium): it renders, the charts are
//! there, and the page logs no console errors.

use std::process::Command;

use gavel::eval::{build_report, EvalInput, NuggetItem, ShortItem};
use gavel::lexical::LexicalThresholds;
use gavel::Label::{NotSupport as N, PartialSupport as P, Support as S};

fn sample_report() -> String {
    let mut nuggets = Vec::new();
    let labels = [S, P, N];
    for i in 0..60 {
        let gold = labels[i % 3];
        let pred = labels[(i / 2) % 3];
        let ps = (i % 10) as f64 / 10.0 + 0.05;
        nuggets.push(NuggetItem {
            source: if i % 2 == 0 { "a".into() } else { "b".into() },
            gold,
            pred,
            probs: Some([ps, (1.0 - ps) / 2.0, (1.0 - ps) / 2.0]),
            raw_probs: Some([ps, (1.0 - ps) / 2.0, (1.0 - ps) / 2.0]),
            lexical: (i % 7) as f64 / 7.0,
            group: Some(format!("g{}", i / 4)),
            cluster: (i / 2) as u64,
        });
    }
    let short = (0..20)
        .map(|i| ShortItem {
            source: "s".into(),
            gold: if i % 3 == 0 { N } else { S },
            em: i % 2 == 0,
            contains: i % 4 != 1,
            model: if i % 5 == 0 { N } else { S },
            probs: Some(if i % 5 == 0 { [0.3, 0.0, 0.7] } else { [0.8, 0.0, 0.2] }),
            raw_probs: Some([0.1, 0.0, 0.9]),
        })
        .collect();
    let input = EvalInput {
        name: "fixture <with> \"quotes\"".into(),
        setup: vec![("model".into(), "test".into())],
        records: 81,
        nuggets,
        short,
        failures: vec![(7, "line 7: bad <json>".into())],
        unlabeled: 2,
        lexical: LexicalThresholds::default(),
    };
    gavel::report::to_html(&build_report(&input))
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("this test needs a headless browser: apt-get install chromium (scripts/install-prereqs.sh chromium)");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let html = sample_report();
    assert!(!html.contains("http://") && !html.contains("https://"), "the report must not fetch anything");
    std::fs::write(&page, &html).unwrap();
    let profile = dir.path().join("profile");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    // The inline script ran and counted the charts: confusion, reliability, histogram, short-form
    // confusion and short-form reliability.
    // No chart label runs past its chart's edge (measured by the browser's own layout).
    assert!(dom.contains("data-clipped=\"0\""), "a chart label is cut off: {}", &dom[..dom.len().min(400)]);
    assert!(
        dom.contains("data-charts=\"5\""),
        "charts not counted in the rendered DOM: {}",
        &dom[..dom.len().min(400)]
    );
    assert!(
        dom.contains("data-chart=\"confusion\"")
            && dom.contains("data-chart=\"reliability\"")
            && dom.contains("data-chart=\"histogram\"")
    );
    assert!(dom.contains("fixture &lt;with&gt;"), "title escaped");
    let console_errors: Vec<&str> =
        log.lines().filter(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught"))).collect();
    assert!(console_errors.is_empty(), "console errors: {console_errors:?}");
}
