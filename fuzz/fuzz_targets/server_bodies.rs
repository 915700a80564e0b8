//! The reward server's request bodies (`/get_reward`, `/slime`, `/v1/verify`): items or a 4xx
//! reason, never a panic.
#![no_main]
use gavel::server::wire::{parse_reward_request, parse_slime_request, parse_verify_request};
use gavel::server::LabelRules;
use gavel::Rubric;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bare = LabelRules::default();
    let mut with_rubric = LabelRules::default();
    let rubric = Rubric::from_json(r#"{"id": "r", "nuggets": [{"text": "Paris is the capital"}]}"#, "r").expect("parses");
    with_rubric.rubrics.insert("r".into(), rubric.clone());
    with_rubric.default_rubric = Some(rubric);
    for rules in [&bare, &with_rubric] {
        let _ = parse_reward_request(data, rules, 64);
        let _ = parse_slime_request(data, rules);
        let _ = parse_verify_request(data, rules, 64);
    }
});
