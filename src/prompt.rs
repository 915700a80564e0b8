//! Prompt templates: minijinja files under `prompts/`, embedded in the binary and overridable
//! from a folder, rendered with strict undefined variables into chat messages.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::rubric::Label;

/// Built-in template files, in the same layout as the `prompts/` folder.
const BUILTIN: &[(&str, &str)] = &[
    ("judge.system.jinja", include_str!("../prompts/judge.system.jinja")),
    ("judge.user.jinja", include_str!("../prompts/judge.user.jinja")),
    ("judge.assistant.jinja", include_str!("../prompts/judge.assistant.jinja")),
    ("judge_reasoned.system.jinja", include_str!("../prompts/judge_reasoned.system.jinja")),
    ("judge_reasoned.user.jinja", include_str!("../prompts/judge_reasoned.user.jinja")),
    ("judge_reasoned.assistant.jinja", include_str!("../prompts/judge_reasoned.assistant.jinja")),
    ("judge_reasoned.gbnf", include_str!("../prompts/judge_reasoned.gbnf")),
    ("labels.toml", include_str!("../prompts/labels.toml")),
    ("extract.system.jinja", include_str!("../prompts/extract.system.jinja")),
    ("extract.user.jinja", include_str!("../prompts/extract.user.jinja")),
    ("extract.gbnf.jinja", include_str!("../prompts/extract.gbnf.jinja")),
    ("importance.system.jinja", include_str!("../prompts/importance.system.jinja")),
    ("importance.user.jinja", include_str!("../prompts/importance.user.jinja")),
    ("importance.toml", include_str!("../prompts/importance.toml")),
];

/// Words read as the model's vote on a nugget's importance (`prompts/importance.toml`).
#[derive(Debug, Clone, Deserialize)]
pub struct ImportanceWords {
    /// Forms of `vital`.
    pub vital: Vec<String>,
    /// Forms of `okay`.
    pub okay: Vec<String>,
}

/// Which judge prompt to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JudgeMode {
    /// One forward pass per nugget, label-token probabilities.
    #[default]
    Scored,
    /// Grammar-constrained rationale, quote and label.
    Reasoned,
}

impl std::fmt::Display for JudgeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JudgeMode::Scored => "scored",
            JudgeMode::Reasoned => "reasoned",
        })
    }
}

impl JudgeMode {
    fn stem(self) -> &'static str {
        match self {
            JudgeMode::Scored => "judge",
            JudgeMode::Reasoned => "judge_reasoned",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
}

/// The variables a judge template sees. All are always defined (strict mode).
#[derive(Debug, Clone, Serialize)]
pub struct JudgeVars<'a> {
    /// The question, if any.
    pub query: Option<&'a str>,
    /// The judged text (answer, summary, passage).
    pub answer: &'a str,
    /// The nugget text.
    pub nugget: &'a str,
    /// Gold answers for short-form records (empty for long-form).
    pub gold_answers: &'a [String],
}

/// Surface forms whose first token counts as a vote for each label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabelWords {
    /// Forms for `support`.
    pub support: Vec<String>,
    /// Forms for `partial_support`.
    pub partial_support: Vec<String>,
    /// Forms for `not_support`.
    pub not_support: Vec<String>,
}

impl LabelWords {
    /// Forms in [`Label::ALL`] order.
    pub fn as_choices(&self) -> Vec<Vec<String>> {
        vec![self.support.clone(), self.partial_support.clone(), self.not_support.clone()]
    }

    /// Forms of one label.
    pub fn forms(&self, label: Label) -> &[String] {
        match label {
            Label::Support => &self.support,
            Label::PartialSupport => &self.partial_support,
            Label::NotSupport => &self.not_support,
        }
    }
}

/// A loaded set of templates.
pub struct PromptSet {
    env: Environment<'static>,
    files: BTreeMap<String, String>,
    labels: LabelWords,
    importance: ImportanceWords,
    version: String,
}

impl std::fmt::Debug for PromptSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptSet").field("version", &self.version).finish()
    }
}

/// Instructions one template render may execute; the built-in templates use a few hundred.
const TEMPLATE_FUEL: u64 = 1_000_000;

impl PromptSet {
    /// The templates compiled into the binary.
    pub fn builtin() -> Self {
        Self::from_files(BUILTIN.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
            .expect("built-in templates are valid")
    }

    /// Built-in templates, with any file of the same name in `dir` taking precedence.
    pub fn with_overrides(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut texts = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let known = BUILTIN.iter().any(|(k, _)| *k == name);
            if known || name.ends_with(".jinja") || name.ends_with(".gbnf") || name.ends_with(".toml") {
                let text = std::fs::read_to_string(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
                texts.push((name, text));
            }
        }
        Self::with_texts(texts)
    }

    /// Built-in templates, with each `(name, text)` replacing the built-in file of that name.
    pub fn with_texts(texts: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut files: BTreeMap<String, String> = BUILTIN.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for (name, text) in texts {
            match files.get_mut(&name) {
                Some(slot) => *slot = text,
                None => {
                    // A misspelt override would silently leave the built-in template in use.
                    let known: Vec<&str> = BUILTIN.iter().map(|(k, _)| *k).collect();
                    return Err(Error::Template {
                        name,
                        reason: format!("not a template name gavel knows (known: {})", known.join(", ")),
                    });
                }
            }
        }
        Self::from_files(files)
    }

    fn from_files(files: BTreeMap<String, String>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(false);
        // A template that loops without end runs out of fuel and fails instead of hanging.
        env.set_fuel(Some(TEMPLATE_FUEL));
        for (name, text) in &files {
            if name.ends_with(".jinja") {
                env.add_template_owned(name.clone(), text.clone())
                    .map_err(|e| Error::Template { name: name.clone(), reason: describe(&e) })?;
            }
        }
        let labels_text = files.get("labels.toml").cloned().unwrap_or_default();
        let labels: LabelWords = toml::from_str(&labels_text)
            .map_err(|e| Error::Template { name: "labels.toml".into(), reason: e.to_string() })?;
        for label in Label::ALL {
            if labels.forms(label).iter().all(|f| f.trim().is_empty()) {
                return Err(Error::Template { name: "labels.toml".into(), reason: format!("`{label}` has no word") });
            }
        }
        let importance: ImportanceWords =
            toml::from_str(files.get("importance.toml").map(String::as_str).unwrap_or_default())
                .map_err(|e| Error::Template { name: "importance.toml".into(), reason: e.to_string() })?;
        // The version names the judge's prompts only: extraction templates do not change verdicts.
        let mut hasher = Sha256::new();
        for (name, text) in files.iter().filter(|(n, _)| n.starts_with("judge") || *n == "labels.toml") {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
        }
        let version = hex(&hasher.finalize()[..8]);
        Ok(PromptSet { env, files, labels, importance, version })
    }

    /// A short hash of every template file: changes whenever a prompt changes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The label words of scored mode.
    pub fn labels(&self) -> &LabelWords {
        &self.labels
    }

    /// The words of the importance vote.
    pub fn importance_words(&self) -> &ImportanceWords {
        &self.importance
    }

    /// Render `<stem>.system.jinja` and `<stem>.user.jinja` into chat messages (empty ones dropped).
    pub fn render_messages(&self, stem: &str, vars: impl Serialize) -> Result<Vec<Message>> {
        let mut messages = Vec::with_capacity(2);
        for role in ["system", "user"] {
            let name = format!("{stem}.{role}.jinja");
            let content = self.render_file(&name, &vars)?.trim().to_string();
            if !content.is_empty() {
                messages.push(Message { role: role.to_string(), content });
            }
        }
        Ok(messages)
    }

    /// Render one template file.
    pub fn render_file(&self, name: &str, vars: impl Serialize) -> Result<String> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| Error::Template { name: name.to_string(), reason: describe(&e) })?;
        tmpl.render(vars).map_err(|e| Error::Template { name: name.to_string(), reason: describe(&e) })
    }

    /// The GBNF grammar of reasoned mode.
    pub fn reasoned_grammar(&self) -> &str {
        self.files.get("judge_reasoned.gbnf").map(String::as_str).unwrap_or_default()
    }

    /// Render the judge prompt for one nugget: the system and user messages, and the start of
    /// the assistant's reply (`<stem>.assistant.jinja`, empty for none) that the model continues.
    pub fn render_judge(&self, mode: JudgeMode, vars: &JudgeVars<'_>) -> Result<JudgePrompt> {
        let mut messages = Vec::with_capacity(2);
        for role in ["system", "user"] {
            let content = self.render_file(&format!("{}.{role}.jinja", mode.stem()), vars)?.trim().to_string();
            if !content.is_empty() {
                messages.push(Message { role: role.to_string(), content });
            }
        }
        // Leading white space is kept out: the chat template's assistant opener ends the line.
        let reply_start = self.render_file(&format!("{}.assistant.jinja", mode.stem()), vars)?;
        let reply_start = reply_start.trim_start().trim_end_matches(['\n', '\r']).to_string();
        Ok(JudgePrompt { messages, reply_start })
    }
}

/// A rendered judge prompt: chat messages, then the text the assistant's reply starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgePrompt {
    /// System and user messages.
    pub messages: Vec<Message>,
    /// Appended after the chat template's assistant opener (may be empty).
    pub reply_start: String,
}

/// minijinja's message plus the template line, when it has one.
fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("line {line}: {e}"),
        None => e.to_string(),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A marker put in place of the nugget to find where the per-nugget part of a prompt starts.
pub const NUGGET_SENTINEL: &str = "\u{E000}gavel-nugget\u{E000}";

/// Split a fully formatted prompt, rendered with [`NUGGET_SENTINEL`] as the nugget, into the
/// shared prefix: everything before the nugget that every nugget's prompt has, cut where a
/// tokenizer would cut anyway. That is before the spaces that lead into the nugget (a space joins
/// the next word's token in byte-pair and sentencepiece vocabularies alike), with any quote or
/// bracket glued to the nugget left on its side: "Statement: {nugget}" shares "Statement:",
/// `is "{nugget}"` shares up to "is". Where no space leads into the nugget on its line, the
/// prefix ends with the line before it.
pub fn shared_prefix(formatted_with_sentinel: &str) -> &str {
    let Some(pos) = formatted_with_sentinel.find(NUGGET_SENTINEL) else { return "" };
    let head = &formatted_with_sentinel[..pos];
    let line_start = head.rfind('\n').map_or(0, |nl| nl + 1);
    let glued = head.trim_end_matches(|c: char| !c.is_whitespace() && !c.is_alphanumeric());
    if glued.ends_with(' ') {
        let cut = glued.trim_end_matches(' ').len();
        if cut > line_start {
            return &formatted_with_sentinel[..cut];
        }
    }
    &formatted_with_sentinel[..line_start]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(query: Option<&'a str>, answer: &'a str, nugget: &'a str, gold: &'a [String]) -> JudgeVars<'a> {
        JudgeVars { query, answer, nugget, gold_answers: gold }
    }

    #[test]
    fn builtin_renders_the_statement_last_in_the_reply() {
        let p = PromptSet::builtin();
        let j = p.render_judge(JudgeMode::Scored, &vars(Some("Who?"), "Marie Curie won.", "Curie won", &[])).unwrap();
        let m = &j.messages;
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].role, "system");
        assert!(m[0].content.contains("yes, partly or no"), "the instruction is in the shared head");
        assert_eq!(m[1].content, "Question: Who?\nPassage:\nMarie Curie won.");
        assert_eq!(j.reply_start, "Statement: Curie won Answer:");
        let m = p.render_judge(JudgeMode::Scored, &vars(None, "text", "n", &[])).unwrap().messages;
        assert!(!m[1].content.contains("Question"));
    }

    #[test]
    fn short_form_uses_the_answer_wording() {
        let p = PromptSet::builtin();
        let gold = vec!["Paris".to_string()];
        let j = p.render_judge(JudgeMode::Scored, &vars(Some("Capital?"), "Paris", "Paris", &gold)).unwrap();
        assert!(j.reply_start == "Statement: The answer to the question is \"Paris\". Answer:", "{}", j.reply_start);
    }

    #[test]
    fn overrides_replace_files_and_strict_undefined_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("judge.user.jinja"), "{{ answer }} | {{ nugget }}").unwrap();
        let p = PromptSet::with_overrides(dir.path()).unwrap();
        let m = p.render_judge(JudgeMode::Scored, &vars(None, "A", "N", &[])).unwrap().messages;
        assert_eq!(m[1].content, "A | N");
        assert_ne!(p.version(), PromptSet::builtin().version());

        std::fs::write(dir.path().join("judge.user.jinja"), "line one\n{{ answr }}").unwrap();
        let p = PromptSet::with_overrides(dir.path()).unwrap();
        let e = p.render_judge(JudgeMode::Scored, &vars(None, "A", "N", &[])).unwrap_err().to_string();
        assert!(e.contains("judge.user.jinja") && e.contains("line 2"), "{e}");

        std::fs::write(dir.path().join("judge.user.jinja"), "{% if %}").unwrap();
        let e = PromptSet::with_overrides(dir.path()).unwrap_err().to_string();
        assert!(e.contains("judge.user.jinja"), "{e}");
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let body = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}{{ nugget }}";
        std::fs::write(dir.path().join("judge.user.jinja"), body).unwrap();
        let p = PromptSet::with_overrides(dir.path()).unwrap();
        let t0 = std::time::Instant::now();
        let e = p.render_judge(JudgeMode::Scored, &vars(None, "A", "N", &[])).unwrap_err().to_string();
        assert!(e.contains("judge.user.jinja") && e.contains("fuel"), "{e}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "{:?}", t0.elapsed());
        // A misspelt override name is refused, naming the known ones.
        std::fs::write(dir.path().join("judge.usr.jinja"), "x").unwrap();
        let e = PromptSet::with_overrides(dir.path()).unwrap_err().to_string();
        assert!(e.contains("judge.usr.jinja") && e.contains("judge.user.jinja"), "{e}");
    }

    #[test]
    fn labels_load_and_validate() {
        let p = PromptSet::builtin();
        assert!(p.labels().support.iter().any(|w| w == " yes"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("labels.toml"), "support=[\"y\"]\npartial_support=[]\nnot_support=[\"n\"]")
            .unwrap();
        let e = PromptSet::with_overrides(dir.path()).unwrap_err().to_string();
        assert!(e.contains("partial_support"), "{e}");
    }

    #[test]
    fn prefix_ends_before_the_space_that_leads_into_the_nugget() {
        let s = format!("<sys>\nPassage:\nabc\nStatement: {NUGGET_SENTINEL}<end>\n");
        assert_eq!(shared_prefix(&s), "<sys>\nPassage:\nabc\nStatement:");
        let quoted = format!("<sys>\nStatement: the answer is \"{NUGGET_SENTINEL}\".\n");
        assert_eq!(shared_prefix(&quoted), "<sys>\nStatement: the answer is");
        // No space leads into the nugget: the line before it.
        let glued = format!("<sys>\nStatement:{NUGGET_SENTINEL}\n");
        assert_eq!(shared_prefix(&glued), "<sys>\n");
        let own_line = format!("<sys>\n {NUGGET_SENTINEL}\n");
        assert_eq!(shared_prefix(&own_line), "<sys>\n");
        assert_eq!(shared_prefix("no sentinel"), "");
    }
}
