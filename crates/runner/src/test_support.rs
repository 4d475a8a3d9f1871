//! What the runner's unit tests share: a small in-memory image task and ways to compare trained
//! models.

use candle_core::{Device, Tensor};
use peftbench_methods::PeftModel;
use peftbench_train::InMemoryBatches;

use crate::run::PreparedTask;

/// `examples` random 16 x 16 images in 3 classes, the same set as training and evaluation split.
pub fn image_task(examples: usize) -> anyhow::Result<PreparedTask> {
    let images = Tensor::randn(0f32, 1.0, (examples, 3, 16, 16), &Device::Cpu)?;
    let labels: Vec<u32> = (0..examples as u32).map(|i| i % 3).collect();
    let data = InMemoryBatches::new(images, Tensor::from_vec(labels, examples, &Device::Cpu)?)?;
    Ok(PreparedTask {
        train: Box::new(data.clone()),
        eval: Box::new(data),
        val: None,
        skipped_examples: 0,
        augmented_training: false,
        features: Default::default(),
        prefixes: Default::default(),
        tagging: None,
    })
}

/// Every trainable value of `model` (method and head), in the optimizer's order.
pub fn trainable_values(model: &PeftModel) -> anyhow::Result<Vec<f32>> {
    let mut out = vec![];
    for p in model.trainable().iter() {
        out.extend(p.var.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// The largest elementwise difference of two equally long value lists.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
