//! The request shapes RL trainers really send, against a running `gavel serve` on loopback with
//! the real default model: one fixture file per shape under `tests/fixtures/rl/` (the framework,
//! the versions that send it, where in their source, the request, what must come back), plus
//! the OpenRLHF burst that must be queued rather than refused.

mod common;

use common::start;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use gavel::record::ShortForm;
use gavel::server::ServeConfig;
use serde_json::{json, Value};

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build();
    let res = agent
        .post(&format!("http://{addr}{path}"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string());
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
}

fn fixtures() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rl");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), serde_json::from_str(&text).unwrap())
        })
        .filter(|(_, f): &(String, Value)| f["endpoint"].is_string())
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Compare `got` with `want` where `want` is not null (null: not checked, e.g. a model verdict).
fn check_series(name: &str, what: &str, got: &Value, want: &Value) {
    let (Some(got), Some(want)) = (got.as_array(), want.as_array()) else {
        panic!("{name}: {what}: {got} vs {want}");
    };
    assert_eq!(got.len(), want.len(), "{name}: {what}: {got:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if !w.is_null() {
            assert_eq!(g.as_f64(), w.as_f64(), "{name}: {what}[{i}]: got {g}, want {w}");
        }
    }
}

#[test]
fn captured_trainer_requests_get_the_expected_replies() {
    let hybrid = start(ServeConfig::default());
    let em = start(ServeConfig::default().with_short_form(ShortForm::Em));
    let all = fixtures();
    assert!(all.len() >= 10, "fixtures: {}", all.len());
    // Every fixture is checked (a failure is reported with its file name, the others still run).
    let failed: Vec<&str> = all
        .iter()
        .filter(|(name, f)| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_fixture(name, f, hybrid.addr, em.addr)))
                .is_err()
        })
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(failed.is_empty(), "fixtures that failed: {failed:?}");
}

fn check_fixture(name: &str, f: &Value, hybrid: SocketAddr, em: SocketAddr) {
    let addr = match f["server"]["short_form"].as_str() {
        Some("em") => em,
        None => hybrid,
        Some(other) => panic!("{name}: server.short_form {other}"),
    };
    let path = f["endpoint"].as_str().unwrap();
    let (status, v) = post(addr, path, &f["request"]);
    let want = &f["expect"];
    assert_eq!(Some(u64::from(status)), want["status"].as_u64(), "{name}: {v}");
    if let Some(m) = want["message_contains"].as_str() {
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(m), "{name}: {v}");
        return;
    }
    match path {
        "/get_reward" => {
            let errors: Vec<&Value> =
                v["errors"].as_array().map(|e| e.iter().map(|e| &e["index"]).collect()).unwrap_or_default();
            let want_errors: Vec<&Value> = want["errors"].as_array().map(|e| e.iter().collect()).unwrap_or_default();
            assert_eq!(errors, want_errors, "{name}: {v}");
            if !want["rewards"].is_null() {
                check_series(name, "rewards", &v["rewards"], &want["rewards"]);
            }
            if !want["model_verdicts"].is_null() {
                check_series(name, "model_verdicts", &v["extra_logs"]["model_verdicts"], &want["model_verdicts"]);
            }
            assert_eq!(v["scores"], v["rewards"], "{name}");
        }
        "/slime" => {
            assert_eq!(v["reward"].as_f64(), want["reward"].as_f64(), "{name}: {v}");
            assert_eq!(v["model_verdicts"].as_f64(), want["model_verdicts"].as_f64(), "{name}: {v}");
            assert!(v["soft_reward"].is_number(), "{name}: {v}");
        }
        other => panic!("{name}: endpoint {other}"),
    }
}

#[test]
fn slime_gets_the_same_reward_as_openrlhf_and_the_question_from_the_messages() {
    let s = start(ServeConfig::default());
    let question = "Where is the Eiffel Tower?";
    let response = "It stands in the French capital.";
    // The model decides (no gold answer contained), so the question it sees matters.
    let (status, slime) = post(
        s.addr,
        "/slime",
        &json!({"prompt": [{"role": "user", "content": question}], "response": response, "label": "Paris"}),
    );
    assert_eq!(status, 200, "{slime}");
    assert_eq!(slime["model_verdicts"], 1.0);
    let label = json!({"query": question, "gold_answers": ["Paris"]}).to_string();
    let (status, openrlhf) = post(s.addr, "/get_reward", &json!({"query": [response], "labels": [label]}));
    assert_eq!(status, 200, "{openrlhf}");
    // The same prompt in another decode (the first request also read the nugget's content-free
    // baseline, the later ones reuse it): equal within batch noise, not bit for bit, outside
    // --batch-invariant (docs/reliability.md: |dP(support)| up to 0.068 between layouts).
    let close = |a: &Value, b: &Value| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 0.07;
    assert!(close(&slime["reward"], &openrlhf["rewards"][0]), "{slime} vs {openrlhf}");
    assert!(close(&slime["soft_reward"], &openrlhf["extra_logs"]["soft_reward"][0]), "{slime} vs {openrlhf}");
    // Content parts, as multimodal datasets write them, give the same question.
    let parts = json!([{"role": "user", "content": [{"type": "text", "text": question}]}]);
    let (_, again) = post(s.addr, "/slime", &json!({"prompt": parts, "response": response, "label": "Paris"}));
    assert!(close(&again["soft_reward"], &slime["soft_reward"]), "{again} vs {slime}");
    // Wrong shapes name the field.
    let (status, v) = post(s.addr, "/slime", &json!({"prompt": "p", "label": "x"}));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("`response`"), "{v}");
}

#[test]
fn an_openrlhf_burst_larger_than_the_old_queue_is_queued_not_refused() {
    // Past the old default of 1024 waiting requests, all sent while the engine is busy.
    const BURST: usize = 1100;
    let s = start(ServeConfig::default());
    let addr = s.addr;
    let passage = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France, completed in 1889.";
    // About 50 model verdicts: seconds of engine time on a CPU, while the burst arrives.
    let records: Vec<Value> = (0..12)
        .map(|i| json!({"query": "Where is the tower?", "answer": format!("{passage} Note {i}."),
            "nuggets": ["The Eiffel Tower is in Paris", "It was completed in 1889", "It is made of wood", "It is in Rome"]}))
        .collect();
    let heavy = json!({ "records": records });
    let busy = std::thread::spawn(move || post(addr, "/v1/verify", &heavy));
    let health = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    for _ in 0..6000 {
        let text = health.get(&format!("http://{addr}/health")).call().unwrap().into_string().unwrap();
        let h: Value = serde_json::from_str(&text).unwrap();
        if h["in_flight"] == 1 && h["queue_requests"] == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // OpenRLHF >= 0.9.1: one single-sample request per sample, all at once, each on its own
    // connection (exact match decides these, so the burst itself costs no model time).
    let barrier = Arc::new(Barrier::new(BURST));
    let threads: Vec<_> = (0..BURST)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let p = format!("<|im_start|>user\nSay {i}.<|im_end|>\n<|im_start|>assistant\n");
                    let body =
                        json!({"query": [format!("{p}{i}<|im_end|>")], "prompts": [p], "labels": [i.to_string()]});
                    barrier.wait();
                    post(addr, "/get_reward", &body)
                })
                .unwrap()
        })
        .collect();
    let replies: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let refused = replies.iter().filter(|(s, _)| *s != 200).count();
    assert_eq!(refused, 0, "{refused} of {BURST} not answered 200, e.g. {:?}", replies.iter().find(|(s, _)| *s != 200));
    for (_, v) in &replies {
        assert_eq!(v["rewards"], json!([1.0]), "{v}");
    }
    let (status, b) = busy.join().unwrap();
    assert_eq!(status, 200, "{b}");
}
