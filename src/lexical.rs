//! Lexical normalisation and matching, without a model: SQuAD-style normalisation, exact match,
//! containment on word boundaries, content words and their overlap, and the lexical-overlap
//! judge that every report compares the model with.

use std::collections::HashSet;

use serde::Serialize;

use crate::label::{Grades, Label};
use crate::metrics::agreement;

/// SQuAD-style answer normalisation: lower case, drop punctuation and the articles a/an/the,
/// collapse white space. Unicode letters are kept; accents are folded (é -> e).
pub fn normalize_answer(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let lowered: String = s
        .nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' })
        .collect();
    lowered.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// Whether the normalised `text` equals one of the normalised `answers`.
/// A gold answer that normalises to nothing ("." or "the") matches nothing: otherwise an empty
/// answer would be rewarded.
pub fn exact_match(answers: &[String], text: &str) -> bool {
    let t = normalize_answer(text);
    answers.iter().map(|a| normalize_answer(a)).any(|a| !a.is_empty() && a == t)
}

/// Whether the normalised `needle_norm` occurs in `haystack_norm` as whole words.
fn contains_words(haystack_norm: &str, needle_norm: &str) -> bool {
    if needle_norm.is_empty() {
        return false;
    }
    let padded = format!(" {haystack_norm} ");
    padded.contains(&format!(" {needle_norm} "))
}

/// Whether a gold answer (normalised) is contained in a text (normalised) as whole words. A gold
/// answer that normalises to nothing is contained in nothing (an empty answer earns no credit).
pub fn contains_answer(text_norm: &str, gold_norm: &str) -> bool {
    !gold_norm.is_empty() && (gold_norm == text_norm || contains_words(text_norm, gold_norm))
}

const STOPWORDS: &[&str] = &[
    "of", "in", "on", "at", "to", "for", "by", "with", "and", "or", "is", "are", "was", "were", "be", "been", "it",
    "its", "as", "that", "this", "from", "has", "have", "had", "he", "she", "his", "her", "they", "their", "which",
    "who", "not", "but",
];

/// Whether `w` (normalised) is a stop word of the lexical judge.
pub fn is_stopword(w: &str) -> bool {
    STOPWORDS.contains(&w)
}

/// The content words of a text: normalised, stop words removed.
pub fn content_words(s: &str) -> Vec<String> {
    normalize_answer(s).split(' ').filter(|w| !w.is_empty() && !is_stopword(w)).map(str::to_string).collect()
}

/// How many of `words` are in `set`, and that as a share of `words` (0 when there are none).
pub fn share_found(words: &[impl AsRef<str>], set: &HashSet<&str>) -> (usize, f64) {
    let found = words.iter().filter(|w| set.contains(w.as_ref())).count();
    (found, if words.is_empty() { 0.0 } else { found as f64 / words.len() as f64 })
}

/// Lexical overlap judge: the fraction of the nugget's content words (normalised, stop words
/// removed) that occur in the judged text. No model.
pub fn lexical_overlap(nugget: &str, text: &str) -> f64 {
    let text = normalize_answer(text);
    let words: HashSet<&str> = text.split(' ').collect();
    share_found(&content_words(nugget), &words).1
}

/// Thresholds of the lexical judge: support at or above `support`, partial at or above
/// `partial`, else not_support.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LexicalThresholds {
    /// Overlap for support.
    pub support: f64,
    /// Overlap for partial support.
    pub partial: f64,
}

impl Default for LexicalThresholds {
    fn default() -> Self {
        LexicalThresholds { support: 0.75, partial: 0.5 }
    }
}

impl LexicalThresholds {
    /// Label an overlap score.
    pub fn label(self, overlap: f64) -> Label {
        Label::by_cuts(overlap, self.partial, self.support)
    }

    /// Thresholds maximising macro-F1 on `(overlap, gold)` pairs (grid search in steps of 0.05).
    pub fn fit(items: &[(f64, Label)], grades: Grades) -> Self {
        let mut best = (f64::NEG_INFINITY, LexicalThresholds::default());
        for s in 1..=20 {
            let support = s as f64 * 0.05;
            let partials: Vec<f64> = match grades {
                Grades::Two => vec![support],
                Grades::Three => (0..=s).map(|p| p as f64 * 0.05).collect(),
            };
            for partial in partials {
                let t = LexicalThresholds { support, partial };
                let pairs: Vec<(Label, Label)> = items.iter().map(|&(o, g)| (g, t.label(o))).collect();
                let f = agreement(&pairs, grades).macro_f1;
                if f > best.0 + 1e-12 {
                    best = (f, t);
                }
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Label::{NotSupport as N, PartialSupport as P, Support as S};

    #[test]
    fn normalisation_is_squad_style() {
        assert_eq!(normalize_answer("The  Eiffel-Tower!"), "eiffel tower");
        assert_eq!(normalize_answer("Wilhelm Röntgen"), "wilhelm rontgen");
        assert_eq!(normalize_answer("an apple, a pear"), "apple pear");
        assert_eq!(normalize_answer("  "), "");
        assert!(contains_answer("he won in 2015", "2015") && !contains_answer("he won in 20155", "2015"));
        // Gold answers that normalise to nothing never match, so an empty answer earns nothing.
        assert!(!contains_answer("", "") && !contains_answer("anything", ""));
        let golds = ["Canberra".to_string(), ".".to_string()];
        assert!(!exact_match(&golds, "") && !exact_match(&golds, "The") && exact_match(&golds, "canberra!"));
    }

    #[test]
    fn lexical_judge() {
        assert_eq!(lexical_overlap("The Eiffel Tower is in Paris", "the eiffel tower stands in paris, france"), 1.0);
        assert!(
            (lexical_overlap("Eiffel Tower in Rome", "the eiffel tower stands in paris") - 2.0 / 3.0).abs() < 1e-12
        );
        assert_eq!(lexical_overlap("of the", "anything"), 0.0);
        let t = LexicalThresholds::default();
        assert_eq!((t.label(0.8), t.label(0.6), t.label(0.1)), (S, P, N));
        let items = [(0.9, S), (0.8, S), (0.3, N), (0.2, N)];
        let fitted = LexicalThresholds::fit(&items, Grades::Two);
        let pairs: Vec<_> = items.iter().map(|&(o, g)| (g, fitted.label(o))).collect();
        assert_eq!(agreement(&pairs, Grades::Two).accuracy, 1.0);
    }
}
