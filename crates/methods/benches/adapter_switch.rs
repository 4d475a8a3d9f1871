//! Switching adapters on fused weights, on every projection of a ViT-B/16 (12 blocks; q, k, v,
//! attention output 768x768, fc1 3072x768, fc2 768x3072): from adapter A to adapter B.
//!
//! * SHiRA (Bhardwaj et al., 2024): subtract A's sparse values, add B's, at their positions: a
//!   scatter of `k` entries per projection, in place (`shira::scatter_in_place`), and the
//!   device-generic candle path (`index_add`, which writes a new weight).
//! * LoRA: unfuse A (`W -= s·B_A A_A`) and fuse B (`W += s·B_B A_B`): two dense rank-r products per
//!   projection, with candle, applied in place and as new tensors.
//!
//! Both adapters have the same size: LoRA rank 8 and SHiRA with PEFT's matching budget
//! `8·(in + out)` entries per projection. Prints the median of several switches and the ratio.
//! Run with `cargo bench -p peftbench-methods --bench adapter_switch`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use peftbench_methods::shira::{scatter_in_place, top_k_positions};
use rand::{Rng, SeedableRng};

const R: usize = 8;
const LAYERS: usize = 12;
const SHAPES: [(usize, usize); 6] = [
    (768, 768),
    (768, 768),
    (768, 768),
    (768, 768),
    (3072, 768),
    (768, 3072),
];
const REPEATS: usize = 5;

struct Projection {
    weight: Vec<f32>,
    /// Two SHiRA adapters: positions and values.
    shira: [(Vec<u32>, Vec<f32>); 2],
    /// Two LoRA adapters: (B [out, r], A [r, in]).
    lora: [(Tensor, Tensor); 2],
    shape: (usize, usize),
}

fn random(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random::<f32>() - 0.5).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    median(
        (0..REPEATS)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() -> candle_core::Result<()> {
    let device = Device::Cpu;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut projections: Vec<Projection> = Vec::new();
    for _ in 0..LAYERS {
        for &(out, inp) in &SHAPES {
            let k = R * (out + inp);
            let mut shira = || {
                let scores: Vec<f64> = (0..out * inp).map(|_| rng.random()).collect();
                (top_k_positions(&scores, k), random(&mut rng, k))
            };
            let shira = [shira(), shira()];
            let mut lora = || -> candle_core::Result<(Tensor, Tensor)> {
                Ok((
                    Tensor::from_vec(random(&mut rng, out * R), (out, R), &device)?,
                    Tensor::from_vec(random(&mut rng, R * inp), (R, inp), &device)?,
                ))
            };
            let lora = [lora()?, lora()?];
            projections.push(Projection {
                weight: random(&mut rng, out * inp),
                shira,
                lora,
                shape: (out, inp),
            });
        }
    }
    let scaling = 2.0;
    let entries: usize = projections.iter().map(|p| p.shira[0].0.len()).sum();
    let weights: usize = projections.iter().map(|p| p.weight.len()).sum();
    println!("adapter switch A -> B on ViT-B/16 projections: {} matrices, {weights} weights, {entries} adapter entries each side", projections.len());

    let shira_host = time(|| {
        for p in projections.iter_mut() {
            scatter_in_place(&mut p.weight, &p.shira[0].0, &p.shira[0].1, -1.0);
            scatter_in_place(&mut p.weight, &p.shira[1].0, &p.shira[1].1, 1.0);
        }
    });
    let fused: Vec<Tensor> = projections
        .iter()
        .map(|p| Tensor::from_slice(&p.weight, p.shape, &device))
        .collect::<candle_core::Result<_>>()?;
    let shira_idx: Vec<[(Tensor, Tensor); 2]> = projections
        .iter()
        .map(|p| -> candle_core::Result<_> {
            let t = |(i, v): &(Vec<u32>, Vec<f32>)| -> candle_core::Result<(Tensor, Tensor)> {
                Ok((
                    Tensor::from_slice(i, i.len(), &device)?,
                    Tensor::from_slice(v, v.len(), &device)?,
                ))
            };
            Ok([t(&p.shira[0])?, t(&p.shira[1])?])
        })
        .collect::<candle_core::Result<_>>()?;
    let shira_candle = time(|| {
        for (w, [(ia, va), (ib, vb)]) in fused.iter().zip(&shira_idx) {
            let flat = w.flatten_all().unwrap();
            let removed = flat.index_add(ia, &va.neg().unwrap(), 0).unwrap();
            std::hint::black_box(removed.index_add(ib, vb, 0).unwrap());
        }
    });
    let lora_candle = time(|| {
        for (w, p) in fused.iter().zip(&projections) {
            let [(ba, aa), (bb, ab)] = &p.lora;
            let unfused = (w - (ba.matmul(aa).unwrap() * scaling).unwrap()).unwrap();
            std::hint::black_box((unfused + (bb.matmul(ab).unwrap() * scaling).unwrap()).unwrap());
        }
    });
    let lora_host = time(|| {
        for p in projections.iter_mut() {
            let [(ba, aa), (bb, ab)] = &p.lora;
            let delta =
                ((bb.matmul(ab).unwrap() - ba.matmul(aa).unwrap()).unwrap() * scaling).unwrap();
            let delta: Vec<f32> = delta.flatten_all().unwrap().to_vec1().unwrap();
            for (w, d) in p.weight.iter_mut().zip(delta) {
                *w += d;
            }
        }
    });
    println!(
        "SHiRA scatter, in place           {:>9.2} ms",
        shira_host * 1e3
    );
    println!(
        "SHiRA index_add, candle (new W)   {:>9.2} ms",
        shira_candle * 1e3
    );
    println!(
        "LoRA unfuse + fuse, in place      {:>9.2} ms",
        lora_host * 1e3
    );
    println!(
        "LoRA unfuse + fuse, candle (new W){:>9.2} ms",
        lora_candle * 1e3
    );
    println!(
        "ratio LoRA / SHiRA: in place {:.1}x, candle {:.1}x",
        lora_host / shira_host,
        lora_candle / shira_candle
    );
    Ok(())
}
