//! An OpenAI-compatible server's completion response, read for the first token's alternatives.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Some(alts) = gavel::backend::openai::first_token_alternatives(&v) {
        for (_, _, lp) in alts {
            assert!(!lp.is_nan(), "a log-probability read as NaN");
        }
    }
});
