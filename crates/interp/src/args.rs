//! Arguments of a launch: one host buffer per pointer parameter, one value per `i32` parameter.

use anybit_dtype::{packed_bytes, read_code, write_code, DType};
use anybit_vm::{ParamKind, Program};

use crate::error::ArgumentError;

/// The value of one parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Argument {
    /// The memory a `ptr<T>` parameter points at: a little-endian bit stream, element `e` at bits
    /// `[e·n, (e+1)·n)`, `n = T.bits()` (see [`pack_codes`]). Its length bounds the elements the
    /// program may touch: `len · 8 / n` of them.
    Buffer(Vec<u8>),
    /// The value of an `i32` parameter.
    Int(i32),
}

impl From<Vec<u8>> for Argument {
    fn from(bytes: Vec<u8>) -> Argument {
        Argument::Buffer(bytes)
    }
}

impl From<i32> for Argument {
    fn from(value: i32) -> Argument {
        Argument::Int(value)
    }
}

impl Argument {
    fn kind_name(&self) -> &'static str {
        match self {
            Argument::Buffer(_) => "a buffer",
            Argument::Int(_) => "an i32",
        }
    }
}

/// The arguments of one program: made for its parameter list with [`Arguments::new`], filled by
/// name ([`Arguments::set`]) or position ([`Arguments::set_at`]), passed to [`crate::run`], and
/// read back afterwards ([`Arguments::buffer`], [`Arguments::take_buffer`]).
///
/// Every pointer parameter has its own buffer; buffers never alias.
#[derive(Clone, Debug)]
pub struct Arguments {
    program: String,
    params: Vec<(String, ParamKind)>,
    values: Vec<Option<Argument>>,
}

impl Arguments {
    /// Empty arguments for `program`'s parameters.
    pub fn new(program: &Program) -> Arguments {
        Arguments {
            program: program.name.clone(),
            params: program
                .params
                .iter()
                .map(|param| (param.name.clone(), param.kind.clone()))
                .collect(),
            values: vec![None; program.params.len()],
        }
    }

    /// Position of the parameter called `name`.
    pub fn index_of(&self, name: &str) -> Result<usize, ArgumentError> {
        self.params
            .iter()
            .position(|(param, _)| param == name)
            .ok_or_else(|| ArgumentError::UnknownName {
                program: self.program.clone(),
                name: name.to_string(),
                params: self.param_list(),
            })
    }

    fn param_list(&self) -> String {
        let names: Vec<&str> = self.params.iter().map(|(name, _)| name.as_str()).collect();
        names.join(", ")
    }

    /// Sets the parameter called `name`: a `Vec<u8>` for a pointer, an `i32` for an integer.
    pub fn set(
        &mut self,
        name: &str,
        value: impl Into<Argument>,
    ) -> Result<&mut Arguments, ArgumentError> {
        let index = self.index_of(name)?;
        self.set_at(index, value)
    }

    /// Sets the parameter at position `index` (0-based, in the program's order).
    pub fn set_at(
        &mut self,
        index: usize,
        value: impl Into<Argument>,
    ) -> Result<&mut Arguments, ArgumentError> {
        let value = value.into();
        let Some((name, kind)) = self.params.get(index) else {
            return Err(ArgumentError::UnknownIndex {
                program: self.program.clone(),
                index,
                count: self.params.len(),
            });
        };
        let fits = matches!(
            (kind, &value),
            (ParamKind::Pointer(_), Argument::Buffer(_))
                | (ParamKind::Int { .. }, Argument::Int(_))
        );
        if !fits {
            return Err(ArgumentError::WrongKind {
                name: name.clone(),
                expected: match kind {
                    ParamKind::Pointer(dtype) => format!("a ptr<{dtype}>, which takes a buffer"),
                    ParamKind::Int { .. } => "an i32".to_string(),
                },
                given: value.kind_name(),
            });
        }
        self.values[index] = Some(value);
        Ok(self)
    }

    /// Like [`Arguments::set`], by value, for chaining.
    pub fn with(
        mut self,
        name: &str,
        value: impl Into<Argument>,
    ) -> Result<Arguments, ArgumentError> {
        self.set(name, value)?;
        Ok(self)
    }

    /// The value of the parameter at `index`, if set.
    pub fn get_at(&self, index: usize) -> Option<&Argument> {
        self.values.get(index).and_then(Option::as_ref)
    }

    /// The buffer of pointer parameter `name`, if set.
    pub fn buffer(&self, name: &str) -> Option<&[u8]> {
        match self.get_at(self.index_of(name).ok()?) {
            Some(Argument::Buffer(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// The buffer of pointer parameter `name`, mutably, if set.
    pub fn buffer_mut(&mut self, name: &str) -> Option<&mut Vec<u8>> {
        let index = self.index_of(name).ok()?;
        match self.values.get_mut(index) {
            Some(Some(Argument::Buffer(bytes))) => Some(bytes),
            _ => None,
        }
    }

    /// Takes the buffer of pointer parameter `name` out (the parameter becomes unset).
    pub fn take_buffer(&mut self, name: &str) -> Option<Vec<u8>> {
        let index = self.index_of(name).ok()?;
        match self.values.get_mut(index)?.take() {
            Some(Argument::Buffer(bytes)) => Some(bytes),
            other => {
                self.values[index] = other;
                None
            }
        }
    }

    /// The value of `i32` parameter `name`, if set.
    pub fn int(&self, name: &str) -> Option<i32> {
        match self.get_at(self.index_of(name).ok()?) {
            Some(Argument::Int(value)) => Some(*value),
            _ => None,
        }
    }

    /// Checks that these arguments were made for `program` and that every parameter is set.
    pub(crate) fn check(&self, program: &Program) -> Result<(), ArgumentError> {
        let same = self.params.len() == program.params.len()
            && self
                .params
                .iter()
                .zip(&program.params)
                .all(|((name, kind), param)| *name == param.name && *kind == param.kind);
        if !same {
            let theirs: Vec<&str> = program.params.iter().map(|p| p.name.as_str()).collect();
            return Err(ArgumentError::OtherProgram {
                program: program.name.clone(),
                made_for: self.param_list(),
                params: theirs.join(", "),
            });
        }
        if let Some(index) = self.values.iter().position(Option::is_none) {
            return Err(ArgumentError::Missing {
                name: self.params[index].0.clone(),
            });
        }
        Ok(())
    }

    /// Moves the values out for a run (every value is set: [`Arguments::check`] passed).
    pub(crate) fn take_values(&mut self) -> Vec<Argument> {
        self.values
            .iter_mut()
            .map(|value| value.take().unwrap_or(Argument::Int(0)))
            .collect()
    }

    /// Puts the values back after a run.
    pub(crate) fn restore_values(&mut self, values: Vec<Argument>) {
        self.values = values.into_iter().map(Some).collect();
    }
}

/// Packs codes of `dtype` into a buffer (see [`Argument::Buffer`]). Bits of a code above the
/// type's width are ignored.
pub fn pack_codes(dtype: DType, codes: &[u32]) -> Vec<u8> {
    let mut bytes = vec![0; packed_bytes(codes.len(), dtype.bits())];
    for (index, &code) in codes.iter().enumerate() {
        write_code(&mut bytes, dtype.bits(), index, code & dtype.code_mask());
    }
    bytes
}

/// Encodes values to `dtype` (as [`DType::encode`] does: round to nearest even, saturating) and
/// packs them into a buffer.
pub fn pack_values(dtype: DType, values: &[f32]) -> Vec<u8> {
    let codes: Vec<u32> = values.iter().map(|&value| dtype.encode(value)).collect();
    pack_codes(dtype, &codes)
}

/// The first `count` codes of a buffer of `dtype` (fewer when the buffer is shorter).
pub fn unpack_codes(dtype: DType, bytes: &[u8], count: usize) -> Vec<u32> {
    let available = bytes.len() * 8 / dtype.bits() as usize;
    (0..count.min(available))
        .map(|index| read_code(bytes, dtype.bits(), index))
        .collect()
}

/// The exact values of the first `count` elements of a buffer of `dtype` (fewer when the
/// buffer is shorter).
pub fn unpack_values(dtype: DType, bytes: &[u8], count: usize) -> Vec<f64> {
    unpack_codes(dtype, bytes, count)
        .into_iter()
        .map(|code| dtype.decode(code))
        .collect()
}
