//! The SAE / transcoder trainer (issue 24, item 4, "Method, as SAELens does it"): every
//! architecture learns synthetic data with known sparse structure, the saved SAE computes what
//! the trainer computes, the schedules equal SAELens's numbers, the aux-k loss and the JumpReLU
//! estimator behave as SAELens's, and a checkpoint resumes exactly.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use mechinterp::sae::train::trainer::{
    coefficient_at, jumprelu, lr_at, step_fn, LrScheduler, SparsityMode, TrainArch, TrainConfig,
    Trainer,
};

/// Deterministic test numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly normal: the sum of 4 uniforms, centred.
    fn normalish(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f32) as usize).min(n - 1)
    }
}

/// `n` random unit vectors in `d` dimensions, [n, d].
fn directions(rng: &mut Rng, n: usize, d: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..d).map(|_| rng.normalish()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

/// Synthetic data with known sparse structure: each row mixes `active` of the 64 true
/// features with magnitudes in [0.5, 1.5]; `x` is the mix of `dirs_in` plus noise of std
/// ~0.01, `y` the same codes through `dirs_out` (a transcoder's target).
struct Synthetic {
    rng: Rng,
    dirs_in: Vec<Vec<f32>>,
    dirs_out: Vec<Vec<f32>>,
    active: usize,
}

const D_IN: usize = 32;
const D_OUT: usize = 24;
const N_FEATURES: usize = 64;

impl Synthetic {
    fn new(seed: u64) -> Synthetic {
        let mut rng = Rng(seed);
        let dirs_in = directions(&mut rng, N_FEATURES, D_IN);
        let dirs_out = directions(&mut rng, N_FEATURES, D_OUT);
        Synthetic {
            rng,
            dirs_in,
            dirs_out,
            active: 3,
        }
    }

    /// A batch `(x [b, 32], y [b, 24])`.
    fn batch(&mut self, b: usize) -> (Tensor, Tensor) {
        let mut x = vec![0f32; b * D_IN];
        let mut y = vec![0f32; b * D_OUT];
        for r in 0..b {
            for _ in 0..self.active {
                let f = self.rng.below(N_FEATURES);
                let a = 0.5 + self.rng.uniform();
                for (j, v) in self.dirs_in[f].iter().enumerate() {
                    x[r * D_IN + j] += a * v;
                }
                for (j, v) in self.dirs_out[f].iter().enumerate() {
                    y[r * D_OUT + j] += a * v;
                }
            }
            for j in 0..D_IN {
                x[r * D_IN + j] += 0.01 * self.rng.normalish() * 1.7;
            }
        }
        (
            Tensor::from_vec(x, (b, D_IN), &Device::Cpu).unwrap(),
            Tensor::from_vec(y, (b, D_OUT), &Device::Cpu).unwrap(),
        )
    }
}

/// Explained variance of `pred` for `target`, as SAELens logs it.
fn explained_variance(pred: &Tensor, target: &Tensor) -> f64 {
    let resid = (pred - target).unwrap().sqr().unwrap().sum_all().unwrap();
    let centred = target
        .broadcast_sub(&target.mean_keepdim(0).unwrap())
        .unwrap();
    let total = centred.sqr().unwrap().sum_all().unwrap();
    1.0 - resid.to_scalar::<f32>().unwrap() as f64 / total.to_scalar::<f32>().unwrap() as f64
}

/// Largest |a − b| relative to b's largest entry.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let m = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap().max(1e-12)
}

/// A small config for the synthetic data, tuned per architecture.
fn config(arch: TrainArch, steps: usize) -> TrainConfig {
    let d_out = if arch.is_transcoder() { D_OUT } else { D_IN };
    let mut c = TrainConfig::new(arch, D_IN, d_out, 128);
    c.total_steps = steps;
    c.lr = 5e-3;
    c.lr_warm_up_steps = 10;
    c.lr_decay_steps = steps / 5;
    c.dead_feature_window = 50;
    c.hook_name = "blocks.0.hook_resid_post".into();
    c.hook_name_out = if arch.is_transcoder() {
        "blocks.0.hook_mlp_out".into()
    } else {
        c.hook_name.clone()
    };
    match arch {
        TrainArch::TopK => c.k = Some(4),
        TrainArch::BatchTopK => c.k = Some(4),
        TrainArch::JumpRelu => {
            c.l0_coefficient = 0.05;
            c.jumprelu_init_threshold = 0.1;
        }
        _ => {
            c.l1_coefficient = 0.1;
            c.l1_warm_up_steps = 20;
        }
    }
    c
}

/// Trains `arch` for `steps` steps of 256 rows; returns the trainer and the last stats.
fn train(arch: TrainArch, steps: usize) -> (Trainer, Synthetic) {
    let mut data = Synthetic::new(7);
    let (init, _) = data.batch(256);
    let mut t = Trainer::new(config(arch, steps), &init, &Device::Cpu).unwrap();
    for _ in 0..steps {
        let (x, y) = data.batch(256);
        let target = if arch.is_transcoder() { Some(&y) } else { None };
        t.step(&x, target).unwrap();
    }
    (t, data)
}

#[test]
fn sae_trainer_every_arch_learns_sparse_structure_and_saves_what_it_trained() {
    for arch in TrainArch::ALL {
        let (t, mut data) = train(arch, 400);
        let (x, y) = data.batch(1024);
        let sae = t.sae().unwrap();
        let out = sae.forward(&x).unwrap();
        let target = if arch.is_transcoder() { &y } else { &x };
        let ev = explained_variance(&out, target);
        let l0 = sae
            .encode(&x)
            .unwrap()
            .gt(0f32)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum(1)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let dead = t.dead_mask().iter().filter(|&&d| d).count();
        println!(
            "{}: held-out EV {ev:.4}, L0 {l0:.2}, dead {dead}/128",
            arch.name()
        );
        assert!(ev >= 0.9, "{}: explained variance {ev}", arch.name());
        // Each row mixes 3 of 64 true features.
        assert!(l0 < 32.0, "{}: L0 {l0}", arch.name());
        if arch != TrainArch::BatchTopK {
            // BatchTopK trains with a batch-wide selection and is saved with a threshold.
            let trained = t.reconstruct(&x).unwrap();
            let d = rel_diff(&out, &trained);
            assert!(d < 1e-5, "{}: saved SAE differs by {d}", arch.name());
        }
        assert_eq!(sae.cfg().hook_name, "blocks.0.hook_resid_post");
        let sparsity = t.log_feature_sparsity().unwrap();
        assert_eq!(sparsity.dims(), &[128]);
    }
}

#[test]
fn sae_trainer_fast_path_matches_autograd() {
    // TopK and BatchTopK take a hand-written sparse path on the CPU; candle's autograd on the
    // same losses is the reference. A 2-step dead window brings the aux-k loss in.
    for arch in [TrainArch::TopK, TrainArch::BatchTopK] {
        let mut c = config(arch, 12);
        c.dead_feature_window = 2;
        let mut data = Synthetic::new(11);
        let (init, _) = data.batch(64);
        let mut fast = Trainer::new(c.clone(), &init, &Device::Cpu).unwrap();
        let mut slow = Trainer::new(c, &init, &Device::Cpu).unwrap();
        slow.set_autograd_only(true);
        let mut saw_aux = false;
        for i in 0..12 {
            let (x, _) = data.batch(64);
            let a = fast.step(&x, None).unwrap();
            let b = slow.step(&x, None).unwrap();
            let close = |p: f64, q: f64| (p - q).abs() <= 1e-4 * q.abs().max(1e-3);
            assert!(
                close(a.mse, b.mse)
                    && close(a.aux_loss, b.aux_loss)
                    && close(a.grad_norm, b.grad_norm)
                    && a.l0 == b.l0,
                "{} step {i}: {a:?} vs {b:?}",
                arch.name()
            );
            saw_aux |= b.aux_loss > 0.0;
        }
        assert!(saw_aux, "{}: no latent died", arch.name());
        let (x, _) = data.batch(64);
        let d = rel_diff(
            &fast.sae().unwrap().forward(&x).unwrap(),
            &slow.sae().unwrap().forward(&x).unwrap(),
        );
        assert!(
            d < 1e-3,
            "{}: the two paths' SAEs differ by {d}",
            arch.name()
        );
    }
}

#[test]
fn sae_trainer_lr_schedule_matches_saelens() {
    // Printed by SAELens 6.54.12's own scheduler, stepping it as SAETrainer does (the value
    // in force at each step):
    //   ~/.cache/tlvenv/bin/python -c 'import torch
    //   from sae_lens.training.optim import get_lr_scheduler
    //   p = torch.nn.Parameter(torch.zeros(1)); o = torch.optim.Adam([p], lr=1e-3)
    //   s = get_lr_scheduler(NAME, optimizer=o, training_steps=20, lr=1e-3,
    //       warm_up_steps=W, decay_steps=D, lr_end=1e-4, num_cycles=1)
    //   for i in range(20): print(o.param_groups[0]["lr"]); o.step(); s.step()'
    let constant_w4_d5 = [
        0.00025, 0.0005, 0.00075, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001,
        0.001, 0.001, 0.001, 0.001, 0.0008, 0.0006, 0.0004, 0.0002,
    ];
    let cosine_w3_d4 = [
        0.000333333333,
        0.000666666667,
        0.001,
        0.001,
        0.000986923818,
        0.000948455212,
        0.000886829837,
        0.000805629136,
        0.000709572199,
        0.000604241506,
        0.000495758494,
        0.000390427801,
        0.000294370864,
        0.000213170163,
        0.000151544788,
        0.000113076182,
        0.0001,
        7.5e-05,
        5e-05,
        2.5e-05,
    ];
    let cosine_plain = [
        0.001,
        0.000994459753,
        0.000977975432,
        0.000950952936,
        0.000914057647,
        0.000868198052,
        0.000814503364,
        0.000754295725,
        0.000689057647,
        0.000620395509,
        0.00055,
        0.000479604491,
        0.000410942353,
        0.000345704275,
        0.000285496636,
        0.000231801948,
        0.000185942353,
        0.000149047064,
        0.000122024568,
        0.000105540247,
    ];
    for (sched, w, d, want) in [
        (LrScheduler::Constant, 4, 5, &constant_w4_d5),
        (LrScheduler::CosineAnnealing, 3, 4, &cosine_w3_d4),
        (LrScheduler::CosineAnnealing, 0, 0, &cosine_plain),
    ] {
        for (s, &v) in want.iter().enumerate() {
            let got = lr_at(sched, 1e-3, 1e-4, 20, w, d, s);
            assert!(
                (got - v).abs() < 1e-12 + 1e-8 * v,
                "{sched:?} warm-up {w} decay {d}, step {s}: {got} vs SAELens {v}"
            );
        }
    }
    // CoefficientScheduler(warm_up_steps=3, final_value=2.0).value at steps 0..6.
    let coef = [0.0, 0.6666666666666666, 1.3333333333333333, 2.0, 2.0, 2.0];
    for (s, &v) in coef.iter().enumerate() {
        assert!((coefficient_at(2.0, 3, s) - v).abs() < 1e-12);
    }
}

#[test]
fn sae_trainer_aux_k_loss_is_zero_until_latents_die() {
    let mut data = Synthetic::new(3);
    let mut c = config(TrainArch::TopK, 40);
    c.d_sae = 512;
    c.dead_feature_window = 2;
    let (init, _) = data.batch(64);
    let mut t = Trainer::new(c, &init, &Device::Cpu).unwrap();
    let mut saw_dead = false;
    for i in 0..40 {
        let dead_before = t.dead_mask().iter().any(|&d| d);
        let (x, _) = data.batch(64);
        let s = t.step(&x, None).unwrap();
        if !dead_before {
            assert_eq!(s.aux_loss, 0.0, "step {i}: aux-k loss with nothing dead");
        } else {
            saw_dead = true;
            assert!(s.aux_loss > 0.0, "step {i}: dead latents but no aux-k loss");
        }
    }
    assert!(
        saw_dead,
        "with 512 latents, k = 4 and a 2-step window some should die"
    );
}

#[test]
fn sae_trainer_jumprelu_estimator_gives_saelens_gradients() {
    // x [2, 3], θ = 0.5, bandwidth 0.1: the rectangle is 1 where |x − θ| < 0.05, i.e. only in
    // column 0 (0.51 and 0.49). SAELens's JumpReLU.backward gives, for loss Σ w·JumpReLU(x):
    //   ∂/∂x = 1[x > θ]·w, ∂/∂θ_j = −Σ_b (θ_j/bw)·rect·w = −5·(w00 + w10) in column 0, else 0;
    // and Step.backward: ∂/∂θ_j = −Σ_b rect·w / bw = −10·(w00 + w10) in column 0.
    let dev = Device::Cpu;
    let x =
        Var::from_tensor(&Tensor::new(&[[0.51f32, 0.2, 1.0], [0.49, 0.6, -1.0]], &dev).unwrap())
            .unwrap();
    let th = Var::from_tensor(&Tensor::new(&[0.5f32, 0.5, 0.5], &dev).unwrap()).unwrap();
    let w = Tensor::new(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap();
    let y = jumprelu(x.as_tensor(), th.as_tensor(), 0.1, false).unwrap();
    assert_eq!(
        y.to_vec2::<f32>().unwrap(),
        vec![vec![0.51, 0.0, 1.0], vec![0.0, 0.6, 0.0]]
    );
    let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(gx, vec![vec![1.0, 0.0, 3.0], vec![0.0, 5.0, 0.0]]);
    let gt = g.get(th.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    assert!(
        (gt[0] + 25.0).abs() < 1e-5 && gt[1] == 0.0 && gt[2] == 0.0,
        "{gt:?}"
    );

    let s = step_fn(x.as_tensor(), th.as_tensor(), 0.1, false).unwrap();
    assert_eq!(
        s.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 0.0, 1.0], vec![0.0, 1.0, 0.0]]
    );
    let g = s.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(x.as_tensor()).is_none_or(|t| t
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        == 0.0));
    let gt = g.get(th.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    assert!(
        (gt[0] + 50.0).abs() < 1e-4 && gt[1] == 0.0 && gt[2] == 0.0,
        "{gt:?}"
    );

    // With ste_to_input (Anthropic's), x also receives the estimator: +5·w in column 0.
    let y = jumprelu(x.as_tensor(), th.as_tensor(), 0.1, true).unwrap();
    let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    assert!(
        (gx[0][0] - 6.0).abs() < 1e-5 && (gx[1][0] - 20.0).abs() < 1e-5,
        "{gx:?}"
    );
}

#[test]
fn sae_trainer_checkpoint_resumes_exactly() {
    for arch in [
        TrainArch::BatchTopK,
        TrainArch::JumpRelu,
        TrainArch::SkipTranscoder,
    ] {
        let (mut a, mut data) = train(arch, 20);
        let dir = tempfile::tempdir().unwrap();
        a.save_checkpoint(dir.path()).unwrap();
        let mut b = Trainer::load_checkpoint(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(b.steps_done(), 20);
        assert_eq!(b.cfg(), a.cfg());
        for _ in 0..3 {
            let (x, y) = data.batch(64);
            let target = if arch.is_transcoder() { Some(&y) } else { None };
            let sa = a.step(&x, target).unwrap();
            let sb = b.step(&x, target).unwrap();
            assert_eq!(sa, sb, "{}", arch.name());
        }
        let (x, _) = data.batch(16);
        let (oa, ob) = (a.sae().unwrap(), b.sae().unwrap());
        assert_eq!(
            oa.forward(&x).unwrap().to_vec2::<f32>().unwrap(),
            ob.forward(&x).unwrap().to_vec2::<f32>().unwrap()
        );
        assert_eq!(
            a.log_feature_sparsity().unwrap().to_vec1::<f32>().unwrap(),
            b.log_feature_sparsity().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}

#[test]
fn sae_trainer_refuses_what_it_cannot_honour() {
    let x = Tensor::zeros((4, D_IN), DType::F32, &Device::Cpu).unwrap();
    let mut c = config(TrainArch::TopK, 50);
    c.k = Some(1000);
    let e = Trainer::new(c, &x, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("k"), "{e}");
    let mut c = config(TrainArch::JumpRelu, 50);
    c.jumprelu_sparsity_loss_mode = SparsityMode::Quadratic;
    let e = Trainer::new(c, &x, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("target_l0"), "{e}");
    let mut c = config(TrainArch::Standard, 50);
    c.total_steps = 0;
    assert!(Trainer::new(c, &x, &Device::Cpu).is_err());
    let mut t = Trainer::new(config(TrainArch::Transcoder, 50), &x, &Device::Cpu).unwrap();
    let e = t.step(&x, None).err().unwrap().to_string();
    assert!(e.contains("target"), "{e}");
    let bad = Tensor::zeros((4, 7), DType::F32, &Device::Cpu).unwrap();
    let mut t = Trainer::new(config(TrainArch::TopK, 50), &x, &Device::Cpu).unwrap();
    assert!(t.step(&bad, None).is_err());
}

/// Training speed at the quick recipe's sizes (d_in 640, 2 048 latents, k 32, batch 256):
/// `cargo test --release --test it sae_trainer_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn sae_trainer_speed() {
    let mut rng = Rng(1);
    let (d_in, b) = (640, 256);
    let x: Vec<f32> = (0..b * d_in).map(|_| rng.normalish()).collect();
    let x = Tensor::from_vec(x, (b, d_in), &Device::Cpu).unwrap();
    let mut c = TrainConfig::new(TrainArch::TopK, d_in, d_in, 2048);
    c.k = Some(32);
    c.total_steps = 1000;
    c.lr = 1e-3;
    let mut t = Trainer::new(c, &x, &Device::Cpu).unwrap();
    for _ in 0..3 {
        t.step(&x, None).unwrap();
    }
    let n = 20;
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for _ in 0..n {
        t.step(&x, None).unwrap();
    }
    let dt = t0.elapsed().as_secs_f64() / n as f64;
    let ct = (cpu_seconds() - c0) / n as f64;
    println!(
        "topk d_in {d_in} d_sae 2048 k 32 batch {b}: {:.1} ms/step wall ({:.0} tokens/s), {:.1} ms CPU time per step over all threads",
        dt * 1e3,
        b as f64 / dt,
        ct * 1e3
    );
}

/// This process's user + system CPU time (Linux), to see through a loaded machine.
fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}
