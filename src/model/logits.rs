//! Logits that remember how long each row of their batch really is, so that nothing that reads
//! "the last position" of a right-padded batch ever reads padding.

use std::ops::Deref;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::transformer::select_positions;

/// Logits [b, s, d_vocab] (f32) with the real length of each row. Derefs to the tensor, so
/// every `Tensor` method and every `&Tensor` argument takes it as it is; the metrics
/// ([`crate::metrics::logit_diff`], …) and [`crate::HookedTransformer::top_next_tokens`] read
/// each row at its own last real token.
#[derive(Debug, Clone)]
pub struct Logits {
    tensor: Tensor,
    lengths: Vec<usize>,
}

impl Logits {
    /// Wraps logits [b, s, v] with each row's real length (≤ s).
    pub fn new(tensor: Tensor, lengths: Vec<usize>) -> Result<Self> {
        let (b, s, _) = tensor.dims3()?;
        if lengths.len() != b || lengths.iter().any(|&n| n == 0 || n > s) {
            return Err(Error::Shape(format!(
                "lengths {lengths:?} do not fit logits of shape {:?}",
                tensor.dims()
            )));
        }
        Ok(Logits { tensor, lengths })
    }

    /// The real length of each row (the batch's padded length where it is not padded).
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// Whether some row is padded.
    pub fn is_padded(&self) -> bool {
        let s = self.tensor.dim(1).unwrap_or(0);
        self.lengths.iter().any(|&n| n < s)
    }

    /// Each row's logits at its own last real token, [b, d_vocab].
    pub fn last(&self) -> Result<Tensor> {
        self.at(None)
    }

    /// Each row's logits at `pos` (`None`: its own last real token), [b, d_vocab]; a position
    /// that is padding in some row is refused, naming the row.
    pub fn at(&self, pos: Option<usize>) -> Result<Tensor> {
        at_positions(&self.tensor, Some(&self.lengths), pos)
    }

    /// The bare tensor.
    pub fn into_tensor(self) -> Tensor {
        self.tensor
    }
}

impl Deref for Logits {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.tensor
    }
}

impl From<Logits> for Tensor {
    fn from(l: Logits) -> Tensor {
        l.tensor
    }
}

/// What the metrics accept: [`Logits`] (which know their rows' lengths) or a bare tensor
/// [b, s, v] (taken as unpadded).
pub trait LogitsView {
    /// The logits tensor [b, s, v].
    fn logits_tensor(&self) -> &Tensor;
    /// Each row's real length, where known.
    fn row_lengths(&self) -> Option<&[usize]>;
}

impl LogitsView for Logits {
    fn logits_tensor(&self) -> &Tensor {
        &self.tensor
    }
    fn row_lengths(&self) -> Option<&[usize]> {
        Some(&self.lengths)
    }
}

impl LogitsView for Tensor {
    fn logits_tensor(&self) -> &Tensor {
        self
    }
    fn row_lengths(&self) -> Option<&[usize]> {
        None
    }
}

/// Each row's position: `pos`, or (for `None`) its last real token; a position that is
/// padding in some row is an error naming the row.
pub fn row_positions(lengths: &[usize], s: usize, pos: Option<usize>) -> Result<Vec<usize>> {
    match pos {
        None => Ok(lengths.iter().map(|&n| n.clamp(1, s) - 1).collect()),
        Some(p) if p >= s => Err(Error::Invalid(format!(
            "position {p} is out of range for {s} positions"
        ))),
        Some(p) => match lengths.iter().position(|&n| p >= n) {
            Some(row) => Err(Error::Invalid(format!(
                "position {p} is padding in row {row} of the batch (its prompt has {} tokens); use None for each row's last token, or prompts of one length",
                lengths[row]
            ))),
            None => Ok(vec![p; lengths.len()]),
        },
    }
}

/// x [b, s, d] at each row's position (see [`row_positions`]), as [b, d].
pub fn at_positions(x: &Tensor, lengths: Option<&[usize]>, pos: Option<usize>) -> Result<Tensor> {
    let (b, s, _) = x.dims3()?;
    let full = vec![s; b];
    let lengths = lengths.unwrap_or(&full);
    let p = row_positions(lengths, s, pos)?;
    Ok(select_positions(x, &p)?.squeeze(1)?)
}
