//! The judge against the real default model (SmolLM2-135M-Instruct Q4_1), not a mock.

mod common;

use gavel::backend::{Backend, EmbeddedBackend, EmbeddedConfig, PromptGroup};
use gavel::{Error, JudgeConfig, JudgeMode, Label, Nugget, Task};
use std::sync::Arc;

const PASSAGE: &str = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. \
It was designed by the engineering company of Gustave Eiffel and is 330 metres tall.";

fn task(answer: &str, nuggets: &[&str]) -> Task {
    Task::new(None, answer, nuggets.iter().map(|n| Nugget::new(*n)).collect())
}

#[test]
fn scored_mode_returns_a_distribution_for_every_nugget() {
    let judge = common::judge(JudgeConfig::default());
    let tasks = vec![
        task(PASSAGE, &["The Eiffel Tower was completed in 1889", "The tower is in Rome", "It is 330 metres tall"]),
        Task::new(
            Some("Who wrote Hamlet?".into()),
            "Shakespeare wrote Hamlet around 1600.",
            vec![Nugget::new("Shakespeare wrote Hamlet")],
        ),
    ];
    for r in judge.judge(&tasks) {
        let j = r.expect("judged");
        for v in &j.verdicts {
            let p = v.probs.expect("scored mode has probabilities").to_array();
            let sum: f64 = p.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "probabilities sum to {sum}");
            assert!(p.iter().all(|x| (0.0..=1.0).contains(x)));
            assert_eq!(v.label, v.probs.unwrap().argmax());
            assert!((v.score - (p[0] + 0.5 * p[1])).abs() < 1e-9);
        }
    }
}

/// Blatant pairs: a statement copied from the passage vs an unrelated one. The default model's
/// label votes are near chance, so the claim is on what users get: the default configuration
/// (the shipped calibration over votes, likelihood/PMI and lexical signals) ranks every supported
/// nugget above its absent partner, and so does the model's own PMI alone.
#[test]
fn supported_nuggets_score_higher_than_absent_ones() {
    let shipped = gavel::calibrate::Calibrator::shipped();
    assert!(shipped.is_some(), "the shipped calibration loads");
    let judge = common::judge(JudgeConfig::default()).with_calibrator(shipped);
    let cases = [
        (PASSAGE, "The Eiffel Tower was completed in 1889", "Bananas are a good source of potassium"),
        (
            "Marie Curie was the first woman to win a Nobel Prize. She won it in physics in 1903.",
            "Marie Curie was the first woman to win a Nobel Prize",
            "The Great Wall of China is visible from the Moon",
        ),
        (
            "Python is a programming language created by Guido van Rossum and first released in 1991.",
            "Python was created by Guido van Rossum",
            "Penguins live at the North Pole",
        ),
        (
            "The Amazon river flows through Peru, Colombia and Brazil before reaching the Atlantic Ocean.",
            "The Amazon river flows through Brazil",
            "Mount Everest is in the Alps",
        ),
    ];
    let tasks: Vec<Task> = cases.iter().map(|(p, yes, no)| task(p, &[yes, no])).collect();
    let (mut wins, mut pmi_wins) = (0, 0);
    for (r, (_, yes, no)) in judge.judge(&tasks).into_iter().zip(cases) {
        let j = r.unwrap();
        let (s_yes, s_no) = (j.verdicts[0].score, j.verdicts[1].score);
        let pmi = |i: usize| j.verdicts[i].raw.as_ref().unwrap().nugget_lp.unwrap().pmi_mean.unwrap();
        eprintln!("{s_yes:.3} vs {s_no:.3} (PMI {:.2} vs {:.2}): {yes} / {no}", pmi(0), pmi(1));
        wins += usize::from(s_yes > s_no);
        pmi_wins += usize::from(pmi(0) > pmi(1));
    }
    assert_eq!(wins, cases.len(), "supported nugget ranked higher in {wins} of {} cases", cases.len());
    assert_eq!(pmi_wins, cases.len(), "PMI ranked the supported nugget higher in {pmi_wins} cases");
}

/// The raw reads of a judgement, bit for bit: label probabilities, log-probabilities and the
/// nugget likelihood summary (with its PMI) of every model verdict.
fn raw_bits(j: &gavel::Judgement) -> Vec<String> {
    j.verdicts
        .iter()
        .map(|v| format!("{:?}", v.raw.as_ref().map(|r| (r.probs.to_array(), r.logprobs, r.nugget_lp))))
        .collect()
}

/// Batch invariance: a record's raw outputs are bit-identical whether it is judged alone, in a
/// batch of 32, or in a shuffled batch (so its cells sit elsewhere in the shared KV cache and its
/// decode holds other prompts). 40 records of different lengths, with likelihood and PMI reads.
#[test]
fn verdicts_are_bit_identical_alone_batched_and_shuffled() {
    let path = gavel::model_store::ensure_default_model().expect("default model (run `make model`)");
    let backend = EmbeddedBackend::load(EmbeddedConfig::new(path).with_batch_invariant(true)).expect("load");
    let judge = gavel::Judge::new(std::sync::Arc::new(backend), gavel::PromptSet::builtin(), JudgeConfig::default());
    let facts = [
        "The Eiffel Tower is in Paris",
        "It was completed in 1889",
        "The tower is made of wood",
        "Gustave Eiffel's company built it",
    ];
    let tasks: Vec<Task> = (0..40)
        .map(|i| {
            let extra = " It is visited by many people every year.".repeat(i % 7);
            let answer =
                format!("{PASSAGE}{extra} Record {i} adds that {} people came in {}.", 1000 * (i + 1), 1990 + i);
            let n = 1 + i % facts.len();
            let mut t = task(&answer, &facts[..n]);
            if i % 3 == 0 {
                t.query = Some(format!("What is known about the tower (question {i})?"));
            }
            t
        })
        .collect();
    let alone: Vec<Vec<String>> =
        tasks.iter().map(|t| raw_bits(&judge.judge(std::slice::from_ref(t)).pop().unwrap().unwrap())).collect();
    let batched: Vec<Vec<String>> =
        tasks.chunks(32).flat_map(|c| judge.judge(c)).map(|r| raw_bits(&r.unwrap())).collect();
    // A fixed shuffle: every 7th record, wrapping.
    let order: Vec<usize> = (0..40).map(|k| (k * 7) % 40).collect();
    let shuffled_tasks: Vec<Task> = order.iter().map(|&i| tasks[i].clone()).collect();
    let shuffled: Vec<Vec<String>> =
        shuffled_tasks.chunks(32).flat_map(|c| judge.judge(c)).map(|r| raw_bits(&r.unwrap())).collect();
    for i in 0..40 {
        assert!(alone[i].iter().all(|v| v.contains("Some")), "record {i} has model reads: {:?}", alone[i]);
        assert_eq!(alone[i], batched[i], "record {i}: alone vs in a batch of 32");
    }
    for (k, &i) in order.iter().enumerate() {
        assert_eq!(alone[i], shuffled[k], "record {i}: alone vs shuffled");
    }
}

#[test]
fn reasoned_mode_output_always_parses() {
    let judge = common::judge(JudgeConfig::default().with_mode(JudgeMode::Reasoned));
    let tasks = vec![
        task(PASSAGE, &["The Eiffel Tower was completed in 1889", "The tower is made of wood"]),
        task("Canberra is the capital of Australia.", &["Sydney is the capital of Australia"]),
    ];
    for r in judge.judge(&tasks) {
        let j = r.expect("reasoned output parses under the grammar");
        for v in &j.verdicts {
            assert!(v.rationale.as_deref().is_some_and(|r| !r.is_empty()), "{v:?}");
            assert!(v.probs.is_none() && v.raw.is_none(), "{v:?}");
            // The verdict is the parsed label, credited as the label is, and the model's.
            assert_eq!(v.score, v.label.value(), "{v:?}");
            assert_eq!(v.by, gavel::aggregate::DecidedBy::Llm);
        }
        let mean = j.verdicts.iter().map(|v| v.label.value()).sum::<f64>() / j.verdicts.len() as f64;
        assert!((j.scores.all_score - mean).abs() < 1e-12, "{:?}", j.scores);
    }
}

#[test]
fn too_long_answers_are_judged_in_blocks_or_give_the_documented_error_or_a_truncation() {
    let path = gavel::model_store::ensure_default_model().unwrap();
    let small = Arc::new(EmbeddedBackend::load(EmbeddedConfig::new(path).with_n_ctx(256)).unwrap());
    let long = PASSAGE.repeat(30);
    let tasks =
        vec![task(&long, &["The Eiffel Tower was completed in 1889"]), task(PASSAGE, &["It is 330 metres tall"])];

    // By default: in blocks, each within the context, the nugget's verdict from one of them.
    let blocks = gavel::Judge::new(small.clone(), gavel::PromptSet::builtin(), JudgeConfig::default());
    let texts = blocks.judged_texts(&tasks[0]).unwrap();
    assert!(texts.len() > 1 && texts.iter().all(|t| small.count_tokens(t).unwrap() < 256), "{texts:?}");
    let out = blocks.judge(&tasks);
    let v = &out[0].as_ref().expect("judged in blocks").verdicts[0];
    assert!(v.block.is_some_and(|b| b < texts.len()), "{v:?}");
    assert!(out[1].as_ref().unwrap().verdicts[0].block.is_none(), "a text that fits is one block");
    // A passage too long for the context is cut the same way; blocks are numbered in order.
    let mut with_passages = task("", &["The Eiffel Tower was completed in 1889"]);
    with_passages.passages = vec![long.clone(), "Canberra is the capital of Australia.".into()];
    let texts = blocks.judged_texts(&with_passages).unwrap();
    assert!(texts.len() > 2 && texts.last().unwrap().starts_with("Canberra"), "{texts:?}");
    let v = &blocks.judge(std::slice::from_ref(&with_passages)).remove(0).unwrap().verdicts[0];
    assert!(v.block.is_some_and(|b| b < texts.len()), "{v:?}");

    // --no-blocks: the documented error.
    let strict = gavel::Judge::new(
        small.clone(),
        gavel::PromptSet::builtin(),
        JudgeConfig::default().with_blocks(false, None, 64),
    );
    let out = strict.judge(&tasks);
    match &out[0] {
        Err(Error::TooLong { tokens, n_ctx }) => assert!(*tokens > *n_ctx && *n_ctx == 256),
        other => panic!("expected TooLong, got {other:?}"),
    }
    assert!(out[1].is_ok(), "the other record is unaffected: {:?}", out[1]);

    // --truncate keeps its meaning: the start, cut to fit.
    let cutting = gavel::Judge::new(small, gavel::PromptSet::builtin(), JudgeConfig::default().with_truncate(true));
    let out = cutting.judge(&tasks);
    let j = out[0].as_ref().expect("truncation fits the prompt");
    assert!(j.truncated);
    assert!(!out[1].as_ref().unwrap().truncated);
}

#[test]
fn short_form_hybrid_tries_exact_match_then_containment_then_the_model() {
    let judge = common::judge(JudgeConfig::default());
    let q = || Some("capital of australia".to_string());
    let gold = || vec!["Canberra".to_string()];
    let tasks = vec![
        Task::short_form(q(), "Canberra", gold(), gavel::ShortForm::Hybrid),
        Task::short_form(q(), "It is Canberra, of course", gold(), gavel::ShortForm::Hybrid),
        Task::short_form(q(), "The capital is Sydney", gold(), gavel::ShortForm::Hybrid),
        Task::short_form(q(), "It is Canberra, of course", gold(), gavel::ShortForm::EmLlm),
    ];
    let out = judge.judge(&tasks);
    let v = |i: usize| out[i].as_ref().unwrap().verdicts[0].clone();
    use gavel::aggregate::DecidedBy;
    assert_eq!((v(0).label, v(0).by), (Label::Support, DecidedBy::ExactMatch));
    assert_eq!((v(1).label, v(1).by), (Label::Support, DecidedBy::Contains));
    assert_eq!(v(2).by, DecidedBy::Llm);
    assert!(v(2).probs.is_some());
    // The paper's EM + verifier sends a contained answer to the model.
    assert_eq!(v(3).by, DecidedBy::Llm);
}

#[test]
fn scored_verdicts_carry_the_nuggets_likelihood_and_its_pmi() {
    let judge = common::judge(JudgeConfig::default());
    let t = task(PASSAGE, &["The Eiffel Tower was completed in 1889", "The Great Wall of China is visible from space"]);
    let j = judge.judge(std::slice::from_ref(&t)).remove(0).unwrap();
    for v in &j.verdicts {
        let n = v.raw.as_ref().and_then(|r| r.nugget_lp).expect("nugget likelihood read in scored mode");
        assert!(n.tokens >= 4, "{n:?}");
        assert!(n.mean < 0.0 && n.min <= n.low3 && n.low3 <= n.mean, "{n:?}");
        let pmi = n.pmi_mean.expect("content-free baseline read");
        assert!(pmi.is_finite() && n.pmi_low3.is_some_and(f64::is_finite), "{n:?}");
    }
    // A statement the passage makes is far more expected after it than one it does not.
    let pmi = |i: usize| j.verdicts[i].raw.as_ref().unwrap().nugget_lp.unwrap().pmi_mean.unwrap();
    assert!(pmi(0) > pmi(1) + 0.5, "PMI stated {} vs absent {}", pmi(0), pmi(1));
    // The same nugget judged alone or with others reads the same likelihood (own sequence).
    let alone = judge.judge(&[task(PASSAGE, &["The Eiffel Tower was completed in 1889"])]).remove(0).unwrap();
    let (a, b) = (
        alone.verdicts[0].raw.as_ref().unwrap().nugget_lp.unwrap(),
        j.verdicts[0].raw.as_ref().unwrap().nugget_lp.unwrap(),
    );
    assert_eq!(a.tokens, b.tokens);
    assert!((a.mean - b.mean).abs() < 0.05 && (a.pmi_mean.unwrap() - b.pmi_mean.unwrap()).abs() < 0.05, "{a:?} {b:?}");
}

#[test]
fn no_likelihood_reads_no_nugget_likelihood_and_keeps_the_label_probabilities() {
    let t = task(PASSAGE, &["The Eiffel Tower was completed in 1889", "The Great Wall of China is visible from space"]);
    let with = common::judge(JudgeConfig::default()).judge(std::slice::from_ref(&t)).remove(0).unwrap();
    let without =
        common::judge(JudgeConfig::default().with_likelihood(false)).judge(std::slice::from_ref(&t)).remove(0).unwrap();
    for (a, b) in with.verdicts.iter().zip(&without.verdicts) {
        let (ra, rb) = (a.raw.as_ref().unwrap(), b.raw.as_ref().unwrap());
        assert!(ra.nugget_lp.is_some() && rb.nugget_lp.is_none(), "{ra:?} {rb:?}");
        // The same prompt and the same label positions: only the extra reads are gone. With the
        // likelihood, the content-free prompts share the call and so the cached head is shorter:
        // a different decode shape, hence the batch-noise bound of the batching test.
        for (x, y) in ra.probs.to_array().iter().zip(rb.probs.to_array()) {
            assert!((x - y).abs() < 0.05, "{ra:?} vs {rb:?}");
        }
    }
}

#[test]
fn render_shows_the_shared_prefix_and_per_nugget_suffixes() {
    let judge = common::judge(JudgeConfig::default());
    let t = task(PASSAGE, &["A", "B"]);
    let prompts = judge.render(&t).unwrap();
    assert_eq!(prompts.len(), 2);
    assert_eq!(prompts[0].prefix, prompts[1].prefix);
    assert!(prompts[0].prefix.contains(PASSAGE));
    assert!(prompts[0].prefix.starts_with("<|im_start|>system"), "{}", prompts[0].prefix);
    // The statement and the cue close the prompt, inside the assistant's reply; every token that
    // does not depend on the nugget ("Statement:") is in the shared prefix.
    assert!(prompts[0].prefix.ends_with("<|im_start|>assistant\nStatement:"), "{:?}", prompts[0].prefix);
    assert_eq!(prompts[0].suffix, " A Answer:");
    assert_eq!(prompts[1].suffix, " B Answer:");
}

/// The shared prefix ends with "Statement:" and the nugget starts its suffix: its first token
/// is read from the prefix's last position, so the nugget is read whole, with the numbers of a
/// split that keeps the statement in the suffix.
#[test]
fn a_nugget_that_starts_its_suffix_is_read_from_its_first_token() {
    let path = gavel::model_store::ensure_default_model().expect("default model");
    let b = EmbeddedBackend::load(EmbeddedConfig::new(path)).expect("load");
    let head = "<|im_start|>user\nPassage:\nThe Eiffel Tower is in Paris.<|im_end|>\n<|im_start|>assistant\n";
    let nugget = "Eiffel Tower stands in Paris.";
    let group = |prefix: String, suffix: String| {
        let a = suffix.find(nugget).unwrap();
        PromptGroup { prefix, suffixes: vec![suffix], spans: vec![Some((a, a + nugget.len()))], baseline: false }
    };
    let in_suffix = group(head.to_string(), format!("Statement: {nugget} Answer:"));
    let in_prefix = group(format!("{head}Statement:"), format!(" {nugget} Answer:"));
    let choices = vec![vec![" yes".to_string()], vec![" no".to_string()]];
    let read = |g: &PromptGroup| b.score(std::slice::from_ref(g), &choices).remove(0).remove(0).unwrap();
    let (x, y) = (read(&in_suffix), read(&in_prefix));
    let (lx, ly) = (x.span_logprobs.unwrap(), y.span_logprobs.unwrap());
    assert_eq!(lx.len(), b.count_tokens(nugget).unwrap(), "{lx:?}");
    assert_eq!(ly.len(), lx.len(), "the first token is read too: {lx:?} vs {ly:?}");
    for (p, q) in lx.iter().zip(&ly) {
        assert!((p - q).abs() < 0.05, "same tokens, same numbers: {lx:?} vs {ly:?}");
    }
    for (p, q) in x.probs.iter().zip(&y.probs) {
        assert!((p - q).abs() < 0.02, "{:?} vs {:?}", x.probs, y.probs);
    }
}

/// The part of the prompt that every answer of a call shares (system prompt, instructions,
/// demonstrations) is evaluated once per call, and a call with the same head reuses it; the
/// scores stay within batch noise of scoring each answer alone. Own backend: the usage counters
/// of the shared one move with the other tests.
#[test]
fn the_head_every_answer_shares_is_evaluated_once() {
    let path = gavel::model_store::ensure_default_model().expect("default model");
    let b = EmbeddedBackend::load(EmbeddedConfig::new(path)).expect("load");
    let head = "<|im_start|>system\nYou are a careful fact checker. Read the passage, then say whether it \
supports the statement: yes if it states everything the statement says, no if it does not.\n\
Example. Passage: The Amazon river flows into the Atlantic Ocean. Statement: The Amazon flows into \
the Pacific. Answer: no<|im_end|>\n<|im_start|>user\nPassage:\n";
    let facts =
        ["The Eiffel Tower is in Paris.", "Water boils at 100 degrees.", "Rome is in Italy.", "Cats are mammals."];
    let groups: Vec<PromptGroup> = facts
        .iter()
        .map(|f| {
            PromptGroup::new(
                format!("{head}{f}\n\n"),
                vec![format!("Statement: {f}\nYes or no?<|im_end|>\n<|im_start|>assistant\n")],
            )
        })
        .collect();
    let choices = vec![vec!["yes".to_string(), "Yes".to_string()], vec!["no".to_string(), "No".to_string()]];
    let tokens = |f: &dyn Fn() -> Vec<Vec<gavel::Result<gavel::backend::LabelScore>>>| {
        let before = b.usage().prompt_tokens;
        let out = f();
        (out, b.usage().prompt_tokens - before)
    };
    let (together, t_together) = tokens(&|| b.score(&groups, &choices));
    let (again, t_again) = tokens(&|| b.score(&groups, &choices));
    let mut t_alone = 0;
    for (g, scored) in groups.iter().zip(&together) {
        let (alone, t) = tokens(&|| b.score(std::slice::from_ref(g), &choices));
        t_alone += t;
        let (pa, pb) = (&alone[0][0].as_ref().unwrap().probs, &scored[0].as_ref().unwrap().probs);
        assert!(pa.iter().zip(pb).all(|(x, y)| (x - y).abs() < 0.05), "alone {pa:?} vs together {pb:?}");
    }
    let h = b.count_tokens(head).unwrap();
    let saved = t_alone - t_together;
    // Four answers, one head: three copies saved (the last head token may merge with the text).
    assert!(saved >= 3 * (h - 1) && saved <= 3 * (h + 1), "head {h} tokens, saved {saved} ({t_alone} vs {t_together})");
    // The same head again: already in the cache.
    assert!(t_together - t_again >= h - 1 && t_together - t_again <= h + 1, "{t_together} then {t_again}");
    for (x, y) in together.iter().zip(&again) {
        assert_eq!(x[0].as_ref().unwrap().probs, y[0].as_ref().unwrap().probs, "same call, same head: same numbers");
    }
    // The head is the call's own: after a call with another head, the same numbers again.
    let other = PromptGroup::new("<|im_start|>user\nSomething else.\n", vec!["Yes or no?".into()]);
    b.score(std::slice::from_ref(&other), &choices);
    let third = b.score(&groups, &choices);
    for (x, y) in together.iter().zip(&third) {
        assert_eq!(x[0].as_ref().unwrap().probs, y[0].as_ref().unwrap().probs, "whatever ran before: same numbers");
    }
}

/// The token budget accounts for every unique prompt token of a scoring call, by part: the
/// baseline (PMI) prompts apart, and none of them without the likelihood read.
#[test]
fn the_token_budget_accounts_for_every_prompt_token_by_part() {
    let path = gavel::model_store::ensure_default_model().expect("default model (run `make model`)");
    let backend = std::sync::Arc::new(EmbeddedBackend::load(EmbeddedConfig::new(path)).expect("load"));
    let tasks = vec![
        task(PASSAGE, &["The Eiffel Tower was completed in 1889", "The tower is in Rome"]),
        task("Canberra is the capital of Australia.", &["Sydney is the capital of Australia"]),
    ];
    for likelihood in [true, false] {
        let judge = gavel::Judge::new(
            backend.clone(),
            gavel::PromptSet::builtin(),
            JudgeConfig::default().with_likelihood(likelihood),
        );
        let before = backend.usage();
        for r in judge.judge(&tasks) {
            r.unwrap();
        }
        let after = backend.usage();
        let (a, b) = (after.budget, before.budget);
        let parts = [a.head - b.head, a.prefix - b.prefix, a.suffix - b.suffix, a.baseline - b.baseline];
        assert_eq!(parts.iter().sum::<usize>(), after.prompt_tokens - before.prompt_tokens, "{parts:?}");
        assert!(parts[1] > 0 && parts[2] > 0, "answers and nuggets cost tokens: {parts:?}");
        assert_eq!(parts[3] > 0, likelihood, "baseline tokens only with the likelihood read: {parts:?}");
    }
}

/// A nugget's content-free baseline is read once per judge: a later call (another answer to the
/// same rubric, an RL rollout) reuses it and pays no baseline tokens, with the same PMI inputs.
#[test]
fn the_content_free_baseline_is_read_once_across_calls() {
    let path = gavel::model_store::ensure_default_model().expect("default model (run `make model`)");
    let backend = std::sync::Arc::new(EmbeddedBackend::load(EmbeddedConfig::new(path)).expect("load"));
    let judge = gavel::Judge::new(backend.clone(), gavel::PromptSet::builtin(), JudgeConfig::default());
    let nuggets = ["The Eiffel Tower was completed in 1889", "The tower is in Rome"];
    let baseline_tokens = |t: &Task| {
        let before = backend.usage().budget.baseline;
        let j = judge.judge(std::slice::from_ref(t)).remove(0).unwrap();
        (j, backend.usage().budget.baseline - before)
    };
    let (first, paid) = baseline_tokens(&task(PASSAGE, &nuggets));
    assert!(paid > 0, "the first call reads the baselines");
    let (second, again) = baseline_tokens(&task("The tower stands in Paris and opened in 1889.", &nuggets));
    assert_eq!(again, 0, "the second call reuses them");
    for (a, b) in first.verdicts.iter().zip(&second.verdicts) {
        let (a, b) = (a.raw.as_ref().unwrap().nugget_lp.unwrap(), b.raw.as_ref().unwrap().nugget_lp.unwrap());
        // PMI = mean log P(nugget | passage) - mean log P(nugget | no passage): the baseline
        // term is the same number in both calls.
        let base = |n: gavel::aggregate::NuggetLp| n.mean - n.pmi_mean.unwrap();
        assert!((base(a) - base(b)).abs() < 1e-9, "{a:?} {b:?}");
    }
    // A new nugget still gets its own baseline.
    let (_, fresh) = baseline_tokens(&task(PASSAGE, &["Gustave Eiffel designed it"]));
    assert!(fresh > 0);
}

/// In a long passage, each nugget is also read after its best-matching window alone: a
/// statement made in the last sentence of 60 unrelated ones is far more expected after that
/// window than one the passage never makes; short passages get no extra read.
#[test]
fn long_passages_get_a_read_after_the_nuggets_best_window() {
    let judge = common::judge(JudgeConfig::default());
    let mut long = String::new();
    for i in 0..60 {
        long.push_str(&format!("Paragraph {i} describes the weather, the rivers and the old castles of the valley. "));
    }
    long.push_str("Marie Curie won the Nobel Prize in Chemistry in 1911.");
    let stated = "Marie Curie won the Nobel Prize in Chemistry in 1911";
    let absent = "The Great Wall of China is visible from space";
    let j = judge.judge(&[task(&long, &[stated, absent])]).remove(0).unwrap();
    let w = |i: usize| j.verdicts[i].raw.as_ref().unwrap().window_lp.expect("window read for a long passage");
    assert!(w(0).pmi_mean.unwrap() > w(1).pmi_mean.unwrap() + 0.5, "{:?} vs {:?}", w(0), w(1));
    assert!(w(0).mean > j.verdicts[1].raw.as_ref().unwrap().nugget_lp.unwrap().mean, "{:?}", w(0));
    let short = judge.judge(&[task(PASSAGE, &[stated])]).remove(0).unwrap();
    assert!(short.verdicts[0].raw.as_ref().unwrap().window_lp.is_none());
}

/// A record with `passages`: each nugget is judged against each passage and the one that
/// supports it best decides, named in the verdict's `block`.
#[test]
fn a_passages_record_is_judged_per_passage_and_the_best_decides() {
    let shipped = gavel::calibrate::Calibrator::shipped();
    let judge = common::judge(JudgeConfig::default()).with_calibrator(shipped);
    let line = serde_json::json!({
        "query": "When was the Eiffel Tower completed?",
        "passages": [
            "Bananas are a good source of potassium and grow in tropical climates.",
            PASSAGE,
            "Mount Everest is the highest mountain above sea level."
        ],
        "nuggets": ["The Eiffel Tower was completed in 1889"]
    })
    .to_string();
    let t = gavel::record::parse_record(&line, "test", None, gavel::record::ShortForm::Hybrid).unwrap();
    assert_eq!(judge.judged_texts(&t).unwrap().len(), 3);
    let j = judge.judge(std::slice::from_ref(&t)).remove(0).unwrap();
    let v = &j.verdicts[0];
    assert_eq!(v.block, Some(1), "{v:?}");
    assert_eq!(v.label, Label::Support, "{v:?}");
    let span = v.block_span.expect("where the block lies");
    assert_eq!((span.passage, span.start, span.end), (Some(1), 0, PASSAGE.len()));
    // An empty passage is refused, naming it.
    let bad = serde_json::json!({"passages": ["a", " "], "nuggets": ["x"]}).to_string();
    let e = gavel::record::parse_record(&bad, "f:3", None, gavel::record::ShortForm::Hybrid).unwrap_err().to_string();
    assert!(e.contains("passages[1]") && e.contains("f:3"), "{e}");
}

/// A 20,000-token answer of unrelated text with one sentence that states the nugget, at the
/// start, in the middle and at the end: judged in blocks (not `too_long`), the nugget is
/// supported in every placement and the deciding block is one that holds the sentence.
#[test]
fn a_long_answer_is_judged_in_blocks_and_the_block_with_the_statement_decides() {
    let shipped = gavel::calibrate::Calibrator::shipped();
    let judge = common::judge(JudgeConfig::default().with_blocks(true, Some(2048), 64)).with_calibrator(shipped);
    let filler: Vec<String> = (0..1010)
        .map(|i| format!("Report {i} notes that the valley's rivers, forests and old castles drew many visitors."))
        .collect();
    let statement = "Marie Curie won the Nobel Prize in Chemistry in 1911.";
    let tasks: Vec<Task> = [0, 505, 1010]
        .iter()
        .map(|&at| {
            let mut parts = filler.clone();
            parts.insert(at, statement.to_string());
            task(&parts.join(" "), &["Marie Curie won the Nobel Prize in Chemistry in 1911"])
        })
        .collect();
    let tokens = judge.backend().count_tokens(&tasks[0].answer).unwrap();
    assert!(tokens >= 20_000, "the answer has {tokens} tokens");
    for (t, j) in tasks.iter().zip(judge.judge(&tasks)) {
        let j = j.expect("judged in blocks, not too_long");
        let texts = judge.judged_texts(t).unwrap();
        assert!(texts.len() >= 10, "{} blocks", texts.len());
        let v = &j.verdicts[0];
        let block = v.block.expect("the deciding block is named");
        assert!(texts[block].contains(statement), "block {block} of {} decided: {v:?}", texts.len());
        // Where it lies is kept, so the block's text can be read again from the record.
        assert_eq!(gavel::aggregate::BlockSpan::text(v.block_span.as_ref(), &t.answer, &t.passages), texts[block]);
        assert_eq!(v.label, Label::Support, "{v:?}");
    }
}

#[test]
fn hidden_reads_have_the_models_width_and_leave_the_verdict_unchanged() {
    let path = gavel::model_store::ensure_default_model().unwrap();
    let reading: Arc<dyn Backend> =
        Arc::new(EmbeddedBackend::load(EmbeddedConfig::new(&path).with_hidden(true)).unwrap());
    assert!(reading.reads_hidden() && !common::backend().reads_hidden());
    let with = gavel::Judge::new(reading, gavel::PromptSet::builtin(), JudgeConfig::default());
    let without = common::judge(JudgeConfig::default());
    let tasks = vec![task(PASSAGE, &["The Eiffel Tower was completed in 1889", "The tower is in Rome"])];
    let a = with.judge(&tasks).remove(0).unwrap();
    let b = without.judge(&tasks).remove(0).unwrap();
    // The width is the model's embedding size (SmolLM2-135M: 576), read from the model itself.
    let width = a.verdicts[0].raw.as_ref().unwrap().hidden.as_ref().unwrap().last.len();
    assert_eq!(width, 576);
    for (x, y) in a.verdicts.iter().zip(&b.verdicts) {
        let (rx, ry) = (x.raw.as_ref().unwrap(), y.raw.as_ref().unwrap());
        let h = rx.hidden.as_ref().expect("read");
        assert_eq!(h.nugget_mean.as_ref().expect("mean over the nugget").len(), width);
        assert!(h.last.iter().chain(h.nugget_mean.as_ref().unwrap()).all(|v| v.is_finite()));
        assert!(ry.hidden.is_none(), "not read unless asked");
        // Reading the hidden states does not change what the model says.
        assert_eq!(rx.probs, ry.probs);
        assert_eq!(rx.nugget_lp, ry.nugget_lp);
    }
    let (h0, h1) = (&a.verdicts[0].raw.as_ref().unwrap().hidden, &a.verdicts[1].raw.as_ref().unwrap().hidden);
    assert!(h0 != h1, "two nuggets, two reads");
    // The same prompt again: the same read, up to the batch's rounding (the second call shares
    // its decodes differently: the baseline is remembered).
    let again = with.judge(&tasks).remove(0).unwrap();
    let (x, y) = (&again.verdicts[0].raw.as_ref().unwrap().hidden.as_ref().unwrap().last, &h0.as_ref().unwrap().last);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| f64::from(*p) * f64::from(*q)).sum::<f64>();
    let cos = dot(x, y) / (dot(x, x) * dot(y, y)).sqrt();
    assert!(cos > 0.999, "cosine {cos}");
    // The middle layer's reads (the residual stream halfway up): the model's width, finite,
    // not the final layer's.
    let mid = |j: &gavel::Judgement, i: usize| j.verdicts[i].raw.as_ref().unwrap().hidden.as_ref().unwrap().mid.clone();
    for i in 0..2 {
        let h = a.verdicts[i].raw.as_ref().unwrap().hidden.as_ref().unwrap();
        let (m, mm) = (h.mid.as_ref().expect("middle layer"), h.mid_nugget_mean.as_ref().expect("its nugget mean"));
        assert_eq!((m.len(), mm.len()), (width, width));
        assert!(m.iter().chain(mm).all(|v| v.is_finite()));
        assert!(
            dot(m, &h.last) / (dot(m, m) * dot(&h.last, &h.last)).sqrt() < 0.99,
            "the middle layer is not the last"
        );
    }
    // Each prompt gets its own row of the layer: judged behind another record (its prompts at
    // other places of the decode), a verdict's middle read is the one it has alone, and closer to
    // it than to the other nugget's.
    let other = task("Paris is the capital of France. It lies on the Seine.", &["Paris lies on the Seine"]);
    let behind = with.judge(&[other, tasks[0].clone()]).remove(1).unwrap();
    let (alone, moved, second) = (mid(&a, 0).unwrap(), mid(&behind, 0).unwrap(), mid(&a, 1).unwrap());
    let cos_m = |x: &[f32], y: &[f32]| dot(x, y) / (dot(x, x) * dot(y, y)).sqrt();
    assert!(cos_m(&alone, &moved) > 0.999, "cosine {}", cos_m(&alone, &moved));
    assert!(cos_m(&alone, &moved) > cos_m(&alone, &second));
    // Written into verify's output and read back.
    let line = serde_json::to_string(&a.verdicts[0]).unwrap();
    let back: gavel::Verdict = serde_json::from_str(&line).unwrap();
    assert_eq!(&back.raw.as_ref().unwrap().hidden, h0);
}

/// Raw prefill (what `gavel bench` compares against) in batch-invariant mode, where a decode
/// whose length leaves one token over a physical batch gets a padding token without logits: the
/// speed read must take the last real token's logits, whatever the length.
#[test]
fn batch_invariant_prefill_reads_the_last_real_token_at_every_length() {
    use gavel::backend::Backend;
    let path = gavel::model_store::ensure_default_model().expect("default model (run `make model`)");
    let backend = EmbeddedBackend::load(EmbeddedConfig::new(path).with_batch_invariant(true)).expect("load");
    let ub = gavel::backend::llama::FA_TILE_Q as usize - 1;
    let mut padded = 0;
    // Nothing to evaluate is an error, not a dead engine.
    assert!(matches!(backend.prefill(""), Err(Error::Llama { op: "prefill", .. })));
    for words in (1..4).chain(ub - 6..ub + 4) {
        let text = " the".repeat(words);
        let (n, took) = backend.prefill(&text).unwrap_or_else(|e| panic!("{words} words: {e}"));
        assert!(n >= words && took.as_nanos() > 0, "{words} words: {n} tokens");
        padded += usize::from(n % ub == 1);
    }
    assert!(padded > 0, "no length padded: the case is not covered");
}

/// The stop flag (what Ctrl-C sets) ends a stream after the batch in flight, without timing: the
/// flag is raised from the progress callback after the first batch, so exactly that batch is
/// written, whole, and the next record is never read.
#[test]
fn a_stop_ends_the_stream_after_the_batch_in_flight() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let judge = common::judge(JudgeConfig::default());
    let input: String = (0..5)
        .map(|i| format!("{{\"id\": \"r{i}\", \"answer\": \"{PASSAGE}\", \"nuggets\": [\"It is 330 metres tall\"]}}\n"))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = gavel::pipeline::VerifyOptions { batch_records: 2, stop: Some(stop.clone()), ..Default::default() };
    let mut out = Vec::new();
    let mut calls = 0;
    let summary = gavel::pipeline::verify_stream(&judge, input.as_bytes(), &mut out, &opts, |_| {
        calls += 1;
        stop.store(true, Ordering::SeqCst);
    })
    .unwrap();
    let ids: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["r0", "r1"], "the first batch, whole, and nothing after it");
    assert_eq!((summary.records, summary.interrupted, calls), (2, true, 1), "{summary:?}");
    // Without the flag the same input runs to its end.
    let mut all = Vec::new();
    let whole =
        gavel::pipeline::verify_stream(&judge, input.as_bytes(), &mut all, &Default::default(), |_| {}).unwrap();
    assert_eq!((whole.records, whole.interrupted), (5, false));
}
