//! The key/value cache of generation: per layer, the keys and values of every position seen so
//! far, so each new token attends to them without recomputing the prefix.

use candle_core::Tensor;

/// Keys and values of past positions, per layer, each [B, S, KV heads, head_dim].
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
    pub(crate) len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
