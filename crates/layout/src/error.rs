//! Error types shared by register and shared layouts.

/// An operation on layouts that cannot be done (e.g. composing layouts of different rank).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(pub String);

impl LayoutError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        LayoutError(message.into())
    }
}

/// Layout text that does not parse; `position` is a byte offset into the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {position}: {message}")]
pub struct ParseLayoutError {
    pub position: usize,
    pub message: String,
}

impl ParseLayoutError {
    pub(crate) fn new(position: usize, message: impl Into<String>) -> Self {
        ParseLayoutError {
            position,
            message: message.into(),
        }
    }
}

/// Product of `sizes`, or an error naming `what` when it does not fit in `usize`.
pub(crate) fn checked_product(sizes: &[usize], what: &str) -> Result<usize, LayoutError> {
    sizes.iter().try_fold(1usize, |acc, &size| {
        acc.checked_mul(size)
            .ok_or_else(|| LayoutError::new(format!("{what} overflows usize")))
    })
}
