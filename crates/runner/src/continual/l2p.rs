//! L2P (Wang, Zhang, Lee, Zhang, Sun, Ren, Su, Perot, Dy, Pfister, "Learning to Prompt for
//! Continual Learning", CVPR 2022): the backbone stays frozen; a pool of prompts, each with a
//! key, is shared by all stages. An image's query is the frozen backbone's own pooled feature;
//! the [`TOP_N`] prompts whose keys are most cosine-similar to it are inserted after the class
//! token before the first block (as VPT-shallow places prompts), and the classifier reads the
//! prompted backbone's pooled feature. Training pulls the chosen keys toward their queries
//! (loss `CE - λ · mean over the batch of the summed cosine similarities`, λ = [`PULL`]) and
//! masks the logits to the stage's classes. Sizes are the authors' CIFAR configuration: a pool
//! of [`POOL`] prompts of [`LENGTH`] tokens, [`TOP_N`] chosen.
//!
//! Differences from the reference code, stated: the classifier reads the class token (L2P's
//! default head averages the prompt tokens' outputs), and there is no batch-wise prompt
//! frequency penalty (off in the authors' main configuration).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{Tensor, Var};
use peftbench_backbones::{Backbone, Hooks, NoHooks};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_data_vision::ImageDataset;
use peftbench_methods::ClassifierHead;
use peftbench_train::{derive_seed, TrainModel};

use super::{
    exemplar_free, stage_cross_entropy, unit_rows, StageContext, StageLearner, StageOutcome, Stream,
};
use crate::run::MODEL_INIT;

/// Prompts in the pool.
pub(crate) const POOL: usize = 10;
/// Tokens per prompt.
pub(crate) const LENGTH: usize = 5;
/// Prompts chosen per image.
pub(crate) const TOP_N: usize = 5;
/// Weight of the key-query pull in the loss.
pub(crate) const PULL: f64 = 0.1;

pub(crate) struct L2p {
    backbone: Box<dyn Backbone>,
    pool: PromptPool,
    head: ClassifierHead,
    /// Prompts, keys, then the classifier: the optimizer's parameters.
    trainable: NamedVars,
    /// Scalars of the frozen backbone.
    pretrained: u64,
}

/// The prompt pool and the prompts chosen for the batch being run.
struct PromptPool {
    /// `[POOL, LENGTH, hidden]`.
    prompts: Var,
    /// `[POOL, hidden]`.
    keys: Var,
    /// The chosen prompts of the current batch, `[batch, TOP_N * LENGTH, hidden]`.
    chosen: Mutex<Option<Tensor>>,
}

impl Hooks for PromptPool {
    /// `[CLS, patches]` -> `[CLS, chosen prompts, patches]` before the first block.
    fn tokens(
        &self,
        layer: usize,
        tokens: Tensor,
        _ctx: &ForwardCtx,
    ) -> candle_core::Result<Tensor> {
        if layer != 0 {
            return Ok(tokens);
        }
        let chosen = self
            .chosen
            .lock()
            .expect("the pool is not poisoned")
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("no prompts chosen for this batch".into()))?;
        let t = tokens.dim(1)?;
        Tensor::cat(
            &[
                &tokens.narrow(1, 0, 1)?,
                &chosen,
                &tokens.narrow(1, 1, t - 1)?,
            ],
            1,
        )
    }
}

impl L2p {
    pub fn new(stage: &StageContext<'_, '_>) -> anyhow::Result<Self> {
        let spec = stage.spec;
        anyhow::ensure!(
            spec.method == "linear",
            "learner `l2p` trains its prompt pool over the frozen backbone, and method `{}` would \
             change it; give its entry `method: linear`",
            spec.method
        );
        exemplar_free(spec, "l2p")?;
        let mut backbone = stage.ctx.backbone.model.boxed();
        let hidden = backbone.info().hidden_size;
        let mut pretrained = 0u64;
        backbone.visit_params(&mut |_, t| {
            pretrained += t.elem_count() as u64;
            Ok(())
        })?;
        let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), stage.device());
        // Uniform in [-1, 1) as the reference code's `prompt_init: uniform`, for prompts and keys.
        let prompts = init
            .fork("prompts")
            .uniform((POOL, LENGTH, hidden), -1.0, 1.0)?;
        let keys = init.fork("keys").uniform((POOL, hidden), -1.0, 1.0)?;
        let head = ClassifierHead::new(hidden, spec.task.num_classes, &init.fork("head"))?;
        let mut trainable = NamedVars::default();
        trainable.push("prompt", prompts.clone());
        trainable.push("prompt_key", keys.clone());
        trainable.extend(head.params().clone());
        Ok(Self {
            backbone,
            pool: PromptPool {
                prompts,
                keys,
                chosen: Mutex::new(None),
            },
            head,
            trainable,
            pretrained,
        })
    }

    /// Chooses each image's prompts from its query; returns the summed cosine similarity of the
    /// chosen keys per image, `[batch]`.
    fn choose(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let query = self
            .backbone
            .forward_features(pixels, &NoHooks, &ForwardCtx::eval())?
            .detach();
        let similarity = unit_rows(&query)?.matmul(&unit_rows(self.pool.keys.as_tensor())?.t()?)?;
        let top = similarity
            .arg_sort_last_dim(false)?
            .narrow(1, 0, TOP_N)?
            .contiguous()?;
        let (b, _) = top.dims2()?;
        let hidden = self.pool.prompts.dim(2)?;
        let chosen = self
            .pool
            .prompts
            .as_tensor()
            .index_select(&top.flatten_all()?, 0)?
            .reshape((b, TOP_N * LENGTH, hidden))?;
        *self.pool.chosen.lock().expect("the pool is not poisoned") = Some(chosen);
        similarity.gather(&top, 1)?.sum(1)
    }
}

/// L2P reading the classes `classes` (training: the stage's; evaluation: every class seen).
struct Prompted<'a> {
    l2p: &'a L2p,
    classes: Range<usize>,
    /// The batch's summed key similarities, for the pull term of the loss.
    similarity: Mutex<Option<Tensor>>,
}

impl TrainModel for Prompted<'_> {
    fn trainable(&self) -> &NamedVars {
        &self.l2p.trainable
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        let similarity = self.l2p.choose(input)?;
        *self.similarity.lock().expect("not poisoned") = Some(similarity);
        let features = self
            .l2p
            .backbone
            .forward_features(input, &self.l2p.pool, ctx)?;
        self.l2p
            .head
            .forward(&features)?
            .narrow(1, self.classes.start, self.classes.len())
    }

    fn loss(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        let ce = stage_cross_entropy(logits, labels, &self.classes, label_smoothing)?;
        let similarity = self
            .similarity
            .lock()
            .expect("not poisoned")
            .take()
            .ok_or_else(|| candle_core::Error::Msg("loss before logits".into()))?;
        ce - (similarity.mean_all()? * PULL)?
    }
}

impl StageLearner for L2p {
    fn learn(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        train_data: &Arc<ImageDataset>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome> {
        let model = Prompted {
            l2p: self,
            classes: stream.stages[t].clone(),
            similarity: Mutex::new(None),
        };
        stage.train_stage(&model, train_data, t, progress)
    }

    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        _j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
        _stream: &Stream,
    ) -> anyhow::Result<Vec<u32>> {
        let model = Prompted {
            l2p: self,
            classes: 0..seen,
            similarity: Mutex::new(None),
        };
        stage.predictions(&model, eval)
    }

    fn state(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        Ok(self.trainable.tensors())
    }

    fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        Ok(self.trainable.load(state)?)
    }

    /// The pool, its keys and the classifier train; the backbone is frozen.
    fn counts(&self) -> (u64, u64) {
        let trainable = self.trainable.count() as u64;
        (trainable, self.pretrained + trainable)
    }

    /// The pool, the keys and the classifier as `l2p.safetensors`.
    fn save(&self, dir: &Path) -> anyhow::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("l2p.safetensors");
        self.trainable.save_safetensors(&path)?;
        Ok(std::fs::metadata(&path)?.len())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    /// The prompts of the keys nearest each query (by cosine) go in after the class token, and
    /// the similarity returned is the chosen keys' summed cosine.
    #[test]
    fn queries_choose_the_prompts_of_their_nearest_keys() {
        let device = Device::Cpu;
        let pool = PromptPool {
            prompts: Var::from_tensor(
                &Tensor::arange(0f32, 4.0, &device)
                    .unwrap()
                    .reshape((4, 1, 1))
                    .unwrap()
                    .broadcast_as((4, 1, 2))
                    .unwrap()
                    .contiguous()
                    .unwrap(),
            )
            .unwrap(),
            keys: Var::new(&[[1f32, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]], &device).unwrap(),
            chosen: Mutex::new(None),
        };
        let query = Tensor::new(&[[2f32, 0.1]], &device).unwrap();
        let similarity = unit_rows(&query)
            .unwrap()
            .matmul(&unit_rows(pool.keys.as_tensor()).unwrap().t().unwrap())
            .unwrap();
        let top = similarity
            .arg_sort_last_dim(false)
            .unwrap()
            .narrow(1, 0, 2)
            .unwrap();
        // Key 0 (same direction), then key 3 (45 degrees).
        assert_eq!(top.to_vec2::<u32>().unwrap(), [[0, 3]]);
        let chosen = pool
            .prompts
            .as_tensor()
            .index_select(&top.flatten_all().unwrap(), 0)
            .unwrap()
            .reshape((1, 2, 2))
            .unwrap();
        *pool.chosen.lock().unwrap() = Some(chosen);
        let tokens = Tensor::full(9f32, (1, 3, 2), &device).unwrap();
        let out = pool.tokens(0, tokens, &ForwardCtx::eval()).unwrap();
        assert_eq!(
            out.to_vec3::<f32>().unwrap(),
            [[[9.0, 9.0], [0.0, 0.0], [3.0, 3.0], [9.0, 9.0], [9.0, 9.0]]]
        );
        // Later blocks see the stream unchanged.
        let later = Tensor::zeros((1, 5, 2), DType::F32, &device).unwrap();
        assert_eq!(
            pool.tokens(1, later.clone(), &ForwardCtx::eval())
                .unwrap()
                .dims(),
            later.dims()
        );
    }
}
