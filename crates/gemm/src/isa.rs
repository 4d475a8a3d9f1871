//! Which instruction set the products run with: the widest the CPU has, unless a test or the
//! `PEFTBENCH_KERNELS` environment variable asks for another one it also has. Since every path
//! computes the same fused multiply-add chains, the choice changes speed only, never a result.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// The environment variable that forces a kernel path for a whole process (`portable`, `avx2` or
/// `avx512`), so that two runs on one machine can be compared bit for bit.
pub const KERNELS_ENV: &str = "PEFTBENCH_KERNELS";

/// A compiled kernel path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust for any CPU; the multiply-adds are `mul_add`, which is a single FMA
    /// instruction where the CPU has one and a correctly rounded library call where it has not.
    Portable,
    /// AVX2 with FMA: eight f32 lanes (Haswell, Zen 1 and later).
    Avx2,
    /// AVX-512 F with FMA: sixteen f32 lanes (Skylake-SP, Ice Lake, Sapphire Rapids, Zen 4 and later).
    Avx512,
}

impl Isa {
    /// Every path, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The name used by `PEFTBENCH_KERNELS` and in run records.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512f+fma",
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Parses a `PEFTBENCH_KERNELS` value (`avx2` and `avx512` are accepted without `+fma`).
    pub fn parse(value: &str) -> Result<Isa, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "portable" => Ok(Isa::Portable),
            "avx2" | "avx2+fma" => Ok(Isa::Avx2),
            "avx512" | "avx512f" | "avx512f+fma" => Ok(Isa::Avx512),
            other => Err(format!(
                "{KERNELS_ENV}={other:?} is not a kernel path: use portable, avx2 or avx512"
            )),
        }
    }

    fn code(self) -> u8 {
        match self {
            Isa::Portable => 1,
            Isa::Avx2 => 2,
            Isa::Avx512 => 3,
        }
    }

    fn from_code(code: u8) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.code() == code)
    }
}

/// The widest path this CPU can run.
pub fn detected() -> Isa {
    Isa::ALL
        .into_iter()
        .rev()
        .find(|isa| isa.is_available())
        .unwrap_or(Isa::Portable)
}

/// The paths this CPU can run, narrowest first.
pub fn available() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_available())
        .collect()
}

/// The path `PEFTBENCH_KERNELS` asks for: `Ok(None)` when it is unset, an error naming the value
/// when it is not a path or this CPU cannot run it.
pub fn from_env() -> Result<Option<Isa>, String> {
    let Ok(value) = std::env::var(KERNELS_ENV) else {
        return Ok(None);
    };
    if value.trim().is_empty() {
        return Ok(None);
    }
    let isa = Isa::parse(&value)?;
    if !isa.is_available() {
        return Err(format!(
            "{KERNELS_ENV}={value}: this CPU cannot run the {} kernels (it has: {})",
            isa.name(),
            available()
                .iter()
                .map(|isa| isa.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Some(isa))
}

/// The environment variable that picks the summation order of every product: `fixed-order` (each
/// output one chain over the depth in order: the same bits on any x86-64 CPU; the default) or
/// `upstream` (the upstream crate's kernels, whose depth blocks follow the machine's cache sizes:
/// sometimes faster, but a seed's numbers then depend on the CPU).
pub const ORDER_ENV: &str = "PEFTBENCH_GEMM";

/// How a product orders its sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// Every output one fused multiply-add chain over the depth in order.
    Fixed,
    /// The upstream `gemm` crate's kernels and blocking.
    Upstream,
}

impl Order {
    /// The name `PEFTBENCH_GEMM` takes and run records keep.
    pub fn name(self) -> &'static str {
        match self {
            Order::Fixed => "fixed-order",
            Order::Upstream => "upstream",
        }
    }

    /// Parses a `PEFTBENCH_GEMM` value.
    pub fn parse(value: &str) -> Result<Order, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "fixed-order" | "fixed" => Ok(Order::Fixed),
            "upstream" => Ok(Order::Upstream),
            other => Err(format!(
                "{ORDER_ENV}={other:?} is not a summation order: use fixed-order or upstream"
            )),
        }
    }
}

/// The order `PEFTBENCH_GEMM` asks for (`Ok(None)` when unset), or an error naming the value.
pub fn order_from_env() -> Result<Option<Order>, String> {
    match std::env::var(ORDER_ENV) {
        Ok(value) if !value.trim().is_empty() => Order::parse(&value).map(Some),
        _ => Ok(None),
    }
}

/// 0: no override set by [`force_order`].
static FORCED_ORDER: AtomicU8 = AtomicU8::new(0);

/// Forces the summation order for the whole process (`None`: back to the environment's).
pub fn force_order(order: Option<Order>) {
    let code = match order {
        None => 0,
        Some(Order::Fixed) => 1,
        Some(Order::Upstream) => 2,
    };
    FORCED_ORDER.store(code, Ordering::SeqCst);
}

/// The summation order products use now: [`force_order`]'s, else `PEFTBENCH_GEMM`'s, else
/// the fixed order.
pub fn order() -> Order {
    match FORCED_ORDER.load(Ordering::Relaxed) {
        1 => return Order::Fixed,
        2 => return Order::Upstream,
        _ => {}
    }
    static FROM_ENV: OnceLock<Order> = OnceLock::new();
    *FROM_ENV.get_or_init(|| order_from_env().ok().flatten().unwrap_or(Order::Fixed))
}

/// 0: no override set by [`force`].
static FORCED: AtomicU8 = AtomicU8::new(0);

/// Forces a path for the whole process (`None`: back to the environment or the CPU). Refuses a
/// path the CPU cannot run.
pub fn force(isa: Option<Isa>) -> Result<(), String> {
    match isa {
        Some(isa) if !isa.is_available() => {
            Err(format!("this CPU cannot run the {} kernels", isa.name()))
        }
        Some(isa) => {
            FORCED.store(isa.code(), Ordering::SeqCst);
            Ok(())
        }
        None => {
            FORCED.store(0, Ordering::SeqCst);
            Ok(())
        }
    }
}

/// The path products run with now: [`force`]'s, else `PEFTBENCH_KERNELS`'s (when valid; the
/// harness reports an invalid value before any work), else the widest the CPU has.
pub fn selected() -> Isa {
    if let Some(isa) = Isa::from_code(FORCED.load(Ordering::Relaxed)) {
        return isa;
    }
    static FROM_ENV_OR_CPU: OnceLock<Isa> = OnceLock::new();
    *FROM_ENV_OR_CPU.get_or_init(|| from_env().ok().flatten().unwrap_or_else(detected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_nonsense_is_refused() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Ok(isa));
        }
        assert_eq!(Isa::parse(" AVX512 "), Ok(Isa::Avx512));
        let err = Isa::parse("sse9").unwrap_err();
        assert!(
            err.contains("PEFTBENCH_KERNELS") && err.contains("sse9"),
            "{err}"
        );
    }

    #[test]
    fn orders_parse_back_and_nonsense_is_refused() {
        for order in [Order::Fixed, Order::Upstream] {
            assert_eq!(Order::parse(order.name()), Ok(order));
        }
        let err = Order::parse("random").unwrap_err();
        assert!(err.contains("PEFTBENCH_GEMM"), "{err}");
    }

    #[test]
    fn the_detected_path_is_available_and_the_widest() {
        let best = detected();
        assert!(best.is_available());
        assert_eq!(available().last(), Some(&best));
        assert_eq!(available()[0], Isa::Portable);
    }
}
