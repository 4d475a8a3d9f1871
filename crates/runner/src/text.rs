//! Text tasks as tensors: labelled texts tokenised with the backbone's [`TextEncoder`] into one
//! padded `[N, T]` id matrix (padding = the tokenizer's pad id, which the encoder masks) and class
//! ids from a [`LabelSet`].

use candle_core::{Device, Tensor};
use peftbench_backbones::TextEncoder;
use peftbench_data_text::{LabelSet, TextExample};
use peftbench_train::InMemoryBatches;

/// Tokenises `examples` and maps their labels through `labels`; an unknown label is an error
/// naming it and the known ones.
pub fn encode_classification(
    encoder: &TextEncoder,
    examples: &[TextExample],
    labels: &LabelSet,
    device: &Device,
) -> anyhow::Result<InMemoryBatches> {
    anyhow::ensure!(!examples.is_empty(), "no examples to encode");
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let batch = encoder.encode(&texts)?;
    let (ids, _, _) = batch.to_tensors(device)?;
    let ids_u32: Vec<u32> = examples
        .iter()
        .map(|e| {
            labels.id(&e.label).ok_or_else(|| {
                anyhow::anyhow!(
                    "label `{}` is not one of the task's classes {:?}",
                    e.label,
                    labels.names()
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let n = ids_u32.len();
    InMemoryBatches::new(ids, Tensor::from_vec(ids_u32, n, device)?)
}
