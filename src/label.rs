//! Verdict labels and their gradings: the three labels, a distribution over them, and the
//! 2-grade fold (partial support counted as not supported). The vocabulary every other module
//! shares; it imports nothing of the crate.

use serde::{Deserialize, Serialize};

/// A verdict label. The 2-grade mode folds `PartialSupport` into `NotSupport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Absent, contradicted, or needs outside knowledge.
    NotSupport,
    /// Some essential part present, another missing or hedged.
    PartialSupport,
    /// All essential facts present or clearly paraphrased.
    Support,
}

impl Label {
    /// The three labels in the order used for probability vectors: support, partial, not.
    pub const ALL: [Label; 3] = [Label::Support, Label::PartialSupport, Label::NotSupport];

    /// Credit of the label: 1, 0.5, 0.
    pub fn value(self) -> f64 {
        match self {
            Label::Support => 1.0,
            Label::PartialSupport => 0.5,
            Label::NotSupport => 0.0,
        }
    }

    /// The label two cuts on a score give: support from `support` up, partial support from
    /// `partial` up, not_support below.
    pub fn by_cuts(score: f64, partial: f64, support: f64) -> Label {
        if score >= support {
            Label::Support
        } else if score >= partial {
            Label::PartialSupport
        } else {
            Label::NotSupport
        }
    }

    /// Index into [`Label::ALL`].
    pub fn index(self) -> usize {
        match self {
            Label::Support => 0,
            Label::PartialSupport => 1,
            Label::NotSupport => 2,
        }
    }

    /// The wire name (`support`, `partial_support`, `not_support`).
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Support => "support",
            Label::PartialSupport => "partial_support",
            Label::NotSupport => "not_support",
        }
    }

    /// Parse a label, accepting the wire names and common synonyms used by datasets
    /// (`correct`/`incorrect`, `right`/`wrong`, `present`/`absent`, `partial`, `refuted`).
    pub fn parse(s: &str) -> Option<Label> {
        match s.trim().to_ascii_lowercase().replace([' ', '-'], "_").as_str() {
            "support" | "supported" | "supports" | "correct" | "right" | "present" | "yes" | "true" => {
                Some(Label::Support)
            }
            "partial_support" | "partial" | "partially_supported" | "partially" | "partly" => {
                Some(Label::PartialSupport)
            }
            "not_support" | "not_supported" | "unsupported" | "incorrect" | "wrong" | "absent" | "no" | "false"
            | "refute" | "refuted" | "refutes" | "irrelevant" => Some(Label::NotSupport),
            _ => None,
        }
    }
}

/// A gold label as a record or a nugget gives it: a string for [`Label::parse`], or a boolean
/// (`true` is support). A number is refused: 0/1/2 mean different labels in different datasets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldText(pub String);

impl GoldText {
    /// The label, or why the text is none.
    pub fn label(&self) -> Result<Label, String> {
        Label::parse(&self.0).ok_or_else(|| {
            format!("`{}` is not a label (support, partial_support, not_support, or correct/incorrect)", self.0)
        })
    }
}

impl<'de> Deserialize<'de> for GoldText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = GoldText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a label: support, partial_support or not_support (or correct/incorrect, true/false); \
                     a number is not read, as datasets number their labels differently",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoldText, E> {
                Ok(GoldText(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<GoldText, E> {
                Ok(GoldText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Label probabilities in the order support, partial_support, not_support.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelProbs {
    /// P(support).
    pub support: f64,
    /// P(partial_support).
    pub partial_support: f64,
    /// P(not_support).
    pub not_support: f64,
}

impl LabelProbs {
    /// From an array in [`Label::ALL`] order.
    pub fn from_array(p: [f64; 3]) -> Self {
        LabelProbs { support: p[0], partial_support: p[1], not_support: p[2] }
    }

    /// As an array in [`Label::ALL`] order.
    pub fn to_array(self) -> [f64; 3] {
        [self.support, self.partial_support, self.not_support]
    }

    /// The most probable label (ties go to the lower credit, which is the cautious side).
    pub fn argmax(self) -> Label {
        let a = self.to_array();
        let mut best = 2;
        for i in [1, 0] {
            if a[i] > a[best] {
                best = i;
            }
        }
        Label::ALL[best]
    }

    /// Expected credit: P(support) + 0.5 P(partial).
    pub fn expected_value(self) -> f64 {
        self.support + 0.5 * self.partial_support
    }
}

/// 3-grade labels or 2-grade (partial folded into not_support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grades {
    /// support / partial_support / not_support.
    Three,
    /// support / not_support.
    Two,
}

impl std::fmt::Display for Grades {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Grades::Three => "3-grade",
            Grades::Two => "2-grade",
        })
    }
}

impl Grades {
    /// Map a label into this grading.
    pub fn fold(self, l: Label) -> Label {
        match (self, l) {
            (Grades::Two, Label::PartialSupport) => Label::NotSupport,
            _ => l,
        }
    }

    /// Map a distribution (in [`Label::ALL`] order) into this grading: 2-grade moves the partial
    /// probability onto not_support, so a decision weighs partial's mass as not supported.
    pub fn fold_probs(self, p: [f64; 3]) -> [f64; 3] {
        match self {
            Grades::Three => p,
            Grades::Two => [p[0], 0.0, p[1] + p[2]],
        }
    }

    /// The native grading of a set of gold labels: 3-grade when any is partial support.
    pub fn of_golds(golds: impl IntoIterator<Item = Label>) -> Grades {
        if golds.into_iter().any(|g| g == Label::PartialSupport) {
            Grades::Three
        } else {
            Grades::Two
        }
    }

    /// The label this grading decides for a distribution: argmax after [`Grades::fold_probs`].
    pub fn decide(self, p: [f64; 3]) -> Label {
        LabelProbs::from_array(self.fold_probs(p)).argmax()
    }
}
