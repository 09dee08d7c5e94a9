//! The text form of programs: [`print`] and [`parse`], which round-trip.
//!
//! What this module promises: `parse(&print(p)) == Ok(p)` for every program `p` the verifier
//! accepts (spans aside), and `print(&parse(t)?) == t` for canonical text `t` (text that
//! `print` produced). The grammar is in `docs/vm-text.md`.

mod parser;
mod printer;

pub use parser::{parse, ParseError, KEYWORDS, MAX_DEPTH};
pub use printer::print;
