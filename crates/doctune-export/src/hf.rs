//! The merged model as a Hugging Face folder, which `AutoModelForCausalLM.from_pretrained` loads
//! unchanged: the base model's `config.json` (its dtype set to the export's), generation config,
//! tokenizer files and chat template, and the weights in f32, bf16 or f16 as `model.safetensors`
//! or, past 5 GB, shards with `model.safetensors.index.json` (transformers' `max_shard_size`).
//!
//! The safetensors files are written here, a tensor at a time ([`SafetensorsWriter`]):
//! `safetensors::serialize_to_file` takes infallible views and so cannot stream tensors that are
//! computed (merged) as they are written, fail, or stop on cancel.

use crate::manifest::{FileHash, HashedFile};
use crate::source::Source;
use crate::{check_cancel, io, Dtype, ExportError};
use candle_core::{DType, Tensor};
use doctune_core::{CancelToken, JobEvent, ProgressSink};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;

/// The largest shard, in bytes (transformers' default `max_shard_size="5GB"`).
pub const MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// A tensor's little-endian bytes in `dtype` (f32, bf16 or f16).
pub fn tensor_bytes(t: &Tensor, dtype: DType) -> Result<Vec<u8>, ExportError> {
    let t = t.to_dtype(dtype)?.flatten_all()?;
    Ok(match dtype {
        DType::F32 => t
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::BF16 => t
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F16 => t
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        other => {
            return Err(ExportError::Invalid(format!(
                "cannot write {other:?} tensors"
            )))
        }
    })
}

fn st_dtype(d: DType) -> &'static str {
    match d {
        DType::F32 => "F32",
        DType::BF16 => "BF16",
        _ => "F16",
    }
}

fn size_of(d: DType) -> u64 {
    if d == DType::F32 {
        4
    } else {
        2
    }
}

/// A safetensors file written as a stream: the header from the tensors' names, dtypes and
/// shapes, then each tensor's bytes in that order.
#[derive(Debug)]
pub struct SafetensorsWriter {
    w: HashedFile,
    /// Bytes each remaining tensor must have, in order.
    expected: std::collections::VecDeque<(String, u64)>,
    path: std::path::PathBuf,
}

impl SafetensorsWriter {
    /// Creates `path` with a header for `tensors` (name, dtype, shape).
    pub fn create(
        path: &Path,
        tensors: &[(String, DType, Vec<usize>)],
    ) -> Result<Self, ExportError> {
        let mut header = Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut offset = 0u64;
        let mut expected = std::collections::VecDeque::new();
        for (name, dt, shape) in tensors {
            let n = shape.iter().product::<usize>() as u64 * size_of(*dt);
            header.insert(
                name.clone(),
                json!({"dtype": st_dtype(*dt), "shape": shape, "data_offsets": [offset, offset + n]}),
            );
            expected.push_back((name.clone(), n));
            offset += n;
        }
        let mut bytes = serde_json::to_vec(&Value::Object(header))
            .map_err(|e| ExportError::Invalid(e.to_string()))?;
        bytes.resize(bytes.len().next_multiple_of(8), b' ');
        let mut w = HashedFile::create(path)?;
        w.write_all(&(bytes.len() as u64).to_le_bytes())
            .and_then(|_| w.write_all(&bytes))
            .map_err(io(path))?;
        Ok(Self {
            w,
            expected,
            path: path.to_path_buf(),
        })
    }

    /// Writes the next tensor's bytes.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), ExportError> {
        match self.expected.pop_front() {
            Some((n, len)) if n == name && len == bytes.len() as u64 => {
                self.w.write_all(bytes).map_err(io(&self.path))
            }
            other => Err(ExportError::Invalid(format!(
                "{}: tensor `{name}` ({} bytes) written out of order (expected {other:?})",
                self.path.display(),
                bytes.len()
            ))),
        }
    }

    /// Flushes the file (every tensor must have been written); its hash.
    pub fn finish(self) -> Result<FileHash, ExportError> {
        if let Some((n, _)) = self.expected.front() {
            return Err(ExportError::Invalid(format!(
                "{}: tensor `{n}` was never written",
                self.path.display()
            )));
        }
        self.w.finish()
    }
}

/// Writes the merged model in `dtype` into `dir`; the weight files' hashes.
pub(crate) fn write(
    dir: &Path,
    src: &Source,
    dtype: Dtype,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Vec<FileHash>, ExportError> {
    let weights = src.weights()?;
    let dt = dtype.candle();
    let mut plan: Vec<(String, DType, Vec<usize>)> = Vec::new();
    for name in weights.names() {
        plan.push((name.clone(), dt, weights.shape(name)?));
    }
    // Shards of at most MAX_SHARD_BYTES, in model order.
    let mut shards: Vec<Vec<(String, DType, Vec<usize>)>> = vec![Vec::new()];
    let mut in_shard = 0u64;
    for t in plan {
        let n = t.2.iter().product::<usize>() as u64 * size_of(dt);
        if in_shard > 0 && in_shard + n > MAX_SHARD_BYTES {
            shards.push(Vec::new());
            in_shard = 0;
        }
        in_shard += n;
        shards.last_mut().expect("one shard").push(t);
    }
    let total_tensors: usize = shards.iter().map(Vec::len).sum();
    let names: Vec<String> = if shards.len() == 1 {
        vec!["model.safetensors".into()]
    } else {
        (1..=shards.len())
            .map(|i| format!("model-{i:05}-of-{:05}.safetensors", shards.len()))
            .collect()
    };
    let mut done = 0u64;
    let mut weight_map = Map::new();
    let mut total_size = 0u64;
    let mut hashes = Vec::new();
    for (shard, file) in shards.iter().zip(&names) {
        let mut w = SafetensorsWriter::create(&dir.join(file), shard)?;
        for (name, dt, _) in shard {
            check_cancel(cancel)?;
            let bytes = tensor_bytes(&weights.tensor(name)?, *dt)?;
            total_size += bytes.len() as u64;
            w.write(name, &bytes)?;
            weight_map.insert(name.clone(), Value::String(file.clone()));
            done += 1;
            sink.emit(JobEvent::progress(
                done,
                total_tensors as u64,
                "tensors",
                Some(name.clone()),
            ));
        }
        hashes.push(w.finish()?);
    }
    if names.len() > 1 {
        let p = dir.join("model.safetensors.index.json");
        let index = json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
        doctune_core::write_json_atomic(&p, &index).map_err(io(&p))?;
    }
    write_config(dir, src, dtype)?;
    copy_tokenizer_files(dir, src)?;
    Ok(hashes)
}

/// `config.json` of the base model with the dtype set to the export's.
fn write_config(dir: &Path, src: &Source, dtype: Dtype) -> Result<(), ExportError> {
    let mut cfg = src.config_json.clone();
    if let Value::Object(m) = &mut cfg {
        let name = Value::String(dtype.torch_name().into());
        let mut set = false;
        for key in ["dtype", "torch_dtype"] {
            if m.contains_key(key) {
                m.insert(key.into(), name.clone());
                set = true;
            }
        }
        if !set {
            m.insert("torch_dtype".into(), name);
        }
    }
    let p = dir.join("config.json");
    doctune_core::write_json_atomic(&p, &cfg).map_err(io(&p))
}

/// Copies the base model's tokenizer, template and generation files into `dir`.
pub(crate) fn copy_tokenizer_files(dir: &Path, src: &Source) -> Result<(), ExportError> {
    for f in src.tokenizer_files() {
        let name = f.file_name().expect("a file name");
        std::fs::copy(&f, dir.join(name)).map_err(io(&f))?;
    }
    Ok(())
}
