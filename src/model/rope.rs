//! Rotary position embeddings of the decoders: 1-D RoPE (LLaMA, Mistral, Qwen2), Qwen2.5-VL's
//! M-RoPE and Qwen3-VL's interleaved M-RoPE.
//!
//! Every token has a 3-D position (t, row, col); text tokens have the same value on all three
//! axes, so 1-D RoPE is the case where every frequency reads axis 0. M-RoPE gives each of the
//! `head_dim / 2` frequencies one axis: Qwen2.5-VL in contiguous sections (`mrope_section`
//! [16, 24, 24]: the first 16 frequencies read t, the next 24 the row, the last 24 the column),
//! Qwen3-VL interleaved (frequency j reads the row when j % 3 == 1 and j < 3 x section[1], the
//! column when j % 3 == 2 and j < 3 x section[2], else t). The rotation itself is
//! transformers' rotate-half with `cos = cat(freqs, freqs)`.

use candle_core::{Device, Result, Tensor};

/// A token's rotary position: (t, row, col).
pub type Position = [u32; 3];

/// How a decoder's frequencies read the 3-D positions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RopeAxes {
    /// Every frequency reads the sequence position.
    Sequential,
    /// Qwen2.5-VL: contiguous sections of frequencies for t, row, col.
    Mrope([usize; 3]),
    /// Qwen3-VL: row and column frequencies interleaved with t.
    InterleavedMrope([usize; 3]),
}

impl RopeAxes {
    /// The axis (0 t, 1 row, 2 col) each of `half` frequencies reads; `None` when the sections
    /// do not fit the head (a config error the caller reports).
    pub fn axes(&self, half: usize) -> Option<Vec<u8>> {
        match self {
            RopeAxes::Sequential => Some(vec![0; half]),
            RopeAxes::Mrope(section) => {
                if section.iter().sum::<usize>() != half {
                    return None;
                }
                let mut axes = Vec::with_capacity(half);
                for (axis, &len) in section.iter().enumerate() {
                    axes.extend(std::iter::repeat_n(axis as u8, len));
                }
                Some(axes)
            }
            RopeAxes::InterleavedMrope(section) => {
                if section.iter().sum::<usize>() != half
                    || 3 * section[1] > half + 1
                    || 3 * section[2] > half + 2
                {
                    return None;
                }
                Some(
                    (0..half)
                        .map(|j| match j % 3 {
                            1 if j < 3 * section[1] => 1,
                            2 if j < 3 * section[2] => 2,
                            _ => 0,
                        })
                        .collect(),
                )
            }
        }
    }
}

/// Frequencies and their axes, built once per decoder.
#[derive(Clone, Debug)]
pub struct Rotary {
    inv_freq: Vec<f32>,
    axes: Vec<u8>,
}

impl Rotary {
    /// HF's default inverse frequencies `1 / theta^(2i / d)`, computed in f32 as torch does.
    pub fn new(head_dim: usize, theta: f64, axes: &RopeAxes) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let Some(axes) = axes.axes(half) else {
            candle_core::bail!("rotary sections {axes:?} do not fit a head of {head_dim} dims")
        };
        Ok(Rotary { inv_freq, axes })
    }

    /// Linear RoPE scaling (transformers' `rope_type: linear`): the frequencies divided by
    /// `factor`, as positions / factor.
    pub fn scaled(mut self, factor: f64) -> Self {
        if factor != 1.0 {
            for freq in &mut self.inv_freq {
                *freq /= factor as f32;
            }
        }
        self
    }

    /// cos and sin (len, head_dim / 2) for the sequential positions `start..start + len`.
    pub fn sequential(
        &self,
        start: usize,
        len: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let positions: Vec<Position> = (start..start + len).map(|p| [p as u32; 3]).collect();
        self.at(&positions, device)
    }

    /// cos and sin (len, head_dim / 2) for explicit 3-D positions.
    pub fn at(&self, positions: &[Position], device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for position in positions {
            for (&freq, &axis) in self.inv_freq.iter().zip(&self.axes) {
                // torch: position.float() * inv_freq, then cos/sin, all in f32.
                let angle = position[axis as usize] as f32 * freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (positions.len(), half), device)?,
            Tensor::from_vec(sin, (positions.len(), half), device)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrope_sections_are_contiguous() {
        let axes = RopeAxes::Mrope([16, 24, 24]).axes(64).unwrap();
        assert_eq!(&axes[..16], &[0; 16]);
        assert_eq!(&axes[16..40], &[1; 24]);
        assert_eq!(&axes[40..], &[2; 24]);
        assert!(RopeAxes::Mrope([16, 24, 20]).axes(64).is_none());
    }

    #[test]
    fn interleaved_mrope_follows_transformers() {
        // apply_interleaved_mrope with mrope_section [24, 20, 20]: indices 1, 4, .., 58 take
        // the row, 2, 5, .., 59 the column, the rest t.
        let axes = RopeAxes::InterleavedMrope([24, 20, 20]).axes(64).unwrap();
        for (j, &axis) in axes.iter().enumerate() {
            let expected = if j % 3 == 1 && j < 60 {
                1
            } else if j % 3 == 2 && j < 60 {
                2
            } else {
                0
            };
            assert_eq!(axis, expected, "frequency {j}");
        }
        assert_eq!(axes.iter().filter(|&&a| a == 0).count(), 24);
    }

    #[test]
    fn sequential_is_one_axis() {
        let rotary = Rotary::new(8, 10000.0, &RopeAxes::Sequential).unwrap();
        let (cos, _) = rotary.sequential(3, 2, &Device::Cpu).unwrap();
        let cos = cos.to_vec2::<f32>().unwrap();
        // frequency 1 = 1 / 10000^(2/8) = 0.1
        assert!((cos[0][1] - (3.0f32 * 0.1).cos()).abs() < 1e-6);
        assert!((cos[1][0] - 4.0f32.cos()).abs() < 1e-6);
    }
}
