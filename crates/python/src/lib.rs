//! `anybit._native`: the native half of the `anybit` Python package (python/anybit).
//!
//! The Python side checks and converts PyTorch tensors and calls these functions with the
//! address and length of contiguous CPU tensors (for quantization, the prepared layout and
//! checkpoints) or of CUDA tensors and PyTorch's current stream (for the product). Every
//! function here checks what it is given and answers a bad input with `ValueError` (or
//! `TypeError` for a tensor type it does not take), a missing GPU or driver with
//! `RuntimeError`, and a file that cannot be read with `OSError`; none of them panics.
//!
//! Host buffers are passed as `(address, length in bytes)` pairs: the caller (the Python
//! package) passes the `data_ptr()` and byte size of a contiguous CPU tensor that it keeps alive
//! for the call and that nothing else touches meanwhile. That is the whole safety contract of
//! [`host_slice`] and [`host_slice_mut`].

use std::borrow::Cow;
use std::path::PathBuf;

use anybit_checkpoint::{CheckpointError, QuantizedCheckpoint, TensorDtype};
use anybit_dtype::{
    packed_bytes, quantize_with_search, DType, GroupSize, QuantizeOptions, QuantizedMatrix,
    ScaleSearch, Weights,
};
use anybit_kernels::launch::{self, ActivationPointers, LaunchError, WeightPointers};
use anybit_kernels::prepared::{FragmentLayout, GroupLayout};
use anybit_kernels::{Group, PreparedWeight, QuantFormat, ZeroPoints};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

fn value_error(error: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(error.to_string())
}

/// A type name: `u3`, `f6e3m2`, `bf16`, …
fn parse_dtype(name: &str) -> PyResult<DType> {
    name.parse::<DType>().map_err(value_error)
}

/// `None` or 0 means per channel.
fn group_of(group_size: Option<usize>, k: usize) -> Group {
    match group_size {
        Some(size) if size != k && size != 0 => Group::Elements(size),
        _ => Group::PerChannel,
    }
}

fn zero_points(mode: &str) -> PyResult<ZeroPoints> {
    match mode {
        "none" => Ok(ZeroPoints::None),
        "codes" => Ok(ZeroPoints::Codes),
        "scaled" => Ok(ZeroPoints::Scaled),
        other => Err(PyValueError::new_err(format!(
            "zero point mode `{other}`: use `none`, `codes` or `scaled`"
        ))),
    }
}

/// A host buffer of `length` bytes at `address`, or an error when it is not `expected` long.
///
/// # Safety
/// `address` is the start of `length` readable bytes that stay valid and unchanged for `'a`.
unsafe fn host_slice<'a>(
    what: &str,
    address: usize,
    length: usize,
    expected: usize,
) -> PyResult<&'a [u8]> {
    if length != expected {
        return Err(PyValueError::new_err(format!(
            "{what} holds {length} bytes, but {expected} are needed"
        )));
    }
    if length == 0 {
        return Ok(&[]);
    }
    if address == 0 {
        return Err(PyValueError::new_err(format!("{what} is a null pointer")));
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(address as *const u8, length) })
}

/// A writable host buffer; see [`host_slice`].
///
/// # Safety
/// `address` is the start of `length` writable bytes that nothing else uses for `'a`.
unsafe fn host_slice_mut<'a>(
    what: &str,
    address: usize,
    length: usize,
    expected: usize,
) -> PyResult<&'a mut [u8]> {
    if length != expected {
        return Err(PyValueError::new_err(format!(
            "{what} holds {length} bytes, but {expected} are needed"
        )));
    }
    if length == 0 {
        return Ok(&mut []);
    }
    if address == 0 {
        return Err(PyValueError::new_err(format!("{what} is a null pointer")));
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts_mut(address as *mut u8, length) })
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect()
}

/// The bytes of the packed codes of an `[n, k]` matrix of `dtype`.
#[pyfunction]
fn packed_size(dtype: &str, n: usize, k: usize) -> PyResult<usize> {
    let dtype = parse_dtype(dtype)?;
    Ok(packed_bytes(n * k, dtype.bits()))
}

/// Quantizes the row-major `[n, k]` matrix at `source` (`source_dtype` f32, f16 or bf16) into
/// `codes` (packed), `scales` (f32, `[n, ⌈k / group⌉]`, each representable in `scale_dtype`)
/// and, for unsigned types, `zeros` (u8 codes, the same shape); `search` is `none` or `mse`.
#[pyfunction]
#[pyo3(signature = (source, source_bytes, source_dtype, n, k, dtype, group_size, scale_dtype, search, codes, codes_bytes, scales, scales_bytes, zeros, zeros_bytes))]
#[allow(clippy::too_many_arguments)]
fn quantize(
    py: Python<'_>,
    source: usize,
    source_bytes: usize,
    source_dtype: &str,
    n: usize,
    k: usize,
    dtype: &str,
    group_size: Option<usize>,
    scale_dtype: &str,
    search: &str,
    codes: usize,
    codes_bytes: usize,
    scales: usize,
    scales_bytes: usize,
    zeros: usize,
    zeros_bytes: usize,
) -> PyResult<()> {
    let dtype = parse_dtype(dtype)?;
    let scale_dtype = parse_dtype(scale_dtype)?;
    let search = match search {
        "none" => ScaleSearch::None,
        "mse" => ScaleSearch::Mse,
        other => {
            return Err(PyValueError::new_err(format!(
                "scale search `{other}`: use None (round to nearest) or \"mse\""
            )))
        }
    };
    let source_dtype = parse_dtype(source_dtype)?;
    let width = match source_dtype {
        DType::F32 => 4,
        DType::F16 | DType::Bf16 => 2,
        other => {
            return Err(PyTypeError::new_err(format!(
                "weights of type {other} cannot be quantized: use float32, float16 or bfloat16"
            )))
        }
    };
    let options = QuantizeOptions {
        dtype,
        group_size: match group_size {
            Some(size) if size != k && size != 0 => GroupSize::Elements(size),
            _ => GroupSize::PerChannel,
        },
        scale_dtype,
    };
    // SAFETY: the package passes a contiguous CPU tensor it keeps alive for the call.
    let source = unsafe { host_slice("the weight", source, source_bytes, n * k * width)? };
    let matrix = py
        .detach(|| match source_dtype {
            DType::F32 => {
                let values = as_values(source, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                quantize_with_search(Weights::F32(&values), n, k, options, search)
            }
            DType::F16 => {
                let values = as_values(source, |b| half::f16::from_le_bytes([b[0], b[1]]));
                quantize_with_search(Weights::F16(&values), n, k, options, search)
            }
            _ => {
                let values = as_values(source, |b| half::bf16::from_le_bytes([b[0], b[1]]));
                quantize_with_search(Weights::Bf16(&values), n, k, options, search)
            }
        })
        .map_err(value_error)?;
    let groups = matrix.scales.len();
    // SAFETY: the package passes contiguous CPU tensors of these sizes, alive for the call.
    let codes = unsafe { host_slice_mut("codes", codes, codes_bytes, matrix.codes.len())? };
    codes.copy_from_slice(&matrix.codes);
    let scales = unsafe { host_slice_mut("scales", scales, scales_bytes, groups * 4)? };
    scales.copy_from_slice(&f32_bytes(&matrix.scales));
    if let Some(points) = &matrix.zero_points {
        let zeros = unsafe { host_slice_mut("zeros", zeros, zeros_bytes, groups)? };
        for (out, &point) in zeros.iter_mut().zip(points) {
            *out = point as u8;
        }
    }
    Ok(())
}

/// Bytes as values of `T` (f32, f16 or bf16: every bit pattern is a value), borrowed where
/// they are aligned for `T` (as torch's allocations are), copied otherwise.
fn as_values<T: Copy>(bytes: &[u8], from_le: impl Fn(&[u8]) -> T) -> Cow<'_, [T]> {
    // SAFETY: every bit pattern of the types this is used with is a value.
    let (head, values, tail) = unsafe { bytes.align_to::<T>() };
    if head.is_empty() && tail.is_empty() {
        Cow::Borrowed(values)
    } else {
        Cow::Owned(
            bytes
                .chunks_exact(std::mem::size_of::<T>())
                .map(from_le)
                .collect(),
        )
    }
}

/// The plain parts of a quantized weight as a `QuantizedMatrix`, checked.
#[allow(clippy::too_many_arguments)]
fn plain_matrix(
    dtype: DType,
    group_size: Option<usize>,
    n: usize,
    k: usize,
    scale_dtype: DType,
    codes: &[u8],
    scales: &[u8],
    zeros: Option<&[u8]>,
) -> QuantizedMatrix {
    QuantizedMatrix {
        rows: n,
        cols: k,
        dtype,
        group_size: group_size.filter(|&size| size != 0).unwrap_or(k),
        scale_dtype,
        codes: codes.to_vec(),
        scales: f32_values(scales),
        zero_points: zeros.map(|zeros| zeros.iter().map(|&z| u32::from(z)).collect()),
    }
}

/// The number of groups per row of the plain (CPU) form, ⌈K / group⌉: a group size that does
/// not divide K leaves each row a short last group, which the CPU side takes (the kernels do
/// not: [`groups_per_row`]).
fn plain_groups_per_row(
    dtype: DType,
    group_size: Option<usize>,
    n: usize,
    k: usize,
) -> PyResult<usize> {
    if dtype.bits() > 8 {
        return Err(value_error(format!(
            "{dtype} is not a weight type: use one of at most 8 bits"
        )));
    }
    if n == 0 || k == 0 {
        return Err(value_error(format!(
            "the weight matrix is {n}×{k}; both sizes must be at least 1"
        )));
    }
    match group_size.filter(|&size| size != 0 && size != k) {
        None => Ok(1),
        Some(size) if GroupSize::VALID.contains(&size) => Ok(k.div_ceil(size)),
        Some(size) => Err(value_error(format!(
            "group size {size} is not supported: use 16, 32, 64, 128, 256 or per-channel"
        ))),
    }
}

/// The number of groups per row, after checking the format and shape against what the
/// kernels take.
fn groups_per_row(format: &QuantFormat, n: usize, k: usize) -> PyResult<usize> {
    format.check(n, k).map_err(value_error)?;
    // The last group of a row may be short: ⌈K / group⌉ groups.
    Ok(k.div_ceil(format.group.size(k)))
}

/// The byte sizes of the prepared codes and of the prepared scales (and zero points) of an
/// `[n, k]` weight: `(codes, scales)`.
#[pyfunction]
fn prepared_sizes(
    dtype: &str,
    group_size: Option<usize>,
    n: usize,
    k: usize,
    scale_dtype: &str,
) -> PyResult<(usize, usize)> {
    let dtype = parse_dtype(dtype)?;
    let scale_dtype = parse_dtype(scale_dtype)?;
    let format = QuantFormat::new(dtype, group_of(group_size, k));
    format.check(n, k).map_err(value_error)?;
    let codes = FragmentLayout::new(dtype, n, k);
    let groups = GroupLayout::new(&codes, format.group.size(k));
    Ok((
        codes.bytes(),
        groups.len() * (scale_dtype.bits() / 8) as usize,
    ))
}

/// Prepares a quantized weight for the kernels: plain packed `codes`, f32 `scales` and (for
/// `zero_mode` `codes` or `scaled`) f32 `zeros`, all `[n, groups]`, into the prepared codes and
/// the prepared scales and zero points stored as `scale_dtype`.
#[pyfunction]
#[pyo3(signature = (dtype, group_size, zero_mode, n, k, scale_dtype, codes, codes_bytes, scales, scales_bytes, zeros, zeros_bytes, out_codes, out_codes_bytes, out_scales, out_scales_bytes, out_zeros, out_zeros_bytes))]
#[allow(clippy::too_many_arguments)]
fn prepare(
    py: Python<'_>,
    dtype: &str,
    group_size: Option<usize>,
    zero_mode: &str,
    n: usize,
    k: usize,
    scale_dtype: &str,
    codes: usize,
    codes_bytes: usize,
    scales: usize,
    scales_bytes: usize,
    zeros: usize,
    zeros_bytes: usize,
    out_codes: usize,
    out_codes_bytes: usize,
    out_scales: usize,
    out_scales_bytes: usize,
    out_zeros: usize,
    out_zeros_bytes: usize,
) -> PyResult<()> {
    let dtype = parse_dtype(dtype)?;
    let scale_dtype = parse_dtype(scale_dtype)?;
    let format = QuantFormat {
        weight: dtype,
        group: group_of(group_size, k),
        zeros: zero_points(zero_mode)?,
    };
    let groups = n * groups_per_row(&format, n, k)?;
    let code_bytes = packed_bytes(n * k, dtype.bits());
    // SAFETY: the package passes contiguous CPU tensors of these sizes, alive for the call.
    let codes = unsafe { host_slice("codes", codes, codes_bytes, code_bytes)? };
    let scales = f32_values(unsafe { host_slice("scales", scales, scales_bytes, groups * 4)? });
    let zeros = match format.zeros {
        ZeroPoints::None => None,
        _ => Some(f32_values(unsafe {
            host_slice("zeros", zeros, zeros_bytes, groups * 4)?
        })),
    };
    let prepared = py
        .detach(|| {
            PreparedWeight::from_parts(format, n, k, codes, &scales, zeros.as_deref(), scale_dtype)
        })
        .map_err(value_error)?;
    let out = unsafe {
        host_slice_mut(
            "the prepared codes",
            out_codes,
            out_codes_bytes,
            prepared.codes.len(),
        )?
    };
    out.copy_from_slice(&prepared.codes);
    let out = unsafe {
        host_slice_mut(
            "the prepared scales",
            out_scales,
            out_scales_bytes,
            prepared.scales.len(),
        )?
    };
    out.copy_from_slice(&prepared.scales);
    if let Some(prepared_zeros) = &prepared.zeros {
        let out = unsafe {
            host_slice_mut(
                "the prepared zero points",
                out_zeros,
                out_zeros_bytes,
                prepared_zeros.len(),
            )?
        };
        out.copy_from_slice(prepared_zeros);
    }
    Ok(())
}

/// Dequantizes plain parts (packed `codes`, f32 `scales`, u8 zero-point `zeros` for unsigned
/// types, scales and zero points `[n, ⌈k / group⌉]`) into the f32 `[n, k]` buffer `out`:
/// `(decode(q) − z) · s`.
#[pyfunction]
#[pyo3(signature = (dtype, group_size, n, k, scale_dtype, codes, codes_bytes, scales, scales_bytes, zeros, zeros_bytes, out, out_bytes))]
#[allow(clippy::too_many_arguments)]
fn dequantize(
    py: Python<'_>,
    dtype: &str,
    group_size: Option<usize>,
    n: usize,
    k: usize,
    scale_dtype: &str,
    codes: usize,
    codes_bytes: usize,
    scales: usize,
    scales_bytes: usize,
    zeros: usize,
    zeros_bytes: usize,
    out: usize,
    out_bytes: usize,
) -> PyResult<()> {
    let dtype = parse_dtype(dtype)?;
    let scale_dtype = parse_dtype(scale_dtype)?;
    let unsigned = matches!(dtype, DType::Unsigned(_));
    let groups = n * plain_groups_per_row(dtype, group_size, n, k)?;
    // SAFETY: the package passes contiguous CPU tensors of these sizes, alive for the call.
    let codes = unsafe {
        host_slice(
            "codes",
            codes,
            codes_bytes,
            packed_bytes(n * k, dtype.bits()),
        )?
    };
    let scales = unsafe { host_slice("scales", scales, scales_bytes, groups * 4)? };
    let zeros = if unsigned {
        Some(unsafe { host_slice("zeros", zeros, zeros_bytes, groups)? })
    } else {
        None
    };
    let matrix = plain_matrix(dtype, group_size, n, k, scale_dtype, codes, scales, zeros);
    let values = py.detach(|| matrix.dequantize());
    let out = unsafe { host_slice_mut("the output", out, out_bytes, n * k * 4)? };
    out.copy_from_slice(&f32_bytes(&values));
    Ok(())
}

/// The format of a product, from the Python side's fields.
#[allow(clippy::too_many_arguments)]
fn weight_pointers(
    dtype: &str,
    group_size: Option<usize>,
    zero_mode: &str,
    n: usize,
    k: usize,
    scale_dtype: &str,
    codes: u64,
    scales: u64,
    zeros: Option<u64>,
) -> PyResult<WeightPointers> {
    Ok(WeightPointers {
        format: QuantFormat {
            weight: parse_dtype(dtype)?,
            group: group_of(group_size, k),
            zeros: zero_points(zero_mode)?,
        },
        n,
        k,
        scale_dtype: parse_dtype(scale_dtype)?,
        codes,
        scales,
        zeros,
    })
}

fn launch_error(error: LaunchError) -> PyErr {
    match error {
        LaunchError::Format(_)
        | LaunchError::ScaleType(_)
        | LaunchError::Tokens { .. }
        | LaunchError::Null { .. }
        | LaunchError::Misaligned { .. }
        | LaunchError::MissingZeros(_)
        | LaunchError::UnexpectedZeros(_) => value_error(error),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// The launches a product would make, without a GPU: `(kernel name, first token, tokens)` for
/// each; every check but the driver's.
#[pyfunction]
#[pyo3(signature = (dtype, group_size, zero_mode, n, k, scale_dtype, codes, scales, zeros, activation, m, x, bias, y))]
#[allow(clippy::too_many_arguments)]
fn plan(
    dtype: &str,
    group_size: Option<usize>,
    zero_mode: &str,
    n: usize,
    k: usize,
    scale_dtype: &str,
    codes: u64,
    scales: u64,
    zeros: Option<u64>,
    activation: &str,
    m: usize,
    x: u64,
    bias: Option<u64>,
    y: u64,
) -> PyResult<Vec<(String, usize, usize)>> {
    let weight = weight_pointers(
        dtype,
        group_size,
        zero_mode,
        n,
        k,
        scale_dtype,
        codes,
        scales,
        zeros,
    )?;
    let activations = ActivationPointers {
        activation: parse_dtype(activation)?,
        m,
        x,
        bias,
        y,
    };
    let launches = launch::plan(&weight, &activations).map_err(launch_error)?;
    Ok(launches
        .into_iter()
        .map(|launch| (launch.kernel.name(), launch.first_token, launch.tokens))
        .collect())
}

/// Enqueues the product on `stream` (a `CUstream` address; 0 for the legacy default stream)
/// of GPU `device`; with `launch` false, only loads the kernels it needs.
///
/// The package passes the `data_ptr()` of CUDA tensors of `device` of the sizes the shapes
/// imply, kept alive by PyTorch's caching allocator until the stream has used them (the
/// output is allocated on the same stream), and PyTorch's current stream.
#[pyfunction]
#[pyo3(signature = (device, stream, dtype, group_size, zero_mode, n, k, scale_dtype, codes, scales, zeros, activation, m, x, bias, y, launch=true))]
#[allow(clippy::too_many_arguments)]
fn matmul(
    py: Python<'_>,
    device: usize,
    stream: usize,
    dtype: &str,
    group_size: Option<usize>,
    zero_mode: &str,
    n: usize,
    k: usize,
    scale_dtype: &str,
    codes: u64,
    scales: u64,
    zeros: Option<u64>,
    activation: &str,
    m: usize,
    x: u64,
    bias: Option<u64>,
    y: u64,
    launch: bool,
) -> PyResult<()> {
    let weight = weight_pointers(
        dtype,
        group_size,
        zero_mode,
        n,
        k,
        scale_dtype,
        codes,
        scales,
        zeros,
    )?;
    let activations = ActivationPointers {
        activation: parse_dtype(activation)?,
        m,
        x,
        bias,
        y,
    };
    // The first call of a kernel compiles it: other Python threads go on meanwhile.
    py.detach(|| {
        if launch {
            // SAFETY: see this function's documentation: the package passes live CUDA tensors
            // of the implied sizes on `device` and PyTorch's current stream of it.
            unsafe {
                launch::matmul_on_stream(
                    device,
                    stream as *mut std::ffi::c_void,
                    &weight,
                    &activations,
                )
            }
        } else {
            launch::preload(device, &weight, &activations)
        }
    })
    .map_err(launch_error)
}

/// Adds the folders of `sys.path` to the places NVRTC and the CUDA headers are looked for.
#[pyfunction]
fn add_site_packages(folders: Vec<String>) {
    anybit_cuda::add_python_site_packages(folders.into_iter().map(PathBuf::from));
}

fn checkpoint_error(error: CheckpointError) -> PyErr {
    match error {
        CheckpointError::Io { .. } => PyOSError::new_err(error.to_string()),
        other => value_error(other),
    }
}

/// A checkpoint written by `anybit quantize`, open for reading.
#[pyclass(frozen, module = "anybit._native")]
struct Checkpoint {
    inner: QuantizedCheckpoint,
}

/// The name of a safetensors dtype as torch spells it, where torch has it.
fn torch_dtype_name(dtype: TensorDtype) -> Option<&'static str> {
    Some(match dtype {
        TensorDtype::Bool => "bool",
        TensorDtype::U8 => "uint8",
        TensorDtype::I8 => "int8",
        TensorDtype::I16 => "int16",
        TensorDtype::U16 => "uint16",
        TensorDtype::F16 => "float16",
        TensorDtype::Bf16 => "bfloat16",
        TensorDtype::I32 => "int32",
        TensorDtype::U32 => "uint32",
        TensorDtype::F32 => "float32",
        TensorDtype::F64 => "float64",
        TensorDtype::I64 => "int64",
        TensorDtype::U64 => "uint64",
        TensorDtype::C64 => "complex64",
        TensorDtype::F8E5M2 => "float8_e5m2",
        TensorDtype::F8E4M3 => "float8_e4m3fn",
        _ => return None,
    })
}

#[pymethods]
impl Checkpoint {
    /// Opens a file, a `*.safetensors.index.json` or a folder holding one of them.
    #[new]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<Checkpoint> {
        let inner = py
            .detach(|| QuantizedCheckpoint::open(&path))
            .map_err(checkpoint_error)?;
        Ok(Checkpoint { inner })
    }

    /// The quantized weights' names, sorted.
    fn quantized_names(&self) -> Vec<String> {
        self.inner.quantized_names().map(str::to_string).collect()
    }

    /// The other tensors' names, sorted.
    fn plain_names(&self) -> Vec<String> {
        self.inner
            .plain_names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// `(dtype, group_size, n, k, scale_dtype, zero_points, search, permuted)` of a quantized
    /// weight.
    #[allow(clippy::type_complexity)]
    fn quantized_info(
        &self,
        name: &str,
    ) -> PyResult<(String, usize, usize, usize, String, bool, String, bool)> {
        let info = self.inner.info(name).ok_or_else(|| {
            PyValueError::new_err(format!("no quantized weight `{name}` in the checkpoint"))
        })?;
        Ok((
            info.dtype.clone(),
            info.group_size,
            info.shape[0],
            info.shape[1],
            info.scale_dtype.clone(),
            info.zero_points,
            info.search.clone(),
            info.permuted,
        ))
    }

    /// Reads the column permutation of an act-order weight (column `j` of the stored matrix is
    /// column `perm[j]` of the original) into a host buffer of `K` int64 values.
    fn read_permutation(
        &self,
        py: Python<'_>,
        name: &str,
        out: usize,
        out_bytes: usize,
    ) -> PyResult<()> {
        let parts = py
            .detach(|| self.inner.parts(name))
            .map_err(checkpoint_error)?;
        let permutation = parts.permutation.ok_or_else(|| {
            PyValueError::new_err(format!("the weight `{name}` has no column permutation"))
        })?;
        // SAFETY: the package passes a contiguous CPU tensor of this size, alive for the call.
        let out =
            unsafe { host_slice_mut("the permutation", out, out_bytes, permutation.len() * 8)? };
        for (chunk, &column) in out.chunks_exact_mut(8).zip(&permutation) {
            chunk.copy_from_slice(&i64::from(column).to_le_bytes());
        }
        Ok(())
    }

    /// Reads a quantized weight (checked against its metadata) into host buffers: packed
    /// codes, f32 scales and u8 zero points.
    #[pyo3(signature = (name, codes, codes_bytes, scales, scales_bytes, zeros, zeros_bytes))]
    #[allow(clippy::too_many_arguments)]
    fn read_quantized(
        &self,
        py: Python<'_>,
        name: &str,
        codes: usize,
        codes_bytes: usize,
        scales: usize,
        scales_bytes: usize,
        zeros: usize,
        zeros_bytes: usize,
    ) -> PyResult<()> {
        let matrix = py
            .detach(|| self.inner.matrix(name))
            .map_err(checkpoint_error)?;
        // SAFETY: the package passes contiguous CPU tensors of these sizes, alive for the call.
        let out = unsafe { host_slice_mut("codes", codes, codes_bytes, matrix.codes.len())? };
        out.copy_from_slice(&matrix.codes);
        let out =
            unsafe { host_slice_mut("scales", scales, scales_bytes, matrix.scales.len() * 4)? };
        out.copy_from_slice(&f32_bytes(&matrix.scales));
        if let Some(points) = &matrix.zero_points {
            let out = unsafe { host_slice_mut("zeros", zeros, zeros_bytes, points.len())? };
            for (byte, &point) in out.iter_mut().zip(points) {
                *byte = point as u8;
            }
        }
        Ok(())
    }

    /// `(torch dtype name, shape)` of a tensor that is not quantized.
    fn plain_info(&self, name: &str) -> PyResult<(String, Vec<usize>)> {
        let (file, entry) = self.inner.checkpoint().find(name).ok_or_else(|| {
            PyValueError::new_err(format!("no tensor `{name}` in the checkpoint"))
        })?;
        let dtype = torch_dtype_name(entry.dtype).ok_or_else(|| {
            PyValueError::new_err(format!(
                "{}: tensor `{name}` is {}, which torch has no dtype for",
                file.path().display(),
                entry.dtype.name()
            ))
        })?;
        Ok((dtype.to_string(), entry.shape.clone()))
    }

    /// Copies the bytes of a tensor that is not quantized into a host buffer.
    fn read_plain(&self, name: &str, out: usize, out_bytes: usize) -> PyResult<()> {
        let (file, entry) = self.inner.checkpoint().find(name).ok_or_else(|| {
            PyValueError::new_err(format!("no tensor `{name}` in the checkpoint"))
        })?;
        let data = file.data(entry);
        // SAFETY: the package passes a contiguous CPU tensor of this size, alive for the call.
        let out = unsafe { host_slice_mut(name, out, out_bytes, data.len())? };
        out.copy_from_slice(data);
        Ok(())
    }
}

/// The decoded value of every code of `dtype` (2^bits values, NaN where a code is not a number).
#[pyfunction]
fn code_values(dtype: &str) -> PyResult<Vec<f64>> {
    let dtype = parse_dtype(dtype)?;
    if dtype.bits() > 8 {
        return Err(PyValueError::new_err(format!(
            "{dtype} is not a weight type: use one of at most 8 bits"
        )));
    }
    Ok((0..dtype.code_count() as u32)
        .map(|code| dtype.decode(code))
        .collect())
}

/// The native half of the `anybit` package.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(packed_size, module)?)?;
    module.add_function(wrap_pyfunction!(quantize, module)?)?;
    module.add_function(wrap_pyfunction!(prepared_sizes, module)?)?;
    module.add_function(wrap_pyfunction!(prepare, module)?)?;
    module.add_function(wrap_pyfunction!(dequantize, module)?)?;
    module.add_function(wrap_pyfunction!(plan, module)?)?;
    module.add_function(wrap_pyfunction!(matmul, module)?)?;
    module.add_function(wrap_pyfunction!(add_site_packages, module)?)?;
    module.add_function(wrap_pyfunction!(code_values, module)?)?;
    module.add_class::<Checkpoint>()?;
    module.add("MAX_TOKENS_PER_LAUNCH", launch::MAX_TOKENS_PER_LAUNCH)?;
    Ok(())
}
