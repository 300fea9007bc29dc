//! The CPU fast path of a TopK / BatchTopK step: the autograd path's losses and gradients,
//! computed by hand on the latents each row selects (k of d_sae), so that only the encoder's
//! matmul is dense. The decoder-norm rescaling cancels in value and in gradient (`relu(p·n)/n`
//! is `relu(p)` for n > 0), so ‖W_dec row‖ contributes no gradient, as in exact arithmetic.

use candle_core::{CpuStorage, Device, Layout, Storage, Tensor};

use super::losses::top_k_of;
use super::TrainConfig;
use crate::error::{Error, Result};

/// What a fast step computed.
pub(super) struct FastStep {
    /// Gradients of `W_enc` (transposed), `b_enc`, `W_dec`, `b_dec`.
    pub grads: Vec<Tensor>,
    /// MSE loss.
    pub mse: f64,
    /// Aux-k loss.
    pub aux: f64,
    /// Rows in which each latent fired.
    pub fired: Vec<f32>,
    /// Smallest positive activation (BatchTopK's threshold update), ∞ if none.
    pub min_pos: f32,
    /// Σ‖out − target‖².
    pub resid_sq: f64,
}

/// A read-only view of a contiguous f32 CPU tensor.
pub(super) fn cpu_slice<'a>(s: &'a Storage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(&v[a..b]),
        _ => Err(Error::Invalid(
            "the fast path needs contiguous f32 tensors on the CPU".into(),
        )),
    }
}

/// Σ a·b (AVX2 + FMA where the CPU has them).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { dot_avx2(a, b) };
    }
    dot_plain(a, b)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_plain(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    axpy_plain(y, a, x)
}

/// Σ a·b with eight partial sums, so that the compiler can vectorise it.
#[inline(always)]
fn dot_plain(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ v² in f64, vectorised in f32 blocks.
pub(super) fn sum_sq(v: &[f32]) -> f64 {
    v.chunks(1024).map(|c| dot(c, c) as f64).sum()
}

/// y += a·x (AVX2 + FMA where the CPU has them).
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { axpy_avx2(y, a, x) };
    }
    axpy_plain(y, a, x)
}

#[inline(always)]
fn axpy_plain(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// One TopK / BatchTopK step's losses and gradients on the CPU: `x` [b, d_in] is encoded and
/// decoded towards `target` [b, d_out] (`x` itself for an SAE, the output hook's activation for
/// a transcoder).
#[allow(clippy::too_many_arguments)]
pub(super) fn topk_step(
    cfg: &TrainConfig,
    x: &Tensor,
    target: &Tensor,
    w_enc_t: &Tensor,
    b_enc: &Tensor,
    w_dec: &Tensor,
    b_dec: &Tensor,
    dead: &[bool],
) -> Result<FastStep> {
    let (b, d_in) = x.dims2()?;
    let (s, d) = (cfg.d_sae, cfg.d_out);
    let xv = x.flatten_all()?.to_vec1::<f32>()?;
    if target.dims() != [b, cfg.d_out] {
        return Err(Error::Shape(format!(
            "the target must be [{b}, {}], got {:?}",
            cfg.d_out,
            target.dims()
        )));
    }
    let yv = target.flatten_all()?.to_vec1::<f32>()?;
    let bdec = b_dec.to_vec1::<f32>()?;
    let mut xin = xv;
    if cfg.apply_b_dec_to_input {
        for row in xin.chunks_exact_mut(d_in) {
            row.iter_mut().zip(&bdec).for_each(|(v, c)| *v -= c);
        }
    }
    let pre = Tensor::from_slice(&xin, (b, d_in), &Device::Cpu)?
        .matmul(&w_enc_t.t()?)?
        .broadcast_add(b_enc)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (wd_guard, wd_layout) = w_dec.storage_and_layout();
    let wd = cpu_slice(&wd_guard, wd_layout)?;
    let (we_guard, we_layout) = w_enc_t.storage_and_layout();
    let we = cpu_slice(&we_guard, we_layout)?;

    let rescale = cfg.rescale_acts_by_decoder_norm;
    let norms: Vec<f32> = wd
        .chunks_exact(d)
        .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    let inv: Vec<f32> = norms.iter().map(|n| 1.0 / n).collect();
    let h: Vec<f32> = if rescale {
        pre.chunks_exact(s)
            .flat_map(|r| r.iter().zip(&norms).map(|(p, n)| p * n))
            .collect()
    } else {
        pre
    };

    // The selection, per row.
    let k = cfg.k.unwrap_or(1);
    let mut scratch = Vec::new();
    let sel: Vec<Vec<usize>> = if cfg.arch.is_batch_topk() {
        let relu: Vec<f32> = h.iter().map(|v| v.max(0.0)).collect();
        let n = ((k as f64 * b as f64) as usize).min(b * s);
        let all: Vec<usize> = (0..b * s).collect();
        let mut rows = vec![Vec::new(); b];
        for flat in top_k_of(&relu, &all, n, &mut scratch) {
            rows[flat / s].push(flat % s);
        }
        rows
    } else {
        let all: Vec<usize> = (0..s).collect();
        h.chunks_exact(s)
            .map(|r| top_k_of(r, &all, k, &mut scratch))
            .collect()
    };

    // Forward: decoded activations, reconstruction, error.
    let mut fired = vec![0f32; s];
    let mut min_pos = f32::INFINITY;
    let mut dacts: Vec<Vec<(usize, f32)>> = Vec::with_capacity(b);
    let mut out = vec![0f32; b * d];
    for (r, js) in sel.iter().enumerate() {
        let o = &mut out[r * d..(r + 1) * d];
        o.copy_from_slice(&bdec);
        let mut row = Vec::with_capacity(js.len());
        for &j in js {
            let a = h[r * s + j].max(0.0);
            if a > 0.0 {
                fired[j] += 1.0;
                min_pos = min_pos.min(a);
                let da = if rescale { a * inv[j] } else { a };
                axpy(o, da, &wd[j * d..(j + 1) * d]);
                row.push((j, da));
            }
        }
        dacts.push(row);
    }
    // g_out = 2(out − y)/b; e = out − y is also minus the aux-k residual.
    let mut e = out;
    e.iter_mut().zip(&yv).for_each(|(o, y)| *o -= y);
    let resid_sq = sum_sq(&e);
    let mse = resid_sq / b as f64;
    let g_out: Vec<f32> = e.iter().map(|v| 2.0 * v / b as f32).collect();

    let mut gwd = vec![0f32; s * d];
    let mut gpre: Vec<Vec<(usize, f32)>> = vec![Vec::new(); b];
    for (r, row) in dacts.iter().enumerate() {
        let g = &g_out[r * d..(r + 1) * d];
        for &(j, da) in row {
            axpy(&mut gwd[j * d..(j + 1) * d], da, g);
            let gd = dot(g, &wd[j * d..(j + 1) * d]);
            let gp = if rescale { gd * inv[j] * norms[j] } else { gd };
            gpre[r].push((j, gp));
        }
    }

    // Aux-k: the top dead latents (pre-activations, not ReLU'd) reconstruct the residual.
    let n_dead = dead.iter().filter(|&&v| v).count();
    let mut aux = 0f64;
    if n_dead > 0 {
        let half = (d_in / 2).max(1);
        let scale = (n_dead as f64 / half as f64).min(1.0);
        let k_aux = half.min(n_dead);
        let c = cfg.aux_k_coefficient * scale;
        let dead_idx: Vec<usize> = (0..s).filter(|&j| dead[j]).collect();
        let mut recons = vec![0f32; d];
        for r in 0..b {
            let hr = &h[r * s..(r + 1) * s];
            let js = top_k_of(hr, &dead_idx, k_aux, &mut scratch);
            recons.iter_mut().for_each(|v| *v = 0.0);
            let acts: Vec<(usize, f32)> = js
                .iter()
                .map(|&j| (j, if rescale { hr[j] * inv[j] } else { hr[j] }))
                .collect();
            for &(j, a) in &acts {
                axpy(&mut recons, a, &wd[j * d..(j + 1) * d]);
            }
            // recons − residual = recons + e.
            recons
                .iter_mut()
                .zip(&e[r * d..(r + 1) * d])
                .for_each(|(v, e)| *v += e);
            aux += sum_sq(&recons);
            let gscale = (2.0 * c / b as f64) as f32;
            recons.iter_mut().for_each(|v| *v *= gscale);
            for &(j, a) in &acts {
                axpy(&mut gwd[j * d..(j + 1) * d], a, &recons);
                let gd = dot(&recons, &wd[j * d..(j + 1) * d]);
                let gp = if rescale { gd * inv[j] * norms[j] } else { gd };
                gpre[r].push((j, gp));
            }
        }
        aux *= c / b as f64;
    }

    // Encoder gradients from the sparse g_pre, in W_enc's transposed layout.
    let mut gwe_t = vec![0f32; s * d_in];
    let mut gbe = vec![0f32; s];
    for (r, row) in gpre.iter().enumerate() {
        let xr = &xin[r * d_in..(r + 1) * d_in];
        for &(j, g) in row {
            axpy(&mut gwe_t[j * d_in..(j + 1) * d_in], g, xr);
            gbe[j] += g;
        }
    }
    let mut gbd = vec![0f32; d];
    for g in g_out.chunks_exact(d) {
        gbd.iter_mut().zip(g).for_each(|(a, g)| *a += g);
    }
    if cfg.apply_b_dec_to_input {
        // ∂/∂b_dec of (x − b_dec)·W_enc is −W_enc·Σ_b g_pre.
        for (j, &g) in gbe.iter().enumerate() {
            if g != 0.0 {
                axpy(&mut gbd, -g, &we[j * d_in..(j + 1) * d_in]);
            }
        }
    }
    drop(wd_guard);
    drop(we_guard);
    let dev = Device::Cpu;
    Ok(FastStep {
        grads: vec![
            Tensor::from_vec(gwe_t, (s, d_in), &dev)?,
            Tensor::from_vec(gbe, s, &dev)?,
            Tensor::from_vec(gwd, (s, d), &dev)?,
            Tensor::from_vec(gbd, d, &dev)?,
        ],
        mse,
        aux,
        fired,
        min_pos,
        resid_sq,
    })
}
