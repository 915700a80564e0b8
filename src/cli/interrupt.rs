//! Ctrl-C for the batch streams (`verify`, `eval`, `extract`): the first SIGINT stops a stream
//! after the batch in flight, whose records are written; a second one, or one outside a
//! stream, stops the process at once.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Where the work of an interrupted run is, and how to continue it.
pub fn say_interrupted(output: Option<&Path>) {
    match output {
        Some(p) => eprintln!(
            "gavel: interrupted; every finished record is in {}: the same command with --resume continues",
            p.display()
        ),
        None => eprintln!("gavel: interrupted"),
    }
}

/// Exit status of a run stopped by SIGINT (128 + SIGINT, as a shell reports it).
pub const INTERRUPTED: u8 = 130;

/// Whether a stream that stops at batch boundaries is running (see [`interruptible`]).
static STREAMING: AtomicBool = AtomicBool::new(false);

/// The progress bar of the running stream, if one is drawn: the handler's message is written
/// with the bar cleared, so that the bar's next redraw does not leave it under a stale bar.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Write `message` on stderr, around the progress bar when one is drawn.
fn tell(message: &str) {
    // Written, not printed: a closed stderr must not panic the handler's thread. Without a
    // bar, a new line first: the terminal has echoed "^C" on the current one.
    let write = |lead: &str| {
        let _ = writeln!(std::io::stderr(), "{lead}{message}");
    };
    // The lock is let go before writing: the stream's end takes it to clear the bar.
    let bar = BAR.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(bar) => bar.suspend(|| write("")),
        None => write("\n"),
    }
}

/// While alive, the first SIGINT (Ctrl-C) sets [`Interrupt::flag`]: the stream stops after the
/// batch in flight, whose records are written, so no finished work is lost and `--resume`
/// continues from there. A second SIGINT, or one while no stream runs (eval's report), stops
/// the process at once. A process started with SIGINT ignored (a script's background job) keeps
/// it ignored; SIGTERM and SIGHUP end the run at once, as before (every batch written is
/// already whole on disk).
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        STREAMING.store(false, Ordering::SeqCst);
        if let Ok(mut b) = BAR.lock() {
            *b = None;
        }
    }
}

/// A stream starts: Ctrl-C stops it after the batch in flight while the returned guard lives;
/// its messages are written around `bar`, the stream's progress bar, when one is drawn.
pub fn interruptible(bar: Option<&indicatif::ProgressBar>) -> Interrupt {
    static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let stop = STOP.get_or_init(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // `try_`: a SIGINT disposition other than the default (ignored) is left as it is.
        let installed = ctrlc::try_set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) || !STREAMING.load(Ordering::SeqCst) {
                tell("gavel: stopped");
                // `_exit`, not `exit`: exit's destructors would tear down llama.cpp's globals
                // under the threads still computing.
                // SAFETY: `_exit` ends the process at once; nothing runs after it.
                unsafe { libc::_exit(libc::c_int::from(INTERRUPTED)) }
            }
            tell("gavel: stopping after the batch in flight (its records are written); again to stop now");
        });
        match installed {
            Ok(()) | Err(ctrlc::Error::MultipleHandlers) => {}
            Err(e) => tracing::warn!("no SIGINT handler ({e}): an interrupt stops at once"),
        }
        stop
    });
    if let Ok(mut b) = BAR.lock() {
        *b = bar.cloned();
    }
    STREAMING.store(true, Ordering::SeqCst);
    Interrupt(stop.clone())
}
