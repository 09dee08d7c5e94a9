//! The quantization settings of a GPTQ or AWQ checkpoint: `quantize_config.json` beside the
//! weights, or else the `quantization_config` object of `config.json`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::CheckpointError;

/// Which format a checkpoint is imported from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    Gptq,
    Awq,
}

impl ImportFormat {
    /// The name as `quant_method` writes it.
    pub fn name(self) -> &'static str {
        match self {
            ImportFormat::Gptq => "gptq",
            ImportFormat::Awq => "awq",
        }
    }
}

/// How GPTQ stores zero points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroStorage {
    /// `checkpoint_format` `gptq` (or absent): each zero point is stored minus one, so stored
    /// `v` stands for `(v + 1) mod 2^bits`.
    MinusOne,
    /// `checkpoint_format` `gptq_v2`: zero points are stored as they are.
    AsIs,
}

/// The settings read from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportConfig {
    pub format: ImportFormat,
    /// Bits per code: 2, 3, 4 or 8 (GPTQ), 4 (AWQ).
    pub bits: u32,
    /// Elements per group along K; `None` for one group per row (GPTQ's `group_size: -1`).
    pub group_size: Option<usize>,
    /// GPTQ's act-order (`desc_act`): then `g_idx` says each column's group.
    pub desc_act: bool,
    /// GPTQ's symmetric quantization: the zero points are all `2^(bits-1)`, and may be absent.
    pub sym: bool,
    pub zeros: ZeroStorage,
}

impl ImportConfig {
    /// Reads the configuration of the checkpoint whose files are in `directory`.
    pub fn find(directory: &Path, format: ImportFormat) -> Result<Self, CheckpointError> {
        let quantize_config = directory.join("quantize_config.json");
        let config = directory.join("config.json");
        let quant_config = directory.join("quant_config.json");
        if quantize_config.exists() {
            let object = read_object(&quantize_config)?;
            return Self::parse(&quantize_config, &object, format);
        }
        if quant_config.exists() {
            let object = read_object(&quant_config)?;
            return Self::parse(&quant_config, &object, format);
        }
        if config.exists() {
            let object = read_object(&config)?;
            return match object.get("quantization_config") {
                Some(Value::Object(settings)) => Self::parse(&config, settings, format),
                _ => Err(config_error(
                    &config,
                    "it has no `quantization_config` object".to_string(),
                )),
            };
        }
        Err(config_error(
            directory,
            format!(
                "no quantize_config.json, quant_config.json or config.json with a `quantization_config`: the {} settings (bits, group size) are needed",
                format.name()
            ),
        ))
    }

    /// Parses the settings object of `path`.
    pub fn parse(
        path: &Path,
        settings: &Map<String, Value>,
        format: ImportFormat,
    ) -> Result<Self, CheckpointError> {
        let error = |reason: String| config_error(path, reason);
        let fail = |reason: String| Err(error(reason));
        if let Some(method) = settings.get("quant_method").and_then(Value::as_str) {
            if !method.eq_ignore_ascii_case(format.name()) {
                return fail(format!(
                    "`quant_method` is `{method}`, not `{}`",
                    format.name()
                ));
            }
        }
        let integer = |keys: &[&str]| -> Option<Result<i64, String>> {
            keys.iter().find_map(|key| {
                settings.get(*key).map(|value| {
                    value
                        .as_i64()
                        .ok_or_else(|| format!("`{key}` is {value}, not an integer"))
                })
            })
        };
        let flag = |key: &str, default: bool| -> Result<bool, String> {
            match settings.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(value)) => Ok(*value),
                Some(other) => Err(format!("`{key}` is {other}, not true or false")),
            }
        };
        let bits = match integer(&["bits", "w_bit"]) {
            None => return fail("it has no `bits`".to_string()),
            Some(Err(reason)) => return fail(reason),
            Some(Ok(bits)) => bits,
        };
        let supported: &[i64] = match format {
            ImportFormat::Gptq => &[2, 3, 4, 8],
            ImportFormat::Awq => &[4],
        };
        if !supported.contains(&bits) {
            return fail(format!(
                "{bits}-bit {} checkpoints are not supported (only {})",
                format.name(),
                supported
                    .iter()
                    .map(|bits| format!("{bits}-bit"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let group_size = match integer(&["group_size", "q_group_size"]) {
            None => return fail("it has no `group_size`".to_string()),
            Some(Err(reason)) => return fail(reason),
            Some(Ok(-1)) if format == ImportFormat::Gptq => None,
            Some(Ok(size)) if size > 0 => Some(size as usize),
            Some(Ok(size)) => return fail(format!("`group_size` is {size}")),
        };
        let (desc_act, sym, zeros) = match format {
            ImportFormat::Gptq => {
                let desc_act = flag("desc_act", false).map_err(error)?;
                let sym = flag("sym", true).map_err(error)?;
                let zeros = match settings.get("checkpoint_format").and_then(Value::as_str) {
                    None | Some("gptq") => ZeroStorage::MinusOne,
                    Some("gptq_v2") => ZeroStorage::AsIs,
                    Some(other) => {
                        return fail(format!(
                            "`checkpoint_format` `{other}` is not supported (only gptq and gptq_v2)"
                        ))
                    }
                };
                (desc_act, sym, zeros)
            }
            ImportFormat::Awq => {
                if let Some(version) = settings.get("version").and_then(Value::as_str) {
                    if !version.eq_ignore_ascii_case("gemm") {
                        return fail(format!(
                            "AWQ `version` `{version}` is not supported (only gemm, whose layout is qweight [K, N/8])"
                        ));
                    }
                }
                if !flag("zero_point", true).map_err(error)? {
                    return fail(
                        "AWQ without zero points (`zero_point: false`) is not supported"
                            .to_string(),
                    );
                }
                (false, false, ZeroStorage::AsIs)
            }
        };
        Ok(ImportConfig {
            format,
            bits: bits as u32,
            group_size,
            desc_act,
            sym,
            zeros,
        })
    }
}

fn read_object(path: &Path) -> Result<Map<String, Value>, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|error| CheckpointError::io(path, error))?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(config_error(path, "it is not a JSON object".to_string())),
        Err(error) => Err(config_error(path, format!("not valid JSON: {error}"))),
    }
}

fn config_error(path: &Path, reason: String) -> CheckpointError {
    CheckpointError::Config {
        path: PathBuf::from(path),
        reason,
    }
}
