//! hostgate's firewall rules, without a kernel: the rules-file language
//! (see `rules/README.md`), its diagnostics, the first-match meaning of a
//! ruleset ([`eval`]) and its compilation to lookup tables whose cost does
//! not grow with the number of rules ([`compile`]). A property test holds
//! the two to the same answers.

pub mod ast;
pub mod compile;
pub mod diff;
pub mod eval;
pub mod parse;
pub mod tables;

pub use ast::{Action, Diagnostic, Proto, Rule, Ruleset, Severity};
pub use parse::parse;
