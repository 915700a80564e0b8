//! Shared set-up for tests that use the real default model.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use gavel::backend::{Backend, EmbeddedBackend, EmbeddedConfig};
use gavel::server::{ServeConfig, Server};
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

/// A reward server over the shared default model on a free loopback port. It stops when this
/// value is dropped, also while a failing test unwinds.
pub struct Running {
    pub addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Start a reward server with `config` on a free loopback port.
pub fn start(config: ServeConfig) -> Running {
    start_with(judge(JudgeConfig::default()), config)
}

/// [`start`] with this judge.
pub fn start_with(judge: Judge, config: ServeConfig) -> Running {
    let judge = Arc::new(judge);
    let server = Server::bind(judge, config.with_addr("127.0.0.1:0")).expect("bind");
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        server
            .run(async move {
                let _ = stopped.await;
            })
            .expect("server run")
    });
    Running { addr, _stop: stop }
}
