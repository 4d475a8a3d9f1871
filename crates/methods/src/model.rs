//! A backbone with a method attached and a classification head: the model a run trains.

use std::path::Path;

use candle_core::{Result, Tensor, D};
use peftbench_backbones::{Backbone, LinearSite};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::{find_method, Adaptation, ClassifierHead, Phase};

pub struct PeftModel {
    backbone: Box<dyn Backbone>,
    adaptation: Box<dyn Adaptation>,
    head: ClassifierHead,
    /// Method parameters, then the head: the optimizer's parameter order.
    trainable: NamedVars,
    method: String,
    pretrained_params: usize,
}

impl PeftModel {
    /// Attaches registry method `method` with `params` to `backbone` and adds a fresh head.
    /// All initial values come from `init` (derive it from the run seed).
    pub fn new(
        method: &str,
        params: &serde_json::Value,
        backbone: Box<dyn Backbone>,
        num_classes: usize,
        init: &SeededInit,
    ) -> anyhow::Result<Self> {
        Self::with_head(method, params, backbone, init, |hidden| {
            ClassifierHead::new(hidden, num_classes, &init.fork("head"))
        })
    }

    /// [`PeftModel::new`] for multi-task data: one head per task (`task_classes[t]` classes for
    /// task `t`), selected per example by its task id.
    pub fn new_per_task(
        method: &str,
        params: &serde_json::Value,
        backbone: Box<dyn Backbone>,
        task_classes: &[usize],
        init: &SeededInit,
    ) -> anyhow::Result<Self> {
        Self::with_head(method, params, backbone, init, |hidden| {
            ClassifierHead::per_task(hidden, task_classes, &init.fork("head"))
        })
    }

    fn with_head(
        method: &str,
        params: &serde_json::Value,
        mut backbone: Box<dyn Backbone>,
        init: &SeededInit,
        head: impl FnOnce(usize) -> Result<ClassifierHead>,
    ) -> anyhow::Result<Self> {
        let found = find_method(method).map_err(anyhow::Error::msg)?;
        let pretrained_params = backbone.num_params();
        found
            .check_backbone(params, backbone.info())
            .map_err(anyhow::Error::msg)?;
        let forked;
        let stream = if found.forks_own_init() {
            forked = init.fork(method);
            &forked
        } else {
            init
        };
        let adaptation = found.attach(params, backbone.as_mut(), stream)?;
        let head = head(backbone.info().hidden_size)?;
        let mut trainable = adaptation.trainable().clone();
        trainable.extend(head.params().clone());
        Ok(Self {
            backbone,
            adaptation,
            head,
            trainable,
            method: method.into(),
            pretrained_params,
        })
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    pub fn backbone_mut(&mut self) -> &mut dyn Backbone {
        self.backbone.as_mut()
    }

    pub fn adaptation(&self) -> &dyn Adaptation {
        self.adaptation.as_ref()
    }

    pub fn head(&self) -> &ClassifierHead {
        &self.head
    }

    /// Everything the optimizer updates: the method's parameters and the head.
    pub fn trainable(&self) -> &NamedVars {
        &self.trainable
    }

    pub fn trainable_count(&self) -> usize {
        self.trainable.count()
    }

    /// Pretrained scalars + what the method adds + the head (PEFT's `all params`).
    pub fn total_count(&self) -> usize {
        self.pretrained_params + self.adaptation.added_params() + self.head.params().count()
    }

    pub fn features(&self, input: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.backbone
            .forward_features(input, self.adaptation.as_ref(), ctx)
    }

    /// Class logits `[B, classes]`; a multi-task head reads each example's task from `ctx`.
    pub fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.head
            .forward_tasks(&self.features(input, ctx)?, ctx.task_ids())
    }

    /// Per-token features `[B, T, hidden]` with the method attached (token-level heads, MLM).
    pub fn sequence_features(&self, input: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.backbone
            .forward_sequence(input, self.adaptation.as_ref(), ctx)
    }

    /// Per-token logits `[B, T, classes]` (token classification: the head on every token).
    pub fn token_logits(&self, input: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.head.forward(&self.sequence_features(input, ctx)?)
    }

    /// Runs the calibration the method asks for (nothing for data-free methods): up to
    /// `batches` from the training data through the model in evaluation mode, with `loss(logits,
    /// labels)` back-propagated when the method wants gradients. See the crate docs.
    pub fn calibrate(
        &mut self,
        batches: &mut dyn Iterator<Item = anyhow::Result<(Tensor, Tensor)>>,
        loss: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> anyhow::Result<()> {
        let Some(request) = self.adaptation.calibration() else {
            return Ok(());
        };
        let ctx = ForwardCtx::eval();
        for batch in batches.take(request.batches) {
            let (input, labels) = batch?;
            let logits = self.logits(&input, &ctx)?;
            if request.gradients {
                let grads = loss(&logits, &labels)?.backward()?;
                self.adaptation.observe_calibration_batch(Some(&grads))?;
            } else {
                self.adaptation.observe_calibration_batch(None)?;
            }
        }
        self.adaptation.finish_calibration()?;
        self.refresh_trainable();
        Ok(())
    }

    /// The method's training phases (empty = one ordinary phase).
    pub fn phases(&self) -> Vec<Phase> {
        self.adaptation.phases()
    }

    /// Switches to phase `index`; the trainable set may change (the head always stays).
    pub fn enter_phase(&mut self, index: usize) -> anyhow::Result<()> {
        self.adaptation.enter_phase(index)?;
        self.refresh_trainable();
        Ok(())
    }

    /// Carries the trained multi-task adaptation to one held-out task (see
    /// [`crate::Transfer`]) with a fresh `num_classes` head drawn from `init`: afterwards the
    /// model is a single-task model and trains what the transfer leaves trainable, plus the head.
    pub fn transfer(
        &mut self,
        transfer: crate::Transfer,
        num_classes: usize,
        init: &SeededInit,
    ) -> anyhow::Result<()> {
        self.adaptation.transfer(transfer)?;
        self.head = ClassifierHead::new(
            self.backbone.info().hidden_size,
            num_classes,
            &init.fork("head"),
        )?;
        self.refresh_trainable();
        Ok(())
    }

    fn refresh_trainable(&mut self) {
        let mut trainable = self.adaptation.trainable().clone();
        trainable.extend(self.head.params().clone());
        self.trainable = trainable;
    }

    /// Rebuilds a trained model from an adapter folder (HF PEFT's format or peftbench's own, see
    /// [`crate::peft_format::load_adapter`]): the method and its parameters come from the folder,
    /// the number of classes from the saved head, and every saved tensor must be used.
    pub fn from_adapter(dir: &Path, backbone: Box<dyn Backbone>) -> anyhow::Result<Self> {
        let loaded = crate::peft_format::load_adapter(dir)?;
        let mut loaded = loaded;
        let bias = loaded.tensors.get("classifier.bias").ok_or_else(|| {
            anyhow::anyhow!("{}: no classifier head (`classifier.bias`)", dir.display())
        })?;
        let num_classes = bias.dim(D::Minus1)?;
        // A multi-task head: one head per task, with each task's class count beside it.
        let task_classes = match loaded.tensors.remove(crate::head::PER_TASK_CLASSES) {
            Some(counts) => Some(
                counts
                    .to_dtype(candle_core::DType::U32)?
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|c| c as usize)
                    .collect::<Vec<_>>(),
            ),
            None => None,
        };
        // Values are overwritten below; the init only fixes device and dtype.
        let weight = &backbone.linear(0, LinearSite::Query).weight;
        let init = SeededInit::new(0, weight.device()).with_dtype(weight.dtype());
        // A MAD-X adapter keeps its language side in its own folder (read by `restore`); the path
        // its config names is where that side came from, which need not exist any more.
        let mut params = loaded.params.clone();
        if loaded.method == "madx" && dir.join(crate::madx::LANGUAGE_ADAPTER_FILE).is_file() {
            params["language_adapter"] = serde_json::Value::Null;
        }
        let built = match &task_classes {
            Some(classes) => Self::new_per_task(&loaded.method, &params, backbone, classes, &init),
            None => Self::new(&loaded.method, &params, backbone, num_classes, &init),
        };
        let mut model = built.map_err(|e| anyhow::anyhow!("{}: {e:#}", dir.display()))?;
        let restored = model
            .adaptation
            .restore(dir, &loaded.tensors)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", dir.display()))?;
        model.refresh_trainable();
        let set: std::collections::BTreeSet<&str> =
            restored.set.iter().map(String::as_str).collect();
        let mut expected: std::collections::BTreeSet<&str> = model
            .trainable
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| !set.contains(name))
            .collect();
        expected.extend(restored.used.iter().map(String::as_str));
        let unused: Vec<&String> = loaded
            .tensors
            .keys()
            .filter(|k| !expected.contains(k.as_str()))
            .collect();
        if !unused.is_empty() {
            anyhow::bail!(
                "{}: tensors that method `{}` does not have: {unused:?}",
                dir.display(),
                loaded.method
            );
        }
        for p in model
            .trainable
            .iter()
            .filter(|p| !set.contains(p.name.as_str()))
        {
            let t = loaded
                .tensors
                .get(&p.name)
                .ok_or_else(|| anyhow::anyhow!("{}: missing tensor `{}`", dir.display(), p.name))?;
            p.var
                .set(&t.to_device(p.var.device())?.to_dtype(p.var.dtype())?)?;
        }
        Ok(model)
    }

    /// Saves the trained adapter and head into `dir`; returns the bytes written on disk.
    pub fn save(&self, dir: &Path, base_model: &str) -> anyhow::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let files = self.adaptation.save(dir, &self.head, base_model)?;
        let mut bytes = 0;
        for f in files {
            bytes += std::fs::metadata(&f)?.len();
        }
        Ok(bytes)
    }
}

/// A model the trainer can train directly: the method's parameters and the head, logits per
/// example.
impl peftbench_train::TrainModel for PeftModel {
    fn trainable(&self) -> &NamedVars {
        PeftModel::trainable(self)
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        PeftModel::logits(self, input, ctx)
    }

    /// The method's own rates (Poly/MHR's routing); the head trains at the recipe's.
    fn lr_multiplier(&self, name: &str) -> f64 {
        self.adaptation.lr_multiplier(name)
    }

    /// Per-token labels `[B, T]` (token classification) get the head on every token.
    fn batch_logits(&self, batch: &peftbench_train::Batch, ctx: &ForwardCtx) -> Result<Tensor> {
        if batch.labels.rank() == 2 {
            self.token_logits(&batch.inputs, ctx)
        } else {
            PeftModel::logits(self, &batch.inputs, ctx)
        }
    }
}
