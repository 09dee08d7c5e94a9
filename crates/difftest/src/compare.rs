//! Comparing an implementation's output buffers with the interpreter's.

use anybit_dtype::{read_code, DType};
use anybit_interp::{run, Argument, Arguments, RunError};
use anybit_vm::Program;

use crate::cases::{Case, Value};
use crate::random_programs::Agreement;

/// One element that disagrees.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    pub index: usize,
    pub expected_code: u32,
    pub actual_code: u32,
    pub expected: f64,
    pub actual: f64,
}

/// The result of comparing one output buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub compared: usize,
    pub mismatches: usize,
    pub first_mismatch: Option<Mismatch>,
    /// Largest |actual − expected| over elements with finite values on both sides.
    pub max_abs_error: f64,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.mismatches == 0
    }
}

/// Position of a code in the order of its values (sign-magnitude floats), or the value
/// itself for integers, so that neighbouring values differ by one.
fn ordinal(dtype: DType, code: u32) -> i64 {
    if dtype.is_integer() {
        return dtype.decode(code) as i64;
    }
    let sign_bit = 1u32 << (dtype.bits() - 1);
    let magnitude = (code & (sign_bit - 1)) as i64;
    if code & sign_bit != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Compares the first `count` elements of two buffers of `dtype`.
pub fn compare(
    dtype: DType,
    expected: &[u8],
    actual: &[u8],
    count: usize,
    agreement: Agreement,
) -> Comparison {
    let bits = dtype.bits();
    let available = expected.len().min(actual.len()) * 8 / bits as usize;
    let count = count.min(available);
    let largest = (0..count)
        .map(|index| dtype.decode(read_code(expected, bits, index)).abs())
        .filter(|value| value.is_finite())
        .fold(0.0, f64::max);
    let mut comparison = Comparison {
        compared: count,
        mismatches: 0,
        first_mismatch: None,
        max_abs_error: 0.0,
    };
    for index in 0..count {
        let expected_code = read_code(expected, bits, index);
        let actual_code = read_code(actual, bits, index);
        let (expected_value, actual_value) =
            (dtype.decode(expected_code), dtype.decode(actual_code));
        if expected_value.is_finite() && actual_value.is_finite() {
            let error = (expected_value - actual_value).abs();
            comparison.max_abs_error = comparison.max_abs_error.max(error);
        }
        let agrees = expected_code == actual_code
            || (expected_value.is_nan() && actual_value.is_nan())
            || match agreement {
                Agreement::BitExact => false,
                Agreement::Close {
                    ulps,
                    fraction_of_max,
                } => {
                    (ordinal(dtype, expected_code) - ordinal(dtype, actual_code)).unsigned_abs()
                        <= ulps as u64
                        || (expected_value - actual_value).abs() <= fraction_of_max * largest
                }
            };
        if !agrees {
            comparison.mismatches += 1;
            if comparison.first_mismatch.is_none() {
                comparison.first_mismatch = Some(Mismatch {
                    index,
                    expected_code,
                    actual_code,
                    expected: expected_value,
                    actual: actual_value,
                });
            }
        }
    }
    comparison
}

/// Runs a case on the interpreter, with every output buffer filled with `poison` first, and
/// returns its output buffers in [`Case::outputs`] order.
pub fn run_on_interpreter(case: &Case, poison: u8) -> Result<Vec<Vec<u8>>, RunError> {
    let after = run_values_on_interpreter(&case.program, &case.with_poison(poison))?;
    Ok(case
        .outputs
        .iter()
        .map(|&(index, _)| match &after[index] {
            Value::Buffer(bytes) => bytes.clone(),
            Value::I32(_) => Vec::new(),
        })
        .collect())
}

/// Runs `program` on the interpreter with `values` (one per parameter, in order) and returns
/// every parameter's value afterwards. `print` output is discarded.
pub fn run_values_on_interpreter(
    program: &Program,
    values: &[Value],
) -> Result<Vec<Value>, RunError> {
    let mut arguments = Arguments::new(program);
    for (index, value) in values.iter().enumerate() {
        match value {
            Value::Buffer(bytes) => arguments.set_at(index, bytes.clone())?,
            Value::I32(number) => arguments.set_at(index, *number)?,
        };
    }
    run(program, &mut arguments, &mut std::io::sink())?;
    Ok(values
        .iter()
        .enumerate()
        .map(|(index, value)| match arguments.get_at(index) {
            Some(Argument::Buffer(bytes)) => Value::Buffer(bytes.clone()),
            _ => value.clone(),
        })
        .collect())
}
