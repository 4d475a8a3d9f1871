//! Every product must equal its definition bit for bit: element `(i, j)` is the fused
//! multiply-add chain over the depth in order, from `+0.0`. Checked on every path this CPU runs
//! (the others skip with a message), for every path's tile sizes, thread counts and layouts.

use super::*;
use crate::blocked::{multiply, Product};

/// Deterministic values in [-0.5, 0.5] with plenty of mantissa bits (so any change of summation
/// order shows in the result).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// The definition, element by element.
fn chain(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k {
                acc = a[i * k + p].mul_add(b[p * n + j], acc);
            }
            c[i * n + j] = acc;
        }
    }
    c
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `a` ([m, k]) and `b` ([k, n]) stored row-major or transposed, multiplied into a row-major or
/// column-major C.
fn product_of(
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    (lhs_t, rhs_t, dst_t): (bool, bool, bool),
) -> (Vec<f32>, Vec<f32>, impl Fn(&mut [f32]) -> Product<f32>) {
    let transpose = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
        (0..rows * cols)
            .map(|t| x[(t % rows) * cols + t / rows])
            .collect()
    };
    let lhs = if lhs_t {
        transpose(a, m, k)
    } else {
        a.to_vec()
    };
    let rhs = if rhs_t {
        transpose(b, k, n)
    } else {
        b.to_vec()
    };
    let (lhs_ptr, rhs_ptr) = (lhs.as_ptr(), rhs.as_ptr());
    let make = move |dst: &mut [f32]| Product {
        m,
        n,
        k,
        dst: dst.as_mut_ptr(),
        dst_rs: if dst_t { 1 } else { n as isize },
        dst_cs: if dst_t { m as isize } else { 1 },
        lhs: lhs_ptr,
        lhs_rs: if lhs_t { 1 } else { k as isize },
        lhs_cs: if lhs_t { m as isize } else { 1 },
        rhs: rhs_ptr,
        rhs_rs: if rhs_t { 1 } else { n as isize },
        rhs_cs: if rhs_t { k as isize } else { 1 },
    };
    (lhs, rhs, make)
}

const SHAPES: [(usize, usize, usize); 17] = [
    (1, 1, 1),
    (1, 37, 300),
    (5, 3, 7),
    (8, 192, 700),
    (17, 33, 257),
    (33, 17, 513),
    (64, 64, 64),
    (70, 9, 1),
    (100, 130, 2),
    (130, 100, 600),
    (197, 197, 64),
    (300, 40, 1100),
    // Attention's per-head products and a classifier head (A read in place, narrow tiles).
    (65, 16, 65),
    (65, 65, 16),
    (64, 10, 64),
    (75, 4, 520),
    // Enough row blocks to sweep several depth blocks at once, in two sweeps (768 + 132 deep).
    (270, 300, 900),
];

#[test]
fn every_available_path_computes_the_definition_bit_for_bit() {
    for isa in Isa::ALL {
        if !isa.is_available() {
            eprintln!(
                "SKIPPED: this CPU cannot run the {} kernels; their tile sizes are still checked below",
                isa.name()
            );
            continue;
        }
        for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
            let a = values(m * k, 2 * s as u64);
            let b = values(k * n, 2 * s as u64 + 1);
            let expected = bits(&chain(&a, &b, m, n, k));
            for layout in [
                (false, false, false),
                (true, false, false),
                (false, true, false),
                (true, true, true),
            ] {
                let (_lhs, _rhs, make) = product_of(&a, &b, (m, n, k), layout);
                for threads in [1, 2, 3] {
                    let mut c = vec![f32::NAN; m * n];
                    // SAFETY: the buffers hold the matrices the product addresses.
                    unsafe { multiply(make(&mut c), isa, threads) };
                    if layout.2 {
                        c = (0..m * n).map(|t| c[(t % n) * m + t / n]).collect();
                    }
                    assert_eq!(
                        bits(&c),
                        expected,
                        "{} {m}x{n}x{k} layout {layout:?} threads {threads}",
                        isa.name()
                    );
                }
            }
        }
    }
}

/// The AVX-512 path's tile sizes (and every other path's) run through the portable code on this
/// CPU: the tile never changes a bit, so what a wider machine computes is checked here too.
#[test]
fn every_tile_size_computes_the_definition_bit_for_bit() {
    use crate::blocked::tests_support::run_with_tiles;
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        let a = values(m * k, 100 + s as u64);
        let b = values(k * n, 200 + s as u64);
        let expected = bits(&chain(&a, &b, m, n, k));
        for layout in [(false, false, false), (true, true, false)] {
            let (_lhs, _rhs, make) = product_of(&a, &b, (m, n, k), layout);
            for tiles in [(4, 8), (6, 16), (12, 32), (12, 8), (16, 16), (1, 1), (3, 5)] {
                let mut c = vec![f32::NAN; m * n];
                unsafe { run_with_tiles(make(&mut c), tiles, 2) };
                assert_eq!(bits(&c), expected, "{m}x{n}x{k} tiles {tiles:?} {layout:?}");
            }
        }
    }
}

#[test]
fn the_public_entry_point_scales_adds_and_widens() {
    // The other tests call the fixed-order kernels directly; only this one goes through the
    // switch, so setting it here cannot affect them.
    isa::force_order(Some(Order::Fixed));
    let (m, n, k) = (9, 14, 600);
    let a = values(m * k, 7);
    let b = values(k * n, 8);
    let plain = chain(&a, &b, m, n, k);
    let old = values(m * n, 9);
    let mut c = old.clone();
    // dst = 0.5 dst + 2 (a b), through the upstream crate's argument order.
    unsafe {
        gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.5f32,
            2.0f32,
            false,
            false,
            false,
            Parallelism::Rayon(0),
        )
    };
    for t in 0..m * n {
        assert_eq!(c[t].to_bits(), (0.5 * old[t] + 2.0 * plain[t]).to_bits());
    }
    // beta without read_dst; f64 against an f64 chain.
    let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
    let mut c64 = vec![f64::NAN; m * n];
    unsafe {
        gemm(
            m,
            n,
            k,
            c64.as_mut_ptr(),
            1,
            n as isize,
            false,
            a64.as_ptr(),
            1,
            k as isize,
            b64.as_ptr(),
            1,
            n as isize,
            0.0f64,
            3.0f64,
            false,
            false,
            false,
            Parallelism::None,
        )
    };
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc = a64[i * k + p].mul_add(b64[p * n + j], acc);
            }
            assert_eq!(c64[i * n + j].to_bits(), (3.0 * acc).to_bits());
        }
    }
    // f16 and bf16: the f32 chain of the widened values, rounded once.
    let ah: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
    let bh: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
    let wide = |v: &[f16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
    let expected = chain(&wide(&ah), &wide(&bh), m, n, k);
    let mut ch = vec![f16::ZERO; m * n];
    unsafe {
        gemm(
            m,
            n,
            k,
            ch.as_mut_ptr(),
            1,
            n as isize,
            false,
            ah.as_ptr(),
            1,
            k as isize,
            bh.as_ptr(),
            1,
            n as isize,
            f16::ZERO,
            f16::ONE,
            false,
            false,
            false,
            Parallelism::None,
        )
    };
    for t in 0..m * n {
        assert_eq!(ch[t], f16::from_f32(expected[t]));
    }
    let ab: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
    let bb: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
    let wide = |v: &[bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
    let expected = chain(&wide(&ab), &wide(&bb), m, n, k);
    let mut cb = vec![bf16::ZERO; m * n];
    unsafe {
        gemm(
            m,
            n,
            k,
            cb.as_mut_ptr(),
            1,
            n as isize,
            false,
            ab.as_ptr(),
            1,
            k as isize,
            bb.as_ptr(),
            1,
            n as isize,
            bf16::ZERO,
            bf16::ONE,
            false,
            false,
            false,
            Parallelism::None,
        )
    };
    for t in 0..m * n {
        assert_eq!(cb[t], bf16::from_f32(expected[t]));
    }
}

/// The upstream order (`PEFTBENCH_GEMM=upstream`) runs the upstream kernels: right to rounding,
/// and not the fixed-order chain on a depth long enough to be blocked.
#[test]
fn the_upstream_order_runs_the_upstream_kernels() {
    let (m, n, k) = (70, 80, 3000);
    let a = values(m * k, 31);
    let b = values(k * n, 32);
    let expected = chain(&a, &b, m, n, k);
    let mut c = vec![f32::NAN; m * n];
    // SAFETY: the buffers hold the matrices.
    unsafe {
        upstream(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0f32,
            1f32,
            Parallelism::None,
        )
    };
    let worst = c
        .iter()
        .zip(&expected)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "{worst}");
    assert_ne!(
        bits(&c),
        bits(&expected),
        "the upstream kernels block the depth"
    );
}

#[test]
fn empty_products_write_zeros_or_nothing() {
    isa::force_order(Some(Order::Fixed));
    let mut c = vec![f32::NAN; 6];
    let a = [1f32; 1];
    unsafe {
        gemm(
            2,
            3,
            0,
            c.as_mut_ptr(),
            1,
            3,
            false,
            a.as_ptr(),
            1,
            0,
            a.as_ptr(),
            1,
            3,
            0f32,
            1f32,
            false,
            false,
            false,
            Parallelism::None,
        )
    };
    assert_eq!(c, vec![0.0; 6]);
    let mut c = vec![f32::NAN; 0];
    unsafe {
        gemm(
            0,
            3,
            4,
            c.as_mut_ptr(),
            1,
            3,
            false,
            a.as_ptr(),
            1,
            4,
            a.as_ptr(),
            1,
            3,
            0f32,
            1f32,
            false,
            false,
            false,
            Parallelism::None,
        )
    };
}

#[test]
#[should_panic(expected = "unsupported element type")]
fn other_element_types_are_refused() {
    let mut c = [0i32; 1];
    let a = [1i32; 1];
    unsafe {
        gemm(
            1,
            1,
            1,
            c.as_mut_ptr(),
            1,
            1,
            false,
            a.as_ptr(),
            1,
            1,
            a.as_ptr(),
            1,
            1,
            0,
            1,
            false,
            false,
            false,
            Parallelism::None,
        )
    };
}
