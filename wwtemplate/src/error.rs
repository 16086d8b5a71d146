//! Errors of the template engine: one enum, every variant names the template.
//!
//! Parse errors carry the line and column of the offending token, formatted
//! like Go's `template: NAME:LINE:COL: message`. Execution errors name the
//! template and carry the engine's message (see the crate docs for why they
//! have no position).

use thiserror::Error;

/// Everything that can go wrong while parsing or rendering a template.
#[derive(Debug, Error)]
pub enum TemplateError {
    /// The source is not a valid template (syntax, unknown function, ...).
    #[error("template {template}:{line}:{column}: {message}")]
    Parse {
        template: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The template file could not be read.
    #[error("reading template {template}")]
    Read {
        template: String,
        #[source]
        source: std::io::Error,
    },
    /// The template failed while executing (bad argument, failing function, ...).
    #[error("executing template {template}: {message}")]
    Exec { template: String, message: String },
}

impl TemplateError {
    /// Name of the template the error belongs to.
    pub fn template(&self) -> &str {
        match self {
            TemplateError::Parse { template, .. }
            | TemplateError::Read { template, .. }
            | TemplateError::Exec { template, .. } => template,
        }
    }

    /// Converts an error from the underlying engine raised while parsing.
    pub(crate) fn from_parse(template: &str, err: gotmpl::TemplateError) -> Self {
        match err {
            gotmpl::TemplateError::Parse {
                line, col, message, ..
            }
            | gotmpl::TemplateError::Lex {
                line, col, message, ..
            } => TemplateError::Parse {
                template: template.to_string(),
                line,
                column: col,
                message,
            },
            other => TemplateError::Parse {
                template: template.to_string(),
                line: 0,
                column: 0,
                message: other.to_string(),
            },
        }
    }

    /// Converts an error from the underlying engine raised while executing.
    pub(crate) fn from_exec(template: &str, err: gotmpl::TemplateError) -> Self {
        let message = match err {
            gotmpl::TemplateError::Exec(msg) => msg,
            other => other.to_string(),
        };
        TemplateError::Exec {
            template: template.to_string(),
            message,
        }
    }
}
