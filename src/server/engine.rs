//! The engine thread: takes every request waiting in the queue (up to a cap of records), judges
//! all their records in one batched [`Judge::judge`] call, and answers each request on its own
//! reply channel. It is a plain thread, so model work never blocks the async runtime.
//!
//! A request whose client has gone, or whose deadline would pass before the call that takes it
//! ends (estimated from the last call, see [`estimate`]), is not judged: past capacity, model
//! time goes to requests someone still waits for, and the late ones learn at once. The estimate
//! scales with the text to read, not the number of records, and decays while no call runs (see
//! [`decayed`]): one slow record (a 100,000-character answer) must not make every later request
//! look hopeless, and only a call can measure the engine again.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::error::{Error, Result};
use crate::judge::{Judge, Judgement};
use crate::record::Task;

/// A request's tasks (moved back, not copied) and one result each.
pub(crate) type Judged = (Vec<Task>, Vec<Result<Judgement>>);

/// What the engine sends back.
pub(crate) enum Reply {
    /// The request was judged.
    Judged(Judged),
    /// Its deadline would pass before the model call that would take it ends; not judged.
    Expired,
}

/// One request's records, the channel its answer goes to, and when its client stops waiting.
pub(crate) struct Job {
    tasks: Vec<Task>,
    reply: oneshot::Sender<Reply>,
    deadline: Instant,
}

/// Why a request could not be queued.
pub(crate) enum Rejected {
    /// The queue holds as many requests as it may.
    Full,
    /// The engine has stopped.
    Closed,
}

/// The sending side of the queue, cloned into every handler.
#[derive(Clone)]
pub(crate) struct Queue {
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Queue `tasks` without waiting; the receiver yields the reply once they are judged, or
    /// [`Reply::Expired`] when they could not be by `deadline`.
    pub(crate) fn submit(
        &self,
        tasks: Vec<Task>,
        deadline: Instant,
    ) -> std::result::Result<oneshot::Receiver<Reply>, Rejected> {
        let n = tasks.len() as i64;
        let (reply, rx) = oneshot::channel();
        // Count before sending so the engine's decrement can never run first.
        self.metrics.queued_requests.fetch_add(1, Ordering::Relaxed);
        self.metrics.queued_records.fetch_add(n, Ordering::Relaxed);
        match self.tx.try_send(Job { tasks, reply, deadline }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.metrics.queued_requests.fetch_sub(1, Ordering::Relaxed);
                self.metrics.queued_records.fetch_sub(n, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => Rejected::Full,
                    TrySendError::Disconnected(_) => Rejected::Closed,
                })
            }
        }
    }
}

/// Start the engine thread. `queue` is the number of requests that may wait (at least 1);
/// `batch_records` the number of records the engine aims to judge per call. The thread ends,
/// after answering everything still queued, once every [`Queue`] clone is dropped.
pub(crate) fn start(
    judge: Arc<Judge>,
    queue: usize,
    batch_records: usize,
    metrics: Arc<Metrics>,
) -> Result<(Queue, JoinHandle<()>)> {
    let (tx, rx) = mpsc::sync_channel(queue.max(1));
    let m = Arc::clone(&metrics);
    let handle = std::thread::Builder::new()
        .name("gavel-serve-engine".into())
        .spawn(move || run(&judge, rx, batch_records.max(1), &m))
        .map_err(|e| Error::Internal(format!("cannot start the server's engine thread: {e}")))?;
    Ok((Queue { tx, metrics }, handle))
}

fn run(judge: &Judge, rx: Receiver<Job>, batch_records: usize, metrics: &Metrics) {
    let taken = |j: &Job| {
        metrics.queued_requests.fetch_sub(1, Ordering::Relaxed);
        metrics.queued_records.fetch_sub(j.tasks.len() as i64, Ordering::Relaxed);
    };
    // A request that would push the batch past the cap waits for the next call, first in line.
    let mut held: Option<Job> = None;
    // The last model call's time and work, and when it ended: what the next call is estimated
    // from.
    let mut last = (Duration::ZERO, 1usize);
    let mut last_end = Instant::now();
    loop {
        let first = match held.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let mut records = first.tasks.len();
        let mut jobs = vec![first];
        while records < batch_records {
            match rx.try_recv() {
                Ok(j) if records + j.tasks.len() > batch_records => {
                    held = Some(j);
                    break;
                }
                Ok(j) => {
                    records += j.tasks.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        for j in &jobs {
            taken(j);
        }
        // A client that gave up (timeout, closed connection) costs no model time, and neither
        // does one whose deadline passes before this call would end.
        jobs.retain(|j| !j.reply.is_closed());
        let took = decayed(last.0, last_end.elapsed());
        let ends = Instant::now() + estimate((took, last.1), jobs.iter().map(Job::work).sum());
        let (jobs, late): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.deadline >= ends);
        for j in late {
            let _ = j.reply.send(Reply::Expired);
        }
        if jobs.is_empty() {
            continue;
        }
        let work: usize = jobs.iter().map(Job::work).sum();
        let start = Instant::now();
        judge_jobs(judge, jobs, metrics);
        last = (start.elapsed(), work.max(1));
        last_end = Instant::now();
    }
}

/// The last call's time as an estimate `since` it ended: halved for each further span as long
/// as the call itself took (at least a second). Turning requests away measures nothing, so
/// without this a call slower than the timeout would make every request of its size look late
/// for good; decaying with time (not with each refusal, which a backlog makes many of in a
/// moment), it lets a call through after a while, and that call measures the engine again.
fn decayed(took: Duration, since: Duration) -> Duration {
    let half_life = took.max(Duration::from_secs(1));
    took.mul_f64(0.5f64.powf(since.as_secs_f64() / half_life.as_secs_f64()))
}

impl Job {
    /// What judging the job costs, roughly: the bytes of text the model reads. Each judged text
    /// is read once, and each nugget once per block of it (a long text is judged in blocks of
    /// about 8 KB).
    fn work(&self) -> usize {
        self.tasks
            .iter()
            .map(|t| {
                let text = t.answer.len() + t.passages.iter().map(String::len).sum::<usize>();
                let blocks = 1 + text / 8192 + t.passages.len();
                text + blocks * t.nuggets.iter().map(|n| n.text.len() + 16).sum::<usize>()
            })
            .sum::<usize>()
            .max(1)
    }
}

/// How long a call over `work` ([`Job::work`]) will take, from the last call: never more than
/// the last call took (a batch costs less than its parts one by one, so scaling a small call up
/// would overestimate and refuse requests that would have made it), less in proportion when
/// this call has less to read.
fn estimate((took, work_then): (Duration, usize), work: usize) -> Duration {
    if work >= work_then {
        took
    } else {
        took.mul_f64(work as f64 / work_then.max(1) as f64)
    }
}

fn judge_jobs(judge: &Judge, jobs: Vec<Job>, metrics: &Metrics) {
    let mut sizes = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    let mut tasks = Vec::new();
    for j in jobs {
        sizes.push(j.tasks.len());
        tasks.extend(j.tasks);
        replies.push(j.reply);
    }
    let start = Instant::now();
    let results = match guarded(judge, &tasks) {
        Some(r) => r,
        // One request's records made the judge panic: judge each request alone, so only the
        // one that panics again fails and its batch mates are answered.
        None if sizes.len() > 1 => {
            let mut at = 0;
            let mut all = Vec::with_capacity(tasks.len());
            for &n in &sizes {
                let part = &tasks[at..at + n];
                all.extend(guarded(judge, part).unwrap_or_else(|| failed(n, "the judge panicked on this request")));
                at += n;
            }
            all
        }
        None => failed(tasks.len(), "the judge panicked on this request"),
    };
    metrics.batch(tasks.len(), start.elapsed(), &results);
    let mut tasks = tasks.into_iter();
    let mut results = results.into_iter();
    for (n, reply) in sizes.into_iter().zip(replies) {
        let t: Vec<Task> = tasks.by_ref().take(n).collect();
        let r: Vec<Result<Judgement>> = results.by_ref().take(n).collect();
        // The receiver may have timed out meanwhile; nothing to do then.
        let _ = reply.send(Reply::Judged((t, r)));
    }
}

/// The judge's results for `tasks`, `None` when it panicked (the panic is logged).
fn guarded(judge: &Judge, tasks: &[Task]) -> Option<Vec<Result<Judgement>>> {
    match catch_unwind(AssertUnwindSafe(|| judge.judge(tasks))) {
        Ok(r) if r.len() == tasks.len() => Some(r),
        Ok(r) => {
            Some(failed(tasks.len(), &format!("the judge returned {} results for {} records", r.len(), tasks.len())))
        }
        Err(e) => {
            let why = crate::error::panic_message(e.as_ref());
            tracing::error!(
                "the judge panicked on {} records: {}",
                tasks.len(),
                why.as_deref().unwrap_or("no message")
            );
            None
        }
    }
}

fn failed(n: usize, why: &str) -> Vec<Result<Judgement>> {
    (0..n).map(|_| Err(Error::Internal(why.to_string()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_never_exceeds_the_last_call() {
        let s = Duration::from_secs;
        // One slow small call must not make a full batch look hopeless.
        assert_eq!(estimate((s(5), 1), 64), s(5));
        assert_eq!(estimate((s(30), 64), 64), s(30));
        assert_eq!(estimate((s(30), 64), 16), Duration::from_millis(7500));
        assert_eq!(estimate((Duration::ZERO, 1), 10), Duration::ZERO);
    }

    /// A slow call's estimate halves with each span as long as the call, not with each refusal.
    #[test]
    fn the_estimate_decays_with_time_since_the_last_call() {
        let s = Duration::from_secs;
        assert_eq!(decayed(s(200), Duration::ZERO), s(200));
        assert!((decayed(s(200), s(200)).as_secs_f64() - 100.0).abs() < 1e-6);
        assert!((decayed(s(200), s(600)).as_secs_f64() - 25.0).abs() < 1e-6);
        // A fast call's estimate decays by seconds, not by its own few milliseconds.
        assert!(decayed(Duration::from_millis(10), Duration::from_millis(100)) > Duration::from_millis(9));
    }

    /// A 100,000-character answer that took minutes says little about a one-line one.
    #[test]
    fn the_work_of_a_job_follows_its_text() {
        let (reply, _rx) = oneshot::channel();
        let task = |answer: String| {
            let nuggets = vec![crate::rubric::Nugget::new("Canberra is the capital of Australia.")];
            Task::new(Some("q".into()), answer, nuggets)
        };
        let short = Job { tasks: vec![task("Canberra.".into())], reply, deadline: Instant::now() };
        let (reply, _rx) = oneshot::channel();
        let long = Job { tasks: vec![task("word ".repeat(20_000))], reply, deadline: Instant::now() };
        assert!(long.work() > 1000 * short.work(), "{} vs {}", long.work(), short.work());
        let took = Duration::from_secs(235);
        assert!(estimate((took, long.work()), short.work()) < Duration::from_millis(250));
    }
}
