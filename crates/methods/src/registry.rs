//! The single list of methods. Names are unique (a test checks) and are what suite files use.

use crate::{adapter, adaptformer, bitfit, full, linear_probe, lora, vpt, Method};
use crate::{compacter, conv_adapter, dora, hydra, ia3, prefix, ssf};
use crate::{corda, lowbit, lt_sft, madx, mosa, shira};

static METHODS: &[&dyn Method] = &[
    &full::FullFineTuning,
    &linear_probe::LinearProbe,
    &bitfit::BitFit,
    &lora::Lora,
    &adapter::BottleneckAdapter,
    &adaptformer::AdaptFormer,
    &vpt::VPT_SHALLOW,
    &vpt::VPT_DEEP,
    &shira::Shira,
    &lt_sft::LtSft,
    &corda::Corda,
    &lowbit::BiAdaptFormer,
    &lowbit::BiLora,
    &mosa::Mosa,
    &madx::Madx,
    &prefix::PrefixTuning,
    &ia3::Ia3,
    &ssf::Ssf,
    &compacter::COMPACTER,
    &compacter::COMPACTER_PLUS_PLUS,
    &hydra::Hydra,
    &conv_adapter::ConvAdapter,
    &dora::Dora,
    &crate::per_task::PerTask,
    &crate::hyperformer::Hyperformer,
    &crate::poly::POLY,
    &crate::poly::MHR,
    &crate::music_adapters::method::MUSIC_LINEAR,
    &crate::music_adapters::method::MUSIC_CONV,
    &crate::music_adapters::method::MUSIC_TRANSFORMER,
    &crate::zero_shot::ZeroShot,
];

/// Every registered method, in the order `harness list methods` prints them.
pub fn registry() -> &'static [&'static dyn Method] {
    METHODS
}

/// The method registered as `name`, or an error listing the valid names.
pub fn find_method(name: &str) -> Result<&'static dyn Method, String> {
    METHODS
        .iter()
        .copied()
        .find(|m| m.info().name == name)
        .ok_or_else(|| {
            format!(
                "unknown method `{name}`; valid methods: {}",
                method_names().join(", ")
            )
        })
}

pub fn method_names() -> Vec<&'static str> {
    let mut names: Vec<_> = METHODS.iter().map(|m| m.info().name).collect();
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_documented() {
        let names = method_names();
        let mut dedup = names.clone();
        dedup.dedup();
        assert_eq!(names, dedup, "duplicate method names");
        assert_eq!(names.len(), 31);
        for m in registry() {
            let info = m.info();
            assert!(
                !info.summary.is_empty() && !info.paper.is_empty(),
                "{} undocumented",
                info.name
            );
            // Defaults are valid configurations.
            m.validate(&serde_json::json!({})).unwrap();
        }
        let err = find_method("lora2").err().expect("lora2 is not a method");
        assert!(err.contains("valid methods: adapter, adaptformer"));
    }
}
