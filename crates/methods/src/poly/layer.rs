use candle_core::{DType, Result, Tensor, Var};
use peftbench_backbones::Linear;
use peftbench_core::{ops, ForwardCtx, SeededInit};

/// PEFT's `EPS` in the router's normalisation `w / (sum + EPS)`.
pub const EPS: f64 = 1e-12;

/// Half-width of the uniform draw PEFT initialises routing logits from (`uniform_(-1e-3, 1e-3)`).
pub const LOGIT_INIT: f32 = 1e-3;

/// How one adapted projection weighs its skills.
pub enum Routing {
    /// Learned logits `[n_tasks, n_splits * n_skills]` (PEFT's `poly_router.module_logits`).
    Learned(Var),
    /// No router: one skill per split, used with weight exactly 1 (after MHR-μ's averaging).
    Fixed,
}

/// The skills and router of one adapted projection, in PEFT's layout: `n_skills` LoRA pairs of
/// rank `r`, each cut into `n_splits` heads along its input (A) and output (B) widths.
pub struct PolyLayer {
    /// `[n_splits, n_skills, in / n_splits, r]`, Kaiming-uniform with the head's width as fan-in
    /// (PEFT draws each `[r, in / n_splits]` block as `nn.Linear` would, then transposes it).
    pub a: Var,
    /// `[n_splits, n_skills, r, out / n_splits]`: zero (`init_weights`), so the adapted model
    /// starts as the frozen one, whatever the routing.
    pub b: Var,
    pub routing: Routing,
    pub r: usize,
    pub in_features: usize,
    pub out_features: usize,
    /// Set by a transfer to one new task: every example is that task, whatever its task id.
    pub single_task: bool,
}

impl PolyLayer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_features: usize,
        out_features: usize,
        r: usize,
        n_tasks: usize,
        n_skills: usize,
        n_splits: usize,
        zero_b: bool,
        init: &SeededInit,
    ) -> Result<Self> {
        let (d_in, d_out) = (in_features / n_splits, out_features / n_splits);
        let a = init
            .fork("poly_lora_A")
            .kaiming_uniform((n_splits, n_skills, d_in, r), d_in)?;
        let b = if zero_b {
            init.zeros((n_splits, n_skills, r, d_out))?
        } else {
            // PEFT's `init_weights=False`: each `[out / n_splits, r]` block as `nn.Linear`'s.
            init.fork("poly_lora_B")
                .kaiming_uniform((n_splits, n_skills, r, d_out), r)?
        };
        let logits = init.fork("poly_router").uniform(
            (n_tasks, n_splits * n_skills),
            -LOGIT_INIT,
            LOGIT_INIT,
        )?;
        Ok(Self {
            a,
            b,
            routing: Routing::Learned(logits),
            r,
            in_features,
            out_features,
            single_task: false,
        })
    }

    pub fn n_splits(&self) -> usize {
        self.a.dims()[0]
    }

    pub fn n_skills(&self) -> usize {
        self.a.dims()[1]
    }

    /// The routing logits, `None` once averaged.
    pub fn logits(&self) -> Option<&Var> {
        match &self.routing {
            Routing::Learned(logits) => Some(logits),
            Routing::Fixed => None,
        }
    }

    /// The mixing weights `[rows, n_splits, n_skills]`, each split's normalised over its skills
    /// (PEFT's `PolyRouter.forward`): sigmoid of the task's logits in evaluation, a relaxed
    /// Bernoulli sample (temperature 1) drawn from `ctx`'s seeded stream in training. `rows` is 1
    /// when every example shares its weights (evaluation of one task), else the batch.
    pub fn routing_weights(&self, batch: usize, ctx: &ForwardCtx) -> Result<Tensor> {
        let (splits, skills) = (self.n_splits(), self.n_skills());
        let logits = match &self.routing {
            Routing::Learned(logits) => logits.as_tensor(),
            Routing::Fixed => {
                return Tensor::ones((1, splits, skills), self.a.dtype(), self.a.device())
            }
        };
        let task_ids = if self.single_task {
            None
        } else {
            ctx.task_ids()
        };
        let n_tasks = logits.dim(0)?;
        let rows = match task_ids {
            Some(ids) => {
                // candle's index_select does not check bounds on every device: say what is wrong.
                let ids_host = ids.to_dtype(DType::U32)?.to_vec1::<u32>()?;
                if let Some(&bad) = ids_host.iter().find(|&&t| t as usize >= n_tasks) {
                    candle_core::bail!(
                        "poly: task id {bad} in the batch but the adapter has `n_tasks` {n_tasks}"
                    );
                }
                logits.index_select(&ids.to_device(logits.device())?, 0)?
            }
            // Single-task data: every example is task 0 (one row suffices in evaluation).
            None if ctx.is_train() => logits.narrow(0, 0, 1)?.repeat((batch, 1))?,
            None => logits.narrow(0, 0, 1)?,
        };
        let rows = rows.reshape(((), splits, skills))?;
        let z = if ctx.is_train() {
            // RelaxedBernoulli(temperature 1, logits).rsample() as torch draws it: logistic noise
            // from a uniform clamped to [eps, 1 - eps] of the dtype, then a sigmoid. (torch also
            // clips that sigmoid to [tiny, 1 - eps]; left out: it moves a weight by at most one
            // ulp and only cuts the gradient of saturated samples, whose gradient is ~0 anyway.)
            let eps = match rows.dtype() {
                DType::F64 => f64::EPSILON,
                DType::F32 => f64::from(f32::EPSILON),
                DType::BF16 => 0.0078125,
                _ => 0.0009765625,
            };
            let u = ctx
                .uniform(rows.shape(), rows.device())?
                .to_dtype(rows.dtype())?
                .clamp(eps, 1.0 - eps)?;
            let noise = (u.log()? - u.affine(-1.0, 1.0)?.log()?)?;
            candle_nn::ops::sigmoid(&(rows + noise)?)?
        } else {
            candle_nn::ops::sigmoid(&rows)?
        };
        let total = (z.sum_keepdim(2)? + EPS)?;
        z.broadcast_div(&total)
    }

    /// `base(x) + (1 / r) x A_t B_t`, where `A_t`, `B_t` mix the skills with the example's routing
    /// weights per split (PEFT's `einsum("bqs,qsdr->bqdr")` and the reshape that puts split `q`'s
    /// heads at input rows and output columns `q * width / n_splits ..`).
    pub fn forward(&self, x: &Tensor, base: &Linear, ctx: &ForwardCtx) -> Result<Tensor> {
        let batch = x.dim(0)?;
        let weights = self.routing_weights(batch, ctx)?;
        let (a, b) = self.mixed(&weights)?;
        let scaling = 1.0 / self.r as f64;
        if weights.dim(0)? == 1 {
            // One adapter for the whole batch: LoRA's fused projection (`a` `[r, in]`, `b`
            // `[out, r]`).
            let a = a.squeeze(0)?.t()?.contiguous()?;
            let b = b.squeeze(0)?.t()?.contiguous()?;
            return ops::lora_linear(x, &base.weight, base.bias.as_ref(), &a, &b, scaling);
        }
        let y = base.forward(x)?;
        let rows = x.elem_count() / (batch * self.in_features);
        let x3 = x.reshape((batch, rows, self.in_features))?;
        let delta = x3.matmul(&a)?.matmul(&b)?.reshape(y.shape())?;
        y + (delta * scaling)?
    }

    /// The mixed pairs for routing `weights` `[rows, n_splits, n_skills]`: A `[rows, in, r]` and
    /// B `[rows, r, out]`.
    pub fn mixed(&self, weights: &Tensor) -> Result<(Tensor, Tensor)> {
        let rows = weights.dim(0)?;
        let a = mix(weights, self.a.as_tensor())?
            .permute((1, 0, 2, 3))?
            .reshape((rows, self.in_features, self.r))?;
        let b = mix(weights, self.b.as_tensor())?
            .permute((1, 2, 0, 3))?
            .reshape((rows, self.r, self.out_features))?;
        Ok((a, b))
    }
}

/// `weights` `[rows, S, K]` times `skills` `[S, K, p, q]` summed over K: `[S, rows, p, q]`.
fn mix(weights: &Tensor, skills: &Tensor) -> Result<Tensor> {
    let (s, k, p, q) = skills.dims4()?;
    let rows = weights.dim(0)?;
    weights
        .transpose(0, 1)?
        .contiguous()?
        .matmul(&skills.reshape((s, k, p * q))?)?
        .reshape((s, rows, p, q))
}
