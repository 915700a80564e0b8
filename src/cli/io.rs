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
            // Count the lines (for the progress bar) only in a regular file: a pipe
            // (`--input <(...)`, /dev/stdin, a FIFO) can be read once, and counting would drain it.
            let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
            let lines = if regular {
                Some(
                    BufReader::new(File::open(p).map_err(|e| Error::io(p, e))?)
                        .lines()
                        .map_while(Result::ok)
                        .filter(|l| !l.trim().is_empty())
                        .count() as u64,
                )
            } else {
                None
            };
            Ok((Box::new(BufReader::new(f)), p.display().to_string(), lines))
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

/// Writing `output` must not destroy `input`: refuse when they are the same file (the same
/// path, a link to it, or a hard link: the same device and inode).
pub fn refuse_overwrite(input: Option<&Path>, output: Option<&Path>, flag: &str) -> Result<(), Error> {
    let (Some(i), Some(o)) = (input, output) else { return Ok(()) };
    if same_file(i, o) {
        return Err(Error::field(
            "command line",
            flag,
            format!("{} is the input; writing it would destroy it", o.display()),
        ));
    }
    Ok(())
}

/// Whether two paths name one existing file (the same path, a link to it, or a hard link: the
/// same device and inode).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.is_file() && a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The folder `output` goes into exists (an empty parent is the working folder): a file written
/// at the end of a long run is checked before the run.
pub fn check_output_folder(output: &Path, flag: &str) -> Result<(), Error> {
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if output.is_dir() {
        return Err(Error::field("command line", flag, format!("{} is a folder, not a file", output.display())));
    }
    if !parent.is_dir() {
        return Err(Error::field(
            "command line",
            flag,
            format!("{}: the folder {} does not exist", output.display(), parent.display()),
        ));
    }
    Ok(())
}

/// A line's number (from 1) and its text, or why it has none.
pub type NumberedLine = (usize, Result<String, Error>);

/// The non-blank lines of a file (`-`: stdin), numbered from 1, each its text or why it has
/// none (not UTF-8, unreadable), so that one bad line is that line's error, named, not the
/// file's. Read as they are asked for: `find` and `take` stop reading early.
pub fn numbered_lines(path: &Path) -> Result<Box<dyn Iterator<Item = NumberedLine>>, Error> {
    let (reader, name): (Box<dyn BufRead>, String) = if path.as_os_str() == "-" {
        (Box::new(BufReader::new(std::io::stdin())), "stdin".into())
    } else {
        (Box::new(BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?)), path.display().to_string())
    };
    Ok(Box::new(
        reader
            .split(b'\n')
            .enumerate()
            .map(move |(i, l)| {
                let location = format!("{name}:{}", i + 1);
                // A byte-order mark and a CR are left to `parse_record`, which reads past them.
                let text = l.map_err(|e| Error::io(&location, e)).and_then(|l| {
                    String::from_utf8(l).map_err(|e| Error::Parse {
                        location: location.clone(),
                        reason: format!("not UTF-8 text ({})", e.utf8_error()),
                    })
                });
                (i + 1, text)
            })
            .filter(|(_, t)| t.as_ref().map_or(true, |t| !t.trim().is_empty())),
    ))
}
