//! Loading a Hugging Face model folder: `config.json`, weights from `model.safetensors` or the
//! shards a `model.safetensors.index.json` names (memory-mapped, converted to the compute
//! dtype; bf16, f16 and f32 files are read), and the tokenizer files.
//!
//! Only safetensors are ever opened. A folder with only pickle weights (`*.bin`, `*.pt`,
//! `*.pth`, `*.pkl`) is refused with an error that says why; shard names from the index must be
//! plain `.safetensors` file names inside the folder (no path, no `..`).

use crate::config::ModelConfig;
use crate::model::CausalLm;
use crate::ModelError;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use doctune_tokenizer::ModelTokenizer;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// The compute dtype. `None`: f32 on CPU (candle's CPU matmul has no bf16), bf16 on GPU.
    pub dtype: Option<DType>,
    /// The dtype the frozen weight matrices (projections, embedding, output head) are kept in
    /// when it is not the compute dtype: bf16 under f32 activations, which is how DocTune trains
    /// in bf16 on the CPU ([`LoadOptions::for_training`]). Vectors (norms, biases) keep the
    /// compute dtype.
    pub matrix_dtype: Option<DType>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: None,
            matrix_dtype: None,
        }
    }
}

impl LoadOptions {
    /// On `device`, in `precision` as training means it: on a GPU the base model computes in
    /// that precision; on the CPU bf16 keeps the frozen weight matrices in bf16 and computes in
    /// f32 (PyTorch's CPU autocast: bf16 products with f32 sums, f32 everywhere else), the
    /// products through [`crate::gemm::bf16`].
    pub fn for_training(device: Device, precision: crate::Precision) -> Self {
        let cpu_bf16 = device.is_cpu() && precision == crate::Precision::Bf16;
        Self {
            device,
            dtype: Some(if cpu_bf16 {
                DType::F32
            } else {
                precision.dtype()
            }),
            matrix_dtype: cpu_bf16.then_some(DType::BF16),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype.unwrap_or(if self.device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        })
    }
}

/// A loaded model with its tokenizer.
#[derive(Debug)]
pub struct LoadedModel {
    pub dir: PathBuf,
    pub model: CausalLm,
    pub tokenizer: ModelTokenizer,
}

const PICKLE: [&str; 4] = [".bin", ".pt", ".pth", ".pkl"];

/// The safetensors files holding the weights of `dir`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let value = doctune_tokenizer::read_json(&index)
            .map_err(|e| ModelError::Weights {
                path: index.clone(),
                message: e.to_string(),
            })?
            .unwrap_or_default();
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Weights {
                path: index.clone(),
                message: "has no `weight_map` object".into(),
            })?;
        let mut shards = BTreeSet::new();
        for file in map.values() {
            let name = file.as_str().unwrap_or_default();
            let plain = !name.is_empty()
                && !name.contains(['/', '\\'])
                && name != ".."
                && name.ends_with(".safetensors");
            if !plain {
                return Err(ModelError::Weights {
                    path: index.clone(),
                    message: format!(
                        "names shard `{name}`, which is not a .safetensors file in the folder"
                    ),
                });
            }
            shards.insert(name.to_owned());
        }
        let mut out = Vec::new();
        for name in shards {
            let path = dir.join(&name);
            if !path.is_file() {
                return Err(ModelError::Weights {
                    path: index.clone(),
                    message: format!(
                        "names shard `{name}`, which is not in the folder (incomplete download?)"
                    ),
                });
            }
            out.push(path);
        }
        return Ok(out);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let pickles: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| PICKLE.iter().any(|ext| n.ends_with(ext)))
                .collect()
        })
        .unwrap_or_default();
    if !pickles.is_empty() {
        return Err(ModelError::PickleOnly {
            dir: dir.to_path_buf(),
            files: pickles.join(", "),
        });
    }
    Err(ModelError::NoWeights {
        dir: dir.to_path_buf(),
    })
}

/// Named tensors of one or more safetensors files, memory-mapped: read one tensor at a time
/// without loading the files (the model loader, exports, and anything else that reads weights).
pub struct WeightReader {
    st: MmapedSafetensors,
    /// For error messages.
    path: PathBuf,
    names: BTreeSet<String>,
    /// The files again, for [`WeightReader::load_f32`]'s positioned reads.
    files: Vec<std::fs::File>,
    /// Each tensor's file (an index into `files`), byte range in it and dtype.
    places: std::collections::HashMap<String, (usize, u64, u64, safetensors::Dtype)>,
}

impl std::fmt::Debug for WeightReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightReader")
            .field("path", &self.path)
            .field("tensors", &self.names.len())
            .finish()
    }
}

/// Fills `buf` from `f` at `offset`, leaving the file's cursor for other readers.
fn read_at(f: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            match std::os::windows::fs::FileExt::seek_read(
                f,
                &mut buf[done..],
                offset + done as u64,
            )? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => done += n,
            }
        }
        Ok(())
    }
}

/// A safetensors file opened for reading, where its data starts, and its header (bounded:
/// the header of a real model is a few MB).
fn read_header(
    path: &Path,
) -> Result<(std::fs::File, u64, safetensors::tensor::Metadata), ModelError> {
    use std::io::Read;
    const MAX_HEADER: u64 = 100 << 20;
    let bad = |message: String| ModelError::Weights {
        path: path.to_path_buf(),
        message,
    };
    // Through the folder's scope: a shard that links out of the model folder is refused.
    let (mut f, _) = doctune_core::Scope::open_model_file(path).map_err(|e| {
        bad(match e {
            doctune_core::ScopeError::Io { source, .. } => format!("cannot be opened: {source}"),
            other => format!("cannot be opened: {other}"),
        })
    })?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("cannot be read as safetensors: {e}")))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(bad(format!(
            "a safetensors header of {n} bytes (at most {MAX_HEADER})"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("cannot be read as safetensors: {e}")))?;
    let meta = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("cannot be read as safetensors: {e}")))?;
    Ok((f, 8 + n, meta))
}

impl WeightReader {
    /// The safetensors `files` (at least one).
    pub fn open(files: &[PathBuf]) -> Result<Self, ModelError> {
        let first = files
            .first()
            .ok_or_else(|| ModelError::Invalid("no weight file".into()))?;
        // SAFETY: the files are mapped read-only; DocTune never writes to a weights file while
        // it reads it, and every tensor is copied out of the mapping when it is loaded. (Another
        // process truncating a file meanwhile could fault, as with any mmap reader, including
        // transformers.)
        #[allow(unsafe_code)]
        let st = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| ModelError::Weights {
            path: first.clone(),
            message: format!("cannot be read as safetensors: {e}"),
        })?;
        let names = st.tensors().into_iter().map(|(n, _)| n).collect();
        let mut handles = Vec::new();
        let mut places = std::collections::HashMap::new();
        for (i, path) in files.iter().enumerate() {
            let (f, data_start, meta) = read_header(path)?;
            for (name, info) in meta.tensors() {
                let (a, b) = info.data_offsets;
                places.insert(
                    name,
                    (i, data_start + a as u64, data_start + b as u64, info.dtype),
                );
            }
            handles.push(f);
        }
        Ok(Self {
            st,
            path: first.clone(),
            names,
            files: handles,
            places,
        })
    }

    /// The weights of the model folder `dir` ([`weight_files`]).
    pub fn model(dir: &Path) -> Result<Self, ModelError> {
        let mut r = Self::open(&weight_files(dir)?)?;
        r.path = dir.to_path_buf();
        Ok(r)
    }

    /// Every tensor's name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// A tensor's shape, without reading it.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, ModelError> {
        self.st
            .get(name)
            .map(|v| v.shape().to_vec())
            .map_err(|e| self.error(name, e))
    }

    /// Tensor `name` on `device`, in the file's dtype.
    pub fn load(&self, name: &str, device: &Device) -> Result<candle_core::Tensor, ModelError> {
        self.st.load(name, device).map_err(|e| self.error(name, e))
    }

    /// Tensor `name`'s values in f32, row-major. A file's f32 tensor is read with positioned
    /// reads in parallel chunks rather than through the mapping: touching a mapping takes a page
    /// fault every few pages, which made reading most of an export's time. Other dtypes are
    /// converted through candle.
    pub fn load_f32(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        if let Some(&(file, start, end, safetensors::Dtype::F32)) = self.places.get(name) {
            let f = &self.files[file];
            let mut out = vec![0f32; ((end - start) / 4) as usize];
            out.par_chunks_mut(CHUNK)
                .enumerate()
                .try_for_each(|(i, out)| {
                    let at = start + (i * CHUNK * 4) as u64;
                    // Read straight into the values (safetensors is little-endian, as the
                    // machines DocTune runs on are); swapped after the read elsewhere.
                    read_at(f, bytemuck::cast_slice_mut(out), at)?;
                    if cfg!(target_endian = "big") {
                        for v in out.iter_mut() {
                            *v = f32::from_bits(v.to_bits().swap_bytes());
                        }
                    }
                    Ok(())
                })
                .map_err(|e: std::io::Error| self.error(name, e))?;
            return Ok(out);
        }
        let t = self.load(name, &Device::Cpu)?;
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .map_err(|e| self.error(name, e))
    }

    fn error(&self, name: &str, e: impl std::fmt::Display) -> ModelError {
        ModelError::Weights {
            path: self.path.clone(),
            message: format!("tensor `{name}`: {e}"),
        }
    }
}

/// Loads the model of `dir` (not its tokenizer).
pub fn load_model(dir: &Path, opts: &LoadOptions) -> Result<CausalLm, ModelError> {
    let cfg = ModelConfig::load(dir)?;
    let weights = WeightReader::model(dir)?;
    let dtype = opts.dtype();
    let device = opts.device.clone();
    let mut get =
        |name: &str, shape: &[usize]| -> Result<Option<candle_core::Tensor>, ModelError> {
            if !weights.contains(name) {
                return Ok(None);
            }
            let t = weights.load(name, &device)?;
            if t.dims() != shape {
                return Err(ModelError::Shape {
                    name: name.into(),
                    expected: shape.to_vec(),
                    found: t.dims().to_vec(),
                });
            }
            let want = match opts.matrix_dtype {
                Some(m) if shape.len() == 2 => m,
                _ => dtype,
            };
            Ok(Some(t.to_dtype(want)?))
        };
    CausalLm::build(cfg, &mut get, &device, dtype)
}

/// Loads model and tokenizer of `dir`.
pub fn load(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let model = load_model(dir, opts)?;
    let tokenizer = ModelTokenizer::load(dir)?;
    Ok(LoadedModel {
        dir: dir.to_path_buf(),
        model,
        tokenizer,
    })
}

/// Writes named tensors as f32 into a safetensors file, atomically (temporary file, fsync,
/// rename): adapters, checkpoints and test models all go through here.
pub fn save_safetensors(
    path: &Path,
    tensors: &[(String, candle_core::Tensor)],
) -> Result<(), ModelError> {
    let f32s = tensors
        .iter()
        .map(|(n, t)| {
            Ok((
                n.as_str(),
                t.to_device(&Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .contiguous()?,
            ))
        })
        .collect::<Result<Vec<_>, candle_core::Error>>()?;
    let bytes = safetensors::serialize(f32s.iter().map(|(n, t)| (*n, t)), None).map_err(|e| {
        ModelError::Weights {
            path: path.to_path_buf(),
            message: format!("cannot be written as safetensors: {e}"),
        }
    })?;
    doctune_core::write_atomic(path, &bytes).map_err(|source| ModelError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_f32_reads_what_the_mapping_holds_across_shards_and_dtypes() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
        let r = WeightReader::model(&fixture).unwrap();
        assert!(
            weight_files(&fixture).unwrap().len() > 1,
            "a sharded fixture"
        );
        for name in r.names() {
            let via_candle: Vec<f32> = r
                .load(name, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(r.load_f32(name).unwrap(), via_candle, "{name}");
        }
        // A bf16 file goes through candle's conversion.
        let d = tempfile::tempdir().unwrap();
        let t = candle_core::Tensor::new(&[1.5f32, -2.25, 3.0e-3], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let p = d.path().join("w.safetensors");
        save_safetensors(&p, &[("w".into(), t.clone())]).unwrap();
        let r = WeightReader::open(&[p]).unwrap();
        let want: Vec<f32> = t.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        assert_eq!(r.load_f32("w").unwrap(), want);
    }
}
