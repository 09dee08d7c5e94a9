//! The program corpus: `.anybit` files that carry their own run lines, so that every executor
//! (the interpreter in CI, generated CUDA on a GPU in `anybit-gpu-check`) runs the same
//! programs on the same arguments, and a new instruction or bug fix comes with one new file
//! instead of Rust test code.
//!
//! A corpus file is a program in the text form with directives in `//` comments, which the
//! parser ignores (`docs/testing.md` has the full syntax and how to add a file):
//!
//! ```text
//! // run: --arg n=3 --arg a=values:1,2,3 --arg b=random:3 --arg c=zeros:3 --seed 3 \
//! //      --expect c=values:2,3,4
//! // run: --arg m=5 --arg x=random:5120:-4..4 --arg y=zeros:5120 \
//! //      --expect y=reference:softmax(x,m,1024) --tolerance 1e-3
//! // gpu: --ulps 2 --tolerance 1e-3
//! program ...
//! ```
//!
//! - `run:` lines: `--arg NAME=VALUE` in the syntax of `anybit run` (`i32` numbers; buffers as
//!   `zeros:N`, `random:N`, `values:1,2.5`), plus `random:N:LO..HI` (values uniform in
//!   `[LO, HI]`, rounded to the type); `--seed S`; `--expect NAME=values:…` or
//!   `--expect NAME=reference:F(…)` with one of the [`Reference`]s; `--tolerance X` and
//!   `--ulps N` for the expectations (bit-exact without them). A trailing `\` continues a
//!   directive on the next comment line.
//! - `gpu:` line (at most one): how closely generated code must agree with the interpreter,
//!   `--ulps N` and/or `--tolerance X` (bit-exact without it), or `--skip REASON`.
//!
//! Promises: loading a file never panics and reports errors as `path:line: message`; a run's
//! random buffers are exactly those `anybit run` draws for the same `--arg`s in the same order
//! and `--seed` (so a run line's `--arg`s and `--seed` can be pasted into `anybit run`, except
//! for the `LO..HI` form, which the command does not have yet); references are computed here,
//! in f64 or exact integers, independently of the interpreter.

use std::path::{Path, PathBuf};

use anybit_cuda::{CodegenError, Target};
use anybit_dtype::{packed_bytes, read_code, DType};
use anybit_interp::{pack_codes, pack_values, RunError};
use anybit_vm::{ParamKind, Program};
use rand::prelude::*;

use crate::cases::{random_finite_code, Case, Value};
use crate::compare::{compare, run_values_on_interpreter};
use crate::random_programs::Agreement;

/// The target of the blessed CUDA snapshots (`name.cu` beside `name.anybit`).
pub const SNAPSHOT_TARGET: Target = Target::Sm90a;

/// The environment variable that asks for snapshots to be rewritten (any value but empty or
/// `0`; see [`bless_requested`]).
pub const BLESS_VARIABLE: &str = "ANYBIT_BLESS";

/// The command that blesses the snapshots, for messages.
pub const BLESS_COMMAND: &str = "ANYBIT_BLESS=1 cargo test -p anybit-difftest --test corpus";

/// A corpus file could not be loaded, or one of its runs failed.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The program text does not parse (the error carries line and column).
    #[error("{path}:{error}")]
    Parse {
        path: PathBuf,
        error: anybit_vm::ParseError,
    },
    #[error("{path}:{error}")]
    Verify {
        path: PathBuf,
        error: anybit_vm::VerifyError,
    },
    /// A directive is malformed, or does not fit the program.
    #[error("{path}:{line}: {message}")]
    Directive {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The interpreter refused or stopped the run of the directive at `line`.
    #[error("{path}:{line}: the interpreter: {error}")]
    Interpreter {
        path: PathBuf,
        line: usize,
        error: RunError,
    },
    /// An output of the run at `line` is not what it expects.
    #[error("{path}:{line}: `{buffer}` {message}")]
    Expectation {
        path: PathBuf,
        line: usize,
        buffer: String,
        message: String,
    },
    /// Code generation fails (every corpus program must generate).
    #[error("{path}: code generation for {target}: {error}")]
    Codegen {
        path: PathBuf,
        target: Target,
        error: CodegenError,
    },
    /// The blessed CUDA beside the file is missing or differs from what is generated now.
    #[error("{path}: {message}")]
    Snapshot { path: PathBuf, message: String },
}

/// One corpus file, parsed and verified; its run lines fit its parameters.
#[derive(Clone, Debug)]
pub struct CorpusFile {
    path: PathBuf,
    program: Program,
    runs: Vec<RunSpec>,
    gpu: GpuSpec,
}

/// What the `gpu:` line says.
#[derive(Clone, Debug, PartialEq)]
pub enum GpuSpec {
    /// Compare every run's outputs with the interpreter's this closely.
    Agree(Agreement),
    /// Do not run the file on the GPU, for this reason.
    Skip(String),
}

/// One `run:` line. Every parameter has exactly one argument of its kind, and every
/// expectation names a buffer parameter (checked when the line is parsed).
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    line: usize,
    arguments: Vec<(String, ArgumentSpec)>,
    seed: u64,
    expectations: Vec<Expectation>,
    agreement: Agreement,
}

impl RunSpec {
    /// 1-based line of the `run:` directive.
    pub fn line(&self) -> usize {
        self.line
    }

    /// `--arg`s in the order written (random buffers are drawn in this order).
    pub fn arguments(&self) -> &[(String, ArgumentSpec)] {
        &self.arguments
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn expectations(&self) -> &[Expectation] {
        &self.expectations
    }

    /// How closely the outputs must meet the expectations.
    pub fn agreement(&self) -> Agreement {
        self.agreement
    }
}

/// The value of one `--arg`.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgumentSpec {
    Int(i32),
    /// `zeros:N`: N elements with code 0. These buffers are the run's outputs on the GPU,
    /// where they are filled with poison first.
    Zeros(usize),
    /// `random:N`: N random codes with finite values.
    Random(usize),
    /// `random:N:LO..HI`: N values uniform in `[LO, HI]`, rounded to the type.
    RandomRange {
        count: usize,
        low: f32,
        high: f32,
    },
    /// `values:1,2.5,-3`: the numbers, rounded to the type.
    Values(Vec<f32>),
}

impl ArgumentSpec {
    fn element_count(&self) -> Option<usize> {
        match self {
            ArgumentSpec::Int(_) => None,
            ArgumentSpec::Zeros(count)
            | ArgumentSpec::Random(count)
            | ArgumentSpec::RandomRange { count, .. } => Some(*count),
            ArgumentSpec::Values(values) => Some(values.len()),
        }
    }
}

/// One `--expect NAME=…`.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    pub buffer: String,
    pub expected: Expected,
}

/// What a buffer must hold after the run.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    /// Every element, rounded to the buffer's type.
    Values(Vec<f32>),
    /// Computed from the run's arguments.
    Reference(Reference),
}

/// A size in a reference: an `i32` parameter's argument or a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Size {
    Param(String),
    Literal(usize),
}

/// The references a run line may expect, computed from the arguments before the run (in f64,
/// or exactly for integer outputs, then rounded to the output's type). Matrices are row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Reference {
    /// `matmul(a, b, m, n, k)` or `matmul(a, b, m, n, k, c)`: `a [m, k] · b [k, n]`, plus
    /// `c [m, n]` when given.
    Matmul {
        a: String,
        b: String,
        m: Size,
        n: Size,
        k: Size,
        c: Option<String>,
    },
    /// `softmax(x, rows, cols)`: each row of `x [rows, cols]` through `exp(x - max) / sum`.
    Softmax { x: String, rows: Size, cols: Size },
    /// `cast(x)`: every element of `x` converted to the output's type as the VM's `cast` does
    /// (a copy when the types are equal).
    Cast { x: String },
    /// `quantized_matmul(x, w, scales, zeros, m, n, k, group)`: `x [m, k] · dequant(w)ᵀ`, with
    /// `w [n, k]` codes, `scales` and `zeros` `[n, k / group]`, and `dequant(w)[j, l] =
    /// (w[j, l] - zeros[j, l / group]) · scales[j, l / group]`; `zeros` may be `none`.
    QuantizedMatmul {
        x: String,
        w: String,
        scales: String,
        zeros: Option<String>,
        m: Size,
        n: Size,
        k: Size,
        group: Size,
    },
}

/// The `.anybit` files of `dir`, sorted by name.
pub fn corpus_paths(dir: &Path) -> Result<Vec<PathBuf>, CorpusError> {
    let io = |error| CorpusError::Io {
        path: dir.to_path_buf(),
        error,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "anybit")
        {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// The corpus of this checkout (`corpus/` at the repository root).
pub fn checkout_corpus_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // crates/difftest → the repository root.
    crate_dir
        .ancestors()
        .nth(2)
        .unwrap_or(crate_dir)
        .join("corpus")
}

impl CorpusFile {
    /// Reads, parses and verifies a corpus file and its directives.
    pub fn load(path: &Path) -> Result<CorpusFile, CorpusError> {
        let text = std::fs::read_to_string(path).map_err(|error| CorpusError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        CorpusFile::from_text(path, &text)
    }

    /// Parses `text` as the corpus file at `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<CorpusFile, CorpusError> {
        let directive_error = |line: usize, message: String| CorpusError::Directive {
            path: path.to_path_buf(),
            line,
            message,
        };
        let program = anybit_vm::parse(text).map_err(|error| CorpusError::Parse {
            path: path.to_path_buf(),
            error,
        })?;
        anybit_vm::verify(&program).map_err(|error| CorpusError::Verify {
            path: path.to_path_buf(),
            error,
        })?;
        let mut runs = Vec::new();
        let mut gpu = None;
        for directive in
            directives(text).map_err(|(line, message)| directive_error(line, message))?
        {
            match directive.kind {
                DirectiveKind::Run => runs.push(
                    parse_run(&directive, &program)
                        .map_err(|message| directive_error(directive.line, message))?,
                ),
                DirectiveKind::Gpu => {
                    if gpu.is_some() {
                        return Err(directive_error(
                            directive.line,
                            "a file has at most one `gpu:` line".into(),
                        ));
                    }
                    gpu = Some(
                        parse_gpu(&directive.text)
                            .map_err(|message| directive_error(directive.line, message))?,
                    );
                }
            }
        }
        if runs.is_empty() {
            return Err(directive_error(
                1,
                "no `// run:` line: every corpus file runs at least once".into(),
            ));
        }
        if !runs.iter().any(|run| !run.expectations.is_empty()) {
            return Err(directive_error(
                runs[0].line,
                "no run line has an `--expect`: at least one must check an output".into(),
            ));
        }
        Ok(CorpusFile {
            path: path.to_path_buf(),
            program,
            runs,
            gpu: gpu.unwrap_or(GpuSpec::Agree(Agreement::BitExact)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn runs(&self) -> &[RunSpec] {
        &self.runs
    }

    pub fn gpu(&self) -> &GpuSpec {
        &self.gpu
    }

    /// The file's name, for case names and messages.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The run of `run` as a [`Case`]: arguments drawn as `anybit run` draws them, the `zeros:`
    /// buffers as outputs (whole buffers compared), the `gpu:` line's agreement.
    pub fn case(&self, run: &RunSpec) -> Case {
        let mut rng = StdRng::seed_from_u64(run.seed);
        let mut values = vec![Value::I32(0); self.program.params.len()];
        let mut outputs = Vec::new();
        for (name, spec) in &run.arguments {
            let index = self
                .param_index(name)
                .expect("checked when the run line was parsed");
            let dtype = match self.program.params[index].kind {
                ParamKind::Pointer(dtype) => dtype,
                ParamKind::Int { .. } => DType::Signed(32),
            };
            values[index] = match spec {
                ArgumentSpec::Int(number) => Value::I32(*number),
                ArgumentSpec::Zeros(count) => {
                    outputs.push((index, *count));
                    Value::Buffer(vec![0; packed_bytes(*count, dtype.bits())])
                }
                ArgumentSpec::Random(count) => {
                    let codes: Vec<u32> = (0..*count)
                        .map(|_| random_finite_code(dtype, &mut rng))
                        .collect();
                    Value::Buffer(pack_codes(dtype, &codes))
                }
                ArgumentSpec::RandomRange { count, low, high } => {
                    let numbers: Vec<f32> = (0..*count)
                        .map(|_| rng.random_range(*low..=*high))
                        .collect();
                    Value::Buffer(pack_values(dtype, &numbers))
                }
                ArgumentSpec::Values(numbers) => Value::Buffer(pack_values(dtype, numbers)),
            };
        }
        outputs.sort_unstable();
        let agreement = match &self.gpu {
            GpuSpec::Agree(agreement) => *agreement,
            GpuSpec::Skip(_) => Agreement::BitExact,
        };
        Case {
            name: format!("corpus {}:{}", self.name(), run.line),
            program: self.program.clone(),
            values,
            outputs,
            agreement,
        }
    }

    /// Every run as a [`Case`].
    pub fn cases(&self) -> Vec<Case> {
        self.runs.iter().map(|run| self.case(run)).collect()
    }

    fn param_index(&self, name: &str) -> Option<usize> {
        self.program
            .params
            .iter()
            .position(|param| param.name == name)
    }

    fn dtype_of(&self, name: &str) -> Option<DType> {
        let index = self.param_index(name)?;
        match self.program.params[index].kind {
            ParamKind::Pointer(dtype) => Some(dtype),
            ParamKind::Int { .. } => None,
        }
    }

    /// Runs `run` on the interpreter (with the arguments as written, no poison) and checks its
    /// expectations.
    pub fn check_run(&self, run: &RunSpec) -> Result<(), CorpusError> {
        let case = self.case(run);
        let after = run_values_on_interpreter(&self.program, &case.values).map_err(|error| {
            CorpusError::Interpreter {
                path: self.path.clone(),
                line: run.line,
                error,
            }
        })?;
        for expectation in &run.expectations {
            let failed = |message: String| CorpusError::Expectation {
                path: self.path.clone(),
                line: run.line,
                buffer: expectation.buffer.clone(),
                message,
            };
            let index = self
                .param_index(&expectation.buffer)
                .expect("checked when the run line was parsed");
            let dtype = self
                .dtype_of(&expectation.buffer)
                .expect("checked when the run line was parsed");
            let count = run
                .arguments
                .iter()
                .find(|(name, _)| *name == expectation.buffer)
                .and_then(|(_, spec)| spec.element_count())
                .expect("checked when the run line was parsed");
            let expected = match &expectation.expected {
                Expected::Values(numbers) => {
                    if numbers.len() != count {
                        return Err(failed(format!(
                            "has {count} elements, but the run line expects {} values",
                            numbers.len()
                        )));
                    }
                    pack_values(dtype, numbers)
                }
                Expected::Reference(reference) => self
                    .reference(reference, &case.values, run, dtype, count)
                    .map_err(failed)?,
            };
            let Value::Buffer(actual) = &after[index] else {
                return Err(failed("is not a buffer".into()));
            };
            let comparison = compare(dtype, &expected, actual, count, run.agreement);
            if let Some(mismatch) = comparison.first_mismatch {
                return Err(failed(format!(
                    "differs in {} of {} elements; first at {}: expected {} (code {:#x}), the interpreter gives {} (code {:#x})",
                    comparison.mismatches,
                    comparison.compared,
                    mismatch.index,
                    mismatch.expected,
                    mismatch.expected_code,
                    mismatch.actual,
                    mismatch.actual_code
                )));
            }
        }
        Ok(())
    }

    /// Every run on the interpreter; the first failure of each run.
    pub fn check_runs(&self) -> Vec<CorpusError> {
        self.runs
            .iter()
            .filter_map(|run| self.check_run(run).err())
            .collect()
    }

    /// The packed codes `reference` gives for an output of `dtype` with `count` elements.
    fn reference(
        &self,
        reference: &Reference,
        values: &[Value],
        run: &RunSpec,
        dtype: DType,
        count: usize,
    ) -> Result<Vec<u8>, String> {
        let size = |size: &Size| -> Result<usize, String> {
            match size {
                Size::Literal(number) => Ok(*number),
                Size::Param(name) => match self.param_index(name).map(|index| &values[index]) {
                    Some(Value::I32(number)) => usize::try_from(*number)
                        .map_err(|_| format!("reference size `{name}` = {number} is negative")),
                    _ => Err(format!("reference size `{name}` is not an i32 parameter")),
                },
            }
        };
        let buffer = |name: &str, elements: usize| -> Result<(DType, Vec<f64>), String> {
            let (Some(index), Some(dtype)) = (self.param_index(name), self.dtype_of(name)) else {
                return Err(format!(
                    "reference operand `{name}` is not a buffer parameter"
                ));
            };
            let Value::Buffer(bytes) = &values[index] else {
                return Err(format!("reference operand `{name}` has no buffer"));
            };
            let available = run
                .arguments
                .iter()
                .find(|(argument, _)| argument == name)
                .and_then(|(_, spec)| spec.element_count())
                .unwrap_or(0);
            if available < elements {
                return Err(format!(
                    "reference operand `{name}` has {available} elements, the reference reads {elements}"
                ));
            }
            let decoded = (0..elements)
                .map(|index| dtype.decode(read_code(bytes, dtype.bits(), index)))
                .collect();
            Ok((dtype, decoded))
        };
        let shape_check = |elements: usize| -> Result<(), String> {
            if elements == count {
                Ok(())
            } else {
                Err(format!(
                    "has {count} elements, but the reference gives {elements}"
                ))
            }
        };
        let codes: Vec<u32> = match reference {
            Reference::Matmul { a, b, m, n, k, c } => {
                let (m, n, k) = (size(m)?, size(n)?, size(k)?);
                shape_check(m * n)?;
                let (a_dtype, a) = buffer(a, m * k)?;
                let (b_dtype, b) = buffer(b, k * n)?;
                let (c_dtype, c) = match c {
                    Some(c) => buffer(c, m * n)?,
                    None => (dtype, vec![0.0; m * n]),
                };
                let exact = [a_dtype, b_dtype, c_dtype, dtype]
                    .iter()
                    .all(|dtype| dtype.is_integer());
                (0..m * n)
                    .map(|index| {
                        let (row, col) = (index / n, index % n);
                        if exact {
                            let sum: i128 = (0..k)
                                .map(|l| a[row * k + l] as i128 * b[l * n + col] as i128)
                                .sum();
                            wrap(c[index] as i128 + sum, dtype)
                        } else {
                            let sum: f64 = (0..k).map(|l| a[row * k + l] * b[l * n + col]).sum();
                            dtype.encode((c[index] + sum) as f32)
                        }
                    })
                    .collect()
            }
            Reference::Softmax { x, rows, cols } => {
                let (rows, cols) = (size(rows)?, size(cols)?);
                shape_check(rows * cols)?;
                let (_, x) = buffer(x, rows * cols)?;
                let mut codes = Vec::with_capacity(rows * cols);
                for row in x.chunks(cols.max(1)) {
                    let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = row.iter().map(|value| (value - top).exp()).collect();
                    let total: f64 = exps.iter().sum();
                    codes.extend(exps.iter().map(|e| dtype.encode((e / total) as f32)));
                }
                codes
            }
            Reference::Cast { x } => {
                let (x_dtype, x) = buffer(x, count)?;
                x.iter().map(|&value| cast(value, x_dtype, dtype)).collect()
            }
            Reference::QuantizedMatmul {
                x,
                w,
                scales,
                zeros,
                m,
                n,
                k,
                group,
            } => {
                let (m, n, k, group) = (size(m)?, size(n)?, size(k)?, size(group)?);
                if group == 0 || k % group != 0 {
                    return Err(format!(
                        "quantized_matmul: k = {k} is no multiple of the group size {group}"
                    ));
                }
                shape_check(m * n)?;
                let groups = k / group;
                let (_, x) = buffer(x, m * k)?;
                let (_, w) = buffer(w, n * k)?;
                let (_, scales) = buffer(scales, n * groups)?;
                let zeros = match zeros {
                    Some(zeros) => buffer(zeros, n * groups)?.1,
                    None => vec![0.0; n * groups],
                };
                (0..m * n)
                    .map(|index| {
                        let (row, col) = (index / n, index % n);
                        let sum: f64 = (0..k)
                            .map(|l| {
                                let g = col * groups + l / group;
                                x[row * k + l] * (w[col * k + l] - zeros[g]) * scales[g]
                            })
                            .sum();
                        dtype.encode(sum as f32)
                    })
                    .collect()
            }
        };
        Ok(pack_codes(dtype, &codes))
    }
}

/// `value` wrapped to the integer type `dtype` (two's complement, modulo 2^bits).
fn wrap(value: i128, dtype: DType) -> u32 {
    (value as u32) & dtype.code_mask()
}

/// The code of `value` (of type `from`) converted to `to` as the VM's `cast` does.
fn cast(value: f64, from: DType, to: DType) -> u32 {
    match (from.is_integer(), to.is_integer()) {
        (true, true) => wrap(value as i128, to),
        (false, true) => {
            if value.is_nan() {
                return 0;
            }
            let truncated = value.trunc().clamp(to.min_value(), to.max_value());
            wrap(truncated as i128, to)
        }
        // Integers become f32 first (rounding to nearest even); every float type is a subset
        // of f32, so `as f32` is exact for float sources.
        (_, false) => to.encode(value as f32),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirectiveKind {
    Run,
    Gpu,
}

/// A directive with its continuation lines joined.
struct Directive {
    kind: DirectiveKind,
    line: usize,
    text: String,
}

/// The `run:` and `gpu:` directives of `text`, or `(line, message)`.
fn directives(text: &str) -> Result<Vec<Directive>, (usize, String)> {
    let comment = |line: &str| -> Option<String> {
        let trimmed = line.trim_start();
        let body = trimmed.strip_prefix("//")?;
        if body.starts_with('/') {
            return None;
        }
        Some(body.trim().to_string())
    };
    let mut found: Vec<Directive> = Vec::new();
    let mut continuing = false;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if continuing {
            let Some(body) = comment(line) else {
                return Err((
                    number,
                    "a directive ends with `\\` but this line is no `//` comment".into(),
                ));
            };
            let last = found.last_mut().expect("continuing a directive");
            continuing = push_part(&mut last.text, &body);
            continue;
        }
        let Some(body) = comment(line) else { continue };
        let (kind, rest) = if let Some(rest) = body.strip_prefix("run:") {
            (DirectiveKind::Run, rest)
        } else if let Some(rest) = body.strip_prefix("gpu:") {
            (DirectiveKind::Gpu, rest)
        } else {
            continue;
        };
        let mut directive = Directive {
            kind,
            line: number,
            text: String::new(),
        };
        continuing = push_part(&mut directive.text, rest.trim());
        found.push(directive);
    }
    if continuing {
        let line = found.last().map_or(1, |directive| directive.line);
        return Err((
            line,
            "the last directive ends with `\\` and nothing follows".into(),
        ));
    }
    Ok(found)
}

/// Appends one line of a directive; true when it ends with `\` (more follows). Lines join with
/// a space, except after a `,`, so that a long list of values can be split after a comma.
fn push_part(text: &mut String, part: &str) -> bool {
    let (part, more) = match part.strip_suffix('\\') {
        Some(part) => (part.trim_end(), true),
        None => (part, false),
    };
    if !text.is_empty() && !part.is_empty() && !text.ends_with(',') {
        text.push(' ');
    }
    text.push_str(part);
    more
}

/// Options shared by `run:` and `gpu:` lines.
#[derive(Default)]
struct Closeness {
    ulps: Option<u32>,
    tolerance: Option<f64>,
}

impl Closeness {
    /// Takes `--ulps N` or `--tolerance X` at `option`; false when `option` is neither.
    fn take<'a>(
        &mut self,
        option: &str,
        value: impl FnOnce() -> Result<&'a str, String>,
    ) -> Result<bool, String> {
        match option {
            "--ulps" => {
                let text = value()?;
                self.ulps = Some(
                    text.parse()
                        .map_err(|_| format!("--ulps `{text}` is not a count"))?,
                );
            }
            "--tolerance" => {
                let text = value()?;
                let tolerance: f64 = text
                    .parse()
                    .map_err(|_| format!("--tolerance `{text}` is not a number"))?;
                if !(tolerance >= 0.0 && tolerance.is_finite()) {
                    return Err(format!(
                        "--tolerance `{text}` must be finite and at least 0"
                    ));
                }
                self.tolerance = Some(tolerance);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn agreement(&self) -> Agreement {
        match (self.ulps, self.tolerance) {
            (None, None) => Agreement::BitExact,
            (ulps, tolerance) => Agreement::Close {
                ulps: ulps.unwrap_or(0),
                fraction_of_max: tolerance.unwrap_or(0.0),
            },
        }
    }
}

fn parse_gpu(text: &str) -> Result<GpuSpec, String> {
    let mut words = text.split_whitespace();
    let mut closeness = Closeness::default();
    while let Some(option) = words.next() {
        if option == "--skip" {
            let reason: Vec<&str> = words.collect();
            if reason.is_empty() {
                return Err("--skip needs a reason".into());
            }
            return Ok(GpuSpec::Skip(reason.join(" ")));
        }
        let value = || {
            words
                .next()
                .ok_or_else(|| format!("{option} needs a value"))
        };
        if !closeness.take(option, value)? {
            return Err(format!(
                "unknown `gpu:` option `{option}` (expected --ulps N, --tolerance X or --skip REASON)"
            ));
        }
    }
    Ok(GpuSpec::Agree(closeness.agreement()))
}

fn parse_run(directive: &Directive, program: &Program) -> Result<RunSpec, String> {
    let mut run = RunSpec {
        line: directive.line,
        arguments: Vec::new(),
        seed: 0,
        expectations: Vec::new(),
        agreement: Agreement::BitExact,
    };
    let mut closeness = Closeness::default();
    let mut words = directive.text.split_whitespace();
    while let Some(option) = words.next() {
        let mut value = || {
            words
                .next()
                .ok_or_else(|| format!("{option} needs a value"))
        };
        match option {
            "--arg" => {
                let assignment = value()?;
                let (name, text) = assignment
                    .split_once('=')
                    .ok_or_else(|| format!("--arg `{assignment}` must be NAME=VALUE"))?;
                if run.arguments.iter().any(|(given, _)| given == name) {
                    return Err(format!("--arg `{name}` is given twice"));
                }
                let param = program
                    .params
                    .iter()
                    .find(|param| param.name == name)
                    .ok_or_else(|| unknown_parameter(program, name))?;
                run.arguments
                    .push((name.to_string(), parse_argument(&param.kind, name, text)?));
            }
            "--seed" => {
                let text = value()?;
                run.seed = text
                    .parse()
                    .map_err(|_| format!("--seed `{text}` is not a number"))?;
            }
            "--expect" => {
                let assignment = value()?;
                let (name, text) = assignment
                    .split_once('=')
                    .ok_or_else(|| format!("--expect `{assignment}` must be NAME=EXPECTED"))?;
                run.expectations.push(Expectation {
                    buffer: name.to_string(),
                    expected: parse_expected(name, text)?,
                });
            }
            _ => {
                if !closeness.take(option, value)? {
                    return Err(format!(
                        "unknown `run:` option `{option}` (expected --arg, --seed, --expect, --tolerance or --ulps)"
                    ));
                }
            }
        }
    }
    run.agreement = closeness.agreement();
    for param in &program.params {
        if !run.arguments.iter().any(|(name, _)| *name == param.name) {
            return Err(format!("parameter `{}` has no --arg", param.name));
        }
    }
    for expectation in &run.expectations {
        let is_buffer = program.params.iter().any(|param| {
            param.name == expectation.buffer && matches!(param.kind, ParamKind::Pointer(_))
        });
        if !is_buffer {
            return Err(format!(
                "--expect `{}`: no buffer parameter has this name",
                expectation.buffer
            ));
        }
    }
    Ok(run)
}

fn unknown_parameter(program: &Program, name: &str) -> String {
    let names: Vec<&str> = program
        .params
        .iter()
        .map(|param| param.name.as_str())
        .collect();
    format!(
        "{} has no parameter `{name}`; its parameters are {}",
        program.name,
        names.join(", ")
    )
}

/// One `--arg` value, in the syntax of `anybit run` (which see) plus `random:N:LO..HI`.
fn parse_argument(kind: &ParamKind, name: &str, text: &str) -> Result<ArgumentSpec, String> {
    let count = |count: &str| -> Result<usize, String> {
        count
            .parse()
            .map_err(|_| format!("`{name}={text}`: `{count}` is not an element count"))
    };
    match kind {
        ParamKind::Int { .. } => text
            .parse()
            .map(ArgumentSpec::Int)
            .map_err(|_| format!("`{name}` is an i32, but `{text}` is not an integer")),
        ParamKind::Pointer(_) => {
            if let Some(rest) = text.strip_prefix("zeros:") {
                Ok(ArgumentSpec::Zeros(count(rest)?))
            } else if let Some(rest) = text.strip_prefix("random:") {
                let Some((number, range)) = rest.split_once(':') else {
                    return Ok(ArgumentSpec::Random(count(rest)?));
                };
                let bounds = range.split_once("..").and_then(|(low, high)| {
                    Some((low.parse::<f32>().ok()?, high.parse::<f32>().ok()?))
                });
                match bounds {
                    Some((low, high)) if low.is_finite() && high.is_finite() && low <= high => {
                        Ok(ArgumentSpec::RandomRange {
                            count: count(number)?,
                            low,
                            high,
                        })
                    }
                    _ => Err(format!(
                        "`{name}={text}`: the range must be LO..HI with finite LO <= HI"
                    )),
                }
            } else if let Some(rest) = text.strip_prefix("values:") {
                Ok(ArgumentSpec::Values(parse_numbers(name, rest)?))
            } else if text.starts_with("file:") {
                Err(format!(
                    "`{name}={text}`: corpus files carry their data in the run line (values:, random:, zeros:), not in other files"
                ))
            } else {
                Err(format!(
                    "`{name}={text}`: a buffer is given as zeros:N, random:N, random:N:LO..HI or values:1,2,3"
                ))
            }
        }
    }
}

fn parse_numbers(name: &str, text: &str) -> Result<Vec<f32>, String> {
    text.split(',')
        .map(|number| {
            number
                .trim()
                .parse::<f32>()
                .map_err(|_| format!("`{name}`: `{number}` is not a number"))
        })
        .collect()
}

fn parse_expected(name: &str, text: &str) -> Result<Expected, String> {
    if let Some(rest) = text.strip_prefix("values:") {
        return Ok(Expected::Values(parse_numbers(name, rest)?));
    }
    let Some(call) = text.strip_prefix("reference:") else {
        return Err(format!(
            "--expect `{name}={text}`: expected values:1,2,3 or reference:NAME(...)"
        ));
    };
    let parsed = call
        .strip_suffix(')')
        .and_then(|call| call.split_once('('))
        .map(|(function, arguments)| {
            (
                function,
                arguments.split(',').map(str::trim).collect::<Vec<_>>(),
            )
        });
    let Some((function, arguments)) = parsed else {
        return Err(format!(
            "--expect `{name}={text}`: a reference is written NAME(ARG,...)"
        ));
    };
    let size = |text: &str| -> Size {
        match text.parse() {
            Ok(number) => Size::Literal(number),
            Err(_) => Size::Param(text.to_string()),
        }
    };
    let owned = |text: &str| text.to_string();
    let reference = match (function, arguments.as_slice()) {
        ("matmul", [a, b, m, n, k]) => Reference::Matmul {
            a: owned(a),
            b: owned(b),
            m: size(m),
            n: size(n),
            k: size(k),
            c: None,
        },
        ("matmul", [a, b, m, n, k, c]) => Reference::Matmul {
            a: owned(a),
            b: owned(b),
            m: size(m),
            n: size(n),
            k: size(k),
            c: Some(owned(c)),
        },
        ("softmax", [x, rows, cols]) => Reference::Softmax {
            x: owned(x),
            rows: size(rows),
            cols: size(cols),
        },
        ("cast", [x]) => Reference::Cast { x: owned(x) },
        ("quantized_matmul", [x, w, scales, zeros, m, n, k, group]) => {
            Reference::QuantizedMatmul {
                x: owned(x),
                w: owned(w),
                scales: owned(scales),
                zeros: (*zeros != "none").then(|| owned(zeros)),
                m: size(m),
                n: size(n),
                k: size(k),
                group: size(group),
            }
        }
        _ => {
            return Err(format!(
                "--expect `{name}={text}`: the references are matmul(a,b,m,n,k[,c]), softmax(x,rows,cols), cast(x) and quantized_matmul(x,w,scales,zeros,m,n,k,group)"
            ))
        }
    };
    Ok(Expected::Reference(reference))
}

/// The blessed text of `file`'s generated CUDA for [`SNAPSHOT_TARGET`]: what instruction
/// selection chose and the kernel (without the fixed prelude). The program is generated from
/// its canonical text, so positions (`line:column` of selections) do not move when comments
/// around the program change.
pub fn snapshot_text(file: &CorpusFile) -> Result<String, CorpusError> {
    // A verified program's printed text parses back to the same program (docs/vm-text.md).
    let canonical = anybit_vm::parse(&anybit_vm::print(&file.program));
    let program = canonical.as_ref().unwrap_or(&file.program);
    // The canonical program is another `Program`, so it is verified for itself.
    let verified = anybit_vm::verify(program).map_err(|error| CorpusError::Verify {
        path: file.path.clone(),
        error,
    })?;
    let kernel = anybit_cuda::generate(&verified, SNAPSHOT_TARGET).map_err(|error| {
        CorpusError::Codegen {
            path: file.path.clone(),
            target: SNAPSHOT_TARGET,
            error,
        }
    })?;
    let file_name = file.name();
    let mut text = format!(
        "// CUDA generated by anybit for {SNAPSHOT_TARGET} from {file_name} (kernel only, without the prelude).\n\
         // Do not edit: {BLESS_COMMAND} rewrites it.\n\
         // Positions are in the program's canonical text (`anybit fmt`).\n\
         // threads {}, static shared {} B, dynamic shared {} B\n// selections:\n",
        kernel.threads, kernel.static_shared_bytes, kernel.dynamic_shared_bytes
    );
    for selection in &kernel.selections {
        text.push_str(&format!("//   {selection}\n"));
    }
    text.push_str(kernel.kernel_source());
    Ok(text)
}

/// What [`check_snapshot`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotOutcome {
    Matches,
    /// The snapshot was missing or different and has been written.
    Blessed,
}

/// The snapshot path of a corpus file: `name.anybit` → `name.cu`.
pub fn snapshot_path(path: &Path) -> PathBuf {
    path.with_extension("cu")
}

/// Compares `file`'s generated CUDA with the blessed snapshot beside it; with `bless`, writes
/// the snapshot instead of failing when it is missing or differs.
pub fn check_snapshot(file: &CorpusFile, bless: bool) -> Result<SnapshotOutcome, CorpusError> {
    let generated = snapshot_text(file)?;
    let path = snapshot_path(&file.path);
    let snapshot_error = |message: String| CorpusError::Snapshot {
        path: path.clone(),
        message,
    };
    let blessed = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(snapshot_error(error.to_string())),
    };
    if blessed.as_deref() == Some(generated.as_str()) {
        return Ok(SnapshotOutcome::Matches);
    }
    if bless {
        std::fs::write(&path, &generated).map_err(|error| snapshot_error(error.to_string()))?;
        return Ok(SnapshotOutcome::Blessed);
    }
    Err(snapshot_error(match blessed {
        None => format!(
            "missing; review the generated CUDA and bless it with `{BLESS_COMMAND}`"
        ),
        Some(blessed) => format!(
            "the generated CUDA differs from the blessed snapshot; {}\nIf the change is intended, bless it with `{BLESS_COMMAND}` and review the diff",
            first_difference(&blessed, &generated)
        ),
    }))
}

/// The first line where `blessed` and `generated` differ, with both versions.
fn first_difference(blessed: &str, generated: &str) -> String {
    let (old, new): (Vec<&str>, Vec<&str>) =
        (blessed.lines().collect(), generated.lines().collect());
    let line = old
        .iter()
        .zip(&new)
        .position(|(old, new)| old != new)
        .unwrap_or(old.len().min(new.len()));
    let show = |lines: &[&str]| {
        lines
            .get(line)
            .copied()
            .unwrap_or("(end of text)")
            .to_string()
    };
    format!(
        "first difference at line {} ({} lines blessed, {} generated):\n  blessed:   {}\n  generated: {}",
        line + 1,
        old.len(),
        new.len(),
        show(&old),
        show(&new)
    )
}

/// Whether the environment asks for snapshots to be rewritten.
pub fn bless_requested() -> bool {
    std::env::var(BLESS_VARIABLE).is_ok_and(|value| !value.is_empty() && value != "0")
}

/// Snapshot files in `dir` with no corpus file beside them.
pub fn stale_snapshots(dir: &Path) -> Result<Vec<PathBuf>, CorpusError> {
    let io = |error| CorpusError::Io {
        path: dir.to_path_buf(),
        error,
    };
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|extension| extension == "cu")
            && !path.with_extension("anybit").exists()
        {
            stale.push(path);
        }
    }
    stale.sort();
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROGRAM: &str = "program add_one(x: ptr<u4>, y: ptr<u4>, n: i32)
grid(1)
threads(4)
{
    %gx = view_global(x, [n], [1]);
    %gy = view_global(y, [n], [1]);
    %v = load_global(%gx[0], spatial(4).local(2));
    %w = add(%v, 1);
    store_global(%gy[0], %w);
}
";

    fn file(directives: &str) -> Result<CorpusFile, CorpusError> {
        CorpusFile::from_text(
            Path::new("test.anybit"),
            &format!("{directives}\n{PROGRAM}"),
        )
    }

    fn error(directives: &str) -> String {
        match file(directives) {
            Ok(_) => panic!("`{directives}` should be refused"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn run_lines_parse_with_continuations_and_split_lists() {
        let file = file(
            "// A comment that is no directive: run this.
// run: --arg n=8 --arg x=values:1,2,3, \\
//      4,5,6,7,15 --arg y=zeros:8 \\
//      --expect y=values:2,3,4,5,6,7,8,0 --seed 3
/// documentation
// gpu: --ulps 2 --tolerance 1e-3",
        )
        .unwrap();
        assert_eq!(file.runs().len(), 1);
        let run = &file.runs()[0];
        assert_eq!(run.line(), 2);
        assert_eq!(run.seed(), 3);
        assert_eq!(
            run.arguments()[1],
            (
                "x".to_string(),
                ArgumentSpec::Values(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 15.0])
            )
        );
        assert_eq!(run.agreement(), Agreement::BitExact);
        assert_eq!(
            file.gpu(),
            &GpuSpec::Agree(Agreement::Close {
                ulps: 2,
                fraction_of_max: 1e-3
            })
        );
        assert_eq!(file.program().doc, vec!["documentation".to_string()]);
        file.check_run(run).unwrap();
        let case = file.case(run);
        assert_eq!(case.name, "corpus test.anybit:2");
        assert_eq!(case.outputs, vec![(1, 8)]);
        assert_eq!(case.values[2], Value::I32(8));
    }

    #[test]
    fn a_wrong_expectation_fails_with_the_first_difference() {
        let file =
            file("// run: --arg n=3 --arg x=values:1,2,3 --arg y=zeros:3 --expect y=values:2,3,5")
                .unwrap();
        let message = file.check_run(&file.runs()[0]).unwrap_err().to_string();
        assert_eq!(
            message,
            "test.anybit:1: `y` differs in 1 of 3 elements; first at 2: expected 5 (code 0x5), the interpreter gives 4 (code 0x4)"
        );
        let file = self::file(
            "// run: --arg n=3 --arg x=values:1,2,3 --arg y=zeros:4 --expect y=values:2,3,4",
        )
        .unwrap();
        assert_eq!(
            file.check_run(&file.runs()[0]).unwrap_err().to_string(),
            "test.anybit:1: `y` has 4 elements, but the run line expects 3 values"
        );
    }

    #[test]
    fn interpreter_errors_name_the_run_line() {
        // x has 2 elements, the program reads 3.
        let file = file(
            "// run: --arg n=2 --arg x=values:1,2 --arg y=zeros:2 --expect y=values:2,3
// run: --arg n=3 --arg x=values:1,2 --arg y=zeros:3 --expect y=values:2,3,1",
        )
        .unwrap();
        let errors = file.check_runs();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .to_string()
                .starts_with("test.anybit:2: the interpreter: "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn malformed_directives_are_refused_with_their_line() {
        let cases = [
            ("// nothing to run", "test.anybit:1: no `// run:` line: every corpus file runs at least once"),
            ("// run: --arg n=3 --arg x=values:1,2,3 --arg y=zeros:3", "test.anybit:1: no run line has an `--expect`: at least one must check an output"),
            ("// run: --arg n=3 --arg x=values:1 --arg y=zeros:3 --expect y=values:1 --fast", "test.anybit:1: unknown `run:` option `--fast` (expected --arg, --seed, --expect, --tolerance or --ulps)"),
            ("// run: --arg n=3 --arg x=values:1 --expect y=values:1", "test.anybit:1: parameter `y` has no --arg"),
            ("// run: --arg n=3 --arg n=4", "test.anybit:1: --arg `n` is given twice"),
            ("// run: --arg m=3", "test.anybit:1: add_one has no parameter `m`; its parameters are x, y, n"),
            ("// run: --arg n=three", "test.anybit:1: `n` is an i32, but `three` is not an integer"),
            ("// run: --arg x=file:x.bin", "test.anybit:1: `x=file:x.bin`: corpus files carry their data in the run line (values:, random:, zeros:), not in other files"),
            ("// run: --arg x=random:4:1..-1", "test.anybit:1: `x=random:4:1..-1`: the range must be LO..HI with finite LO <= HI"),
            ("// run: --arg x=ones:4", "test.anybit:1: `x=ones:4`: a buffer is given as zeros:N, random:N, random:N:LO..HI or values:1,2,3"),
            ("// run: --arg n=1 --arg x=zeros:1 --arg y=zeros:1 --expect n=values:1", "test.anybit:1: --expect `n`: no buffer parameter has this name"),
            ("// run: --arg n=1 --arg x=zeros:1 --arg y=zeros:1 --expect y=reference:fft(x)", "test.anybit:1: --expect `y=reference:fft(x)`: the references are matmul(a,b,m,n,k[,c]), softmax(x,rows,cols), cast(x) and quantized_matmul(x,w,scales,zeros,m,n,k,group)"),
            ("// run: --seed", "test.anybit:1: --seed needs a value"),
            ("// run: --arg n=1 --tolerance -1", "test.anybit:1: --tolerance `-1` must be finite and at least 0"),
            ("// gpu: --skip", "test.anybit:1: --skip needs a reason"),
            ("// gpu: --ulps 1\n// gpu: --ulps 2", "test.anybit:2: a file has at most one `gpu:` line"),
        ];
        for (directives, expected) in cases {
            assert_eq!(error(directives), expected, "{directives}");
        }
        assert_eq!(
            error("// run: --arg n=1 --arg x=zeros:1 --arg y=zeros:1 --expect y=values:1 \\"),
            "test.anybit:2: a directive ends with `\\` but this line is no `//` comment"
        );
        let at_the_end = CorpusFile::from_text(
            Path::new("end.anybit"),
            &format!("{PROGRAM}// run: --arg n=1 \\"),
        );
        assert_eq!(
            at_the_end.unwrap_err().to_string(),
            "end.anybit:11: the last directive ends with `\\` and nothing follows"
        );
        let unparsable = CorpusFile::from_text(Path::new("bad.anybit"), "program (")
            .unwrap_err()
            .to_string();
        assert!(unparsable.starts_with("bad.anybit:1:"), "{unparsable}");
    }

    #[test]
    fn gpu_lines_skip_with_a_reason() {
        let file = file(
            "// run: --arg n=1 --arg x=values:1 --arg y=zeros:1 --expect y=values:2
// gpu: --skip waits for a fix of the loop increment",
        )
        .unwrap();
        assert_eq!(
            file.gpu(),
            &GpuSpec::Skip("waits for a fix of the loop increment".into())
        );
    }

    #[test]
    fn random_buffers_are_drawn_in_argument_order_from_the_seed() {
        let file = file(
            "// run: --arg y=zeros:6 --arg x=random:6 --arg n=6 --seed 42 --expect y=reference:cast(x)",
        )
        .unwrap();
        let case = file.case(&file.runs()[0]);
        // The draw `anybit run` makes for `--arg x=random:6 --seed 42`.
        let mut rng = StdRng::seed_from_u64(42);
        let codes: Vec<u32> = (0..6)
            .map(|_| random_finite_code(DType::Unsigned(4), &mut rng))
            .collect();
        assert_eq!(
            case.values[0],
            Value::Buffer(pack_codes(DType::Unsigned(4), &codes))
        );
        // Ranges are inclusive and rounded to the type.
        let file = self::file(
            "// run: --arg n=4 --arg x=random:4:3..3 --arg y=zeros:4 --expect y=values:4,4,4,4",
        )
        .unwrap();
        file.check_run(&file.runs()[0]).unwrap();
    }

    #[test]
    fn references_compute_in_exact_arithmetic() {
        // cast: integer wrap, float truncation and saturation, NaN to 0, rounding to floats.
        let (i8_, u4, f4) = (
            DType::Signed(8),
            DType::Unsigned(4),
            "f4e2m1".parse().unwrap(),
        );
        assert_eq!(cast(-1.0, i8_, u4), 15);
        assert_eq!(cast(200.0, DType::Signed(16), i8_), 0xc8); // -56
        assert_eq!(cast(-1.9, DType::F32, i8_), 0xff);
        assert_eq!(cast(1e9, DType::F32, i8_), 0x7f);
        assert_eq!(cast(f64::NAN, DType::F32, u4), 0);
        assert_eq!(cast(2.5, DType::F32, f4), f4.encode(2.0));
        assert_eq!(
            cast(16777217.0, DType::Signed(32), DType::F32),
            16777216f32.to_bits()
        );
        assert_eq!(wrap(-(1 << 40) - 3, DType::Signed(32)), (-3i32) as u32);
    }

    #[test]
    fn matmul_reference_wraps_integers_and_adds_the_accumulator() {
        // a [1, 2] · b [2, 1] + c in i8: 100 * 2 + 27 * 1 + 5 = 232 wraps to -24.
        let text = "program dot_i8(a: ptr<i8>, b: ptr<i8>, c: ptr<i8>, d: ptr<i8>)
grid(1)
threads(1)
{
    %ga = view_global(a, [1, 2], [2, 1]);
    %gb = view_global(b, [2, 1], [1, 1]);
    %gc = view_global(c, [1, 1], [1, 1]);
    %gd = view_global(d, [1, 1], [1, 1]);
    %x = load_global(%ga[0, 0], local(1,2));
    %y = load_global(%gb[0, 0], local(2,1));
    %z = load_global(%gc[0, 0], local(1,1));
    %z = dot(%x, %y, %z);
    store_global(%gd[0, 0], %z);
}
";
        let file = CorpusFile::from_text(
            Path::new("dot.anybit"),
            &format!(
                "// run: --arg a=values:100,27 --arg b=values:2,1 --arg c=values:5 --arg d=zeros:1 \\
//      --expect d=reference:matmul(a,b,1,1,2,c) --expect d=values:-24\n{text}"
            ),
        )
        .unwrap();
        file.check_run(&file.runs()[0]).unwrap();
    }

    #[test]
    fn snapshots_are_checked_blessed_and_explained() {
        let dir = std::env::temp_dir().join(format!("anybit-corpus-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("add_one.anybit");
        let text = format!(
            "// run: --arg n=1 --arg x=values:1 --arg y=zeros:1 --expect y=values:2\n{PROGRAM}"
        );
        std::fs::write(&path, &text).unwrap();
        let file = CorpusFile::load(&path).unwrap();
        let missing = check_snapshot(&file, false).unwrap_err().to_string();
        assert!(
            missing.contains("missing;") && missing.contains(BLESS_COMMAND),
            "{missing}"
        );
        assert_eq!(
            check_snapshot(&file, true).unwrap(),
            SnapshotOutcome::Blessed
        );
        assert_eq!(
            check_snapshot(&file, false).unwrap(),
            SnapshotOutcome::Matches
        );
        let snapshot = std::fs::read_to_string(snapshot_path(&path)).unwrap();
        assert!(snapshot.contains("extern \"C\" __global__"), "{snapshot}");
        std::fs::write(snapshot_path(&path), snapshot.replacen("tid", "lane", 1)).unwrap();
        let differs = check_snapshot(&file, false).unwrap_err().to_string();
        assert!(differs.contains("first difference at line"), "{differs}");
        assert!(differs.contains("lane"), "{differs}");
        // Comments around the program do not move the snapshot.
        std::fs::write(&path, format!("// Another comment.\n{text}")).unwrap();
        let moved = CorpusFile::load(&path).unwrap();
        check_snapshot(&moved, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(snapshot_path(&path)).unwrap(),
            snapshot
        );
        std::fs::write(dir.join("gone.cu"), "").unwrap();
        assert_eq!(stale_snapshots(&dir).unwrap(), vec![dir.join("gone.cu")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
