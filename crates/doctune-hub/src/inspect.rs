//! Validation of a model folder in Hugging Face layout, before anything maps its weights:
//!
//! - `config.json` parses, names a supported architecture, and has no `auto_map` (remote code);
//! - the weights are safetensors (a folder with only pickles is refused); with
//!   `model.safetensors.index.json`, every shard it names is a plain `.safetensors` name in the
//!   folder and every tensor it names is in that shard;
//! - every safetensors header is checked from its first `8 + n` bytes: `n` at most
//!   [`MAX_HEADER_BYTES`] and inside the file, the JSON valid, offsets contiguous and
//!   non-overlapping, each tensor's byte length equal to its shape × dtype, and the data section
//!   ending exactly at the end of the file (a truncated download is caught here);
//! - the embedding (and `lm_head`, unless tied) has the `[vocab_size, hidden_size]` shape the
//!   config promises, and there are `num_hidden_layers` layers.
//!
//! File names come from the folder listing and the index; each is resolved through a
//! [`Scope`] on the folder (or, for a Hugging Face cache snapshot whose files link into the
//! cache's `blobs/`, on the repository's cache folder).

use crate::files::{is_allowed, is_pickle};
use crate::HubError;
use doctune_core::{Family, Scope};
use safetensors::tensor::Metadata;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest safetensors header DocTune reads (the format's own limit is 100 MB).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// What a valid model folder holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelFolderInfo {
    pub path: PathBuf,
    pub architecture: String,
    pub family: Family,
    /// The weights' main dtype (by bytes), as safetensors names it: `BF16`, `F16`, `F32`, …
    pub dtype: String,
    pub parameters: u64,
    /// Bytes of the files DocTune uses (weights, configs, tokenizer).
    pub size_bytes: u64,
    /// The files DocTune uses.
    pub files: Vec<String>,
    /// Files present but ignored (pickles, code, other formats).
    pub ignored: Vec<String>,
}

/// Validates the model folder `dir`; see the module docs for what is checked.
pub fn inspect_folder(dir: &Path) -> Result<ModelFolderInfo, HubError> {
    if !dir.is_dir() {
        return Err(HubError::invalid(dir, "not a folder"));
    }
    let scope = Scope::of_model_folder(dir).map_err(|e| HubError::invalid(dir, e.to_string()))?;
    let resolve = |name: &str| -> Result<PathBuf, HubError> {
        if !is_plain_name(name) {
            return Err(HubError::invalid(
                dir,
                format!("\"{name}\" is not a plain file name"),
            ));
        }
        scope
            .resolve(dir.join(name))
            .map_err(|e| HubError::invalid(dir.join(name), e.to_string()))
    };

    let mut files = Vec::new();
    let mut ignored = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| HubError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| HubError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_allowed(&name) {
            files.push(name);
        } else if !name.starts_with('.') {
            ignored.push(name);
        }
    }
    files.sort();
    ignored.sort();

    // config.json
    let config_path = resolve("config.json")
        .ok()
        .filter(|p| p.is_file())
        .ok_or_else(|| HubError::invalid(dir, "no config.json; not a Hugging Face model folder"))?;
    let config = read_json(&config_path)?;
    let (architecture, family) = check_config(&config, &config_path)?;

    // Which safetensors files hold the weights.
    let index_path = dir.join("model.safetensors.index.json");
    let weight_map: Option<BTreeMap<String, String>> = if files
        .iter()
        .any(|f| f == "model.safetensors.index.json")
    {
        let index = read_json(&resolve("model.safetensors.index.json")?)?;
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| HubError::invalid(&index_path, "no \"weight_map\" object"))?;
        let mut out = BTreeMap::new();
        for (tensor, shard) in map {
            let shard = shard.as_str().ok_or_else(|| {
                HubError::invalid(
                    &index_path,
                    format!("the shard of {tensor} is not a string"),
                )
            })?;
            if !shard.ends_with(".safetensors") || !is_plain_name(shard) {
                return Err(HubError::invalid(&index_path, format!("{tensor} is in \"{shard}\", which is not a .safetensors file in this folder")));
            }
            out.insert(tensor.clone(), shard.to_string());
        }
        Some(out)
    } else {
        None
    };
    let shards: BTreeSet<String> = match &weight_map {
        Some(m) => m.values().cloned().collect(),
        None => files
            .iter()
            .filter(|f| f.ends_with(".safetensors"))
            .cloned()
            .collect(),
    };
    if shards.is_empty() {
        let pickles: Vec<&str> = ignored
            .iter()
            .map(String::as_str)
            .filter(|n| is_pickle(n))
            .collect();
        return Err(HubError::invalid(
            dir,
            if pickles.is_empty() {
                "no .safetensors weights".to_string()
            } else {
                format!(
                    "has only PyTorch pickle weights ({}), which can run code when loaded; DocTune loads only safetensors. Convert them to safetensors or find a version of the model that ships .safetensors files",
                    pickles.join(", ")
                )
            },
        ));
    }

    // Every header, validated without mapping the file.
    let mut tensors: HashMap<String, (String, Vec<usize>, String)> = HashMap::new(); // name -> (dtype, shape, shard)
    for shard in &shards {
        let path = resolve(shard)?;
        if !path.is_file() {
            return Err(HubError::invalid(
                dir.join(shard),
                "missing (named by model.safetensors.index.json)",
            ));
        }
        let meta = read_safetensors_header(&path)?;
        for (name, info) in meta.tensors() {
            tensors.insert(
                name,
                (
                    format!("{:?}", info.dtype),
                    info.shape.clone(),
                    shard.clone(),
                ),
            );
        }
    }
    if let Some(map) = &weight_map {
        for (tensor, shard) in map {
            match tensors.get(tensor) {
                Some((_, _, actual)) if actual == shard => {}
                Some((_, _, actual)) => {
                    return Err(HubError::invalid(
                        &index_path,
                        format!("{tensor} is listed in {shard} but found in {actual}"),
                    ))
                }
                None => {
                    return Err(HubError::invalid(
                        dir.join(shard),
                        format!("does not contain {tensor}, which the index lists"),
                    ))
                }
            }
        }
    }
    check_shapes(&config, &config_path, &tensors)?;

    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    let mut parameters = 0u64;
    for (dtype, shape, _) in tensors.values() {
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        parameters += n;
        *by_dtype.entry(dtype.clone()).or_default() += n * dtype_bytes(dtype);
    }
    let dtype = by_dtype
        .into_iter()
        .max_by_key(|(_, b)| *b)
        .map(|(d, _)| d)
        .unwrap_or_default();
    let mut size_bytes = 0;
    for f in &files {
        size_bytes += resolve(f)?.metadata().map(|m| m.len()).unwrap_or(0);
    }
    Ok(ModelFolderInfo {
        path: dir.to_path_buf(),
        architecture,
        family,
        dtype,
        parameters,
        size_bytes,
        files,
        ignored,
    })
}

/// Checks a parsed `config.json`: no remote code, a supported architecture.
pub fn check_config(config: &serde_json::Value, path: &Path) -> Result<(String, Family), HubError> {
    if config.get("auto_map").is_some() {
        return Err(HubError::invalid(
            path,
            "needs remote code (auto_map), which DocTune never runs; choose a model whose architecture is built into transformers",
        ));
    }
    let arch = config
        .get("architectures")
        .and_then(|a| a.as_array())
        .and_then(|a| a.first())
        .and_then(|a| a.as_str())
        .ok_or_else(|| HubError::invalid(path, "no \"architectures\" entry"))?;
    let family = Family::from_architecture(arch).ok_or_else(|| {
        HubError::invalid(
            path,
            format!(
                "architecture {arch} is not supported; DocTune supports {}",
                doctune_core::families::supported_list()
            ),
        )
    })?;
    Ok((arch.to_string(), family))
}

/// Reads and validates the header of the safetensors file at `path` (see the module docs).
pub fn read_safetensors_header(path: &Path) -> Result<Metadata, HubError> {
    let bad = |reason: String| HubError::invalid(path, reason);
    // Not through a link: callers pass the path their scope resolved.
    let (mut f, meta) =
        doctune_core::open::open_regular(path).map_err(|e| HubError::io(path, e))?;
    let len = meta.len();
    let mut n_bytes = [0u8; 8];
    f.read_exact(&mut n_bytes)
        .map_err(|_| bad(format!("too short to be safetensors ({len} bytes)")))?;
    let n = u64::from_le_bytes(n_bytes);
    if n > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "safetensors header claims {n} bytes, more than the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    if 8 + n > len {
        return Err(bad(format!(
            "safetensors header claims {n} bytes but the file has {len}: truncated"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| HubError::io(path, e))?;
    let meta: Metadata = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("invalid safetensors header: {e}")))?;
    let data_end = meta
        .tensors()
        .values()
        .map(|t| t.data_offsets.1 as u64)
        .max()
        .unwrap_or(0);
    let expected = 8 + n + data_end;
    if expected != len {
        return Err(bad(if expected > len {
            format!("truncated: the header describes {expected} bytes but the file has {len}")
        } else {
            format!("{} unexpected bytes after the tensor data", len - expected)
        }));
    }
    Ok(meta)
}

fn check_shapes(
    config: &serde_json::Value,
    path: &Path,
    tensors: &HashMap<String, (String, Vec<usize>, String)>,
) -> Result<(), HubError> {
    let num = |k: &str| config.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
    let (Some(vocab), Some(hidden), Some(layers)) = (
        num("vocab_size"),
        num("hidden_size"),
        num("num_hidden_layers"),
    ) else {
        return Err(HubError::invalid(
            path,
            "needs vocab_size, hidden_size and num_hidden_layers",
        ));
    };
    let expect = |name: &str, required: bool| -> Result<(), HubError> {
        match tensors.get(name) {
            Some((_, shape, shard)) if shape.as_slice() != [vocab, hidden] => {
                Err(HubError::invalid(
                    path.with_file_name(shard),
                    format!("{name} has shape {shape:?} but config.json says [{vocab}, {hidden}]"),
                ))
            }
            None if required => Err(HubError::invalid(
                path.with_file_name("model.safetensors"),
                format!("no {name} tensor"),
            )),
            _ => Ok(()),
        }
    };
    expect("model.embed_tokens.weight", true)?;
    let tied = config
        .get("tie_word_embeddings")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    expect("lm_head.weight", !tied)?;
    let found: BTreeSet<usize> = tensors
        .keys()
        .filter_map(|k| {
            k.strip_prefix("model.layers.")?
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    if found.len() != layers || found.iter().next_back().is_some_and(|&m| m + 1 != layers) {
        return Err(HubError::invalid(
            path,
            format!(
                "num_hidden_layers is {layers} but the weights hold {} layers",
                found.len()
            ),
        ));
    }
    Ok(())
}

fn dtype_bytes(dtype: &str) -> u64 {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != ".."
}

/// The largest `config.json` or index DocTune reads.
pub const MAX_JSON_BYTES: u64 = 8 * 1024 * 1024;

fn read_json(path: &Path) -> Result<serde_json::Value, HubError> {
    let bytes =
        doctune_core::read_limited(path, MAX_JSON_BYTES).map_err(|e| HubError::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| HubError::invalid(path, format!("not valid JSON: {e}")))
}
