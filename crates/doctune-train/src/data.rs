//! What one step reads: the seeded example order of each epoch, and micro-batches of dataset
//! records padded into tensors with their loss masks.

use crate::TrainError;
use candle_core::{Device, Tensor};
use doctune_dataset::Record;
use rand::SeedableRng;

/// The order of the training examples in `epoch`: a seeded shuffle (the same on every run).
/// Micro-batches take examples from the concatenation of the epochs' orders.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
    order
}

/// A padded micro-batch.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Token ids [B, L], right-padded with 0.
    pub ids: Tensor,
    /// 1 where a position is a training target, [B, L].
    pub mask: Tensor,
    /// Positions that are predicted and trained on (position 0 predicts nothing).
    pub targets: f64,
}

impl Batch {
    pub fn new(records: &[Record], device: &Device) -> Result<Self, TrainError> {
        let len = records.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let mut ids = vec![0u32; records.len() * len];
        let mut mask = vec![0f32; records.len() * len];
        let mut targets = 0f64;
        for (b, r) in records.iter().enumerate() {
            ids[b * len..b * len + r.ids.len()].copy_from_slice(&r.ids);
            for (t, &m) in r.mask.iter().enumerate() {
                mask[b * len + t] = f32::from(m);
                // Position 0 predicts nothing.
                if t > 0 && m == 1 {
                    targets += 1.0;
                }
            }
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (records.len(), len), device)?,
            mask: Tensor::from_vec(mask, (records.len(), len), device)?,
            targets,
        })
    }

    /// Tokens in the batch, padding included (what tokens/s counts).
    pub fn tokens(&self) -> u64 {
        self.ids.elem_count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(50, 7, 0);
        assert_eq!(a, epoch_order(50, 7, 0));
        assert_ne!(a, epoch_order(50, 7, 1));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn batches_pad_right_and_count_targets() {
        let r = |ids: Vec<u32>, mask: Vec<u8>| Record {
            ids,
            mask,
            text: String::new(),
            spans: vec![],
            source: None,
        };
        let b = Batch::new(
            &[r(vec![5, 6, 7], vec![0, 1, 1]), r(vec![8], vec![1])],
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            b.ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![8, 0, 0]]
        );
        assert_eq!(
            b.mask.to_vec2::<f32>().unwrap(),
            vec![vec![0.0, 1.0, 1.0], vec![1.0, 0.0, 0.0]]
        );
        // Position 0 predicts nothing: 2 targets, not 3.
        assert_eq!(b.targets, 2.0);
        assert_eq!(b.tokens(), 6);
    }
}
