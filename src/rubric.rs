//! Rubrics: nuggets (criteria), their importance and weight, and the deterministic checks that
//! need no model. Parsing validates every field and names the file, nugget and field on error.

use std::path::Path;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::label::Label;
use crate::lexical::{contains_answer, numbers_in};
pub use crate::lexical::{exact_match, normalize_answer};

/// AutoNuggetizer importance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    /// Must be in a good answer.
    Vital,
    /// Worthwhile, not essential.
    Okay,
}

/// How a nugget is checked.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Check {
    /// Judged by the model.
    Llm,
    /// Normalised exact match of the whole judged text against any of `answers`.
    /// With `fallback_llm`, a miss is sent to the model instead of being `not_support`
    /// (the paper's EM + verifier hybrid).
    ExactMatch {
        /// Acceptable answers.
        answers: Vec<String>,
        /// Ask the model when exact match fails.
        #[serde(default)]
        fallback_llm: bool,
    },
    /// The normalised judged text contains any of the normalised `answers` (as whole words).
    /// With `fallback_llm`, a miss is sent to the model (gavel's short-form hybrid: exact match,
    /// then containment, then the model).
    Contains {
        /// Acceptable answers.
        answers: Vec<String>,
        /// Ask the model when no answer is contained.
        #[serde(default)]
        fallback_llm: bool,
    },
    /// A regular expression matches the judged text.
    Regex {
        /// The pattern (Rust regex syntax).
        pattern: String,
        /// Compiled form.
        #[serde(skip)]
        compiled: Option<Regex>,
    },
    /// Some number in the judged text is within `tolerance` of `value`.
    Numeric {
        /// Expected value.
        value: f64,
        /// Absolute tolerance.
        tolerance: f64,
    },
}

impl PartialEq for Check {
    fn eq(&self, other: &Self) -> bool {
        use Check::*;
        match (self, other) {
            (Llm, Llm) => true,
            (ExactMatch { answers: a, fallback_llm: f }, ExactMatch { answers: b, fallback_llm: g }) => {
                a == b && f == g
            }
            (Contains { answers: a, fallback_llm: f }, Contains { answers: b, fallback_llm: g }) => a == b && f == g,
            (Regex { pattern: a, .. }, Regex { pattern: b, .. }) => a == b,
            (Numeric { value: a, tolerance: s }, Numeric { value: b, tolerance: t }) => a == b && s == t,
            _ => false,
        }
    }
}

/// One criterion of a rubric.
#[derive(Debug, Clone, Serialize)]
pub struct Nugget {
    /// The atomic statement.
    pub text: String,
    /// AutoNuggetizer importance.
    pub importance: Importance,
    /// Weight in the weighted reward; negative marks a pitfall.
    pub weight: f64,
    /// How it is checked.
    #[serde(flatten)]
    pub check: Check,
    /// Gold label when the input carries one (evaluation data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold: Option<Label>,
}

impl Nugget {
    /// An `llm` nugget of importance vital and weight 1.
    pub fn new(text: impl Into<String>) -> Self {
        Nugget { text: text.into(), importance: Importance::Vital, weight: 1.0, check: Check::Llm, gold: None }
    }

    /// Set the importance (and the default weight that goes with it).
    pub fn with_importance(mut self, importance: Importance) -> Self {
        self.importance = importance;
        self.weight = default_weight(importance);
        self
    }

    /// Set an explicit weight.
    pub fn with_weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Set the check.
    pub fn with_check(mut self, check: Check) -> Self {
        self.check = check;
        self
    }

    /// Whether this nugget is a pitfall (negative weight).
    pub fn is_pitfall(&self) -> bool {
        self.weight < 0.0
    }

    /// Whether the model may be needed to judge this nugget.
    pub fn needs_model(&self) -> bool {
        matches!(
            self.check,
            Check::Llm | Check::ExactMatch { fallback_llm: true, .. } | Check::Contains { fallback_llm: true, .. }
        )
    }
}

fn default_weight(importance: Importance) -> f64 {
    match importance {
        Importance::Vital => 1.0,
        Importance::Okay => 0.5,
    }
}

/// The on-disk / on-wire shape of a nugget before validation. A bare string is a nugget too.
#[derive(Debug, Clone)]
pub enum RawNugget {
    /// `"text"` alone.
    Text(String),
    /// The full form.
    Full(Box<RawNuggetFields>),
}

/// A nugget is read as a string or an object; a wrong field says which field and why (an
/// untagged enum would only say that no variant matched).
impl<'de> Deserialize<'de> for RawNugget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(RawNugget::Text(s)),
            serde_json::Value::Object(map) => {
                let mut fields = RawNuggetFields::default();
                for (key, value) in map {
                    let bad = |e: serde_json::Error| D::Error::custom(format!("nugget field `{key}`: {e}"));
                    let v = value;
                    match key.as_str() {
                        "text" => fields.text = serde_json::from_value(v).map_err(bad)?,
                        "importance" => fields.importance = serde_json::from_value(v).map_err(bad)?,
                        "weight" => fields.weight = serde_json::from_value(v).map_err(bad)?,
                        "kind" => fields.kind = serde_json::from_value(v).map_err(bad)?,
                        "answers" => fields.answers = serde_json::from_value(v).map_err(bad)?,
                        "fallback_llm" => fields.fallback_llm = serde_json::from_value(v).map_err(bad)?,
                        "pattern" => fields.pattern = serde_json::from_value(v).map_err(bad)?,
                        "value" => fields.value = serde_json::from_value(v).map_err(bad)?,
                        "tolerance" => fields.tolerance = serde_json::from_value(v).map_err(bad)?,
                        "gold" => fields.gold = serde_json::from_value(v).map_err(bad)?,
                        // Accepted and ignored so dataset records pass through.
                        "id" | "assignment" => {}
                        other => {
                            return Err(D::Error::custom(format!(
                                "unknown nugget field `{other}` (known: text, importance, weight, kind, answers, \
                                 fallback_llm, pattern, value, tolerance, gold)"
                            )))
                        }
                    }
                }
                Ok(RawNugget::Full(Box::new(fields)))
            }
            other => Err(D::Error::custom(format!("a nugget must be a string or an object, not {other}"))),
        }
    }
}

/// Fields of [`RawNugget::Full`].
#[derive(Debug, Clone, Default)]
pub struct RawNuggetFields {
    text: Option<String>,
    importance: Option<String>,
    weight: Option<f64>,
    kind: Option<String>,
    answers: Option<Vec<String>>,
    fallback_llm: Option<bool>,
    pattern: Option<String>,
    value: Option<f64>,
    tolerance: Option<f64>,
    gold: Option<crate::label::GoldText>,
}

impl RawNugget {
    /// Validate into a [`Nugget`]. `location` names the file or line, `field` the nugget's path.
    pub fn validate(self, location: &str, field: &str) -> Result<Nugget> {
        let raw = match self {
            RawNugget::Text(text) => RawNuggetFields { text: Some(text), ..Default::default() },
            RawNugget::Full(f) => *f,
        };
        let err = |sub: &str, reason: String| Error::field(location, format!("{field}.{sub}"), reason);
        let kind = raw.kind.as_deref().unwrap_or("llm");
        let text = match raw.text {
            Some(t) if !t.trim().is_empty() => t,
            Some(_) => return Err(err("text", "is empty".into())),
            None => match kind {
                // Deterministic nuggets may be described by their answers alone.
                "exact_match" | "contains" => match &raw.answers {
                    Some(a) if !a.is_empty() => format!("The answer is {}", a.join(" / ")),
                    _ => return Err(err("text", "is missing".into())),
                },
                "regex" => format!("Matches /{}/", raw.pattern.clone().unwrap_or_default()),
                "numeric" => format!("States the number {}", raw.value.unwrap_or_default()),
                _ => return Err(err("text", "is missing".into())),
            },
        };
        let importance = match raw.importance.as_deref() {
            None => Importance::Vital,
            Some(s) => match s.trim().to_ascii_lowercase().as_str() {
                "vital" => Importance::Vital,
                "okay" | "ok" => Importance::Okay,
                other => return Err(err("importance", format!("`{other}` is not `vital` or `okay`"))),
            },
        };
        let weight = match raw.weight {
            Some(w) if !(w.is_finite() && w.abs() <= MAX_WEIGHT) => {
                return Err(err("weight", format!("must be a number between -{MAX_WEIGHT:e} and {MAX_WEIGHT:e}")))
            }
            Some(w) => w,
            None => default_weight(importance),
        };
        let answers = |name: &str| -> Result<Vec<String>> {
            match &raw.answers {
                Some(a) if a.iter().any(|s| !normalize_answer(s).is_empty()) => Ok(a.clone()),
                Some(_) => Err(err("answers", "has no non-empty answer".into())),
                None => Err(err("answers", format!("is required for kind `{name}`"))),
            }
        };
        let check = match kind {
            "llm" => Check::Llm,
            "exact_match" => {
                Check::ExactMatch { answers: answers(kind)?, fallback_llm: raw.fallback_llm.unwrap_or(false) }
            }
            "contains" => Check::Contains { answers: answers(kind)?, fallback_llm: raw.fallback_llm.unwrap_or(false) },
            "regex" => {
                let pattern = raw.pattern.ok_or_else(|| err("pattern", "is required for kind `regex`".into()))?;
                let compiled = compile_pattern(&pattern).map_err(|e| err("pattern", e))?;
                Check::Regex { pattern, compiled: Some(compiled) }
            }
            "numeric" => {
                let value = raw.value.ok_or_else(|| err("value", "is required for kind `numeric`".into()))?;
                if !value.is_finite() {
                    return Err(err("value", "must be a finite number".into()));
                }
                let tolerance = raw.tolerance.unwrap_or(0.0);
                if !(tolerance >= 0.0 && tolerance.is_finite()) {
                    return Err(err("tolerance", "must be a finite number >= 0".into()));
                }
                Check::Numeric { value, tolerance }
            }
            other => {
                return Err(err("kind", format!("`{other}` is not one of llm, exact_match, contains, regex, numeric")))
            }
        };
        let gold = raw.gold.map(|g| g.label().map_err(|why| err("gold", why))).transpose()?;
        Ok(Nugget { text, importance, weight, check, gold })
    }
}

/// A named set of nuggets applied to answers.
#[derive(Debug, Clone, Serialize)]
pub struct Rubric {
    /// Identifier (defaults to the file stem).
    pub id: String,
    /// What the rubric is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The query the rubric was written for, if fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The criteria.
    pub nuggets: Vec<Nugget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRubric {
    id: Option<String>,
    description: Option<String>,
    query: Option<String>,
    nuggets: Option<Vec<RawNugget>>,
}

impl RawRubric {
    fn json(text: &str, location: &str) -> Result<RawRubric> {
        // serde would read an array as the fields in order, and name its own types otherwise.
        let not_object = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(_)) => Some("an array"),
            Ok(serde_json::Value::String(_)) => Some("a string"),
            Ok(serde_json::Value::Number(_)) => Some("a number"),
            Ok(serde_json::Value::Bool(_)) => Some("a boolean"),
            Ok(serde_json::Value::Null) => Some("null"),
            _ => None,
        };
        if let Some(what) = not_object {
            return Err(Error::Parse {
                location: location.to_string(),
                reason: format!("a rubric is a JSON object with `nuggets` (and `id`, `query`), not {what}"),
            });
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let read = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| (e.path().to_string(), e.into_inner()))
            .and_then(|r| de.end().map(|()| r).map_err(|e| (String::new(), e)));
        read.map_err(|(path, e)| {
            // The position goes into the location, with the field's path.
            let reason = crate::error::json_reason(&e);
            let location = format!("{location}:{}:{}", e.line(), e.column());
            match path.as_str() {
                "" | "." => Error::Parse { location, reason },
                // Well-formed JSON with a field of the wrong type or name.
                _ if crate::error::is_field_error(text, &e) => Error::InvalidField { location, field: path, reason },
                _ => Error::Parse { location: format!("{location}, {path}"), reason },
            }
        })
    }

    fn toml(text: &str, location: &str) -> Result<RawRubric> {
        // A nugget is read whole, so TOML's own position of an error in one is that of the first
        // `[[nuggets]]`, whichever nugget is wrong: the path (`nuggets[2]`) names it instead.
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let reason = if path.starts_with("nuggets[") { inner.message().to_string() } else { inner.to_string() };
            // TOML's reader has no syntax errors inside a field: an error with a path is the
            // field's.
            if path.is_empty() || path == "." {
                Error::Parse { location: location.to_string(), reason }
            } else {
                Error::InvalidField { location: location.to_string(), field: path, reason }
            }
        })
    }

    /// The rubric, named `default_id` when the text names none.
    fn into_rubric(self, default_id: &str, location: &str) -> Result<Rubric> {
        let id = self.id.unwrap_or_else(|| default_id.to_string());
        Rubric::from_parts(id, self.description, self.query, self.nuggets, location)
    }
}

/// The rubric files of a folder (`.json` and `.toml`), sorted by name.
pub fn rubric_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "toml")))
        .collect();
    paths.sort();
    Ok(paths)
}

impl Rubric {
    /// Load a rubric from a `.json` or `.toml` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Rubric> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let location = path.display().to_string();
        let is_toml = path.extension().and_then(|e| e.to_str()) == Some("toml");
        let raw = if is_toml { RawRubric::toml(text, &location)? } else { RawRubric::json(text, &location)? };
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("rubric");
        raw.into_rubric(stem, &location)
    }

    /// Parse a rubric from TOML text; `location` is used in error messages.
    pub fn from_toml(text: &str, location: &str) -> Result<Rubric> {
        RawRubric::toml(text, location)?.into_rubric("rubric", location)
    }

    /// Parse a rubric from JSON text; `location` is used in error messages.
    pub fn from_json(text: &str, location: &str) -> Result<Rubric> {
        RawRubric::json(text, location)?.into_rubric("rubric", location)
    }

    fn from_parts(
        id: String,
        description: Option<String>,
        query: Option<String>,
        nuggets: Option<Vec<RawNugget>>,
        location: &str,
    ) -> Result<Rubric> {
        let nuggets = nuggets.ok_or_else(|| Error::field(location, "nuggets", "is missing"))?;
        if nuggets.is_empty() {
            return Err(Error::field(location, "nuggets", "is empty"));
        }
        let nuggets = nuggets
            .into_iter()
            .enumerate()
            .map(|(i, n)| n.validate(location, &format!("nuggets[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Rubric { id, description, query, nuggets })
    }
}

/// Most memory one compiled pattern may take: a pattern like `\w{100}x` (Unicode classes
/// repeated) compiles to hundreds of megabytes and seconds of work, so a few bytes of request
/// could take a server down; such a pattern is refused instead.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compile a nugget's pattern within [`REGEX_SIZE_LIMIT`].
fn compile_pattern(pattern: &str) -> std::result::Result<Regex, String> {
    regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_SIZE_LIMIT).build().map_err(
        |e| match e {
            regex::Error::CompiledTooBig(_) => format!(
                "the pattern compiles to more than {} KiB (a repeated Unicode class like \\w{{100}}?); \
                 use a smaller repeat or an ASCII class like [a-z]",
                REGEX_SIZE_LIMIT >> 10
            ),
            other => format!("invalid regex: {other}"),
        },
    )
}

/// Largest weight a nugget may carry: sums of weights stay finite.
pub const MAX_WEIGHT: f64 = 1e9;

/// Result of a deterministic check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Decided: the label.
    Decided(Label),
    /// The model must judge (an `llm` nugget, or an exact-match miss with fallback).
    NeedsModel,
}

impl Check {
    /// Apply the check to the judged text without a model.
    pub fn evaluate(&self, text: &str) -> CheckOutcome {
        let yes = |b: bool| CheckOutcome::Decided(if b { Label::Support } else { Label::NotSupport });
        match self {
            Check::Llm => CheckOutcome::NeedsModel,
            Check::ExactMatch { answers, fallback_llm } => {
                let hit = exact_match(answers, text);
                if !hit && *fallback_llm {
                    CheckOutcome::NeedsModel
                } else {
                    yes(hit)
                }
            }
            Check::Contains { answers, fallback_llm } => {
                let t = normalize_answer(text);
                let hit = answers.iter().any(|a| contains_answer(&t, &normalize_answer(a)));
                if !hit && *fallback_llm {
                    CheckOutcome::NeedsModel
                } else {
                    yes(hit)
                }
            }
            Check::Regex { pattern, compiled } => match compiled {
                Some(re) => yes(re.is_match(text)),
                None => yes(compile_pattern(pattern).map(|re| re.is_match(text)).unwrap_or(false)),
            },
            Check::Numeric { value, tolerance } => {
                yes(numbers_in(text).any(|n| (n - value).abs() <= *tolerance + f64::EPSILON * value.abs()))
            }
        }
    }

    /// Short name of the check kind, used in verdict records.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Llm => "llm",
            Check::ExactMatch { .. } => "exact_match",
            Check::Contains { .. } => "contains",
            Check::Regex { .. } => "regex",
            Check::Numeric { .. } => "numeric",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Nugget> {
        let raw: RawNugget = serde_json::from_str(json).unwrap();
        raw.validate("test.json", "nuggets[0]")
    }

    #[test]
    fn bare_string_is_a_vital_llm_nugget() {
        let n = parse(r#""Paris is the capital""#).unwrap();
        assert_eq!(n.text, "Paris is the capital");
        assert_eq!(n.importance, Importance::Vital);
        assert_eq!(n.weight, 1.0);
        assert_eq!(n.check, Check::Llm);
    }

    #[test]
    fn okay_defaults_to_half_weight_and_explicit_weight_wins() {
        assert_eq!(parse(r#"{"text":"x","importance":"okay"}"#).unwrap().weight, 0.5);
        assert_eq!(parse(r#"{"text":"x","importance":"okay","weight":-2}"#).unwrap().weight, -2.0);
    }

    #[test]
    fn invalid_fields_name_the_field_and_reason() {
        let e = parse(r#"{"text":"x","kind":"regex","pattern":"("}"#).unwrap_err().to_string();
        assert!(e.contains("test.json") && e.contains("nuggets[0].pattern") && e.contains("invalid regex"), "{e}");
        let e = parse(r#"{"text":"x","kind":"fuzzy"}"#).unwrap_err().to_string();
        assert!(e.contains("nuggets[0].kind") && e.contains("fuzzy"), "{e}");
        let e = parse(r#"{"text":"x","importance":"high"}"#).unwrap_err().to_string();
        assert!(e.contains("nuggets[0].importance"), "{e}");
        let e = parse(r#"{"text":"x","kind":"contains"}"#).unwrap_err().to_string();
        assert!(e.contains("nuggets[0].answers") && e.contains("required"), "{e}");
        let e = parse(r#"{"text":"  "}"#).unwrap_err().to_string();
        assert!(e.contains("nuggets[0].text") && e.contains("empty"), "{e}");
        let e = parse(r#"{"text":"x","gold":"maybe"}"#).unwrap_err().to_string();
        assert!(e.contains("nuggets[0].gold"), "{e}");
        assert!(serde_json::from_str::<RawNugget>(r#"{"text":"x","wieght":1}"#).is_err());
    }

    #[test]
    fn deterministic_checks() {
        let em = parse(r#"{"kind":"exact_match","answers":["Wilhelm Conrad Röntgen","Röntgen"]}"#).unwrap();
        assert_eq!(em.check.evaluate("the Röntgen."), CheckOutcome::Decided(Label::Support));
        assert_eq!(em.check.evaluate("Wilhelm Röntgen"), CheckOutcome::Decided(Label::NotSupport));
        let hybrid = parse(r#"{"kind":"exact_match","answers":["Röntgen"],"fallback_llm":true}"#).unwrap();
        assert_eq!(hybrid.check.evaluate("Wilhelm Röntgen"), CheckOutcome::NeedsModel);
        assert!(hybrid.needs_model());
        let c = parse(r#"{"kind":"contains","answers":["Röntgen"]}"#).unwrap();
        assert_eq!(c.check.evaluate("It was Wilhelm Röntgen, in 1901."), CheckOutcome::Decided(Label::Support));
        assert_eq!(c.check.evaluate("Röntgenology"), CheckOutcome::Decided(Label::NotSupport));
        let cascade = parse(r#"{"kind":"contains","answers":["Röntgen", "A"],"fallback_llm":true}"#).unwrap();
        assert!(cascade.needs_model());
        assert_eq!(cascade.check.evaluate("Wilhelm Röntgen"), CheckOutcome::Decided(Label::Support));
        assert_eq!(cascade.check.evaluate("Roentgen"), CheckOutcome::NeedsModel);
        // An answer that normalises to nothing ("A") matches nothing, so "a" goes to the model
        // and an empty answer is never contained.
        assert_eq!(cascade.check.evaluate("a"), CheckOutcome::NeedsModel);
        let c2 = parse(r#"{"kind":"contains","answers":["Canberra", "."]}"#).unwrap();
        assert_eq!(c2.check.evaluate(""), CheckOutcome::Decided(Label::NotSupport));
        let r = parse(r#"{"kind":"regex","pattern":"(?i)\\b19\\d\\d\\b"}"#).unwrap();
        assert_eq!(r.check.evaluate("in 1901"), CheckOutcome::Decided(Label::Support));
        assert_eq!(r.check.evaluate("in 2001"), CheckOutcome::Decided(Label::NotSupport));
        let n = parse(r#"{"kind":"numeric","value":1234.5,"tolerance":0.5}"#).unwrap();
        assert_eq!(n.check.evaluate("about 1,234.9 units"), CheckOutcome::Decided(Label::Support));
        assert_eq!(n.check.evaluate("about 1,236 units"), CheckOutcome::Decided(Label::NotSupport));
        // Ranges, lists and signs read as people read them.
        let nums = |t: &str| numbers_in(t).collect::<Vec<f64>>();
        assert_eq!(nums("the war of 1927-1928"), vec![1927.0, 1928.0]);
        assert_eq!(nums("items 1,2,3 and 1,234,567"), vec![1.0, 2.0, 3.0, 1234567.0]);
        assert_eq!(nums("it fell to -3.5 (-2) or .5"), vec![-3.5, -2.0, 0.5]);
        assert_eq!(nums("COVID-19 in v2"), vec![19.0]);
        let year = parse(r#"{"kind":"numeric","value":-1928}"#).unwrap();
        assert_eq!(year.check.evaluate("from 1927-1928"), CheckOutcome::Decided(Label::NotSupport));
        // A number that is not finite is refused (TOML can write `inf`), as are huge weights.
        let e = Rubric::from_toml("[[nuggets]]\nkind = \"numeric\"\nvalue = inf\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("nuggets[0].value"), "{e}");
        let e = parse(r#"{"text":"x","weight":1e308}"#).unwrap_err().to_string();
        assert!(e.contains("weight"), "{e}");
    }

    #[test]
    fn patterns_that_blow_up_are_refused_fast() {
        let t0 = std::time::Instant::now();
        let e = parse(r#"{"kind":"regex","pattern":"\\w{100}x"}"#).unwrap_err().to_string();
        assert!(e.contains("nuggets[0].pattern") && e.contains("KiB"), "{e}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(2), "{:?}", t0.elapsed());
        // Ordinary patterns still compile.
        assert!(parse(r#"{"kind":"regex","pattern":"(?i)\\b(19|20)\\d\\d\\b"}"#).is_ok());
        assert!(parse(r#"{"kind":"regex","pattern":"[a-z]{100}x"}"#).is_ok());
    }

    #[test]
    fn wrong_nugget_fields_are_named() {
        let e = serde_json::from_str::<RawNugget>(r#"{"txt":"x"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown nugget field `txt`"), "{e}");
        let e = serde_json::from_str::<RawNugget>(r#"{"text":"x","weight":"heavy"}"#).unwrap_err().to_string();
        assert!(e.contains("nugget field `weight`") && e.contains("invalid type"), "{e}");
        let e = serde_json::from_str::<RawNugget>("5").unwrap_err().to_string();
        assert!(e.contains("string or an object"), "{e}");
        assert!(serde_json::from_str::<RawNugget>(r#"{"text":"x","id":7,"assignment":"support"}"#).is_ok());
    }

    #[test]
    fn a_wrong_field_in_a_rubric_file_names_its_nugget() {
        let toml = "id = \"x\"\n\n[[nuggets]]\ntext = \"a\"\n\n[[nuggets]]\ntext = \"b\"\ntolerance = \"wide\"\n";
        let e = Rubric::from_toml(toml, "r.toml").unwrap_err();
        // A wrong field of well-formed text is a field error, not a parse error.
        assert_eq!(e.kind(), "invalid_field");
        let e = e.to_string();
        assert!(e.contains("r.toml: field `nuggets[1]`: nugget field `tolerance`"), "{e}");
        // TOML's own position would be the first [[nuggets]], which is not the wrong one.
        assert!(!e.contains("line 3"), "{e}");
        let e = Rubric::from_json(r#"{"nuggets":["a",{"text":"b","value":"q"}]}"#, "r.json").unwrap_err();
        assert_eq!(e.kind(), "invalid_field");
        let e = e.to_string();
        assert!(e.contains("r.json:1:") && e.contains(": field `nuggets[1]`: nugget field `value`"), "{e}");
        assert!(!e.contains(" at line "), "the position is said once: {e}");
        // Broken JSON is a parse error, also after a wrong field.
        let e = Rubric::from_json(r#"{"nuggets":["a",{"text":"b" "value":1}]}"#, "r.json").unwrap_err();
        assert_eq!(e.kind(), "parse", "{e}");
        let e = Rubric::from_json(r#"{"nuggets":[{"text":"a","value":"q"}"#, "r.json").unwrap_err();
        assert_eq!(e.kind(), "parse", "{e}");
        // Not an object: refused with what it is (an array was read as the fields in order).
        for (text, what) in
            [(r#"["id","desc","q",["a nugget"]]"#, "an array"), ("42", "a number"), (r#""x""#, "a string")]
        {
            let e = Rubric::from_json(text, "r.json").unwrap_err().to_string();
            assert!(e.contains("r.json") && e.contains("JSON object") && e.contains(what), "{e}");
            assert!(!e.contains("RawRubric"), "{e}");
        }
    }

    #[test]
    fn labels_parse_dataset_synonyms() {
        assert_eq!(Label::parse("correct"), Some(Label::Support));
        assert_eq!(Label::parse("partial_support"), Some(Label::PartialSupport));
        assert_eq!(Label::parse("Not Support"), Some(Label::NotSupport));
        assert_eq!(Label::parse("refute"), Some(Label::NotSupport));
        for (text, want) in [
            ("Refuted", Label::NotSupport),
            ("unsupported", Label::NotSupport),
            ("wrong", Label::NotSupport),
            ("right", Label::Support),
            ("partially", Label::PartialSupport),
        ] {
            assert_eq!(Label::parse(text), Some(want), "{text}");
        }
        assert_eq!(Label::parse("?"), None);
        // Booleans are labels; numbers are refused with a reason.
        let n = parse(r#"{"text":"x","gold":true}"#).unwrap();
        assert_eq!(n.gold, Some(Label::Support));
        let e = Rubric::from_json(r#"{"nuggets":[{"text":"x","gold":0}]}"#, "r.json").unwrap_err().to_string();
        assert!(e.contains("nuggets[0]") && e.contains("`gold`") && e.contains("a number is not read"), "{e}");
    }

    #[test]
    fn shipped_rubrics_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rubrics");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let r = Rubric::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!r.nuggets.is_empty());
            n += 1;
        }
        assert!(n >= 2);
    }

    #[test]
    fn rubric_errors_name_file_and_field() {
        let e = Rubric::from_json(r#"{"nuggets":[{"text":"a"},{"text":"b","weight":"x"}]}"#, "r.json").unwrap_err();
        assert!(e.to_string().contains("r.json"), "{e}");
        let e = Rubric::from_json(r#"{"nuggets":[]}"#, "r.json").unwrap_err().to_string();
        assert!(e.contains("nuggets") && e.contains("empty"), "{e}");
        let e = Rubric::from_json(r#"{"nuggets":["a",{"text":"b","kind":"numeric"}]}"#, "r.json").unwrap_err();
        assert!(e.to_string().contains("nuggets[1].value"), "{e}");
    }
}
