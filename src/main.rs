//! The `gavel` command line: maps flags (src/cli) onto the library's configs, shows progress
//! and prints. Library work lives in the library.

mod cli;

use std::fs::File;
use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use cli::config::{build_judge, load_backend, load_rubric, prompt_set, JudgeSpec};
use cli::interrupt::{interruptible, say_interrupted, INTERRUPTED};
use cli::io::{check_output_folder, numbered_lines, open_input, progress_bar, refuse_overwrite, same_file};
use cli::{Cli, Command, ScoreArgs};
use gavel::cache::{model_fingerprint, model_key};
use gavel::calibrate::{self, Calibrator, FitOptions};
use gavel::judge::Judge;
use gavel::labeled::{self, read_labeled};
use gavel::pipeline::{self, ExtractOptions, VerifyOptions};
use gavel::prompt::JudgeMode;
use gavel::record::{parse_record, read_outputs, ShortForm};
use gavel::rubric::Rubric;
use gavel::{model_store, Error};

/// `println!` that ignores a closed stdout: calibrate prints its ranking before it writes its
/// file, and a reader that goes away (`gavel calibrate ... | head`) must not lose the fit.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn,llama_cpp_2=off,llama-cpp-2=off",
        1 => "info,llama_cpp_2=warn",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("GAVEL_LOG").unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gavel: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode, Error> {
    if matches!(
        command,
        Command::Render(_) | Command::Bench(_) | Command::Eval(_) | Command::Check { .. } | Command::FetchModel
    ) {
        die_on_closed_stdout();
    }
    match command {
        Command::Verify(args) => verify(args),
        Command::Render(args) => render(args),
        Command::Bench(args) => bench(args),
        Command::Eval(args) => eval(args),
        Command::Calibrate(args) => calibrate(args),
        Command::Serve(args) => serve(args),
        Command::Extract(args) => extract(args),
        Command::FetchModel => {
            println!("{}", model_store::ensure_default_model()?.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { rubrics } => {
            let mut bad = false;
            // A folder stands for its rubric files, as `serve --rubrics` reads it.
            let mut files = Vec::new();
            for path in rubrics {
                if path.is_dir() {
                    let inside = gavel::rubric::rubric_files(&path)?;
                    if inside.is_empty() {
                        eprintln!("gavel: {}: no .json or .toml rubric file in this folder", path.display());
                        bad = true;
                    }
                    files.extend(inside);
                } else {
                    files.push(path);
                }
            }
            // Two rubrics of one id: `serve --rubrics` refuses such a folder.
            let mut ids: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
            for path in files {
                match Rubric::load(&path) {
                    Ok(r) if ids.contains_key(&r.id) => {
                        eprintln!(
                            "gavel: {}: id `{}` is also the id of {}",
                            path.display(),
                            r.id,
                            ids[&r.id].display()
                        );
                        bad = true;
                    }
                    Ok(r) => {
                        ids.insert(r.id.clone(), path.clone());
                        let model = r.nuggets.iter().filter(|n| n.needs_model()).count();
                        println!(
                            "{}: ok, id `{}`, {} ({model} {} the model)",
                            path.display(),
                            r.id,
                            counted(r.nuggets.len(), "nugget", "nuggets"),
                            if model == 1 { "needs" } else { "need" }
                        );
                    }
                    Err(e) => {
                        eprintln!("gavel: {e}");
                        bad = true;
                    }
                }
            }
            Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

fn verify(args: cli::VerifyArgs) -> Result<ExitCode, Error> {
    let rubric = load_rubric(&args.run.records)?;
    let short_form: ShortForm = args.run.records.short_form.into();
    let (input, input_name, total) = open_input(args.input.as_deref())?;
    let spec = JudgeSpec::new(&args.run.score, &args.run.decide, args.run.cache.cache);
    if args.dry_run {
        let judge = build_judge(&spec, &args.run.model)?;
        let first = input.lines().enumerate().find(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()));
        let Some((i, line)) = first else {
            return Ok(ExitCode::SUCCESS);
        };
        let line = line.map_err(|e| Error::io(&input_name, e))?;
        let task = parse_record(&line, &format!("{input_name}:{}", i + 1), rubric.as_ref(), short_form)?;
        print_prompts(&judge, &task)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.resume && args.output.is_none() {
        return Err(Error::field("command line", "--resume", "needs --output FILE to resume into"));
    }
    refuse_overwrite(args.input.as_deref(), args.output.as_deref(), "--output")?;
    let judge = build_judge(&spec, &args.run.model)?;
    let opts = VerifyOptions { input_name, rubric, short_form, batch_records: args.batch, ..Default::default() };
    let summary = run_verify(&judge, input, total, args.output.as_deref(), args.resume, opts)?;
    Ok(if summary.interrupted {
        ExitCode::from(INTERRUPTED)
    } else if summary.output_closed {
        say_output_closed("records")
    } else if summary.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Verify `input` into `output` (stdout when absent) with a progress bar on a terminal and a
/// summary line; with `resume`, records already in `output` are skipped and the rest appended.
fn run_verify(
    judge: &Judge,
    input: Box<dyn BufRead>,
    total: Option<u64>,
    output: Option<&Path>,
    resume: bool,
    mut opts: VerifyOptions,
) -> Result<pipeline::Summary, Error> {
    let output_path = output;
    let (mut output, state) = open_output(output, resume, ("record", "records"), pipeline::prepare_resume)?;
    opts.skip = state.done;
    let bar = progress_bar(total, "records");
    let interrupt = interruptible(bar.as_ref());
    opts.stop = Some(interrupt.flag());
    if let Some(bar) = &bar {
        // With a part, the first batch tells how many of the records done are the part's.
        bar.set_position(if opts.part.is_some() { 0 } else { opts.skip.values().sum::<usize>() as u64 });
        bar.reset_eta();
    }
    let summary = pipeline::verify_stream(judge, input, &mut output, &opts, |s| {
        if let Some(bar) = &bar {
            bar.set_position((s.records + s.skipped) as u64);
            bar.set_message(format!("{:.1} verdicts/s, {} errors", s.verdicts_per_sec(), s.errors));
        }
    })
    .map_err(|e| at_output(e, output_path))?;
    drop(interrupt);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let usage = judge.backend().usage();
    eprintln!(
        "gavel: {}, {} ({} by the model) in {:.1}s: {:.2} verdicts/s, {:.0} prompt tokens/s; {}{}{}{}",
        counted(summary.records, "record", "records"),
        counted(summary.verdicts, "verdict", "verdicts"),
        summary.model_verdicts,
        summary.elapsed.as_secs_f64(),
        summary.verdicts_per_sec(),
        usage.prompt_tokens as f64 / summary.elapsed.as_secs_f64().max(1e-9),
        counted(summary.errors, "error", "errors"),
        if summary.truncated > 0 { format!(", {} truncated", summary.truncated) } else { String::new() },
        if summary.skipped > 0 { format!(", {} skipped (already done)", summary.skipped) } else { String::new() },
        if judge.calibrator().is_some() { ", calibrated" } else { "" },
    );
    if summary.interrupted {
        say_interrupted(output_path);
    }
    if summary.unmatched > 0 {
        eprintln!(
            "gavel: warning: {} in {} matched no record of this input (by id, else line): was it written \
             from another input?",
            counted(summary.unmatched, "record", "records"),
            output_path.map_or_else(|| "the output".into(), |p| p.display().to_string())
        );
    }
    Ok(summary)
}

fn print_prompts(judge: &Judge, task: &gavel::Task) -> Result<(), Error> {
    let prompts = judge.render(task)?;
    if prompts.is_empty() {
        println!("(no nugget of this record needs the model)");
    }
    let mut out = std::io::stdout().lock();
    for (k, p) in prompts.iter().enumerate() {
        if k == 0 {
            let _ = writeln!(out, "===== shared prefix (evaluated once per record) =====\n{}", p.prefix);
        }
        let _ = writeln!(out, "===== nugget {} suffix =====\n{}", p.nugget, p.suffix);
    }
    Ok(())
}

fn render(args: cli::RenderArgs) -> Result<ExitCode, Error> {
    let rubric = load_rubric(&args.records)?;
    let line = match numbered_lines(&args.input)?.find(|(n, _)| *n >= args.line).filter(|(n, _)| *n == args.line) {
        Some((_, text)) => text?,
        None => {
            return Err(Error::field(
                args.input.display().to_string(),
                "--line",
                format!("line {} is blank or past the end of the file", args.line),
            ))
        }
    };
    let location = format!("{}:{}", args.input.display(), args.line);
    let task = parse_record(&line, &location, rubric.as_ref(), args.records.short_form.into())?;
    let score = ScoreArgs {
        no_likelihood: false,
        truncate: false,
        no_blocks: true,
        block_tokens: None,
        block_overlap: 0,
        prompts: args.prompts.clone(),
    };
    let mut spec = JudgeSpec::raw(&score, false);
    spec.mode = args.mode.into();
    print_prompts(&build_judge(&spec, &args.model)?, &task)?;
    Ok(ExitCode::SUCCESS)
}

fn bench(args: cli::BenchArgs) -> Result<ExitCode, Error> {
    let rubric = load_rubric(&args.run.records)?;
    let name = args.input.display().to_string();
    let short_form: ShortForm = args.run.records.short_form.into();
    // A bad record is left out and said, as verify would make it an error record.
    let (mut tasks, mut bad) = (Vec::new(), Vec::new());
    for (n, text) in numbered_lines(&args.input)? {
        if tasks.len() >= args.records {
            break;
        }
        match text.and_then(|l| parse_record(&l, &format!("{name}:{n}"), rubric.as_ref(), short_form)) {
            Ok(t) => tasks.push(t),
            Err(e) => bad.push(e),
        }
    }
    for e in bad.iter().take(5) {
        eprintln!("gavel bench: left out: {e}");
    }
    if tasks.is_empty() {
        let why = match bad.first() {
            Some(e) => format!("none to benchmark: no record parsed, the first: {e}"),
            None => "none to benchmark (the file has no record)".into(),
        };
        return Err(Error::field(name, "records", why));
    }
    if !bad.is_empty() {
        eprintln!("gavel bench: {} left out; benchmarking the others", counted(bad.len(), "record", "records"));
    }
    let judge = build_judge(&JudgeSpec::new(&args.run.score, &args.run.decide, args.run.cache.cache), &args.run.model)?;
    let info = judge.backend().info();
    eprintln!(
        "gavel bench: {} of {name}, model {}, {}",
        counted(tasks.len(), "record", "records"),
        info.model,
        counted(info.n_threads, "thread", "threads")
    );
    let r = pipeline::bench(&judge, &tasks, args.batch, args.prefill_tokens)?;
    println!("records            {}", r.records);
    println!("model verdicts     {}", r.verdicts);
    println!("errors             {}", r.errors);
    println!("wall time          {:.2} s", r.seconds);
    println!("verdicts/s         {:.2}", r.verdicts_per_sec);
    println!("prompt tokens      {} (unique: each shared prefix counted once)", r.prompt_tokens);
    println!("prompt tokens/s    {:.1}", r.prompt_tokens_per_sec);
    let (lo, hi) = r.prefill_samples.iter().fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    println!(
        "raw prefill        {} tokens in one sequence: {:.1} tokens/s (median of {} samples across the run, {:.1}..{:.1})",
        r.prefill_tokens,
        r.prefill_tokens_per_sec,
        r.prefill_samples.len(),
        lo,
        hi
    );
    println!("ratio              {:.1}% of raw prefill speed", r.ratio * 100.0);
    let per = |n: usize| n as f64 / r.verdicts.max(1) as f64;
    let b = r.budget;
    println!(
        "tokens per verdict {:.1} = head {:.1} + answer prefix {:.1} + nugget suffix {:.1} + baseline {:.1}",
        per(b.head + b.prefix + b.suffix + b.baseline),
        per(b.head),
        per(b.prefix),
        per(b.suffix),
        per(b.baseline)
    );
    println!(
        "nugget's own text  {:.1} tokens per verdict; suffix + baseline exceed it by {:.1}",
        per(r.nugget_tokens),
        per(b.suffix + b.baseline) - per(r.nugget_tokens)
    );
    println!("{}", serde_json::to_string(&r).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

fn serve(args: cli::ServeArgs) -> Result<ExitCode, Error> {
    let api_key = match &args.api_key_env {
        None => None,
        Some(name) => match std::env::var(name) {
            Ok(key) if !key.trim().is_empty() => Some(key.trim().to_string()),
            _ => return Err(Error::field("--api-key-env", name, "the environment variable is not set or empty")),
        },
    };
    let rubrics = match &args.rubrics {
        Some(dir) => gavel::server::load_rubrics(dir)?,
        None => Vec::new(),
    };
    let config = gavel::server::ServeConfig::default()
        .with_addr(args.addr.clone())
        .with_queue(args.queue)
        .with_batch_records(args.batch)
        .with_max_body_bytes(args.max_body_mb << 20)
        .with_max_request_records(args.max_request_records)
        .with_timeout(std::time::Duration::from_secs(args.timeout))
        .with_max_connections(args.max_connections)
        .with_read_timeouts(
            std::time::Duration::from_secs(args.header_timeout.max(1)),
            std::time::Duration::from_secs(args.body_timeout.max(1)),
        )
        .with_api_key(api_key)
        .with_short_form(args.run.records.short_form.into())
        .with_rubric(load_rubric(&args.run.records)?)
        .with_rubrics(rubrics);
    let judge = Arc::new(build_judge(
        &JudgeSpec::new(&args.run.score, &args.run.decide, args.run.cache.cache),
        &args.run.model,
    )?);
    let server = gavel::server::Server::bind(judge, config)?;
    let stop = server.shutdown_signal()?;
    eprintln!("gavel serve: listening on http://{}", server.local_addr()?);
    server.run(stop)?;
    eprintln!("gavel serve: stopped");
    Ok(ExitCode::SUCCESS)
}

fn eval(args: cli::EvalArgs) -> Result<ExitCode, Error> {
    if args.out.exists() && !args.out.is_dir() {
        return Err(Error::field(
            "command line",
            "--out",
            format!("{} is a file; --out names the folder the reports go into", args.out.display()),
        ));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    for name in ["verdicts.jsonl", "report.md", "report.html", "metrics.json"] {
        refuse_overwrite(Some(&args.input), Some(&args.out.join(name)), "--out")?;
        if name != "verdicts.jsonl" {
            refuse_overwrite(args.from.as_deref(), Some(&args.out.join(name)), "--out")?;
        }
    }
    // Read first: a file without gold labels fails before the model runs.
    let part = args.part.map(Into::into);
    let labeled = read_labeled(&args.input, part)?;
    let location = labeled::location(&args.input, part);
    if labeled.tasks.is_empty() && labeled.failures.is_empty() {
        return Err(Error::field(location, "records", "no record to evaluate"));
    }
    labeled.require_gold(&location)?;
    let mut setup = Vec::new();
    // The calibration verdicts are re-decided with, on the file's own grading.
    let rescore: Option<Calibrator>;
    let verdicts_path = match &args.from {
        Some(from) => {
            // No model run: re-decide from the raw model outputs of an earlier eval or verify.
            let model_path = args.model.model.clone().unwrap_or_else(model_store::default_model_path);
            let prompts = prompt_set(&args.score.prompts)?;
            let calibrator =
                Calibrator::resolve(&args.decide.calibration, &model_fingerprint(&model_path)?, prompts.version())?;
            setup.push((
                "model".to_string(),
                format!("{} (raw outputs read from {})", model_path.display(), from.display()),
            ));
            setup.push((
                "calibration".to_string(),
                calibrator.as_ref().map(|c| c.describe()).unwrap_or_else(|| "none".into()),
            ));
            rescore = calibrator;
            from.clone()
        }
        None => {
            // The model judges every short-form answer, so EM, model and hybrid can be compared.
            let judge = build_judge(&JudgeSpec::new(&args.score, &args.decide, !args.no_cache), &args.model)?;
            let verdicts_path = args.out.join("verdicts.jsonl");
            let (input, input_name, total) = open_input(Some(&args.input))?;
            let opts = VerifyOptions {
                input_name,
                rubric: None,
                short_form: ShortForm::Llm,
                batch_records: args.batch,
                // Only the half the report reads is judged.
                part,
                ..Default::default()
            };
            // The bar counts the records of the part (and those that did not parse).
            let total =
                total.map(|t| if part.is_some() { (labeled.tasks.len() + labeled.failures.len()) as u64 } else { t });
            if run_verify(&judge, input, total, Some(&verdicts_path), args.resume, opts)?.interrupted {
                // No report over part of the file: `eval --resume` judges the rest, then reports.
                eprintln!("gavel: no report written: the file is not judged to its end");
                return Ok(ExitCode::from(INTERRUPTED));
            }
            // Re-decided below on the file's own grading (a 2-grade file uses a stack's 2-grade
            // cut), as an eval --from of the same outputs would.
            rescore = judge.calibrator().cloned();
            let info = judge.backend().info();
            setup = vec![
                ("model".into(), info.model.clone()),
                (
                    "backend".into(),
                    format!("{}, {}, context {}", info.kind, counted(info.n_threads, "thread", "threads"), info.n_ctx),
                ),
                (
                    "mode".into(),
                    format!("{}, templates {}", JudgeMode::from(args.decide.mode), judge.prompts().version()),
                ),
                ("calibration".into(), judge.calibrator().map(|c| c.describe()).unwrap_or_else(|| "none".into())),
            ];
            verdicts_path
        }
    };
    let mut outputs = read_outputs(&verdicts_path)?;
    gavel::eval::rescore_outputs(&labeled.tasks, &mut outputs, rescore.as_ref());
    let mut input = gavel::eval::collect(&location, &labeled.tasks, &outputs, labeled.failures);
    input.setup = setup;
    let report = gavel::eval::build_report(&input);
    let md = gavel::report::to_markdown(&report);
    let write = |name: &str, body: &str| -> Result<(), Error> {
        let p = args.out.join(name);
        std::fs::write(&p, body).map_err(|e| Error::io(&p, e))
    };
    write("report.md", &md)?;
    write("report.html", &gavel::report::to_html(&report))?;
    write("metrics.json", &gavel::report::to_json(&report))?;
    print!("{md}");
    eprintln!("gavel: reports in {}", args.out.display());
    Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn calibrate(args: cli::CalibrateArgs) -> Result<ExitCode, Error> {
    if !args.from.is_empty() && args.from.len() != args.input.len() {
        return Err(Error::field(
            "command line",
            "--from",
            format!("{} --from for {} --input: give one per input, in order", args.from.len(), args.input.len()),
        ));
    }
    // What it writes must not be what it reads, and must have a folder to go to: said now, not
    // after the whole fit.
    for (out, flag) in [(args.output.as_deref(), "-o"), (args.features_out.as_deref(), "--features-out")] {
        for read in args.input.iter().chain(&args.from) {
            refuse_overwrite(Some(read), out, flag)?;
        }
    }
    if let Some(features) = args.features_out.as_deref() {
        // The fit creates its own folder; the features file is written as it is named.
        check_output_folder(features, "--features-out")?;
        if args.output.as_deref().is_some_and(|o| o == features || same_file(o, features)) {
            return Err(Error::field("command line", "--features-out", "is the -o file: give them two names"));
        }
    }
    // Fitting from stored outputs runs the model only for the content-free prior: no cache.
    // The labeled files first: one without gold fails before the model loads.
    let part = args.part.map(Into::into);
    let (mut tasks, mut files, mut unparsed, mut golds) = (Vec::new(), Vec::new(), 0, 0);
    for (f, path) in args.input.iter().enumerate() {
        let l = read_labeled(path, part)?;
        let location = labeled::location(path, part);
        if l.tasks.is_empty() {
            let why = match l.failures.first() {
                Some((_, e)) => format!(
                    "no labeled record: {} did not parse, the first: {e}",
                    counted(l.failures.len(), "record", "records")
                ),
                None => "no labeled record".into(),
            };
            return Err(Error::field(location, "records", why));
        }
        l.require_gold(&location)?;
        // The messages name the file and line.
        for (_, e) in l.failures.iter().take(5) {
            eprintln!("gavel: calibrate: did not parse: {e}");
        }
        unparsed += l.failures.len();
        golds += l.gold_count();
        files.extend(std::iter::repeat_n(f, l.tasks.len()));
        tasks.extend(l.tasks);
    }
    // Each gold label gives at most one labeled verdict: too few fail before the model runs.
    if golds < calibrate::MIN_LABELED {
        return Err(Error::field(
            "--input",
            "gold",
            format!(
                "{} in all; a fit needs at least {} labeled verdicts",
                counted(golds, "gold label", "gold labels"),
                calibrate::MIN_LABELED
            ),
        ));
    }
    let judge = build_judge(&JudgeSpec::raw(&args.score, args.from.is_empty()), &args.model)?;
    let names: Vec<String> =
        args.input.iter().map(|p| p.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default()).collect();
    let collected = if args.from.is_empty() {
        let c = labeled::judge_labeled(&judge, &tasks, &files, args.batch, |done, total| {
            eprint!("\rgavel: calibrate: {done}/{total} records");
        });
        eprintln!();
        c
    } else {
        // Raw model outputs of an earlier eval/verify: no model run for the labeled records.
        let outputs = args.from.iter().map(|f| read_outputs(f)).collect::<Result<Vec<_>, _>>()?;
        labeled::from_outputs(&tasks, &files, &outputs)
    };
    if unparsed > 0 || !collected.failed.is_empty() {
        eprintln!(
            "gavel: calibrate: {unparsed} records did not parse and {} were not judged or have no output; fitting \
             without them",
            collected.failed.len()
        );
        for (f, line, why) in collected.failed.iter().take(5) {
            eprintln!("  {}:{line}: {why}", args.input[*f].display());
        }
    }
    if let Some(path) = &args.features_out {
        let rows = collected.verdicts.iter().map(|v| v.csv_row(&names[v.file]));
        let body = std::iter::once(calibrate::features_csv_header()).chain(rows).collect::<Vec<_>>().join("\n") + "\n";
        std::fs::write(path, body).map_err(|e| Error::io(path, e))?;
    }
    let model_path = judge.backend().info().model;
    let opts = FitOptions {
        stack: args.stack.features(),
        grades: args.grades.grades(),
        content_free: if collected.verdicts.is_empty() {
            [1.0 / 3.0; 3]
        } else {
            labeled::content_free_prior(&judge, &tasks)
        },
        model: model_key(&model_path)?,
        model_file: Path::new(&model_path).file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default(),
        prompts: judge.prompts().version().to_string(),
        learning_curve: if args.learning_curve { vec![100, 300, 1000, usize::MAX] } else { Vec::new() },
        fitted_on: match part {
            Some(p) => format!("{} part {p}", names.join(" + ")),
            None => names.join(" + "),
        },
    };
    let (c, fit) = calibrate::fit(&collected.verdicts, &opts)?;
    if let Some(sel) = fit.selection.as_ref().filter(|s| s.parts == 0 && !s.by_source) {
        // Every labeled verdict in one fold by query and one file: nothing is held out.
        let first = sel.candidates.first().map_or(String::new(), |c| {
            format!(" ({:?}, {})", c.set, if c.ordinal { "ordinal" } else { "multinomial" })
        });
        say!(
            "long-form stack NOT chosen on held-out data: the labeled verdicts come from too few queries to hold \
             any out (all in one of {} folds by query), so the first candidate{first} was fitted without a \
             held-out score; label more queries for a choice and a measured fit (docs/teach.md)",
            calibrate::CV_FOLDS
        );
    } else if let Some(sel) = &fit.selection {
        let how = match (sel.parts, sel.by_source) {
            (0, _) => "each input file left out in turn (the labels come from too few queries to hold any out by \
                       query)"
                .to_string(),
            (n, true) => format!(
                "{n}-fold cross-validation by query, and each input file left out in turn; ranked by their mean"
            ),
            (n, false) => format!("{n}-fold cross-validation by query"),
        };
        say!("long-form stack chosen by held-out macro-F1 (mean over files, each on its own grading): {how}");
        for (k, c) in sel.candidates.iter().take(8).enumerate() {
            let source = c.by_source.map_or(String::new(), |s| format!("  left-out file {s:.3}"));
            let folds = if c.by_folds.is_finite() { format!("{:.3}", c.by_folds) } else { "n/a".into() };
            say!(
                "  {} {:<16} l2 {:<6} {:<11} {:.3}  (folds {folds}{source})",
                if k == 0 { "*" } else { " " },
                format!("{:?}", c.set),
                c.l2,
                if c.ordinal { "ordinal" } else { "multinomial" },
                c.score,
            );
        }
    }
    if !fit.curve.is_empty() {
        say!(
            "learning curve of the long-form stack (fitted on N labeled verdicts drawn by query from 3 of 4 folds, \
             scored on the 4th; mean macro-F1 over files, every fold x 3 draws):"
        );
        let all = fit.curve.iter().find(|p| p.labels == usize::MAX).map(|p| p.used);
        let (shown, beyond): (Vec<&gavel::stack::CurvePoint>, Vec<&gavel::stack::CurvePoint>) =
            fit.curve.iter().partition(|p| !past_the_folds(p.labels, p.used, all));
        for p in shown {
            let asked = if p.labels == usize::MAX { "all".to_string() } else { p.labels.to_string() };
            if p.fits == 0 {
                say!("  {asked:>5} labels: not measured, no fold to hold out");
                continue;
            }
            say!(
                "  {asked:>5} labels (used {:>5}): {:.3}  [{:.3} .. {:.3}], {} fits",
                p.used,
                p.mean,
                p.min,
                p.max,
                p.fits
            );
        }
        if !beyond.is_empty() {
            let sizes: Vec<String> = beyond.iter().map(|p| p.labels.to_string()).collect();
            say!("  ({} labels: more than the training folds hold, as \"all\")", sizes.join(", "));
        }
    }
    if let Some(why) = &fit.head_skipped {
        say!("hidden-state head not tried: {why}");
    }
    if !fit.head.is_empty() {
        say!(
            "hidden-state head (logistic read-out of a layer's state), chosen by held-out AUC of supported vs \
             unsupported over {} folds by query:",
            calibrate::CV_FOLDS
        );
        for (k, h) in fit.head.iter().enumerate() {
            say!("  {} read {:<11} l2 {:<6} AUC {:.3}", if k == 0 { "*" } else { " " }, h.pool.as_str(), h.l2, h.auc);
        }
    }
    if !fit.head_curve.is_empty() {
        say!("learning curve of the head alone (held-out AUC; every fold x 3 draws of whole queries):");
        let all = fit.head_curve.iter().find(|p| p.0 == usize::MAX).map(|p| p.1);
        for (asked, used, auc) in &fit.head_curve {
            if past_the_folds(*asked, *used, all) {
                continue;
            }
            let asked = if *asked == usize::MAX { "all".to_string() } else { asked.to_string() };
            say!("  {asked:>5} labels (used {used:>5}): AUC {auc:.3}");
        }
    }
    let out = args.output.clone().unwrap_or_else(|| Calibrator::path_for(&c.model));
    c.save(&out)?;
    let (cf, bias, f1) = (c.content_free, c.bias, c.fit_macro_f1);
    say!("content-free distribution  support {:.3}  partial {:.3}  not {:.3}", cf[0], cf[1], cf[2]);
    say!("log-biases                 support {:+.2}  partial {:+.2}  not {:+.2}", bias[0], bias[1], bias[2]);
    // The label-vote calibration decides only where no stack applies; say where, so its
    // in-sample scores are not read as the stack's.
    let votes_apply = match (c.stack.is_some(), c.short_stack.is_some()) {
        (true, true) => "decides nothing while both stacks apply",
        (true, false) => "decides short-form answers, which have no stack in this fit",
        (false, true) => "decides long-form verdicts, which have no stack in this fit",
        (false, false) => "decides every verdict",
    };
    say!(
        "label votes alone ({votes_apply}), in sample on {} ({} verdicts, {}): macro-F1 raw {:.3}, \
         contextual {:.3}, with thresholds {:.3}",
        c.fitted_on,
        c.n,
        fit.grades,
        f1[0],
        f1[1],
        f1[2]
    );
    say!("saved {}  (score a different file to measure it)", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Whether a learning-curve point that asked for `asked` labels and used `used` asked for more
/// than the training folds hold: it is the "all" point again (`all`: what that point used).
fn past_the_folds(asked: usize, used: usize, all: Option<usize>) -> bool {
    asked != usize::MAX && asked > used && Some(used) == all
}

/// The output: stdout, a new file, or with `resume` the file after its complete lines (`scan`
/// reads what is done: verify's record keys, extract's line count), opened to append.
fn open_output(
    output: Option<&Path>,
    resume: bool,
    what: (&str, &str),
    scan: impl Fn(&Path) -> gavel::Result<pipeline::ResumeState>,
) -> Result<(Box<dyn Write>, pipeline::ResumeState), Error> {
    Ok(match output {
        Some(p) if resume => {
            let state = scan(p)?;
            if state.kept > 0 || state.dropped_bytes > 0 || state.retried > 0 {
                eprintln!(
                    "gavel: resuming {}: {} already done{}{}",
                    p.display(),
                    counted(state.kept, what.0, what.1),
                    if state.retried > 0 {
                        format!(", {} taken out to try again", counted(state.retried, "error record", "error records"))
                    } else {
                        String::new()
                    },
                    if state.dropped_bytes > 0 { ", an incomplete last line removed" } else { "" }
                );
            }
            let f = std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(|e| Error::io(p, e))?;
            (Box::new(BufWriter::new(f)), state)
        }
        Some(p) => (Box::new(BufWriter::new(File::create(p).map_err(|e| Error::io(p, e))?)), Default::default()),
        None if resume => return Err(Error::field("command line", "--resume", "needs --output FILE to resume into")),
        None => (Box::new(BufWriter::new(std::io::stdout().lock())), Default::default()),
    })
}

/// An error writing the output, said of the output file by name: every line before it is a
/// complete record, so a run that can append (`--resume`) finishes it once the cause is fixed.
fn at_output(e: Error, output: Option<&Path>) -> Error {
    match e {
        Error::Io { path, source } if path == Path::new("output") => {
            let reason = match output {
                Some(_) => {
                    format!("{source}; the records written before it are complete: fix this and rerun with --resume")
                }
                None => source.to_string(),
            };
            let name = output.map_or_else(|| PathBuf::from("stdout"), Path::to_path_buf);
            Error::Io { path: name, source: Arc::new(std::io::Error::new(source.kind(), reason)) }
        }
        e => e,
    }
}

fn extract(args: cli::ExtractArgs) -> Result<ExitCode, Error> {
    let prompts = prompt_set(&args.prompts)?;
    let (input, input_name, total) = open_input(args.input.as_deref())?;
    refuse_overwrite(args.input.as_deref(), args.output.as_deref(), "--output")?;
    let (mut out, state) =
        open_output(args.output.as_deref(), args.resume, ("query", "queries"), pipeline::prepare_extract_resume)?;
    let extractor = gavel::extract::Extractor::new(load_backend(&args.model)?, prompts, args.config())?;
    let skip = state.kept;
    let bar = progress_bar(total, "queries");
    let interrupt = interruptible(bar.as_ref());
    let opts = ExtractOptions {
        input_name,
        batch: args.batch,
        attach: args.attach,
        rubric_dir: args.rubric_dir.clone(),
        skip,
        stop: Some(interrupt.flag()),
    };
    let s = pipeline::extract_stream(&extractor, input, &mut out, &opts, |s| {
        if let Some(b) = &bar {
            b.set_position((skip + s.queries) as u64);
        }
    })
    .map_err(|e| at_output(e, args.output.as_deref()))?;
    drop(interrupt);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = s.elapsed.as_secs_f64();
    eprintln!(
        "gavel extract: {}, {}, {}, {secs:.1} s ({:.2} s/query)",
        counted(s.queries, "query", "queries"),
        counted(s.nuggets, "nugget", "nuggets"),
        counted(s.errors, "error", "errors"),
        secs / s.queries.max(1) as f64
    );
    if s.interrupted {
        say_interrupted(args.output.as_deref());
        return Ok(ExitCode::from(INTERRUPTED));
    }
    if s.output_closed {
        return Ok(say_output_closed("queries"));
    }
    Ok(if s.errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The output closed under the run (`gavel verify | head`): say so, and exit as a process
/// killed by SIGPIPE does (128 + 13), so that `set -o pipefail` sees the run did not finish.
fn say_output_closed(what: &str) -> ExitCode {
    eprintln!("gavel: the output was closed (broken pipe): the run stopped, and the {what} after the last batch written were not done");
    ExitCode::from(141)
}

/// `n` and its noun: "1 query", "3 queries".
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Commands that print their result last end as Unix tools do when the reader of their stdout
/// closes it early (`gavel check rubrics/ | head -1`): killed by SIGPIPE, exit 141, where Rust
/// ignores the signal and a failed print panics (exit 101). verify and extract handle a closed
/// output themselves and say what was not done; calibrate prints before it writes its file, so
/// it goes on without its stdout (`say!`); serve has sockets: they keep it ignored.
fn die_on_closed_stdout() {
    // SAFETY: restoring a signal's default disposition, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
