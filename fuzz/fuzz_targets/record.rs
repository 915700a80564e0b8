//! `gavel verify`'s record parser: any line gives a task or an error naming where, never a panic.
#![no_main]
use gavel::{parse_record, Rubric, ShortForm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let rubric = Rubric::from_json(r#"{"id": "r", "nuggets": [{"text": "Paris is the capital", "importance": "vital"}]}"#, "r")
        .expect("fixed rubric parses");
    for policy in [ShortForm::Hybrid, ShortForm::Llm] {
        let _ = parse_record(line, "fuzz:1", None, policy);
        let _ = parse_record(line, "fuzz:1", Some(&rubric), policy);
    }
});
