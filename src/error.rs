//! The library's one error type: every failure says where (file, line, field, nugget) and why.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in gavel.
#[derive(Debug, thiserror::Error)]
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
    /// llama.cpp failed while creating a context, decoding or sampling.
    #[error("backend: {0}")]
    Backend(String),
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
        source: std::io::Error,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidField`].
    pub fn field(location: impl Into<String>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidField { location: location.into(), field: field.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A short machine-readable name of the variant, used in error records.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidField { .. } => "invalid_field",
            Error::Parse { .. } => "parse",
            Error::Template { .. } => "template",
            Error::TooLong { .. } => "too_long",
            Error::ModelFetch { .. } => "model_fetch",
            Error::ModelLoad { .. } => "model_load",
            Error::Backend(_) => "backend",
            Error::Output { .. } => "output",
            Error::Io { .. } => "io",
        }
    }
}
