//! Ctrl-C for the batch streams (`verify`, `eval`, `extract`): the first SIGINT stops a stream
//! after the batch in flight, whose records are written; a second one, or one outside a
//! stream, stops the process at once.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    }
}

pub fn interruptible() -> Interrupt {
    static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let stop = STOP.get_or_init(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // `try_`: a SIGINT disposition other than the default (ignored) is left as it is.
        let installed = ctrlc::try_set_handler(move || {
            // Written, not printed: a closed stderr must not panic the handler's thread.
            let mut err = std::io::stderr();
            if flag.swap(true, Ordering::SeqCst) || !STREAMING.load(Ordering::SeqCst) {
                let _ = writeln!(err, "\ngavel: stopped");
                // `_exit`, not `exit`: exit's destructors would tear down llama.cpp's globals
                // under the threads still computing.
                extern "C" {
                    fn _exit(status: std::os::raw::c_int) -> !;
                }
                // SAFETY: `_exit` ends the process at once; nothing runs after it.
                unsafe { _exit(std::os::raw::c_int::from(INTERRUPTED)) }
            }
            let _ = writeln!(
                err,
                "\ngavel: stopping after the batch in flight (its records are written); again to stop now"
            );
        });
        match installed {
            Ok(()) | Err(ctrlc::Error::MultipleHandlers) => {}
            Err(e) => tracing::warn!("no SIGINT handler ({e}): an interrupt stops at once"),
        }
        stop
    });
    STREAMING.store(true, Ordering::SeqCst);
    Interrupt(stop.clone())
}
