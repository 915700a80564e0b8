//! Rubric files, JSON and TOML: a rubric or an error, never a panic.
#![no_main]
use gavel::Rubric;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Rubric::from_json(text, "fuzz.json");
    let _ = Rubric::from_toml(text, "fuzz.toml");
});
