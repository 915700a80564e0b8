//! The library's modules form layers: each imports only modules listed before it here (the
//! order of the module map in src/lib.rs). A new import that reaches upwards, and with it any
//! import circle, fails this test.

use std::collections::BTreeSet;
use std::path::Path;

const LAYERS: &[&str] = &[
    "error",
    "label",
    "metrics",
    "lexical",
    "rubric",
    "prompt",
    "model_store",
    "aggregate",
    "record",
    "head",
    "stack",
    "calibrate",
    "cache",
    "backend",
    "judge",
    "labeled",
    "extract",
    "pipeline",
    "eval",
    "report",
    "server",
];

/// The crate modules a file's non-test code names (`crate::x`), comments left out.
fn references(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.insert(name);
        }
    }
    out
}

fn files_of(module: &str) -> Vec<std::path::PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let single = src.join(format!("{module}.rs"));
    if single.is_file() {
        return vec![single];
    }
    let dir = src.join(module);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    v.sort();
    v
}

#[test]
fn no_module_imports_one_above_it() {
    let mut wrong = Vec::new();
    for (rank, module) in LAYERS.iter().enumerate() {
        for file in files_of(module) {
            let text = std::fs::read_to_string(&file).unwrap();
            for r in references(&text) {
                if let Some(r_rank) = LAYERS.iter().position(|m| *m == r) {
                    if r_rank > rank {
                        wrong.push(format!("{} imports `{r}`, which is above `{module}`", file.display()));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_library_module_has_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: Vec<&str> =
        lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|l| l.trim_end_matches(';')).collect();
    assert!(declared.len() >= 10, "{declared:?}");
    for m in declared {
        assert!(LAYERS.contains(&m), "module `{m}` is in src/lib.rs but not in tests/layers.rs's LAYERS");
    }
    // The checker itself sees an upward import.
    assert!(references("use crate::judge::Judge;\n// crate::eval\n").contains("judge"));
    assert!(!references("// crate::eval\n").contains("eval"));
}
