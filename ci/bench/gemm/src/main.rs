//! Prints GFLOP/s of the upstream `gemm` crate and of ours for each shape, their time ratio, and
//! the largest difference between the two results (rounding: the sums run in another order).

use std::time::Instant;

/// (m, n, k, lhs transposed, rhs transposed, what it is), for ViT-Tiny at batch 32 (6,304 tokens)
/// and the demo ViT (64 wide, 65 tokens, batch 64).
const SHAPES: [(usize, usize, usize, bool, bool, &str); 13] = [
    (4160, 64, 64, false, true, "demo forward"),
    (64, 64, 4160, true, false, "demo weight gradient"),
    (65, 65, 16, false, true, "demo attention scores"),
    (65, 16, 65, false, false, "demo attention output"),
    (64, 10, 64, false, true, "demo head"),
    (6304, 192, 192, false, true, "qkv/proj forward  x W^T"),
    (6304, 768, 192, false, true, "MLP up forward"),
    (6304, 192, 768, false, true, "MLP down forward"),
    (192, 192, 6304, true, false, "weight gradient dy^T x"),
    (768, 192, 6304, true, false, "MLP up weight gradient"),
    (197, 197, 64, false, true, "attention scores q k^T"),
    (197, 64, 197, false, false, "attention output p v"),
    (8, 192, 6304, true, false, "LoRA A gradient"),
];

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 999.0 - 0.5)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|t| t.parse().ok())
        .unwrap_or(1usize);
    // Ours in its fixed order (the crate's default is still the upstream kernels).
    fixed_order::isa::force_order(Some(fixed_order::Order::Fixed));
    println!(
        "threads {threads}; ours runs {} (`PEFTBENCH_KERNELS` forces a path)",
        fixed_order::isa::selected().name()
    );
    println!(
        "{:28} {:>13} {:>13} {:>11} {:>9}",
        "shape", "upstream GF/s", "ours GF/s", "ours/upstr", "max diff"
    );
    for (m, n, k, lhs_t, rhs_t, what) in SHAPES {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        // (row stride, column stride) of each operand as stored.
        let (lrs, lcs) = if lhs_t { (1, m as isize) } else { (k as isize, 1) };
        let (rrs, rcs) = if rhs_t { (1, k as isize) } else { (n as isize, 1) };
        let mut c_upstream = vec![0f32; m * n];
        let mut c_ours = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let reps = ((2e9 / flops) as usize).max(3);
        let mut best = [f64::MAX; 2];
        // Interleaved rounds, best of each: the machine's noise hits both alike.
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..reps {
                let parallelism = if threads > 1 {
                    upstream::Parallelism::Rayon(threads)
                } else {
                    upstream::Parallelism::None
                };
                // SAFETY: the buffers hold the matrices under these strides.
                unsafe {
                    upstream::gemm(
                        m, n, k, c_upstream.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), lcs,
                        lrs, b.as_ptr(), rcs, rrs, 0.0f32, 1.0f32, false, false, false,
                        parallelism,
                    )
                }
            }
            best[0] = best[0].min(start.elapsed().as_secs_f64() / reps as f64);
            let start = Instant::now();
            for _ in 0..reps {
                let parallelism = if threads > 1 {
                    fixed_order::Parallelism::Rayon(threads)
                } else {
                    fixed_order::Parallelism::None
                };
                // SAFETY: as above.
                unsafe {
                    fixed_order::gemm(
                        m, n, k, c_ours.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), lcs,
                        lrs, b.as_ptr(), rcs, rrs, 0.0f32, 1.0f32, false, false, false,
                        parallelism,
                    )
                }
            }
            best[1] = best[1].min(start.elapsed().as_secs_f64() / reps as f64);
        }
        let diff = c_upstream
            .iter()
            .zip(&c_ours)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        println!(
            "{:28} {:>13.1} {:>13.1} {:>11.2} {:>9.1e}",
            format!("{what} {m}x{n}x{k}"),
            flops / best[0] / 1e9,
            flops / best[1] / 1e9,
            best[1] / best[0],
            diff
        );
    }
}
