//! Counters, gauges and latency histograms of the reward server, written out in the Prometheus
//! text exposition format by `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::aggregate::DecidedBy;
use crate::judge::Judgement;

/// Upper bounds (seconds) of the request latency buckets: a model-bound reward call takes from
/// milliseconds (exact match) to minutes (a big batch on a CPU).
const LATENCY_BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0];

/// Endpoints get their own series; any other path is folded into `other` so a scanner cannot
/// grow the label set.
pub(crate) fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/get_reward" => "/get_reward",
        "/slime" => "/slime",
        "/v1/verify" => "/v1/verify",
        "/health" => "/health",
        "/metrics" => "/metrics",
        _ => "other",
    }
}

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// Everything `/metrics` reports. Shared by the HTTP handlers and the engine thread.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    verdicts_by: Mutex<BTreeMap<&'static str, u64>>,
    verdict_labels: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests waiting in the queue (not yet taken by the engine).
    pub(crate) queued_requests: AtomicI64,
    /// Records waiting in the queue.
    pub(crate) queued_records: AtomicI64,
    /// Work requests (`/get_reward`, `/v1/verify`) being handled.
    pub(crate) in_flight: AtomicI64,
    records: AtomicU64,
    record_errors: AtomicU64,
    batches: AtomicU64,
    batch_records: AtomicU64,
    busy_micros: AtomicU64,
    rejected_full: AtomicU64,
    timeouts: AtomicU64,
}

impl Metrics {
    /// Count a finished HTTP request.
    pub(crate) fn request(&self, endpoint: &'static str, status: u16, took: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((endpoint, status)).or_default() += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            m.entry(endpoint).or_default().observe(took.as_secs_f64());
        }
    }

    /// Count one engine call over `records` records and its results.
    pub(crate) fn batch(&self, records: usize, took: Duration, results: &[crate::Result<Judgement>]) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_records.fetch_add(records as u64, Ordering::Relaxed);
        self.busy_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.records.fetch_add(results.len() as u64, Ordering::Relaxed);
        let (Ok(mut by), Ok(mut labels)) = (self.verdicts_by.lock(), self.verdict_labels.lock()) else {
            return;
        };
        for r in results {
            match r {
                Ok(j) => {
                    for v in &j.verdicts {
                        *by.entry(decided_by_name(v.by)).or_default() += 1;
                        *labels.entry(v.label.as_str()).or_default() += 1;
                    }
                }
                Err(_) => {
                    self.record_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Count records that failed before reaching the engine (bad label, bad record).
    pub(crate) fn record_errors(&self, n: usize) {
        self.record_errors.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Count a request turned away because the queue was full.
    pub(crate) fn rejected_full(&self) {
        self.rejected_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a request that ran past its timeout.
    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };

        head(&mut out, "gavel_requests_total", "counter", "HTTP requests handled, by endpoint and status code.");
        if let Ok(m) = self.requests.lock() {
            for ((endpoint, status), n) in m.iter() {
                let _ = writeln!(out, "gavel_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}");
            }
        }

        head(
            &mut out,
            "gavel_request_duration_seconds",
            "histogram",
            "Time from request received to response ready, by endpoint.",
        );
        if let Ok(m) = self.latency.lock() {
            for (endpoint, h) in m.iter() {
                let mut cumulative = 0;
                for (b, n) in LATENCY_BUCKETS.iter().zip(h.counts) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "gavel_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{b}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "gavel_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}\n\
                     gavel_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}\n\
                     gavel_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
        }

        head(
            &mut out,
            "gavel_verdicts_total",
            "counter",
            "Verdicts produced, by who decided them (llm, exact_match, contains, regex, numeric).",
        );
        if let Ok(m) = self.verdicts_by.lock() {
            for (by, n) in m.iter() {
                let _ = writeln!(out, "gavel_verdicts_total{{by=\"{by}\"}} {n}");
            }
        }
        head(&mut out, "gavel_verdict_labels_total", "counter", "Verdicts produced, by label.");
        if let Ok(m) = self.verdict_labels.lock() {
            for (label, n) in m.iter() {
                let _ = writeln!(out, "gavel_verdict_labels_total{{label=\"{label}\"}} {n}");
            }
        }

        let gauges = [
            ("gavel_queue_requests", "Requests waiting for the engine.", self.queued_requests.load(Ordering::Relaxed)),
            ("gavel_queue_records", "Records waiting for the engine.", self.queued_records.load(Ordering::Relaxed)),
            (
                "gavel_in_flight_requests",
                "Reward and verify requests being handled.",
                self.in_flight.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            head(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }

        let counters = [
            ("gavel_records_total", "Records judged by the engine.", self.records.load(Ordering::Relaxed)),
            (
                "gavel_record_errors_total",
                "Records that failed (bad label or record, prompt too long, backend error).",
                self.record_errors.load(Ordering::Relaxed),
            ),
            (
                "gavel_engine_batches_total",
                "Judge calls made by the engine thread.",
                self.batches.load(Ordering::Relaxed),
            ),
            (
                "gavel_engine_batch_records_total",
                "Records over all judge calls (divide by batches for the mean batch size).",
                self.batch_records.load(Ordering::Relaxed),
            ),
            (
                "gavel_rejected_queue_full_total",
                "Requests answered 503 because the queue was full.",
                self.rejected_full.load(Ordering::Relaxed),
            ),
            (
                "gavel_request_timeouts_total",
                "Requests answered 504 because their verdicts were not ready in time.",
                self.timeouts.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            head(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        head(&mut out, "gavel_engine_busy_seconds_total", "counter", "Time the engine thread spent in judge calls.");
        let _ =
            writeln!(out, "gavel_engine_busy_seconds_total {}", self.busy_micros.load(Ordering::Relaxed) as f64 / 1e6);
        out
    }
}

fn decided_by_name(by: DecidedBy) -> &'static str {
    match by {
        DecidedBy::Llm => "llm",
        DecidedBy::ExactMatch => "exact_match",
        DecidedBy::Contains => "contains",
        DecidedBy::Regex => "regex",
        DecidedBy::Numeric => "numeric",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_text_is_well_formed() {
        let m = Metrics::default();
        m.request("/get_reward", 200, Duration::from_millis(3));
        m.request("/get_reward", 200, Duration::from_millis(300));
        m.request("/get_reward", 503, Duration::from_secs(1000));
        m.request(endpoint_label("/nope"), 404, Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains("gavel_requests_total{endpoint=\"/get_reward\",status=\"200\"} 2"));
        assert!(text.contains("gavel_requests_total{endpoint=\"other\",status=\"404\"} 1"));
        assert!(text.contains("gavel_request_duration_seconds_bucket{endpoint=\"/get_reward\",le=\"0.005\"} 1"));
        assert!(text.contains("gavel_request_duration_seconds_bucket{endpoint=\"/get_reward\",le=\"0.5\"} 2"));
        assert!(text.contains("gavel_request_duration_seconds_bucket{endpoint=\"/get_reward\",le=\"+Inf\"} 3"));
        assert!(text.contains("gavel_request_duration_seconds_count{endpoint=\"/get_reward\"} 3"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
