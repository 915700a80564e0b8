//! Shared set-up for tests that use the real default model.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use gavel::backend::{Backend, EmbeddedBackend, EmbeddedConfig};
use gavel::{Judge, JudgeConfig, PromptSet};

/// The embedded default model, loaded once per test binary (fetched with pip if needed).
pub fn backend() -> Arc<dyn Backend> {
    static B: OnceLock<Arc<EmbeddedBackend>> = OnceLock::new();
    let b = B.get_or_init(|| {
        let path = gavel::model_store::ensure_default_model().expect("default model (run `make model`)");
        Arc::new(EmbeddedBackend::load(EmbeddedConfig::new(path)).expect("load default model"))
    });
    b.clone()
}

/// A judge over the default model with built-in prompts.
pub fn judge(config: JudgeConfig) -> Judge {
    Judge::new(backend(), PromptSet::builtin(), config)
}
