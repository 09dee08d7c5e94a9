//! One module per subcommand.

pub mod doctor;
pub mod dtype;
pub mod program;
pub mod run;
