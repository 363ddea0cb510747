//! Validation errors: every problem with a policy, each tied to the JSON path of its field.

use std::fmt;

/// One problem with one field of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path, e.g. `network_policy.allow_domains[3]`.
    pub field: String,
    /// What is wrong, for a person. Never contains a header value.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a policy (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("invalid network policy"),
            [one] => write!(f, "invalid network policy: {one}"),
            many => {
                write!(f, "invalid network policy ({} problems):", many.len())?;
                for e in many {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ValidationErrors {}

/// Collects errors, up to a cap so a policy of a million bad entries gives a bounded answer.
#[derive(Debug)]
pub(crate) struct Errors {
    list: Vec<FieldError>,
    dropped: usize,
}

/// More errors than this are summarised in one final line.
pub(crate) const MAX_REPORTED: usize = 100;

impl Errors {
    pub(crate) fn new() -> Self {
        Errors {
            list: Vec::new(),
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        if self.list.len() < MAX_REPORTED {
            self.list.push(FieldError {
                field: field.into(),
                message: message.into(),
            });
        } else {
            self.dropped += 1;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn finish(mut self) -> ValidationErrors {
        if self.dropped > 0 {
            self.list.push(FieldError {
                field: crate::wire::ROOT.to_owned(),
                message: format!("{} more problems not listed", self.dropped),
            });
        }
        ValidationErrors(self.list)
    }
}
