//! The index of a sharded checkpoint: `*.safetensors.index.json`, as Hugging Face writes it.
//!
//! ```json
//! {"metadata": {"total_size": 16060522496},
//!  "weight_map": {"lm_head.weight": "model-00004-of-00004.safetensors", ...}}
//! ```
//!
//! `weight_map` names, for every tensor, the shard file (in the index's directory) that holds
//! it. Shard names must be plain file names: a name with a path separator, `.` or `..` is
//! refused, so that a checkpoint written beside it can use the same names safely.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::CheckpointError;

/// A parsed index.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardIndex {
    /// The `metadata` object (without changes; `total_size` included).
    pub metadata: Map<String, Value>,
    /// Tensor name → shard file name.
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// Reads and checks the index at `path`.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| CheckpointError::io(path, error))?;
        Self::parse(path, &text)
    }

    /// Parses an index; `path` names it in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, CheckpointError> {
        let index_error = |reason: String| CheckpointError::Index {
            path: path.to_path_buf(),
            reason,
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|error| index_error(format!("not a valid JSON index: {error}")))?;
        let Value::Object(mut object) = value else {
            return Err(index_error("the index is not a JSON object".to_string()));
        };
        let metadata = match object.remove("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(metadata)) => metadata,
            Some(_) => return Err(index_error("`metadata` is not an object".to_string())),
        };
        let Some(Value::Object(entries)) = object.remove("weight_map") else {
            return Err(index_error(
                "the index has no `weight_map` object (tensor name → shard file)".to_string(),
            ));
        };
        let mut weight_map = BTreeMap::new();
        for (tensor, shard) in entries {
            let Value::String(shard) = shard else {
                return Err(index_error(format!(
                    "the shard of tensor `{tensor}` is not a file name"
                )));
            };
            if !is_plain_file_name(&shard) {
                return Err(index_error(format!(
                    "tensor `{tensor}` is in shard `{shard}`, which is not a plain file name in the index's directory"
                )));
            }
            weight_map.insert(tensor, shard);
        }
        if weight_map.is_empty() {
            return Err(index_error("the index's `weight_map` is empty".to_string()));
        }
        Ok(ShardIndex {
            metadata,
            weight_map,
        })
    }

    /// The shard file names, each once, sorted.
    pub fn shards(&self) -> Vec<&str> {
        let mut shards: Vec<&str> = self.weight_map.values().map(String::as_str).collect();
        shards.sort_unstable();
        shards.dedup();
        shards
    }

    /// The index as JSON text (pretty-printed, as Hugging Face writes it).
    pub fn to_json(&self) -> String {
        let weight_map: Map<String, Value> = self
            .weight_map
            .iter()
            .map(|(tensor, shard)| (tensor.clone(), Value::String(shard.clone())))
            .collect();
        let mut object = Map::new();
        object.insert("metadata".to_string(), Value::Object(self.metadata.clone()));
        object.insert("weight_map".to_string(), Value::Object(weight_map));
        let mut text = serde_json::to_string_pretty(&Value::Object(object))
            .unwrap_or_else(|_| String::from("{}"));
        text.push('\n');
        text
    }
}

/// A file name without directories: no separator, not empty, `.` or `..`.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_weight_map_and_refuses_paths() {
        let path = Path::new("model.safetensors.index.json");
        let index = ShardIndex::parse(
            path,
            r#"{"metadata": {"total_size": 10}, "weight_map": {"b": "s2.safetensors", "a": "s1.safetensors", "c": "s1.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(index.shards(), ["s1.safetensors", "s2.safetensors"]);
        assert_eq!(index.metadata["total_size"], 10);
        let again = ShardIndex::parse(path, &index.to_json()).unwrap();
        assert_eq!(again, index);
        let escape = ShardIndex::parse(path, r#"{"weight_map": {"a": "../x.safetensors"}}"#);
        assert!(escape
            .unwrap_err()
            .to_string()
            .contains("tensor `a` is in shard `../x.safetensors`, which is not a plain file name"));
        let missing = ShardIndex::parse(path, r#"{"metadata": {}}"#).unwrap_err();
        assert!(missing.to_string().contains("no `weight_map`"), "{missing}");
    }
}
