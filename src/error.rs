//! The library's one error type: every failure says where (file, line, field, nugget) and why.

use std::path::PathBuf;
use std::sync::Arc;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in gavel. Each variant is one failing operation with a stable
/// [`Error::kind`], the name error records carry (see [`Error::KINDS`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rubric or record field is missing, has the wrong type or an invalid value.
    #[error("{location}: field `{field}`: {reason}")]
    InvalidField {
        /// File and position, or "record" when the input has no file.
        location: String,
        /// Dotted path of the field, e.g. `nuggets[2].pattern`.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A JSON, JSON Lines or TOML document could not be parsed at all.
    #[error("{location}: {reason}")]
    Parse {
        /// File and line.
        location: String,
        /// The parser's message.
        reason: String,
    },
    /// A prompt template failed to load or render.
    #[error("template `{name}`: {reason}")]
    Template {
        /// Template file name.
        name: String,
        /// minijinja's message, with the template line where it has one.
        reason: String,
    },
    /// The prompt for one record does not fit into the model's context.
    #[error("prompt is {tokens} tokens but the context holds {n_ctx}; pass --truncate to cut the judged text, or --n-ctx to raise the context")]
    TooLong {
        /// Tokens the prompt needs.
        tokens: usize,
        /// Context size in tokens.
        n_ctx: usize,
    },
    /// The default model could not be fetched or verified.
    #[error("default model unavailable: {reason}")]
    ModelFetch {
        /// What failed and what to run instead.
        reason: String,
    },
    /// A model file could not be loaded.
    #[error("cannot load model {path}: {reason}")]
    ModelLoad {
        /// The GGUF path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// llama.cpp failed: initialising, creating a context, tokenizing, applying the chat
    /// template, decoding or sampling.
    #[error("llama.cpp {op}: {reason}")]
    Llama {
        /// The operation (`decode`, `context`, `tokenize`, `chat template`, ...).
        op: &'static str,
        /// llama.cpp's message.
        reason: String,
    },
    /// An OpenAI-compatible server failed or answered something unusable.
    #[error("{url}: {}{reason}", status.map(|s| format!("HTTP {s}: ")).unwrap_or_default())]
    Remote {
        /// The URL requested.
        url: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// What went wrong.
        reason: String,
    },
    /// The verdict cache could not be opened, read or written.
    #[error("verdict cache {path}: {reason}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A broken invariant inside gavel (a bug: please report it).
    #[error("internal error: {0}")]
    Internal(String),
    /// Generated text did not match the expected shape (should not happen under a grammar).
    #[error("could not parse model output {output:?}: {reason}")]
    Output {
        /// The raw text.
        output: String,
        /// Why it was rejected.
        reason: String,
    },
    /// File system error with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// Whether serde's error `e` on `text` is a field's (wrong type, unknown name) in well-formed
/// JSON, an [`Error::InvalidField`]; else the text is not JSON, an [`Error::Parse`]. serde stops
/// at the first error, so a wrong field early in broken text reads as a field error: the whole
/// text is checked.
pub fn is_field_error(text: &str, e: &serde_json::Error) -> bool {
    e.classify() == serde_json::error::Category::Data && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// serde_json's message without the position it ends with ("... at line 1 column 20"), for
/// messages that name the position in their location instead.
pub fn json_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    msg.rsplit_once(" at line ").map_or(msg.as_str(), |(m, _)| m).to_string()
}

impl Error {
    /// Shorthand for [`Error::InvalidField`].
    pub fn field(location: impl Into<String>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidField { location: location.into(), field: field.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source: Arc::new(source) }
    }

    /// The same error, said of nugget `index` of its record; the kind is kept.
    pub fn in_nugget(self, index: usize) -> Self {
        let at = |reason: String| format!("nugget {index}: {reason}");
        match self {
            Error::Llama { op, reason } => Error::Llama { op, reason: at(reason) },
            Error::Remote { url, status, reason } => Error::Remote { url, status, reason: at(reason) },
            Error::Output { output, reason } => Error::Output { output, reason: at(reason) },
            Error::Internal(reason) => Error::Internal(at(reason)),
            other => other,
        }
    }

    /// Every kind an error record can carry, as [`Error::kind`] names them.
    pub const KINDS: &'static [&'static str] = &[
        "invalid_field",
        "parse",
        "template",
        "too_long",
        "model_fetch",
        "model_load",
        "llama",
        "remote",
        "cache",
        "internal",
        "output",
        "io",
    ];

    /// A short machine-readable name of the variant, used in error records.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidField { .. } => "invalid_field",
            Error::Parse { .. } => "parse",
            Error::Template { .. } => "template",
            Error::TooLong { .. } => "too_long",
            Error::ModelFetch { .. } => "model_fetch",
            Error::ModelLoad { .. } => "model_load",
            Error::Llama { .. } => "llama",
            Error::Remote { .. } => "remote",
            Error::Cache { .. } => "cache",
            Error::Internal(_) => "internal",
            Error::Output { .. } => "output",
            Error::Io { .. } => "io",
        }
    }
}

/// The message of a caught panic (`std::panic::catch_unwind`'s payload), when it has one.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_and_documented() {
        let one_of_each = [
            Error::field("l", "f", "r"),
            Error::Parse { location: "l".into(), reason: "r".into() },
            Error::Template { name: "n".into(), reason: "r".into() },
            Error::TooLong { tokens: 2, n_ctx: 1 },
            Error::ModelFetch { reason: "r".into() },
            Error::ModelLoad { path: "p".into(), reason: "r".into() },
            Error::Llama { op: "decode", reason: "r".into() },
            Error::Remote { url: "u".into(), status: Some(503), reason: "r".into() },
            Error::Cache { path: "p".into(), reason: "r".into() },
            Error::Internal("r".into()),
            Error::Output { output: "o".into(), reason: "r".into() },
            Error::io("p", std::io::Error::other("r")),
        ];
        let kinds: Vec<&str> = one_of_each.iter().map(Error::kind).collect();
        assert_eq!(kinds, Error::KINDS);
        let readme = include_str!("../README.md");
        for k in Error::KINDS {
            assert!(readme.contains(&format!("`{k}`")), "README does not document the error kind `{k}`");
        }
        // The kind survives being said of a nugget and being copied to every prompt of a group.
        let e = Error::Remote { url: "http://h/v1".into(), status: Some(500), reason: "boom".into() };
        assert_eq!(e.clone().in_nugget(3).kind(), "remote");
        assert_eq!(e.in_nugget(3).to_string(), "http://h/v1: HTTP 500: nugget 3: boom");
        assert_eq!(Error::Output { output: "x".into(), reason: "r".into() }.in_nugget(1).kind(), "output");
    }
}
