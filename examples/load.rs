//! A bounded load client for `gavel serve`: sends N `/get_reward` requests (one short-form
//! record each) at a fixed concurrency to a loopback server, then reports requests/s,
//! verdicts/s, latency percentiles, 5xx replies and lost replies. With `--verify-bin` it then
//! runs the same records through `gavel verify` in one process for comparison.
//!
//! ```sh
//! gavel serve --addr 127.0.0.1:8000 &
//! cargo run --release --example load -- --url http://127.0.0.1:8000 \
//!     --data nq-shortform.jsonl --requests 2000 --concurrency 32 --verify-bin target/release/gavel
//! ```
//!
//! Records are JSON Lines with `query`, `answer` and `gold_answers` (`gavel verify`'s
//! short-form records); each request sends `answer` as the response and
//! `{"query", "gold_answers"}` as the label. A 503 (queue full) is retried after its
//! `Retry-After`; a reply is lost when no 200 with one reward ever came back.

use std::io::{BufRead, Write};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Args {
    url: String,
    data: String,
    requests: usize,
    concurrency: usize,
    verify_bin: Option<String>,
    verify_args: Vec<String>,
    max_seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8000".into(),
        data: String::new(),
        requests: 2000,
        concurrency: 32,
        verify_bin: None,
        verify_args: Vec::new(),
        max_seconds: 7200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--data" => a.data = value()?,
            "--requests" => a.requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?,
            "--concurrency" => a.concurrency = value()?.parse().map_err(|e| format!("--concurrency: {e}"))?,
            "--verify-bin" => a.verify_bin = Some(value()?),
            "--verify-arg" => a.verify_args.push(value()?),
            "--max-seconds" => a.max_seconds = value()?.parse().map_err(|e| format!("--max-seconds: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.data.is_empty() {
        return Err("--data FILE is required (JSON Lines with query, answer, gold_answers)".into());
    }
    // Load goes to this machine only.
    let host = a.url.trim_start_matches("http://").split(['/', '?']).next().unwrap_or("");
    let loopback = host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
    if !loopback {
        return Err(format!("--url must be a loopback address, not {host}"));
    }
    Ok(a)
}

#[derive(Clone)]
struct Record {
    query: Value,
    answer: String,
    gold: Value,
}

fn load_records(path: &str, n: usize) -> Result<Vec<Record>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::with_capacity(n);
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| format!("{path}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("{path}: {e}"))?;
        let (Some(answer), Some(gold)) = (v["answer"].as_str(), v.get("gold_answers")) else {
            continue;
        };
        out.push(Record { query: v["query"].clone(), answer: answer.to_string(), gold: gold.clone() });
        if out.len() == n {
            break;
        }
    }
    if out.is_empty() {
        return Err(format!("{path}: no short-form records"));
    }
    // Fewer records than requests: go round again.
    let base = out.clone();
    while out.len() < n {
        out.push(base[out.len() % base.len()].clone());
    }
    Ok(out)
}

fn scrape(agent: &ureq::Agent, url: &str) -> (f64, f64) {
    let text = agent.get(&format!("{url}/metrics")).call().ok().and_then(|r| r.into_string().ok()).unwrap_or_default();
    let (mut all, mut llm) = (0.0, 0.0);
    for line in text.lines().filter(|l| l.starts_with("gavel_verdicts_total{")) {
        let v: f64 = line.rsplit(' ').next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
        all += v;
        if line.contains("by=\"llm\"") {
            llm += v;
        }
    }
    (all, llm)
}

#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    rewards: Vec<Option<f64>>,
    ok: usize,
    retried_503: usize,
    other_5xx: usize,
    other_4xx: usize,
    lost: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(2);
        }
    };
    let records = match load_records(&args.data, args.requests) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(2);
        }
    };
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(600))
        .max_idle_connections_per_host(args.concurrency)
        .build();
    let (v0, m0) = scrape(&agent, &args.url);
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally { rewards: vec![None; records.len()], ..Tally::default() }));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let start = Instant::now();
    let threads: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (agent, records, next, tally) =
                (agent.clone(), Arc::clone(&records), Arc::clone(&next), Arc::clone(&tally));
            let url = format!("{}/get_reward", args.url);
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= records.len() || Instant::now() > deadline {
                    return;
                }
                let r = &records[i];
                let label = json!({"query": r.query, "gold_answers": r.gold}).to_string();
                let body = json!({"query": [r.answer], "labels": [label]}).to_string();
                let sent = Instant::now();
                let mut reward = None;
                let (mut r503, mut r5xx, mut r4xx) = (0, 0, 0);
                for _attempt in 0..30 {
                    match agent.post(&url).set("Content-Type", "application/json").send_string(&body) {
                        Ok(resp) => {
                            let v: Value = resp
                                .into_string()
                                .ok()
                                .and_then(|t| serde_json::from_str(&t).ok())
                                .unwrap_or(Value::Null);
                            reward = v["rewards"].as_array().filter(|a| a.len() == 1).and_then(|a| a[0].as_f64());
                            break;
                        }
                        Err(ureq::Error::Status(503, resp)) => {
                            r503 += 1;
                            let wait = resp.header("Retry-After").and_then(|s| s.parse().ok()).unwrap_or(1u64);
                            std::thread::sleep(Duration::from_secs(wait));
                        }
                        Err(ureq::Error::Status(code, _)) => {
                            if code >= 500 {
                                r5xx += 1;
                            } else {
                                r4xx += 1;
                            }
                            break;
                        }
                        Err(ureq::Error::Transport(_)) => break,
                    }
                }
                let took = sent.elapsed().as_secs_f64();
                let mut t = tally.lock().unwrap();
                t.retried_503 += r503;
                t.other_5xx += r5xx;
                t.other_4xx += r4xx;
                match reward {
                    Some(x) => {
                        t.ok += 1;
                        t.latencies.push(took);
                        t.rewards[i] = Some(x);
                    }
                    None => t.lost += 1,
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let wall = start.elapsed().as_secs_f64();
    let (v1, m1) = scrape(&agent, &args.url);
    let mut t = Arc::try_unwrap(tally).ok().and_then(|m| m.into_inner().ok()).unwrap_or_default();
    t.latencies.sort_by(|a, b| a.total_cmp(b));
    let sent = next.load(Ordering::Relaxed).min(records.len());
    let correct = t.rewards.iter().flatten().filter(|&&r| r == 1.0).count();
    println!(
        "gavel serve /get_reward load: {} requests ({} sent), concurrency {}",
        records.len(),
        sent,
        args.concurrency
    );
    println!("  wall time            {wall:.1} s");
    println!("  requests/s           {:.2}", t.ok as f64 / wall);
    println!(
        "  verdicts/s           {:.2} ({} verdicts, {} by the model: {:.2} model verdicts/s)",
        (v1 - v0) / wall,
        v1 - v0,
        m1 - m0,
        (m1 - m0) / wall
    );
    println!(
        "  latency              p50 {:.3} s, p90 {:.3} s, p99 {:.3} s, max {:.3} s",
        percentile(&t.latencies, 0.5),
        percentile(&t.latencies, 0.9),
        percentile(&t.latencies, 0.99),
        percentile(&t.latencies, 1.0)
    );
    println!("  200 replies          {} ({} rewarded 1.0)", t.ok, correct);
    println!("  503 (retried)        {}", t.retried_503);
    println!("  other 5xx            {}", t.other_5xx);
    println!("  4xx                  {}", t.other_4xx);
    println!("  lost replies         {}", t.lost + records.len() - sent);

    let Some(bin) = args.verify_bin else {
        return;
    };
    // The same records through `gavel verify` in one process.
    let dir = std::env::temp_dir().join(format!("gavel-load-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let input = dir.join("records.jsonl");
    let output = dir.join("verdicts.jsonl");
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
        for (i, r) in records.iter().enumerate() {
            let line = json!({"id": i, "query": r.query, "answer": r.answer, "gold_answers": r.gold});
            writeln!(f, "{line}")?;
        }
        f.flush()
    };
    if let Err(e) = write() {
        eprintln!("load: {}: {e}", input.display());
        std::process::exit(1);
    }
    let started = Instant::now();
    let out = Command::new(&bin)
        .arg("verify")
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(&args.verify_args)
        .output();
    let secs = started.elapsed().as_secs_f64();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("load: {bin}: {e}");
            std::process::exit(1);
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stderr.lines().rev().find(|l| l.contains("verdicts/s")).unwrap_or("");
    let verdicts: Vec<Option<bool>> = std::fs::read_to_string(&output)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).ok().and_then(|v| v["correct"].as_bool()))
        .collect();
    let same = verdicts
        .iter()
        .zip(&t.rewards)
        .filter(|(v, r)| matches!((v, r), (Some(c), Some(x)) if f64::from(u8::from(*c)) == *x))
        .count();
    println!("gavel verify, same {} records, one process ({} {:?}):", records.len(), bin, args.verify_args);
    println!("  wall time            {secs:.1} s (exit {:?})", out.status.code());
    println!("  records/s            {:.2}", records.len() as f64 / secs);
    println!("  summary              {}", summary.trim_start_matches("gavel: "));
    println!("  same reward as served {same} of {}", records.len());
    let _ = std::fs::remove_dir_all(&dir);
}
