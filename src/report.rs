//! Evaluation reports people can look at: a Markdown summary for terminals and pull requests,
//! one self-contained HTML file (inline CSS and SVG charts, no network fetches), and the same
//! numbers as JSON for machines.

use std::fmt::Write as _;

use crate::eval::EvalReport;
use crate::label::{Grades, Label};
use crate::metrics::{Agreement, Calibration};

/// The report as pretty-printed JSON (`metrics.json`).
pub fn to_json(r: &EvalReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default()
}

fn pct(x: f64) -> String {
    format!("{:.3}", x)
}

fn short_label(l: Label) -> &'static str {
    match l {
        Label::Support => "support",
        Label::PartialSupport => "partial",
        Label::NotSupport => "not",
    }
}

/// The bootstrap intervals as one sentence.
fn intervals_line(iv: &crate::metrics::Intervals) -> String {
    format!(
        "95% bootstrap intervals ({} resamples of queries: the records of one query, or of one article without a query, drawn together), macro-F1: gavel [{:.3}, {:.3}], lexical [{:.3}, {:.3}], \
         gavel - lexical [{:+.3}, {:+.3}]",
        iv.resamples,
        iv.model.lo,
        iv.model.hi,
        iv.lexical.lo,
        iv.lexical.hi,
        iv.model_minus_lexical.lo,
        iv.model_minus_lexical.hi
    )
}

/// The raw model's calibration, next to a calibrated one.
fn uncalibrated_note(raw: &Calibration) -> String {
    format!("uncalibrated model: ECE {:.3}, Brier {:.3}", raw.ece, raw.brier)
}

/// "`title`: ECE, Brier" and, when a calibration was applied, the raw model's on the next line.
fn md_calibration(out: &mut String, title: &str, c: &Calibration, raw: Option<&Calibration>) {
    let _ = writeln!(out, "\n{title}: ECE {:.3}, Brier {:.3}", c.ece, c.brier);
    if let Some(raw) = raw {
        let _ = writeln!(out, "({})", uncalibrated_note(raw));
    }
}

/// A reliability chart with the raw model's calibration under it, in a chart cell (left open
/// for more charts in the cell).
fn html_reliability(out: &mut String, title: &str, c: &Calibration, raw: Option<&Calibration>) {
    let _ = write!(out, "<div><h3>{}</h3>", esc(title));
    out.push_str(&svg_reliability(c));
    if let Some(raw) = raw {
        let _ = write!(out, "<p class=\"note\">{}</p>", uncalibrated_note(raw));
    }
}

fn md_agreement_row(out: &mut String, name: &str, a: &Agreement) {
    let per: Vec<String> = a.classes.iter().map(|c| format!("{} {:.3}", short_label(c.label), c.f1)).collect();
    let _ = writeln!(
        out,
        "| {name} | {} | {} | {} | {} | {} |",
        a.n,
        pct(a.accuracy),
        pct(a.macro_f1),
        pct(a.micro_f1),
        per.join(", ")
    );
}

fn md_confusion(out: &mut String, a: &Agreement) {
    let labels: Vec<Label> = match a.grades {
        Grades::Three => Label::ALL.to_vec(),
        Grades::Two => vec![Label::Support, Label::NotSupport],
    };
    let _ = write!(out, "| gold \\ predicted |");
    for l in &labels {
        let _ = write!(out, " {} |", short_label(*l));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---|".repeat(labels.len()));
    for g in &labels {
        let _ = write!(out, "| {} |", short_label(*g));
        for p in &labels {
            let _ = write!(out, " {} |", a.confusion[g.index()][p.index()]);
        }
        let _ = writeln!(out);
    }
}

/// The Markdown summary.
pub fn to_markdown(r: &EvalReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# gavel eval: {}\n", r.name);
    for (k, v) in &r.setup {
        let _ = writeln!(out, "- {k}: {v}");
    }
    let _ = writeln!(out, "- records: {}, failed: {}{}\n", r.records, r.failures.len(), unlabeled(r));
    if let Some(rb) = &r.rubric {
        let native = match rb.grades {
            Grades::Three => "3-grade",
            Grades::Two => "2-grade",
        };
        let _ = writeln!(out, "## Rubric level ({} nuggets, gold is {native})\n", rb.model3.n);
        let _ =
            writeln!(out, "| judge | n | accuracy | macro-F1 | micro-F1 | per-class F1 |\n|---|---|---|---|---|---|");
        let model_native = if rb.grades == Grades::Three { &rb.model3 } else { &rb.model2 };
        md_agreement_row(&mut out, &format!("gavel ({native})"), model_native);
        if rb.grades == Grades::Three {
            md_agreement_row(&mut out, "gavel (2-grade, partial folded)", &rb.model2);
        }
        if let Some(raw) = &rb.raw {
            md_agreement_row(&mut out, "model, uncalibrated", raw);
        }
        md_agreement_row(&mut out, &format!("majority class ({})", rb.majority_label), &rb.majority);
        md_agreement_row(
            &mut out,
            &format!(
                "lexical overlap (support >= {:.2}, partial >= {:.2})",
                rb.lexical_thresholds.support, rb.lexical_thresholds.partial
            ),
            &rb.lexical,
        );
        if let Some(s) = &rb.sample {
            md_agreement_row(&mut out, "gavel, sample level (max over blocks)", s);
        }
        if let Some(iv) = &rb.intervals {
            let _ = writeln!(out, "\n{}", intervals_line(iv));
        }
        let _ = writeln!(out, "\nConfusion matrix (gavel, {native}):\n");
        md_confusion(&mut out, model_native);
        if let Some(c) = &rb.calibration {
            md_calibration(&mut out, "Calibration", c, rb.raw_calibration.as_ref());
            let _ = writeln!(out, "\n| confidence | n | mean confidence | accuracy |\n|---|---|---|---|");
            for b in c.bins.iter().filter(|b| b.count > 0) {
                let _ = writeln!(
                    out,
                    "| {:.1}-{:.1} | {} | {:.3} | {:.3} |",
                    b.lo, b.hi, b.count, b.confidence, b.accuracy
                );
            }
        }
        if rb.sources.len() > 1 {
            let _ = writeln!(out, "\n| source | n | gavel macro-F1 | accuracy | lexical macro-F1 | majority macro-F1 |\n|---|---|---|---|---|---|");
            for s in &rb.sources {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    s.source, s.n, s.model_macro_f1, s.model_accuracy, s.lexical_macro_f1, s.majority_macro_f1
                );
            }
        }
    }
    if let Some(sf) = &r.short {
        let _ = writeln!(out, "\n## Short form ({} answers, correct vs incorrect)\n", sf.model.n);
        let _ =
            writeln!(out, "| judge | n | accuracy | macro-F1 | micro-F1 | per-class F1 |\n|---|---|---|---|---|---|");
        md_agreement_row(&mut out, "exact match", &sf.em);
        md_agreement_row(&mut out, "contains a gold answer", &sf.contains);
        md_agreement_row(&mut out, "model alone", &sf.model);
        md_agreement_row(&mut out, "EM, then model (the paper's EM + verifier)", &sf.em_model);
        md_agreement_row(&mut out, "EM, then contains (no model)", &sf.em_contains);
        md_agreement_row(&mut out, "EM, then contains, then model (hybrid)", &sf.hybrid);
        md_agreement_row(&mut out, "majority class", &sf.majority);
        if let Some(c) = &sf.calibration {
            md_calibration(&mut out, "Calibration of the model alone", c, sf.raw_calibration.as_ref());
        }
    }
    if !r.failures.is_empty() {
        let _ = writeln!(out, "\n## Failed records ({})\n", r.failures.len());
        for (line, msg) in r.failures.iter().take(20) {
            let _ = writeln!(out, "- line {line}: {msg}");
        }
        if r.failures.len() > 20 {
            let _ = writeln!(out, "- ... {} more", r.failures.len() - 20);
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn html_agreement_table(out: &mut String, rows: &[(String, &Agreement)]) {
    out.push_str("<table><tr><th>judge</th><th>n</th><th>accuracy</th><th>macro-F1</th><th>micro-F1</th><th>per-class P / R / F1</th></tr>");
    for (name, a) in rows {
        let per: Vec<String> = a
            .classes
            .iter()
            .map(|c| format!("{}: {:.2} / {:.2} / {:.2}", short_label(c.label), c.precision, c.recall, c.f1))
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td><b>{:.3}</b></td><td>{:.3}</td><td>{}</td></tr>",
            esc(name),
            a.n,
            a.accuracy,
            a.macro_f1,
            a.micro_f1,
            per.join("<br>")
        );
    }
    out.push_str("</table>");
}

fn svg_confusion(a: &Agreement) -> String {
    let labels: Vec<Label> = match a.grades {
        Grades::Three => Label::ALL.to_vec(),
        Grades::Two => vec![Label::Support, Label::NotSupport],
    };
    let cell = 70.0;
    let (left, top) = (90.0, 40.0);
    let size = labels.len() as f64 * cell;
    let mut s = format!(
        "<svg class=\"chart\" data-chart=\"confusion\" width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"confusion matrix\">",
        left + size + 10.0,
        top + size + 30.0
    );
    let _ = write!(s, "<text x=\"{}\" y=\"15\" class=\"axis\">predicted</text>", left + size / 2.0 - 30.0);
    for (j, p) in labels.iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"axis\">{}</text>",
            left + j as f64 * cell + 10.0,
            top - 6.0,
            short_label(*p)
        );
    }
    for (i, g) in labels.iter().enumerate() {
        let row_total: usize = labels.iter().map(|p| a.confusion[g.index()][p.index()]).sum();
        let _ = write!(
            s,
            "<text x=\"5\" y=\"{}\" class=\"axis\">{}</text>",
            top + i as f64 * cell + cell / 2.0 + 4.0,
            short_label(*g)
        );
        for (j, p) in labels.iter().enumerate() {
            let v = a.confusion[g.index()][p.index()];
            let frac = if row_total > 0 { v as f64 / row_total as f64 } else { 0.0 };
            let light = 95.0 - 55.0 * frac;
            let _ = write!(
                s,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"hsl(215,70%,{light:.0}%)\" stroke=\"#fff\"><title>gold {g} predicted {p}: {v} ({:.0}% of row)</title></rect>\
                 <text x=\"{tx}\" y=\"{ty}\" class=\"cell\" fill=\"{fg}\">{v}</text>",
                frac * 100.0,
                x = left + j as f64 * cell,
                y = top + i as f64 * cell,
                tx = left + j as f64 * cell + cell / 2.0 - 10.0,
                ty = top + i as f64 * cell + cell / 2.0 + 5.0,
                fg = if light < 60.0 { "#fff" } else { "#123" },
                g = short_label(*g),
                p = short_label(*p),
            );
        }
    }
    let _ = write!(s, "<text x=\"5\" y=\"{}\" class=\"axis\">rows: gold</text></svg>", top + size + 20.0);
    s
}

fn svg_reliability(c: &Calibration) -> String {
    let (w, h, pad) = (320.0, 260.0, 35.0);
    let pw = w - 2.0 * pad;
    let ph = h - 2.0 * pad;
    let mut s = format!("<svg class=\"chart\" data-chart=\"reliability\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"reliability diagram\">");
    let _ =
        write!(s, "<rect x=\"{pad}\" y=\"{pad}\" width=\"{pw}\" height=\"{ph}\" fill=\"#f7f7f7\" stroke=\"#999\"/>");
    let _ = write!(
        s,
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{pad}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
        pad + ph,
        pad + pw
    );
    for b in &c.bins {
        if b.count == 0 {
            continue;
        }
        let x = pad + b.lo * pw;
        let bw = (b.hi - b.lo) * pw - 2.0;
        let bh = b.accuracy * ph;
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"#3a7bd5\" opacity=\"0.8\"><title>confidence {:.1}-{:.1}: n={}, mean confidence {:.3}, accuracy {:.3}</title></rect>",
            pad + ph - bh,
            b.lo,
            b.hi,
            b.count,
            b.confidence,
            b.accuracy
        );
        let cy = pad + ph - b.confidence * ph;
        let _ = write!(s, "<circle cx=\"{:.1}\" cy=\"{cy:.1}\" r=\"3\" fill=\"#d9480f\"/>", x + bw / 2.0);
    }
    let _ = write!(
        s,
        "<text x=\"{pad}\" y=\"{}\" class=\"axis\">confidence, 0 to 1</text>\
         <text x=\"{pad}\" y=\"{}\" class=\"axis\">bars: accuracy; dots: mean confidence</text>\
         <text x=\"{pad}\" y=\"20\" class=\"axis\">ECE {:.3}, Brier {:.3}</text></svg>",
        h - 20.0,
        h - 6.0,
        c.ece,
        c.brier
    );
    s
}

fn svg_histogram(hist: &[[usize; 10]; 3]) -> String {
    let (w, h, pad) = (420.0, 240.0, 35.0);
    let pw = w - 2.0 * pad;
    let ph = h - 2.0 * pad;
    let colours = ["#2b8a3e", "#e8a317", "#c92a2a"];
    let max = hist.iter().flat_map(|r| r.iter()).copied().max().unwrap_or(1).max(1) as f64;
    let mut s = format!("<svg class=\"chart\" data-chart=\"histogram\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"P(support) by gold label\">");
    let _ =
        write!(s, "<rect x=\"{pad}\" y=\"{pad}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fafafa\" stroke=\"#999\"/>");
    let group = pw / 10.0;
    for bin in 0..10 {
        for (k, row) in hist.iter().enumerate() {
            let v = row[bin];
            let bh = v as f64 / max * ph;
            let x = pad + bin as f64 * group + 2.0 + k as f64 * (group - 4.0) / 3.0;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>gold {}, P(support) {:.1}-{:.1}: {v}</title></rect>",
                pad + ph - bh,
                (group - 4.0) / 3.0,
                colours[k],
                Label::ALL[k],
                bin as f64 / 10.0,
                (bin + 1) as f64 / 10.0
            );
        }
    }
    for (k, l) in Label::ALL.iter().enumerate() {
        let _ = write!(s, "<rect x=\"{}\" y=\"10\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"19\" class=\"axis\">gold {}</text>", pad + k as f64 * 120.0, colours[k], pad + 14.0 + k as f64 * 120.0, short_label(*l));
    }
    let _ =
        write!(s, "<text x=\"{pad}\" y=\"{}\" class=\"axis\">P(support) from 0 to 1, ten bins</text></svg>", h - 8.0);
    s
}

/// The self-contained HTML report.
pub fn to_html(r: &EvalReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gavel eval: {}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#123;max-width:1100px}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}\
         th{{background:#eef}}.charts{{display:flex;flex-wrap:wrap;gap:2em}}.axis{{font-size:11px;fill:#333}}.cell{{font-size:14px;font-weight:bold}}\
         .note{{color:#555;font-size:90%}}</style></head><body>",
        esc(&r.name)
    );
    let _ = write!(out, "<h1>gavel eval: {}</h1><ul>", esc(&r.name));
    for (k, v) in &r.setup {
        let _ = write!(out, "<li>{}: {}</li>", esc(k), esc(v));
    }
    let _ = write!(out, "<li>records: {}, failed: {}{}</li></ul>", r.records, r.failures.len(), esc(&unlabeled(r)));
    if let Some(rb) = &r.rubric {
        let native = if rb.grades == Grades::Three { "3-grade" } else { "2-grade" };
        let _ = write!(out, "<h2>Rubric level: {} nuggets (gold is {native})</h2>", rb.model3.n);
        let model_native = if rb.grades == Grades::Three { &rb.model3 } else { &rb.model2 };
        let mut rows: Vec<(String, &Agreement)> = vec![(format!("gavel ({native})"), model_native)];
        if rb.grades == Grades::Three {
            rows.push(("gavel (2-grade, partial folded)".into(), &rb.model2));
        }
        if let Some(raw) = &rb.raw {
            rows.push(("model, uncalibrated".into(), raw));
        }
        rows.push((format!("majority class ({})", rb.majority_label), &rb.majority));
        rows.push((
            format!(
                "lexical overlap (support ≥ {:.2}, partial ≥ {:.2})",
                rb.lexical_thresholds.support, rb.lexical_thresholds.partial
            ),
            &rb.lexical,
        ));
        if let Some(s) = &rb.sample {
            rows.push(("gavel, sample level (max over blocks)".into(), s));
        }
        html_agreement_table(&mut out, &rows);
        if let Some(iv) = &rb.intervals {
            let _ = write!(out, "<p class=\"note\">{}</p>", esc(&intervals_line(iv)));
        }
        out.push_str("<div class=\"charts\"><div><h3>Confusion matrix</h3>");
        out.push_str(&svg_confusion(model_native));
        out.push_str("</div>");
        if let Some(c) = &rb.calibration {
            html_reliability(&mut out, "Reliability", c, rb.raw_calibration.as_ref());
            out.push_str("</div><div><h3>P(support) by gold label</h3>");
            out.push_str(&svg_histogram(&rb.support_histogram));
            out.push_str("</div>");
        }
        out.push_str("</div>");
        if !rb.sources.is_empty() {
            out.push_str("<h3>Per source</h3><table><tr><th>source</th><th>n</th><th>gavel macro-F1</th><th>accuracy</th><th>lexical macro-F1</th><th>majority macro-F1</th></tr>");
            for s in &rb.sources {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                    esc(&s.source),
                    s.n,
                    s.model_macro_f1,
                    s.model_accuracy,
                    s.lexical_macro_f1,
                    s.majority_macro_f1
                );
            }
            out.push_str("</table>");
        }
    }
    if let Some(sf) = &r.short {
        let _ = write!(out, "<h2>Short form: {} answers (correct vs incorrect)</h2>", sf.model.n);
        html_agreement_table(
            &mut out,
            &[
                ("exact match".into(), &sf.em),
                ("contains a gold answer".into(), &sf.contains),
                ("model alone".into(), &sf.model),
                ("EM, then model (the paper's EM + verifier)".into(), &sf.em_model),
                ("EM, then contains (no model)".into(), &sf.em_contains),
                ("EM, then contains, then model (hybrid)".into(), &sf.hybrid),
                ("majority class".into(), &sf.majority),
            ],
        );
        out.push_str("<div class=\"charts\"><div><h3>Confusion matrix, hybrid</h3>");
        out.push_str(&svg_confusion(&sf.hybrid));
        out.push_str("</div>");
        if let Some(c) = &sf.calibration {
            html_reliability(&mut out, "Reliability, model alone", c, sf.raw_calibration.as_ref());
            out.push_str("</div>");
        }
        out.push_str("</div>");
    }
    let _ = write!(out, "<h2>Failed records: {}</h2>", r.failures.len());
    if !r.failures.is_empty() {
        out.push_str("<ul>");
        for (line, msg) in r.failures.iter().take(100) {
            let _ = write!(out, "<li>line {line}: {}</li>", esc(msg));
        }
        out.push_str("</ul>");
    }
    out.push_str(
        "<script>document.documentElement.dataset.charts = String(document.querySelectorAll('svg.chart').length);\
         document.documentElement.dataset.clipped = String([...document.querySelectorAll('svg.chart text')].filter(t => \
         { const b = t.getBBox(), w = t.ownerSVGElement.width.baseVal.value; return b.x < 0 || b.x + b.width > w; }).length);\
         </script></body></html>\n",
    );
    out
}

/// ", N verdicts without a gold label (not scored)" when there are any.
fn unlabeled(r: &EvalReport) -> String {
    match r.unlabeled {
        0 => String::new(),
        1 => ", 1 verdict without a gold label (not scored)".into(),
        n => format!(", {n} verdicts without a gold label (not scored)"),
    }
}
