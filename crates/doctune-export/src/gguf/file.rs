//! The GGUF container, version 3, written as a stream: the header, the key–value metadata and
//! every tensor's description first (each tensor's byte size is known from its shape and type
//! before it is computed), then the tensors one at a time, each aligned to
//! [`ALIGNMENT`] bytes. So a writer holds one tensor in memory, never the model.
//!
//! Layout (llama.cpp's `gguf.cpp`, gguf-py's `gguf_writer.py`): `GGUF`, version u32, tensor count
//! u64, metadata count u64; each metadata pair as a string key, a u32 value type and the value;
//! each tensor as a string name, u32 dimension count, u64 dimensions (innermost first), u32 ggml
//! type and u64 offset into the data section; padding to the alignment; the data.

use std::io::{self, Write};

/// Alignment of the data section and of every tensor in it (GGUF's default; no
/// `general.alignment` key is written).
pub const ALIGNMENT: u64 = 32;
const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;

/// A ggml tensor type DocTune writes, with its on-disk id and block geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    Q4_0,
    Q5_0,
    Q5_1,
    Q8_0,
    #[serde(rename = "Q4_K")]
    Q4K,
    #[serde(rename = "Q5_K")]
    Q5K,
    #[serde(rename = "Q6_K")]
    Q6K,
}

impl GgmlType {
    /// The type's id in a GGUF file (`ggml_type`).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Bf16 => 30,
        }
    }

    /// Elements per block (1 for the float types).
    pub fn block_elems(self) -> u64 {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 => 1,
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => 32,
            GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::Bf16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
        }
    }

    /// The name llama.cpp prints (`Q4_K`, `F16`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Bf16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// Whether a row of `cols` elements can be stored in this type.
    pub fn fits_row(self, cols: u64) -> bool {
        cols.is_multiple_of(self.block_elems())
    }

    /// Bytes of a tensor of `elems` elements (a whole number of blocks).
    pub fn bytes_for(self, elems: u64) -> u64 {
        elems / self.block_elems() * self.block_bytes()
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// An array of one element type.
    Array(Array),
}

/// A metadata array.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    I32(Vec<i32>),
    F32(Vec<f32>),
    Str(Vec<String>),
}

const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

/// One tensor's description.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions innermost first (`ne[0]` = a row's length), as GGUF stores them.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorInfo {
    pub fn elems(&self) -> u64 {
        self.dims.iter().product()
    }
    pub fn bytes(&self) -> u64 {
        self.ty.bytes_for(self.elems())
    }
}

fn put_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn put_value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(b) => w.write_all(&[u8::from(*b)]),
        Value::Str(s) => put_str(w, s),
        Value::Array(a) => {
            let (ty, n) = match a {
                Array::I32(v) => (T_I32, v.len()),
                Array::F32(v) => (T_F32, v.len()),
                Array::Str(v) => (T_STRING, v.len()),
            };
            w.write_all(&ty.to_le_bytes())?;
            w.write_all(&(n as u64).to_le_bytes())?;
            match a {
                Array::I32(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
                Array::F32(v) => v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
                Array::Str(v) => v.iter().try_for_each(|s| put_str(w, s)),
            }
        }
    }
}

fn type_of(v: &Value) -> u32 {
    match v {
        Value::U32(_) => T_U32,
        Value::I32(_) => T_I32,
        Value::F32(_) => T_F32,
        Value::Bool(_) => T_BOOL,
        Value::Str(_) => T_STRING,
        Value::Array(_) => T_ARRAY,
    }
}

fn padding(at: u64) -> u64 {
    (ALIGNMENT - at % ALIGNMENT) % ALIGNMENT
}

/// Writes a GGUF file to `w`: [`GgufWriter::start`] writes everything but the tensor data;
/// [`GgufWriter::tensor`] then takes each tensor's bytes in the order of the descriptions.
#[derive(Debug)]
pub struct GgufWriter<W: Write> {
    w: W,
    tensors: Vec<TensorInfo>,
    next: usize,
    written: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header, `metadata` and the tensor descriptions; returns the writer for the
    /// data.
    pub fn start(
        mut w: W,
        metadata: &[(String, Value)],
        tensors: Vec<TensorInfo>,
    ) -> io::Result<Self> {
        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut head, k)?;
            head.extend_from_slice(&type_of(v).to_le_bytes());
            put_value(&mut head, v)?;
        }
        let mut offset = 0u64;
        for t in &tensors {
            put_str(&mut head, &t.name)?;
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset += t.bytes() + padding(t.bytes());
        }
        let pad = padding(head.len() as u64) as usize;
        head.resize(head.len() + pad, 0);
        w.write_all(&head)?;
        Ok(Self {
            w,
            tensors,
            next: 0,
            written: 0,
        })
    }

    /// The description of the tensor [`tensor`](Self::tensor) expects next.
    pub fn next_info(&self) -> Option<&TensorInfo> {
        self.tensors.get(self.next)
    }

    /// Writes the next tensor's data (exactly its described size).
    pub fn tensor(&mut self, bytes: &[u8]) -> io::Result<()> {
        let info = self
            .tensors
            .get(self.next)
            .ok_or_else(|| io::Error::other("more tensors written than described"))?;
        if bytes.len() as u64 != info.bytes() {
            return Err(io::Error::other(format!(
                "tensor {}: {} bytes, its description says {}",
                info.name,
                bytes.len(),
                info.bytes()
            )));
        }
        self.w.write_all(bytes)?;
        let pad = padding(bytes.len() as u64);
        self.w.write_all(&vec![0u8; pad as usize])?;
        self.written += bytes.len() as u64 + pad;
        self.next += 1;
        Ok(())
    }

    /// Checks that every described tensor was written and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.next != self.tensors.len() {
            return Err(io::Error::other(format!(
                "{} of {} tensors written",
                self.next,
                self.tensors.len()
            )));
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

/// The size of a GGUF file with this metadata and these tensors, for the free-space check.
pub fn file_size(metadata: &[(String, Value)], tensors: &[TensorInfo]) -> u64 {
    let mut head = Vec::new();
    for (k, v) in metadata {
        let _ = put_str(&mut head, k);
        let _ = put_value(&mut head, v);
        head.extend_from_slice(&[0; 4]);
    }
    let mut n = 24 + head.len() as u64;
    for t in tensors {
        n += 8 + t.name.len() as u64 + 4 + 8 * t.dims.len() as u64 + 4 + 8;
    }
    n += padding(n);
    n + tensors
        .iter()
        .map(|t| t.bytes() + padding(t.bytes()))
        .sum::<u64>()
}
