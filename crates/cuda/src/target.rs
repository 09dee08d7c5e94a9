//! The GPU architectures anybit generates and compiles code for.
//!
//! What this module promises: [`Target::from_str`] accepts exactly `sm_80`, `sm_86`, `sm_89`,
//! `sm_90`, `sm_90a` and says so otherwise; [`Target::name`] is the name NVRTC takes. Code
//! generation and compilation both depend on this module, and it depends on neither.

use std::fmt;
use std::str::FromStr;

/// A GPU architecture anybit compiles for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Sm80,
    Sm86,
    Sm89,
    Sm90,
    /// Hopper with its architecture-specific instructions (wgmma, TMA).
    Sm90a,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Sm80,
        Target::Sm86,
        Target::Sm89,
        Target::Sm90,
        Target::Sm90a,
    ];

    /// The name NVRTC and this crate use, e.g. `sm_90a`.
    pub const fn name(self) -> &'static str {
        match self {
            Target::Sm80 => "sm_80",
            Target::Sm86 => "sm_86",
            Target::Sm89 => "sm_89",
            Target::Sm90 => "sm_90",
            Target::Sm90a => "sm_90a",
        }
    }

    /// The target of a GPU with this compute capability, if anybit supports it
    /// (Hopper gets `sm_90a`).
    pub fn for_compute_capability(major: i32, minor: i32) -> Option<Target> {
        match (major, minor) {
            (8, 0) => Some(Target::Sm80),
            (8, 6) => Some(Target::Sm86),
            (8, 9) => Some(Target::Sm89),
            (9, 0) => Some(Target::Sm90a),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A target name that is not one of [`Target::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown target `{0}`; valid targets are sm_80, sm_86, sm_89, sm_90 and sm_90a")]
pub struct ParseTargetError(pub String);

impl FromStr for Target {
    type Err = ParseTargetError;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|target| target.name() == name)
            .ok_or_else(|| ParseTargetError(name.to_string()))
    }
}
