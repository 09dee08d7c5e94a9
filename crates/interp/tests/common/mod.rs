//! Helpers shared by the interpreter's tests: a seeded random generator and shortcuts to run
//! programs.

#![allow(dead_code)]

use anybit_dtype::DType;
use anybit_interp::{run, Arguments, RunError};
use anybit_vm::Program;

/// SplitMix64: small, fast and deterministic for a given seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// A random code of `dtype`.
    pub fn code(&mut self, dtype: DType) -> u32 {
        self.next_u64() as u32 & dtype.code_mask()
    }

    /// `count` values rounded to `dtype`, drawn from a normal distribution times `scale`.
    pub fn values(&mut self, dtype: DType, count: usize, scale: f64) -> Vec<f32> {
        (0..count)
            .map(|_| dtype.round((self.normal() * scale) as f32) as f32)
            .collect()
    }
}

/// Parses a program that the verifier accepts, panicking with the parser's or verifier's
/// message.
pub fn parse(text: &str) -> Program {
    let program = parse_unverified(text);
    if let Err(error) = anybit_vm::verify(&program) {
        panic!("{error}\n{text}");
    }
    program
}

/// Parses a program without verifying it.
pub fn parse_unverified(text: &str) -> Program {
    anybit_vm::parse(text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

/// Panics unless the verifier accepts `program`.
pub fn verified(program: Program) -> Program {
    if let Err(error) = anybit_vm::verify(&program) {
        panic!("{}: {error}", program.name);
    }
    program
}

/// Runs `program` with `args`, returning the print output.
pub fn run_ok(program: &Program, args: &mut Arguments) -> String {
    let mut out = Vec::new();
    if let Err(error) = run(program, args, &mut out) {
        panic!("{error}");
    }
    String::from_utf8(out).expect("print output is UTF-8")
}

/// Runs `program` expecting an error.
pub fn run_err(program: &Program, args: &mut Arguments) -> RunError {
    match run(program, args, &mut std::io::sink()) {
        Ok(()) => panic!("the run succeeded, but an error was expected"),
        Err(error) => error,
    }
}

/// Runs a program without parameters and returns its print output.
pub fn print_output(text: &str) -> String {
    let program = parse(text);
    let mut args = Arguments::new(&program);
    run_ok(&program, &mut args)
}
