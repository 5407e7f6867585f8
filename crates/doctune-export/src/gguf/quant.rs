//! Quantisations: the file types DocTune writes ([`Quant`]), which ggml type each tensor gets
//! ([`tensor_type`]: llama.cpp's `llama_tensor_get_type` for these types, without an importance
//! matrix, and its fallbacks when a row does not divide into blocks), and the encoders
//! ([`encode`]) — ggml's reference block quantisers (candle's port, `candle_core::quantized`, and
//! a vectorising Q8_0 here), run over row chunks in parallel; f16/bf16 conversion by `half`.

use super::file::GgmlType;
use crate::ExportError;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// A GGUF file type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Quant {
    F32,
    F16,
    Bf16,
    #[serde(rename = "q8_0")]
    Q8_0,
    #[serde(rename = "q4_0")]
    Q4_0,
    /// Q4_K with Q6_K for the output and for `attn_v`/`ffn_down` on llama.cpp's chosen layers.
    #[default]
    #[serde(rename = "q4_k_m")]
    Q4KM,
    #[serde(rename = "q5_k_m")]
    Q5KM,
    #[serde(rename = "q6_k")]
    Q6K,
}

impl std::str::FromStr for Quant {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, ExportError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Quant::F32,
            "f16" => Quant::F16,
            "bf16" => Quant::Bf16,
            "q8_0" => Quant::Q8_0,
            "q4_0" => Quant::Q4_0,
            "q4_k_m" => Quant::Q4KM,
            "q5_k_m" => Quant::Q5KM,
            "q6_k" => Quant::Q6K,
            other => {
                return Err(ExportError::Invalid(format!(
                    "unknown quantisation `{other}` (use f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k or f32)"
                )))
            }
        })
    }
}

/// The name `--quant` and the API take (`q4_k_m`).
impl std::fmt::Display for Quant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label().to_ascii_lowercase())
    }
}

impl Quant {
    pub const ALL: [Quant; 8] = [
        Quant::F32,
        Quant::F16,
        Quant::Bf16,
        Quant::Q8_0,
        Quant::Q4_0,
        Quant::Q4KM,
        Quant::Q5KM,
        Quant::Q6K,
    ];

    /// The name llama.cpp's tools use (`Q4_K_M`), also in file names.
    pub fn label(self) -> &'static str {
        match self {
            Quant::F32 => "F32",
            Quant::F16 => "F16",
            Quant::Bf16 => "BF16",
            Quant::Q8_0 => "Q8_0",
            Quant::Q4_0 => "Q4_0",
            Quant::Q4KM => "Q4_K_M",
            Quant::Q5KM => "Q5_K_M",
            Quant::Q6K => "Q6_K",
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            Quant::F32 => 0,
            Quant::F16 => 1,
            Quant::Q4_0 => 2,
            Quant::Q8_0 => 7,
            Quant::Q4KM => 15,
            Quant::Q5KM => 17,
            Quant::Q6K => 18,
            Quant::Bf16 => 32,
        }
    }

    /// The type most tensors get.
    pub fn base_type(self) -> GgmlType {
        match self {
            Quant::F32 => GgmlType::F32,
            Quant::F16 => GgmlType::F16,
            Quant::Bf16 => GgmlType::Bf16,
            Quant::Q8_0 => GgmlType::Q8_0,
            Quant::Q4_0 => GgmlType::Q4_0,
            Quant::Q4KM => GgmlType::Q4K,
            Quant::Q5KM => GgmlType::Q5K,
            Quant::Q6K => GgmlType::Q6K,
        }
    }

    fn is_quantized(self) -> bool {
        !matches!(self, Quant::F32 | Quant::F16 | Quant::Bf16)
    }
}

/// What a tensor is, as far as the mix rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The token embedding; `tied` when it is also the output projection.
    TokenEmbd {
        tied: bool,
    },
    Output,
    /// `attn_v`, or a fused `attn_qkv`.
    AttnV,
    FfnDown,
    Other,
}

/// llama.cpp's `use_more_bits(i_layer, n_layers)`: the first and last eighth of the layers and
/// every third one between.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The ggml type of a 2-D weight of rows of `cols` elements, and why it is not the type the
/// quantisation asked for when it is not (a fallback). 1-D tensors and norms are the caller's:
/// they stay F32.
pub fn tensor_type(
    quant: Quant,
    role: Role,
    layer: usize,
    n_layers: usize,
    cols: u64,
) -> (GgmlType, Option<String>) {
    let base = quant.base_type();
    if !quant.is_quantized() {
        return (base, None);
    }
    let output_like = matches!(role, Role::Output | Role::TokenEmbd { tied: true });
    let wanted = if output_like {
        if !base.fits_row(cols) || quant == Quant::Q8_0 {
            GgmlType::Q8_0
        } else {
            GgmlType::Q6K
        }
    } else {
        match (role, quant) {
            (Role::AttnV | Role::FfnDown, Quant::Q4KM | Quant::Q5KM)
                if use_more_bits(layer, n_layers) =>
            {
                GgmlType::Q6K
            }
            _ => base,
        }
    };
    if wanted.fits_row(cols) {
        return (wanted, None);
    }
    let fallback = match wanted {
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    };
    let used = if fallback.fits_row(cols) {
        fallback
    } else {
        GgmlType::F16
    };
    (
        used,
        Some(format!(
            "rows of {cols} do not divide into {}-element {} blocks",
            wanted.block_elems(),
            wanted.name()
        )),
    )
}

fn candle_type(t: GgmlType) -> Option<GgmlDType> {
    Some(match t {
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q4K => GgmlDType::Q4K,
        GgmlType::Q5K => GgmlDType::Q5K,
        GgmlType::Q6K => GgmlDType::Q6K,
        GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 => return None,
    })
}

/// Elements each parallel quantisation task takes (whole rows, at least this many elements).
const CHUNK_ELEMS: usize = 1 << 16;

/// `data` (rows of `cols` f32 elements) in ggml type `ty`, as the bytes a GGUF file stores.
///
/// Every block type is ggml's reference quantiser (`quantize_row_*_ref`, what
/// `llama_model_quantize` runs without an importance matrix). The 32-element types are
/// byte-identical to llama.cpp's own quantiser (the oracle script checks): Q8_0 written here
/// (candle's port rounds each element through libm's `roundf`, which made it most of a q8_0
/// export's time), Q4_0/Q5_0/... by candle's port. The K-types are candle's port of an earlier
/// ggml scale search: not bit-identical, with 5–9 % more squared error than llama.cpp's current
/// one (measured by the oracle on a 256-wide model), at a tenth of the time of candle's
/// importance-weighted search. Rows are split into chunks quantised in parallel.
pub fn encode(data: &[f32], cols: usize, ty: GgmlType) -> Result<Vec<u8>, ExportError> {
    match ty {
        GgmlType::F32 => return Ok(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        GgmlType::F16 => {
            return Ok(data
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect())
        }
        GgmlType::Bf16 => {
            return Ok(data
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect())
        }
        _ => {}
    }
    let dt = candle_type(ty).expect("a block type");
    if cols == 0 || !data.len().is_multiple_of(cols) || !ty.fits_row(cols as u64) {
        return Err(ExportError::Invalid(format!(
            "cannot store rows of {cols} elements as {}",
            ty.name()
        )));
    }
    let row_bytes = ty.bytes_for(cols as u64) as usize;
    let rows_per_chunk = CHUNK_ELEMS.div_ceil(cols).max(1);
    let mut out = vec![0u8; data.len() / cols * row_bytes];
    out.par_chunks_mut(rows_per_chunk * row_bytes)
        .zip(data.par_chunks(rows_per_chunk * cols))
        .try_for_each(|(out, x)| -> Result<(), ExportError> {
            if ty == GgmlType::Q8_0 {
                q8_0(x, out);
            } else {
                let t = Tensor::from_slice(x, (x.len() / cols, cols), &Device::Cpu)?;
                out.copy_from_slice(&QTensor::quantize(&t, dt)?.data()?);
            }
            Ok(())
        })?;
    Ok(out)
}

/// ggml's `quantize_row_q8_0_ref`: each block of 32 as an f16 scale `d = amax / 127` and 32
/// bytes `roundf(x / d)`.
fn q8_0(x: &[f32], out: &mut [u8]) {
    // In three passes, each of which vectorises: every block's max |x| (over eight independent
    // lanes, reduced at the end, as a running float maximum cannot be), then the scales and
    // their inverses for all blocks at once, then the rounded bytes.
    let amax: Vec<f32> = x
        .chunks_exact(32)
        .map(|xs| {
            let mut lanes = [0f32; 8];
            for c in xs.chunks_exact(8) {
                for (m, v) in lanes.iter_mut().zip(c) {
                    let v = v.abs();
                    *m = if v > *m { v } else { *m };
                }
            }
            lanes.iter().fold(0f32, |m, &v| if v > m { v } else { m })
        })
        .collect();
    let d: Vec<f32> = amax.iter().map(|a| a / 127.0).collect();
    let id: Vec<f32> = d
        .iter()
        .map(|&d| if d != 0.0 { 1.0 / d } else { 0.0 })
        .collect();
    let mut d16 = vec![half::f16::ZERO; d.len()];
    d16.convert_from_f32_slice(&d);
    for (((xs, y), d), id) in x
        .chunks_exact(32)
        .zip(out.chunks_exact_mut(34))
        .zip(d16)
        .zip(id)
    {
        y[..2].copy_from_slice(&d.to_le_bytes());
        for (q, v) in y[2..].iter_mut().zip(xs) {
            *q = round_half_away(v * id) as i8 as u8;
        }
    }
}

/// `roundf(x) as i8` (halves away from zero) for |x| < 2²², in float and integer operations
/// that vectorise (an `as` cast from float saturates, one element at a time): adding 1.5·2²³
/// leaves round-half-even(x) in the low mantissa bits (ggml's `nearest_int`), and a tie that
/// went towards zero is moved one step away.
fn round_half_away(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    let y = x + MAGIC;
    let rest = x - (y - MAGIC);
    let nearest_even = (y.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    nearest_even + i32::from(rest == 0.5 && x > 0.0) - i32::from(rest == -0.5 && x < 0.0)
}

/// The f32 values of `bytes` of ggml type `ty` with rows of `cols` (what a reader sees).
pub fn decode(
    bytes: &[u8],
    elems: usize,
    cols: usize,
    ty: GgmlType,
) -> Result<Vec<f32>, ExportError> {
    match ty {
        GgmlType::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        GgmlType::F16 => Ok(bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        GgmlType::Bf16 => Ok(bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        _ => {
            let dt = candle_type(ty).expect("a block type");
            let storage = candle_core::quantized::QStorage::from_data(
                std::borrow::Cow::Borrowed(bytes),
                &Device::Cpu,
                dt,
            )?;
            let q = QTensor::new(storage, (elems / cols, cols))?;
            Ok(q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_on_llama_cpps_layers() {
        // 24 layers: 0–2, 21–23 and every third from 3 on (5, 8, …).
        let picked: Vec<usize> = (0..24).filter(|&i| use_more_bits(i, 24)).collect();
        assert_eq!(picked, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    }

    #[test]
    fn mix_rules_and_fallbacks() {
        let t = |q, role, layer, cols| tensor_type(q, role, layer, 24, cols);
        assert_eq!(t(Quant::Q4KM, Role::Other, 3, 4096), (GgmlType::Q4K, None));
        assert_eq!(t(Quant::Q4KM, Role::AttnV, 0, 4096).0, GgmlType::Q6K);
        assert_eq!(t(Quant::Q4KM, Role::AttnV, 3, 4096).0, GgmlType::Q4K);
        assert_eq!(t(Quant::Q5KM, Role::FfnDown, 23, 4096).0, GgmlType::Q6K);
        assert_eq!(t(Quant::Q4KM, Role::Output, 0, 4096).0, GgmlType::Q6K);
        assert_eq!(
            t(Quant::Q4KM, Role::TokenEmbd { tied: true }, 0, 4096).0,
            GgmlType::Q6K
        );
        assert_eq!(
            t(Quant::Q4KM, Role::TokenEmbd { tied: false }, 0, 4096).0,
            GgmlType::Q4K
        );
        assert_eq!(t(Quant::Q8_0, Role::Output, 0, 4096).0, GgmlType::Q8_0);
        // Qwen2.5-0.5B: hidden 896 is not a multiple of 256.
        let (ty, why) = t(Quant::Q4KM, Role::Other, 3, 896);
        assert_eq!(ty, GgmlType::Q5_0);
        assert!(why.unwrap().contains("896"));
        assert_eq!(t(Quant::Q4KM, Role::Output, 0, 896).0, GgmlType::Q8_0);
        assert_eq!(t(Quant::Q6K, Role::Other, 0, 896).0, GgmlType::Q8_0);
        assert_eq!(t(Quant::Q5KM, Role::Other, 3, 896).0, GgmlType::Q5_1);
        assert_eq!(t(Quant::Q8_0, Role::Other, 0, 40).0, GgmlType::F16);
        assert_eq!(t(Quant::F16, Role::Output, 0, 40), (GgmlType::F16, None));
    }

    #[test]
    fn every_type_round_trips_within_its_error() {
        let cols = 512;
        let data = weights_like(cols);
        let rms = (data.iter().map(|x| x * x).sum::<f32>() / data.len() as f32).sqrt();
        // Relative RMS error bounds per type (well above what each achieves, far below noise).
        for (ty, bound) in [
            (GgmlType::F32, 0.0),
            (GgmlType::F16, 1e-3),
            (GgmlType::Bf16, 5e-3),
            (GgmlType::Q8_0, 1e-2),
            (GgmlType::Q6K, 3e-2),
            (GgmlType::Q5_1, 5e-2),
            (GgmlType::Q5_0, 7e-2),
            (GgmlType::Q5K, 5e-2),
            (GgmlType::Q4K, 0.1),
            (GgmlType::Q4_0, 0.15),
        ] {
            let bytes = encode(&data, cols, ty).unwrap();
            assert_eq!(
                bytes.len() as u64,
                ty.bytes_for(data.len() as u64),
                "{ty:?}"
            );
            let back = decode(&bytes, data.len(), cols, ty).unwrap();
            let err = (data
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                / data.len() as f32)
                .sqrt();
            println!("{ty:?}: relative RMS error {:.5}", err / rms);
            assert!(err <= bound * rms, "{ty:?}: relative error {}", err / rms);
        }
    }

    /// Gaussian-like weights (sums of sines) with rare outliers, as trained weights have.
    fn weights_like(cols: usize) -> Vec<f32> {
        (0..cols * 64)
            .map(|i| {
                let x = i as f32;
                0.02 * ((x * 0.37).sin() + (x * 1.713).sin() * 0.7 + (x * 0.0917).cos() * 0.5)
                    + if i % 211 == 0 { 0.15 } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn names_parse_back() {
        for q in Quant::ALL {
            assert_eq!(q.to_string().parse::<Quant>().unwrap(), q);
        }
        for d in [crate::Dtype::F32, crate::Dtype::Bf16, crate::Dtype::F16] {
            assert_eq!(d.to_string().parse::<crate::Dtype>().unwrap(), d);
        }
    }

    #[test]
    fn q8_0_is_ggmls_reference_quantiser() {
        // Against candle's port of quantize_row_q8_0_ref (roundf included), with a zero block
        // and a block of evenly spaced values of both signs.
        let mut data = weights_like(256);
        data[..32].fill(0.0);
        for (i, v) in data[32..64].iter_mut().enumerate() {
            *v = (i as f32 - 16.0) * 0.25;
        }
        let t = Tensor::from_slice(&data, (data.len() / 256, 256), &Device::Cpu).unwrap();
        let theirs = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        assert_eq!(
            encode(&data, 256, GgmlType::Q8_0).unwrap(),
            theirs.data().unwrap().as_ref()
        );
        // roundf on every half and its neighbours in range, and on a sweep between them.
        for k in -260..=260 {
            let half = k as f32 * 0.5;
            for x in [half, half.next_up(), half.next_down()] {
                assert_eq!(round_half_away(x), x.round() as i32, "{x}");
            }
        }
        for i in 0..200_000 {
            let x = (i as f32 - 100_000.0) * 0.001_3;
            assert_eq!(round_half_away(x), x.round() as i32, "{x}");
        }
    }
}
