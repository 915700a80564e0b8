//! The binary's input and output helpers: reading a file or stdin, a progress bar on a
//! terminal, and refusing to write over an input.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::Path;

use gavel::Error;

/// Reader, display name, number of non-blank lines when known.
pub type Input = (Box<dyn BufRead>, String, Option<u64>);

pub fn open_input(path: Option<&Path>) -> Result<Input, Error> {
    match path {
        None => Ok((Box::new(BufReader::new(std::io::stdin())), "stdin".into(), None)),
        Some(p) if p.as_os_str() == "-" => Ok((Box::new(BufReader::new(std::io::stdin())), "stdin".into(), None)),
        Some(p) => {
            let f = File::open(p).map_err(|e| Error::io(p, e))?;
            let lines = BufReader::new(File::open(p).map_err(|e| Error::io(p, e))?)
                .lines()
                .map_while(Result::ok)
                .filter(|l| !l.trim().is_empty())
                .count() as u64;
            Ok((Box::new(BufReader::new(f)), p.display().to_string(), Some(lines)))
        }
    }
}

/// A progress bar on stderr when it is a terminal: `total` items (a spinner when unknown).
pub fn progress_bar(total: Option<u64>, unit: &str) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = total.map(indicatif::ProgressBar::new).unwrap_or_else(indicatif::ProgressBar::new_spinner);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{bar:30}} {{pos}}/{{len}} {unit}  {{per_sec}}  eta {{eta}}  {{msg}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    })
}

/// Writing `output` must not destroy `input`: refuse when they are the same file.
pub fn refuse_overwrite(input: Option<&Path>, output: Option<&Path>, flag: &str) -> Result<(), Error> {
    let (Some(i), Some(o)) = (input, output) else { return Ok(()) };
    let same = match (std::fs::canonicalize(i), std::fs::canonicalize(o)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(Error::field(
            "command line",
            flag,
            format!("{} is the input; writing it would destroy it", o.display()),
        ));
    }
    Ok(())
}
