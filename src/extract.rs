//! Rubric extraction: a query (and optional retrieved passages) -> a list of atomic nuggets
//! labeled vital or okay, as AutoNuggetizer does it, on any [`Backend`].
//!
//! - **Creation**: passages are read in windows; each window's prompt holds the query, the
//!   window and the current list, and the model writes the updated list. Generation is
//!   constrained by a GBNF grammar (`prompts/extract.gbnf.jinja`) to a JSON list of at least 5
//!   and at most N short strings, so it always parses; nuggets are then cut to W words. With no
//!   passages, one window from the query.
//! - **Importance**: one forward pass per nugget, the label-token probabilities of `vital` and
//!   `okay` (`prompts/importance.toml`), like the judge's scored mode.
//! - **Dedup**: nuggets equal after normalisation are merged; with a threshold below 1, so are
//!   nuggets whose word sets overlap at least that much (Jaccard).
//!
//! Many queries are processed in lockstep: window k of every query goes to the backend in one
//! call, so an embedded backend batches them.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::{Backend, PromptGroup};
use crate::error::{Error, Result};
use crate::prompt::PromptSet;
use crate::rubric::Importance;

/// Limits of an extraction.
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    /// Most nuggets per query.
    pub max_nuggets: usize,
    /// Fewest items the model must write per window (the grammar enforces it; duplicates
    /// are merged afterwards, so a query can end with fewer).
    pub min_nuggets: usize,
    /// Most words per nugget.
    pub max_words: usize,
    /// Passages per window.
    pub window: usize,
    /// Most characters of one passage given to the model (longer ones are cut).
    pub passage_chars: usize,
    /// Merge nuggets whose word sets overlap at least this much (1.0: exact duplicates only).
    pub dedup_threshold: f64,
    /// Token budget of one generated list; a list cut by it keeps its complete items.
    pub max_tokens: usize,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            max_nuggets: 30,
            min_nuggets: 5,
            max_words: 12,
            window: 8,
            passage_chars: 1500,
            dedup_threshold: 0.8,
            max_tokens: 400,
        }
    }
}

/// What to extract nuggets for.
#[derive(Debug, Clone, Default)]
pub struct ExtractTask {
    /// The search query.
    pub query: String,
    /// Retrieved passages (may be empty).
    pub passages: Vec<String>,
}

/// One extracted nugget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtractedNugget {
    /// The atomic fact.
    pub text: String,
    /// vital or okay, from the model's vote.
    pub importance: Importance,
    /// P(vital) renormalised over vital/okay.
    pub p_vital: f64,
}

/// The result for one query.
#[derive(Debug, Clone, Serialize)]
pub struct Extraction {
    /// Nuggets, most important first (the model's order), deduplicated.
    pub nuggets: Vec<ExtractedNugget>,
    /// Windows the passages were read in.
    pub windows: usize,
    /// Generated items dropped as duplicates, over all windows.
    pub merged: usize,
}

/// Extracts nugget rubrics with a backend.
pub struct Extractor {
    backend: Arc<dyn Backend>,
    prompts: PromptSet,
    config: ExtractConfig,
    grammar: String,
}

#[derive(Serialize)]
struct ExtractVars<'a> {
    query: &'a str,
    passages: &'a [String],
    nuggets: &'a [String],
    max_nuggets: usize,
    max_words: usize,
}

impl Extractor {
    /// An extractor over `backend` with the given templates and limits.
    pub fn new(backend: Arc<dyn Backend>, prompts: PromptSet, config: ExtractConfig) -> Result<Self> {
        if config.max_nuggets == 0 || config.max_words == 0 || config.window == 0 {
            return Err(Error::field("extract", "max_nuggets/max_words/window", "must be at least 1"));
        }
        let grammar = prompts.render_file(
            "extract.gbnf.jinja",
            minijinja::context! {
                min_nuggets => config.min_nuggets.clamp(1, config.max_nuggets),
                max_nuggets => config.max_nuggets,
                max_words => config.max_words,
                max_chars => (config.max_words * 8).clamp(16, 120),
            },
        )?;
        Ok(Extractor { backend, prompts, config, grammar })
    }

    /// The limits in use.
    pub fn config(&self) -> &ExtractConfig {
        &self.config
    }

    /// Extract for every task; one result per task, in order. Errors are per task.
    pub fn extract(&self, tasks: &[ExtractTask]) -> Vec<Result<Extraction>> {
        let windows: Vec<Vec<Vec<String>>> = tasks.iter().map(|t| self.windows(t)).collect();
        let rounds = windows.iter().map(Vec::len).max().unwrap_or(0);
        let mut lists: Vec<Result<Vec<String>>> = tasks.iter().map(|_| Ok(Vec::new())).collect();
        let mut merged = vec![0usize; tasks.len()];
        let max_tokens = self.config.max_tokens.max(8);
        for round in 0..rounds {
            let mut who = Vec::new();
            let mut groups = Vec::new();
            for (i, t) in tasks.iter().enumerate() {
                let (Some(window), Ok(list)) = (windows[i].get(round), &lists[i]) else { continue };
                let vars = ExtractVars {
                    query: &t.query,
                    passages: window,
                    nuggets: list,
                    max_nuggets: self.config.max_nuggets,
                    max_words: self.config.max_words,
                };
                match self.prompts.render_messages("extract", &vars).and_then(|m| self.backend.format_chat(&m)) {
                    Ok(prompt) => {
                        who.push(i);
                        groups.push(PromptGroup::new(prompt, vec![String::new()]));
                    }
                    Err(e) => lists[i] = Err(e),
                }
            }
            // The whole prompt is the prefix; the empty suffix makes the backend generate after it.
            let groups: Vec<PromptGroup> = groups.into_iter().map(split_last_line).collect();
            let outputs = self.backend.generate(&groups, Some(&self.grammar), max_tokens);
            for (i, out) in who.into_iter().zip(outputs) {
                let text = out.into_iter().next().unwrap_or_else(|| Err(Error::Internal("no output".into())));
                lists[i] = text.and_then(|t| parse_list(&t)).map(|l| {
                    let (kept, n) = self.clean(l);
                    merged[i] += n;
                    kept
                });
            }
        }
        let lists: Vec<Result<(Vec<String>, usize)>> =
            lists.into_iter().zip(&merged).map(|(l, m)| l.map(|l| (l, *m))).collect();
        // Importance: one scoring call for every nugget of every task.
        let words = self.prompts.importance_words();
        let choices = vec![words.vital.clone(), words.okay.clone()];
        let mut groups = Vec::new();
        let mut owners = Vec::new();
        for (i, (t, l)) in tasks.iter().zip(&lists).enumerate() {
            let Ok((nuggets, _)) = l else { continue };
            if nuggets.is_empty() {
                continue;
            }
            match self.importance_group(&t.query, nuggets) {
                Ok(g) => {
                    owners.push(i);
                    groups.push(g);
                }
                Err(e) => tracing::warn!("importance prompt for task {i}: {e}"),
            }
        }
        let scores = self.backend.score(&groups, &choices);
        let mut votes: Vec<Option<Vec<Result<f64>>>> = tasks.iter().map(|_| None).collect();
        for (i, row) in owners.into_iter().zip(scores) {
            votes[i] = Some(row.into_iter().map(|r| r.map(|s| s.probs[0])).collect());
        }
        lists
            .into_iter()
            .zip(votes)
            .zip(&windows)
            .map(|((l, v), w)| {
                let (nuggets, merged) = l?;
                let votes = v.unwrap_or_default();
                let nuggets = nuggets
                    .into_iter()
                    .enumerate()
                    .map(|(k, text)| {
                        let p_vital = match votes.get(k) {
                            Some(Ok(p)) => *p,
                            Some(Err(e)) => return Err(e.clone()),
                            None => 0.5,
                        };
                        let importance = if p_vital >= 0.5 { Importance::Vital } else { Importance::Okay };
                        Ok(ExtractedNugget { text, importance, p_vital })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Extraction { nuggets, windows: w.len(), merged })
            })
            .collect()
    }

    fn windows(&self, t: &ExtractTask) -> Vec<Vec<String>> {
        let passages: Vec<String> = t
            .passages
            .iter()
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty())
            .map(|p| cut_chars(&p, self.config.passage_chars))
            .collect();
        if passages.is_empty() {
            return vec![Vec::new()];
        }
        passages.chunks(self.config.window).map(<[String]>::to_vec).collect()
    }

    fn importance_group(&self, query: &str, nuggets: &[String]) -> Result<PromptGroup> {
        let render = |n: &str| {
            self.prompts
                .render_messages("importance", minijinja::context! { query => query, nugget => n })
                .and_then(|m| self.backend.format_chat(&m))
        };
        let mut group = PromptGroup::split(render, nuggets.iter().map(String::as_str))?;
        group.spans.clear();
        Ok(group)
    }

    /// Normalise, cut to the word limit, drop empties and duplicates, keep the first N.
    fn clean(&self, list: Vec<String>) -> (Vec<String>, usize) {
        let mut kept: Vec<(String, BTreeSet<String>)> = Vec::new();
        let mut merged = 0;
        for n in list {
            let words: Vec<&str> = n.split_whitespace().take(self.config.max_words).collect();
            let text = words.join(" ").trim_matches(|c: char| c == ',' || c == ';').trim().to_string();
            let key = norm_words(&text);
            if key.is_empty() {
                continue;
            }
            let dup = kept.iter().any(|(_, k)| *k == key || jaccard(k, &key) >= self.config.dedup_threshold);
            if dup {
                merged += 1;
                continue;
            }
            kept.push((text, key));
        }
        if kept.len() > self.config.max_nuggets {
            kept.truncate(self.config.max_nuggets);
        }
        (kept.into_iter().map(|(t, _)| t).collect(), merged)
    }
}

/// Generation prompts: the last line of the prompt goes into the suffix so the backend sees a
/// non-empty suffix (it decodes prefix + suffix and generates after it).
fn split_last_line(g: PromptGroup) -> PromptGroup {
    let p = g.prefix;
    let cut = p.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
    PromptGroup::new(&p[..cut], vec![p[cut..].to_string()])
}

fn cut_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Lower-cased alphanumeric words.
fn norm_words(s: &str) -> BTreeSet<String> {
    s.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let inter = a.intersection(b).count();
    let union = a.union(b).count();
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// Parse the grammar's output: a JSON list of strings.
pub fn parse_list(text: &str) -> Result<Vec<String>> {
    let text = text.trim();
    serde_json::from_str::<Vec<String>>(text)
        .or_else(|e| match text.rfind("\", \"") {
            // Cut by the token budget: keep the complete items.
            Some(i) => serde_json::from_str::<Vec<String>>(&format!("{}]", &text[..=i])),
            // Cut inside the first item: close it.
            None => serde_json::from_str::<Vec<String>>(&format!("{text}\"]")).map_err(|_| e),
        })
        .map_err(|e| Error::Output { output: text.to_string(), reason: format!("not a JSON list of strings: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extractor_config(threshold: f64) -> ExtractConfig {
        ExtractConfig {
            max_nuggets: 3,
            min_nuggets: 2,
            max_words: 4,
            dedup_threshold: threshold,
            ..ExtractConfig::default()
        }
    }

    struct NoBackend;

    impl Backend for NoBackend {
        fn info(&self) -> crate::backend::BackendInfo {
            crate::backend::BackendInfo {
                kind: "none".into(),
                model: "none".into(),
                n_ctx: 0,
                n_threads: 0,
                batch_invariant: false,
            }
        }
        fn format_chat(&self, m: &[crate::prompt::Message]) -> Result<String> {
            Ok(m.iter().map(|m| format!("{}: {}\n", m.role, m.content)).collect())
        }
        fn count_tokens(&self, t: &str) -> Result<usize> {
            Ok(t.len())
        }
        fn score(&self, g: &[PromptGroup], _: &[Vec<String>]) -> Vec<Vec<Result<crate::backend::LabelScore>>> {
            g.iter().map(|g| g.suffixes.iter().map(|_| Err(Error::Internal("no model".into()))).collect()).collect()
        }
        fn generate(&self, g: &[PromptGroup], _: Option<&str>, _: usize) -> Vec<Vec<Result<String>>> {
            g.iter().map(|g| g.suffixes.iter().map(|_| Err(Error::Internal("no model".into()))).collect()).collect()
        }
        fn usage(&self) -> crate::backend::Usage {
            crate::backend::Usage::default()
        }
        fn prefill(&self, _: &str) -> Result<(usize, std::time::Duration)> {
            Err(Error::Internal("no model".into()))
        }
    }

    fn ex(threshold: f64) -> Extractor {
        Extractor::new(Arc::new(NoBackend), PromptSet::builtin(), extractor_config(threshold)).unwrap()
    }

    #[test]
    fn clean_cuts_words_dedups_and_bounds() {
        let list = vec![
            "The tower is in Paris France Europe".to_string(),
            "the Tower is in PARIS, France!".to_string(),
            "  ".to_string(),
            "Completed in 1889".to_string(),
            "Designed by Eiffel".to_string(),
            "Made of iron".to_string(),
        ];
        let (kept, merged) = ex(1.0).clean(list.clone());
        assert_eq!(kept, vec!["The tower is in", "Completed in 1889", "Designed by Eiffel"]);
        // "the Tower is in" normalises to the same words as the first: merged.
        assert_eq!(merged, 1);
        let (kept, _) = ex(0.5).clean(vec!["tower in Paris".into(), "the tower in Paris".into()]);
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn grammar_is_rendered_with_the_limits() {
        let e = ex(1.0);
        assert!(e.grammar.contains("{1,2}") && e.grammar.contains("{0,31}"), "{}", e.grammar);
        assert_eq!(parse_list("[\"a b\", \"c\"]").unwrap(), vec!["a b", "c"]);
        assert!(parse_list("a, b").is_err());
        assert_eq!(parse_list("[\"a b\", \"c d\", \"e").unwrap(), vec!["a b", "c d"]);
        assert_eq!(parse_list("[\"a b c").unwrap(), vec!["a b c"]);
    }

    #[test]
    fn windows_cover_every_passage_and_queries_alone_get_one() {
        let e = ex(1.0);
        let t = ExtractTask { query: "q".into(), passages: (0..20).map(|i| format!("p{i}")).collect() };
        let w = e.windows(&t);
        assert_eq!(w.len(), 3);
        assert_eq!(w.iter().map(Vec::len).sum::<usize>(), 20);
        assert_eq!(e.windows(&ExtractTask { query: "q".into(), passages: vec![] }).len(), 1);
    }

    #[test]
    fn backend_errors_are_per_task() {
        let e = ex(1.0);
        let r = e.extract(&[ExtractTask { query: "q".into(), passages: vec!["p".into()] }]);
        assert!(r[0].as_ref().unwrap_err().to_string().contains("no model"));
    }

    #[test]
    fn split_keeps_the_text() {
        let g = split_last_line(PromptGroup::new("a\nb\nc\n", vec![String::new()]));
        assert_eq!(format!("{}{}", g.prefix, g.suffixes[0]), "a\nb\nc\n");
        assert_eq!(g.suffixes[0], "c\n");
    }
}
