//! Path patching with receivers in several layers, as ARENA defines it: a sender between the
//! receivers' layers acts through the receivers after it, and the earlier receivers, which read
//! the residual before the sender writes, are untouched.

use candle_core::{Device, Tensor};
use mechinterp::prelude::*;

fn patcher() -> Patcher {
    let dir = crate::common::repo().join("tests/fixtures/models/gemma3");
    let m = HookedTransformer::from_local_dir(dir).unwrap();
    let t = |v: &[u32]| Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let clean = t(&[2, 17, 42, 99, 250, 7, 180, 64]);
    let corrupt = t(&[2, 17, 43, 98, 250, 7, 181, 64]);
    Patcher::from_tokens(&m, &clean, &corrupt, LogitDiff::new(5, 9))
        .unwrap()
        .quiet(true)
}

#[test]
fn senders_between_receiver_layers_are_computed() {
    let p = patcher();
    let both = Receivers::Heads(vec![Receiver::Q(1, 2), Receiver::V(4, 1)]);
    let late = Receivers::Heads(vec![Receiver::V(4, 1)]);
    let sweep = p.path_sweep(&both, Direction::Noise, false).unwrap();
    for h in 0..4 {
        // Layers 1–3 sit between the receivers: computed, through layer 4's receiver alone.
        for l in 1..4 {
            let v = sweep.table.get(&[l, h]).unwrap();
            assert!(v.is_finite(), "sender {l}.{h} is {v}");
            let alone = p.path(&[(l, h)], &late, Direction::Noise, false).unwrap();
            assert!(
                (v - alone).abs() <= 1e-5 * (1.0 + v.abs()),
                "{l}.{h}: {v} vs {alone}"
            );
        }
        // Layer 0 reaches both receivers; layers 4 and 5 reach none.
        assert!(sweep.table.get(&[0, h]).unwrap().is_finite());
        for l in 4..6 {
            assert!(sweep.table.get(&[l, h]).unwrap().is_nan(), "{l}.{h}");
        }
    }
    // A sender after every receiver is refused by name.
    let e = p
        .path(&[(4, 0)], &both, Direction::Noise, false)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("not before receiver V(4, 1), the last one"),
        "{e}"
    );
}

#[test]
fn noising_maps_show_the_damage_centred_on_zero() {
    let p = patcher();
    let r = p
        .path_sweep(&Receivers::Logits, Direction::Noise, false)
        .unwrap();
    let h = r.heatmap().unwrap();
    assert!(h.title.contains("damage (1 − normalized)"), "{}", h.title);
    let norm = r.normalized();
    for l in 0..6 {
        for hd in 0..4 {
            let want = 1.0 - norm.get(&[l, hd]).unwrap();
            assert_eq!(r.damage().get(&[l, hd]).unwrap(), want);
        }
    }
    // Denoising keeps the normalized table (1 = restored).
    let d = p
        .path_sweep(&Receivers::Logits, Direction::Denoise, false)
        .unwrap();
    assert!(d
        .heatmap()
        .unwrap()
        .title
        .contains("normalized (1 = restored)"));
}
