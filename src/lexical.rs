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

/// The part of a normalised word that soft matching compares: its first five characters, so
/// that inflections and derivations of one stem meet ("discovered", "discovery"; "countries",
/// "country") while short words must match whole. A "word" of a script written without spaces
/// between words (Chinese, Japanese, Thai, ...; Korean, whose syllables normalisation splits
/// into letters) is a run of words, not a stem: it is kept whole.
pub fn soft_key(w: &str) -> &str {
    if w.chars().any(unspaced_script) {
        return w;
    }
    w.char_indices().nth(SOFT_KEY_CHARS).map_or(w, |(i, _)| &w[..i])
}

/// Whether `c` belongs to a script that does not separate words by spaces (or, for Hangul,
/// whose normalised letters are not characters of a word in the Latin sense).
fn unspaced_script(c: char) -> bool {
    matches!(u32::from(c),
        0x0E00..=0x0EFF // Thai, Lao
        | 0x1000..=0x109F // Myanmar
        | 0x1100..=0x11FF // Hangul jamo
        | 0x1780..=0x17FF // Khmer
        | 0x3040..=0x30FF // Hiragana, Katakana
        | 0x3130..=0x318F // Hangul compatibility jamo
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xAC00..=0xD7AF // Hangul syllables
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0x20000..=0x3FFFF // CJK extensions B and later
    )
}

/// Characters of a word that [`soft_key`] keeps.
const SOFT_KEY_CHARS: usize = 5;

/// The soft keys ([`soft_key`]) of the words of a normalised text.
pub fn soft_keys<'a>(words: impl IntoIterator<Item = &'a str>) -> HashSet<&'a str> {
    words.into_iter().map(soft_key).collect()
}

/// Share of `content` (a nugget's content words) whose soft key is in `keys` (0 when there are
/// none): overlap that a paraphrase's changed word endings do not defeat.
pub fn soft_share(content: &[impl AsRef<str>], keys: &HashSet<&str>) -> f64 {
    if content.is_empty() {
        return 0.0;
    }
    content.iter().filter(|w| keys.contains(soft_key(w.as_ref()))).count() as f64 / content.len() as f64
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

/// The numbers a text states. A minus sign counts only where it starts a number ("-3", "(-3"),
/// not between two ("1927-1928" is 1927 and 1928); commas only group thousands ("1,234,567"),
/// so "1,2,3" is 1, 2 and 3; digits inside a word ("v2") are not a number.
pub fn numbers_in(text: &str) -> impl Iterator<Item = f64> + '_ {
    static NUM: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = NUM.get_or_init(|| {
        regex::Regex::new(r"(?:^|[^\w.])(-?)(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)").expect("static regex")
    });
    // Overlapping starts ("1927-1928": the second number begins at the hyphen) need a scan from
    // each match's end, so collect matches by hand.
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(c) = re.captures_at(text, at) {
        let whole = c.get(0).expect("match");
        let sign = c.get(1).map_or("", |m| m.as_str());
        let digits = c.get(2).expect("digits");
        if let Ok(v) = format!("{sign}{}", digits.as_str().replace(',', "")).parse::<f64>() {
            out.push(v);
        }
        at = digits.end().max(whole.start() + 1);
    }
    out.into_iter()
}

/// Words that negate a statement (after normalisation: "didn't" becomes "didn t").
const NEGATIONS: &[&str] = &["not", "no", "never", "none", "nor", "neither", "nobody", "nothing", "without", "t"];

/// Small number words read as their digits, so "three" and "3" are the same number.
const NUMBER_WORDS: &[(&str, f64)] = &[
    ("one", 1.0),
    ("two", 2.0),
    ("three", 3.0),
    ("four", 4.0),
    ("five", 5.0),
    ("six", 6.0),
    ("seven", 7.0),
    ("eight", 8.0),
    ("nine", 9.0),
    ("ten", 10.0),
    ("eleven", 11.0),
    ("twelve", 12.0),
    ("twenty", 20.0),
    ("hundred", 100.0),
    ("thousand", 1000.0),
    ("million", 1e6),
    ("billion", 1e9),
];

/// How a nugget lines up with the sentences of the judged text, without a model: long evidence
/// dilutes whole-text overlap, so the best-matching window (one or two consecutive sentences)
/// decides, and the checks that overlap cannot see (a changed number, a negation, a missing
/// name) are read against the text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alignment {
    /// Share of the nugget's content words found in the best window.
    pub best_overlap: f64,
    /// Share of the nugget's word bigrams found in the best window (by bigrams).
    pub best_bigram: f64,
    /// The highest share of the nugget's content words found softly ([`soft_key`]) in any window.
    pub best_soft_overlap: f64,
    /// Numbers the nugget states that the text nowhere states.
    pub numbers_missing: f64,
    /// 1 when the nugget states a number the best window lacks while the window states another
    /// number (a changed figure), else 0.
    pub number_conflict: f64,
    /// 1 when exactly one of the nugget and its best window is negated, else 0.
    pub negation_mismatch: f64,
    /// Share of the nugget's names (capitalised words after the first) absent from the text.
    pub names_missing: f64,
    /// Byte range of the best window in the text (empty when the text has no sentence).
    pub window: (usize, usize),
}

/// The sentences of a text: split at line ends and after `.`, `!` or `?` followed by a space.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let mut start = 0;
        let bytes = line.as_bytes();
        for i in 0..bytes.len() {
            if matches!(bytes[i], b'.' | b'!' | b'?') && bytes.get(i + 1) == Some(&b' ') {
                out.push(&line[start..=i]);
                start = i + 1;
            }
        }
        out.push(&line[start..]);
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

/// The numbers of a text, with small number words counted as numbers.
fn numbers_with_words(text_norm: &str, raw: &str) -> Vec<f64> {
    let mut v: Vec<f64> = numbers_in(raw).collect();
    v.extend(text_norm.split(' ').filter_map(|w| NUMBER_WORDS.iter().find(|(k, _)| *k == w).map(|(_, n)| *n)));
    v
}

fn is_negated(words: &[&str]) -> bool {
    words.iter().any(|w| NEGATIONS.contains(w))
}

/// Align `nugget` with the sentences of `text` (see [`Alignment`]).
pub fn align(nugget: &str, text: &str) -> Alignment {
    let nug_norm = normalize_answer(nugget);
    let nug_words: Vec<&str> = nug_norm.split(' ').filter(|w| !w.is_empty()).collect();
    let content: Vec<&str> = nug_words.iter().copied().filter(|w| !is_stopword(w)).collect();
    let bigrams: Vec<(&str, &str)> = nug_words.windows(2).map(|w| (w[0], w[1])).collect();
    let sents: Vec<String> = sentences(text).into_iter().map(normalize_answer).collect();
    let raw_sents = sentences(text);
    // Windows of one and two consecutive sentences; the best by content-word share, then bigrams.
    let mut best = (0.0, 0.0, usize::MAX, 1usize);
    let mut best_soft = 0.0f64;
    // Byte offsets: every sentence is a slice of `text`.
    let offset = |s: &str| s.as_ptr() as usize - text.as_ptr() as usize;
    // Single sentences first: on a tie the shorter window stands.
    for len in 1..=2 {
        for i in 0..sents.len().saturating_sub(len - 1) {
            let joined = sents[i..i + len].join(" ");
            let words: Vec<&str> = joined.split(' ').filter(|w| !w.is_empty()).collect();
            let set: HashSet<&str> = words.iter().copied().collect();
            let overlap = share_found(&content, &set).1;
            best_soft = best_soft.max(soft_share(&content, &soft_keys(words.iter().copied())));
            let pairs: HashSet<(&str, &str)> = words.windows(2).map(|w| (w[0], w[1])).collect();
            let bigram = if bigrams.is_empty() {
                overlap
            } else {
                bigrams.iter().filter(|b| pairs.contains(b)).count() as f64 / bigrams.len() as f64
            };
            if (overlap, bigram) > (best.0, best.1) || best.2 == usize::MAX {
                best = (overlap, bigram, i, len);
            }
        }
    }
    let text_norm = normalize_answer(text);
    let text_set: HashSet<&str> = text_norm.split(' ').collect();
    let nug_numbers = numbers_with_words(&nug_norm, nugget);
    let text_numbers = numbers_with_words(&text_norm, text);
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    let numbers_missing = nug_numbers.iter().filter(|&&n| !text_numbers.iter().any(|&t| same(n, t))).count() as f64;
    let (negation_mismatch, number_conflict) = if best.2 == usize::MAX {
        (0.0, 0.0)
    } else {
        let window_norm = sents[best.2..best.2 + best.3].join(" ");
        let window_words: Vec<&str> = window_norm.split(' ').collect();
        let window_raw = raw_sents[best.2..best.2 + best.3].join(" ");
        let window_numbers = numbers_with_words(&window_norm, &window_raw);
        let lacks = nug_numbers.iter().any(|&n| !window_numbers.iter().any(|&t| same(n, t)));
        let other = window_numbers.iter().any(|&t| !nug_numbers.iter().any(|&n| same(n, t)));
        (f64::from(u8::from(is_negated(&nug_words) != is_negated(&window_words))), f64::from(u8::from(lacks && other)))
    };
    let names: Vec<String> = nugget
        .split_whitespace()
        .skip(1)
        .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
        .map(normalize_answer)
        .filter(|w| !w.is_empty() && !is_stopword(w))
        .collect();
    let names_missing = if names.is_empty() {
        0.0
    } else {
        names.iter().filter(|n| !n.split(' ').all(|w| text_set.contains(w))).count() as f64 / names.len() as f64
    };
    let window = if best.2 == usize::MAX {
        (0, 0)
    } else {
        let (first, last) = (raw_sents[best.2], raw_sents[best.2 + best.3 - 1]);
        (offset(first) + first.len() - first.trim_start().len(), offset(last) + last.trim_end().len())
    };
    Alignment {
        window,
        best_overlap: best.0,
        best_bigram: best.1,
        best_soft_overlap: best_soft,
        numbers_missing,
        number_conflict,
        negation_mismatch,
        names_missing,
    }
}

/// Cut `text` into blocks of at most `max_tokens` tokens (as `tokens_of` counts them) that
/// begin and end at sentence boundaries, each block after the first starting with about
/// `overlap_tokens` of the previous block's last sentences, so a statement that spans a cut is
/// whole in one block. Every byte of the text is in some block; a single sentence longer than a
/// block is cut inside at a word boundary. Returns byte ranges, in order.
pub fn cut_blocks(
    text: &str,
    tokens_of: impl Fn(&str) -> usize,
    max_tokens: usize,
    overlap_tokens: usize,
) -> Vec<(usize, usize)> {
    let max_tokens = max_tokens.max(1);
    // Units: sentences (their own line ends and spaces included, so units tile the text), a
    // sentence over the budget split at word boundaries.
    let mut bounds: Vec<usize> = vec![0];
    let base = text.as_ptr() as usize;
    for sent in sentences(text) {
        // A sentence's leading white space stays with the one before it.
        let start = sent.as_ptr() as usize - base + (sent.len() - sent.trim_start().len());
        if start > *bounds.last().unwrap_or(&0) {
            bounds.push(start);
        }
    }
    bounds.push(text.len());
    bounds.dedup();
    let mut units: Vec<(usize, usize)> = Vec::new();
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        if tokens_of(&text[a..b]) <= max_tokens {
            units.push((a, b));
            continue;
        }
        // Too long for one block: pieces of whole words, each within the budget.
        let mut start = a;
        while start < b {
            let mut end = b;
            while end > start && tokens_of(&text[start..end]) > max_tokens {
                let half = start + (end - start) / 2;
                let mut cut = half;
                while cut > start && !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                // Back to the last space, when there is one past the start.
                let cut = text[start..cut].rfind(' ').map_or(cut, |i| start + i + 1);
                end = if cut > start { cut } else { (start + 1..=b).find(|&i| text.is_char_boundary(i)).unwrap_or(b) };
            }
            units.push((start, end));
            start = end;
        }
    }
    let tokens: Vec<usize> = units.iter().map(|&(a, b)| tokens_of(&text[a..b])).collect();
    let mut blocks = Vec::new();
    let mut first = 0;
    while first < units.len() {
        let mut last = first;
        let mut used = tokens[first];
        while last + 1 < units.len() && used + tokens[last + 1] <= max_tokens {
            last += 1;
            used += tokens[last];
        }
        blocks.push((units[first].0, units[last].1));
        if last + 1 >= units.len() {
            break;
        }
        // The next block starts with the last sentences of this one, up to the overlap.
        let mut next = last + 1;
        let mut carried = 0;
        while next > first + 1 && carried + tokens[next - 1] <= overlap_tokens {
            next -= 1;
            carried += tokens[next];
        }
        first = next;
    }
    blocks
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
    fn alignment_reads_numbers_negations_and_the_best_sentence() {
        let text = "The bridge opened in 1932. It carries six lanes of traffic.";
        let kept = align("The bridge opened in 1932.", text);
        let changed = align("The bridge opened in 1936.", text);
        assert_eq!((kept.numbers_missing, kept.number_conflict), (0.0, 0.0));
        assert_eq!((changed.numbers_missing, changed.number_conflict), (1.0, 1.0));
        assert_eq!(align("The bridge carries 6 lanes.", text).numbers_missing, 0.0, "six is 6");
        let negated = align("The bridge did not open in 1932.", text);
        assert_eq!((kept.negation_mismatch, negated.negation_mismatch), (0.0, 1.0));
        assert_eq!(align("The bridge didn't open in 1932.", text).negation_mismatch, 1.0);
        // A statement found in the last sentence of a long passage: whole-text overlap is
        // diluted, the best window is not.
        let mut long = String::new();
        for i in 0..60 {
            long.push_str(&format!("Sentence {i} talks about weather, rivers and old castles. "));
        }
        long.push_str("Marie Curie won the Nobel Prize in Chemistry in 1911.");
        let a = align("Marie Curie won the Nobel Prize in Chemistry in 1911.", &long);
        assert_eq!((a.best_overlap, a.best_bigram, a.numbers_missing, a.names_missing), (1.0, 1.0, 0.0, 0.0));
        let b = align("Pierre Curie won the Nobel Prize in Physics.", &long);
        assert!(b.best_overlap < 1.0 && b.names_missing > 0.0, "{b:?}");
        assert_eq!(&long[a.window.0..a.window.1], "Marie Curie won the Nobel Prize in Chemistry in 1911.");
        let w = align("It carries six lanes", text).window;
        assert_eq!(&text[w.0..w.1], "It carries six lanes of traffic.");
        assert_eq!(sentences("A b. C d!\nE f"), vec!["A b.", " C d!", "E f"]);
    }

    #[test]
    fn soft_overlap_meets_changed_word_endings_but_not_other_words() {
        let keys = |t: &str| normalize_answer(t).split(' ').map(str::to_string).collect::<Vec<_>>();
        let text = keys("Fleming's discovery of penicillin changed medicine in many countries.");
        let set = soft_keys(text.iter().map(String::as_str));
        let share = |nugget: &str| soft_share(&content_words(nugget), &set);
        // Exact overlap misses "discovered" and "country"; the soft one finds both.
        assert_eq!(lexical_overlap("Fleming discovered penicillin in a country", &text.join(" ")), 0.5);
        assert_eq!(share("Fleming discovered penicillin in a country"), 1.0);
        // A changed number and an unrelated word stay unmatched; short words match only whole.
        assert_eq!(share("penicillin 1928"), 0.5);
        assert_eq!(share("car of medals"), 0.0, "car matches no longer word; medals is not medicine");
        assert_eq!((soft_key("medicine"), soft_key("car"), soft_key("éclairs")), ("medic", "car", "éclai"));
        // A clause of a script without spaces is not a stem: "Paris is the capital of France"
        // does not meet "Paris is France's largest city" on their first five characters.
        let zh_text = normalize_answer("巴黎是法国最大的城市");
        let zh = soft_keys(zh_text.split(' '));
        assert_eq!(soft_share(&content_words("巴黎是法国的首都"), &zh), 0.0);
        assert_eq!(soft_key(&normalize_answer("서울특별시")), normalize_answer("서울특별시"));
        // The best window's soft share: the paraphrase in the last sentence of a long text.
        let mut long = "Rivers and castles are old. ".repeat(40);
        long.push_str("Fleming's discovery of penicillin changed medicine.");
        let a = align("Fleming discovered penicillin", &long);
        assert!((a.best_overlap - 2.0 / 3.0).abs() < 1e-12 && a.best_soft_overlap == 1.0, "{a:?}");
    }

    #[test]
    fn blocks_cover_the_text_at_sentence_ends_within_the_budget() {
        let words = |t: &str| t.split_whitespace().count();
        let text: String = (0..40).map(|i| format!("Sentence number {i} has exactly seven words. ")).collect();
        let blocks = cut_blocks(&text, words, 30, 8);
        assert!(blocks.len() > 1);
        // Within the budget, starting and ending at sentence boundaries.
        for &(a, b) in &blocks {
            assert!(words(&text[a..b]) <= 30, "{}", &text[a..b]);
            assert!(text[a..b].starts_with("Sentence"), "{:?}", &text[a..b]);
            assert!(text[a..b].trim_end().ends_with('.'), "{:?}", &text[a..b]);
        }
        // Every byte in some block, in order, with the overlap carried over.
        assert_eq!((blocks[0].0, blocks.last().unwrap().1), (0, text.len()));
        for w in blocks.windows(2) {
            assert!(w[1].0 < w[0].1, "consecutive blocks overlap: {w:?}");
            assert!(w[1].0 > w[0].0, "and move forward: {w:?}");
            assert!(words(&text[w[1].0..w[0].1]) <= 8, "overlap within its budget");
        }
        // A text that fits is one block; a sentence over the budget is cut at word boundaries.
        assert_eq!(cut_blocks("One. Two.", words, 30, 8), vec![(0, 9)]);
        let long = "word ".repeat(50);
        let parts = cut_blocks(&long, words, 12, 0);
        assert!(parts.iter().all(|&(a, b)| words(&long[a..b]) <= 12), "{parts:?}");
        assert_eq!((parts[0].0, parts.last().unwrap().1), (0, long.len()));
        assert!(parts.windows(2).all(|w| w[0].1 == w[1].0), "no gap: {parts:?}");
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
