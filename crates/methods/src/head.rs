//! The task's classification head, trained by every method (HF PEFT saves it under
//! `modules_to_save` as `classifier`).

use candle_core::{Result, Tensor};
use peftbench_core::{ops, NamedVars, SeededInit};

pub struct ClassifierHead {
    params: NamedVars,
}

impl ClassifierHead {
    /// A `hidden -> num_classes` linear layer, truncated-normal(0.02) weights and zero bias, as
    /// `ViTForImageClassification` initialises it.
    pub fn new(hidden: usize, num_classes: usize, init: &SeededInit) -> Result<Self> {
        let mut params = NamedVars::default();
        params.push(
            "classifier.weight",
            init.fork("classifier.weight")
                .trunc_normal((num_classes, hidden), 0.02)?,
        );
        params.push("classifier.bias", init.zeros(num_classes)?);
        Ok(Self { params })
    }

    pub fn params(&self) -> &NamedVars {
        &self.params
    }

    pub fn num_classes(&self) -> usize {
        self.params.0[1].var.elem_count()
    }

    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        ops::linear(
            features,
            self.params.0[0].var.as_tensor(),
            Some(self.params.0[1].var.as_tensor()),
        )
    }
}
