//! A pre-norm block's residual branches, each as one graph node: `attention(LN(x))` (norm, q/k/v
//! projections, attention, output projection) and `mlp(LN(x))` (norm, fc1, exact GELU, fc2).
//!
//! Composed from the per-op kernels, a branch is 8 (attention) or 6 (MLP) graph nodes, plus the
//! reshapes between them, and candle's backward pass gives every edge a zero-filled gradient
//! buffer and an add: per block, about a dozen activation-sized memsets and adds that PyTorch's
//! autograd does not make (it moves a first gradient instead of adding it to zeros). Here the
//! branch's backward runs the same kernels' backward passes back to back on buffers it owns.
//!
//! Weights may be frozen or trained. Trained ones (full fine-tuning, BitFit's biases and norms)
//! enter the graph as one flat tensor, their concatenation, which is the node's second input: its
//! gradient, the parameters' gradients end to end, is how they reach the parameters. The kernel
//! itself reads every weight from the parameter tensors, so the concatenation is only a
//! parameter-sized copy per step. A projection may carry a LoRA update (LoRA without dropout),
//! which the node runs as [`super::lora_linear`] does: against the merged weight, with the same
//! gradients for A and B.
//!
//! With `residual`, the node also adds the branch to the stream it branched from (`x + branch(x)`),
//! for a branch whose output no method changes: that removes the add and, in the backward pass,
//! the zero-filled buffers and adds of its two edges.
//!
//! The arithmetic is the composed path's, op for op and in the same order (including the order in
//! which the three projections' input gradients are summed), so results are the same bits; tests
//! here and the methods' `fused_sublayers` test hold the two paths to that. The branch also keeps
//! less for its backward pass: with frozen weights the attention branch keeps the norm's row
//! statistics, q, k, v and the probabilities (not the normalised input or the attention output),
//! the MLP branch the statistics and fc1's output.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor};

use super::attention::Attention;
use super::gelu::GeluErf;
use super::layer_norm::LayerNorm;
use super::linear::{by_dtype, by_tensor_dtype, Linear};
use super::lora::LoraLinear;
use super::{contiguous, par_add_into, tensor, with_slice, Real};

/// Environment variable that turns the fused branches off (`0`): every block then runs the
/// composed ops, for comparing speed; the numbers are the same either way.
pub const FUSED_SUBLAYERS_ENV: &str = "PEFTBENCH_FUSED_SUBLAYERS";

/// 0: not decided yet (read the environment); 1: fused; 2: composed.
static FUSED: AtomicU8 = AtomicU8::new(0);

/// Whether branches run fused: on unless `PEFTBENCH_FUSED_SUBLAYERS=0` or [`set_fused_sublayers`]
/// turned them off. A value other than `0` or `1` counts as on; [`fused_sublayers_from_env`]
/// refuses it with a message (the harness checks it at start-up).
pub fn fused_sublayers() -> bool {
    match FUSED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = fused_sublayers_from_env().unwrap_or(true);
            FUSED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
    }
}

/// `PEFTBENCH_FUSED_SUBLAYERS` read: `1` or unset = fused, `0` = composed, anything else an error
/// that names the variable and the values it takes.
pub fn fused_sublayers_from_env() -> std::result::Result<bool, String> {
    parse_fused_sublayers(std::env::var(FUSED_SUBLAYERS_ENV).ok().as_deref())
}

fn parse_fused_sublayers(value: Option<&str>) -> std::result::Result<bool, String> {
    match value.map(str::trim) {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(other) => Err(format!(
            "{FUSED_SUBLAYERS_ENV}={other:?}: use 1 (fused residual branches, the default) or 0 \
             (every block composed; the numbers are the same)"
        )),
    }
}

/// Turns the fused branches on or off for the whole process (tests compare the two paths).
pub fn set_fused_sublayers(on: bool) {
    FUSED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// A projection in PyTorch's `[out, in]` layout, with a LoRA update when `low_rank` is given.
#[derive(Debug, Clone, Copy)]
pub struct Projection<'a> {
    pub weight: &'a Tensor,
    pub bias: Option<&'a Tensor>,
    pub low_rank: Option<LowRank<'a>>,
}

/// A LoRA update `scaling * B A` of a frozen projection (`a` `[r, in]`, `b` `[out, r]`), run as
/// [`super::lora_linear`] runs it: against the merged weight, with the same gradients.
#[derive(Debug, Clone, Copy)]
pub struct LowRank<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub scaling: f64,
}

/// A layer norm over the last dimension.
#[derive(Debug, Clone, Copy)]
pub struct NormParams<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub eps: f64,
}

/// `out(attention(q(h), k(h), v(h)))` with `h = LN(x)`, `x` `[batch, tokens, hidden]`, `heads`
/// heads, no mask; plus `x` when `residual`. CPU f32/f64, every parameter of `x`'s dtype.
pub fn attention_sublayer(
    x: &Tensor,
    norm: NormParams<'_>,
    [q, k, v, out]: [Projection<'_>; 4],
    heads: usize,
    residual: bool,
) -> Result<Tensor> {
    let (batch, tokens, hidden) = x.dims3()?;
    if heads == 0 || !hidden.is_multiple_of(heads) {
        candle_core::bail!("attention sublayer: {heads} heads for width {hidden}");
    }
    let params = Params::new(norm, &[q, k, v, out], &[(hidden, hidden); 4], hidden)?;
    let op = AttentionSublayer {
        batch,
        tokens,
        hidden,
        heads,
        residual,
        keep: x.track_op() || params.any_trained(),
        params,
        saved: Mutex::new(None),
    };
    apply(x, op)
}

/// `fc2(GELU(fc1(LN(x))))` with the exact (erf) GELU, `x` `[batch, tokens, hidden]`; plus `x`
/// when `residual`. CPU f32/f64, every parameter of `x`'s dtype.
pub fn mlp_sublayer(
    x: &Tensor,
    norm: NormParams<'_>,
    fc1: Projection<'_>,
    fc2: Projection<'_>,
    residual: bool,
) -> Result<Tensor> {
    let hidden = x.dim(candle_core::D::Minus1)?;
    let inner = fc1.weight.dim(0)?;
    let params = Params::new(
        norm,
        &[fc1, fc2],
        &[(hidden, inner), (inner, hidden)],
        hidden,
    )?;
    let op = MlpSublayer {
        hidden,
        inner,
        residual,
        keep: x.track_op() || params.any_trained(),
        params,
        saved: Mutex::new(None),
    };
    apply(x, op)
}

/// A branch op on `x`: one input when every parameter is frozen, else two, the second the
/// trained parameters' concatenation (what carries their gradients back).
fn apply<Op>(x: &Tensor, op: Op) -> Result<Tensor>
where
    Op: Branch + CustomOp1 + CustomOp2 + Send + Sync + 'static,
{
    let x = x.contiguous()?;
    match op.params().packed()? {
        Some(trained) => x.apply_op2(&trained, op),
        None => x.apply_op1(op),
    }
}

/// The parameters of a branch: norm weight and bias, then each projection's weight, bias (where
/// it has one) and LoRA's A and B (where it has them), contiguous. A parameter is trained when the
/// graph tracks it.
struct Params {
    eps: f64,
    tensors: Vec<Tensor>,
    slots: Vec<Slots>,
}

/// A projection's sizes and where its tensors are in [`Params::tensors`].
#[derive(Clone, Copy)]
struct Slots {
    inp: usize,
    out: usize,
    weight: usize,
    bias: Option<usize>,
    /// A's and B's indices, the rank and the scaling.
    low_rank: Option<(usize, usize, usize, f64)>,
}

/// One projection's elements.
struct ProjectionElems<'s, T> {
    weight: &'s [T],
    bias: Option<&'s [T]>,
    /// A and B.
    low_rank: Option<(&'s [T], &'s [T])>,
}

/// Each parameter's gradient by its index in [`Params::tensors`]; `None` for frozen ones.
type ParamGrads<T> = Vec<Option<Vec<T>>>;

impl Params {
    /// Checks shapes: `dims[i]` is projection `i`'s `(in, out)`.
    fn new(
        norm: NormParams<'_>,
        projections: &[Projection<'_>],
        dims: &[(usize, usize)],
        hidden: usize,
    ) -> Result<Self> {
        if norm.weight.dims() != [hidden] || norm.bias.dims() != [hidden] {
            candle_core::bail!(
                "fused sublayer: norm {:?} / {:?} for width {hidden}",
                norm.weight.dims(),
                norm.bias.dims()
            );
        }
        let mut tensors = vec![norm.weight.contiguous()?, norm.bias.contiguous()?];
        let mut slots = Vec::new();
        for (p, &(inp, out)) in projections.iter().zip(dims) {
            if p.weight.dims() != [out, inp] || p.bias.is_some_and(|b| b.dims() != [out]) {
                candle_core::bail!(
                    "fused sublayer: projection {:?} (bias {:?}) where [{out}, {inp}] is expected",
                    p.weight.dims(),
                    p.bias.map(|b| b.dims().to_vec())
                );
            }
            let mut push = |t: &Tensor| -> Result<usize> {
                tensors.push(t.contiguous()?);
                Ok(tensors.len() - 1)
            };
            let weight = push(p.weight)?;
            let bias = p.bias.map(&mut push).transpose()?;
            let low_rank = match p.low_rank {
                Some(lr) => {
                    let rank = lr.a.dim(0)?;
                    if lr.a.dims() != [rank, inp] || lr.b.dims() != [out, rank] {
                        candle_core::bail!(
                            "fused sublayer: LoRA A {:?}, B {:?} for a [{out}, {inp}] projection",
                            lr.a.dims(),
                            lr.b.dims()
                        );
                    }
                    if p.weight.track_op() || p.bias.is_some_and(Tensor::track_op) {
                        candle_core::bail!("fused sublayer: a LoRA's base weight must be frozen");
                    }
                    Some((push(lr.a)?, push(lr.b)?, rank, lr.scaling))
                }
                None => None,
            };
            slots.push(Slots {
                inp,
                out,
                weight,
                bias,
                low_rank,
            });
        }
        Ok(Self {
            eps: norm.eps,
            tensors,
            slots,
        })
    }

    fn norm(&self, dim: usize) -> LayerNorm {
        LayerNorm { dim, eps: self.eps }
    }

    fn trained(&self, index: usize) -> bool {
        self.tensors[index].track_op()
    }

    fn any_trained(&self) -> bool {
        self.tensors.iter().any(Tensor::track_op)
    }

    /// Whether projection `i`'s backward pass needs its input: it trains its weight or has a LoRA.
    fn needs_input(&self, i: usize) -> bool {
        let slots = self.slots[i];
        self.trained(slots.weight) || slots.low_rank.is_some()
    }

    /// Projection `i`'s LoRA kernel, when it has one.
    fn lora(&self, i: usize) -> Option<LoraLinear> {
        let slots = self.slots[i];
        slots.low_rank.map(|(_, _, rank, scaling)| LoraLinear {
            in_features: slots.inp,
            out_features: slots.out,
            rank,
            scaling,
            weight: self.tensors[slots.weight].clone(),
            bias: slots.bias.map(|b| self.tensors[b].clone()),
        })
    }

    fn linear(&self, i: usize) -> Linear {
        Linear {
            in_features: self.slots[i].inp,
            out_features: self.slots[i].out,
        }
    }

    /// Projection `i` of `x`: [`Linear::forward`], or [`LoraLinear::forward`] with a LoRA.
    fn project<T: Real>(&self, i: usize, p: &ProjectionElems<'_, T>, x: &[T]) -> Vec<T> {
        match (self.lora(i), p.low_rank) {
            (Some(lora), Some((a, b))) => lora.forward(x, a, b, p.weight, p.bias),
            _ => self.linear(i).forward(x, p.weight, p.bias),
        }
    }

    /// Projection `i`'s input gradient for output gradient `dy`, with its trained parameters'
    /// gradients into `grads` (`x`, its input, is kept when [`Params::needs_input`]).
    fn project_backward<T: Real>(
        &self,
        i: usize,
        p: &ProjectionElems<'_, T>,
        dy: &[T],
        x: Option<&[T]>,
        grads: &mut ParamGrads<T>,
    ) -> Vec<T> {
        let slots = self.slots[i];
        if let (Some(lora), Some((a, b)), Some((ai, bi, _, _))) =
            (self.lora(i), p.low_rank, slots.low_rank)
        {
            let x = x.expect("a LoRA projection's input is kept");
            let want = (true, self.trained(ai), self.trained(bi));
            let (dx, da, db) = lora.backward((x, a, b), p.weight, dy, want);
            grads[ai] = da;
            grads[bi] = db;
            return dx.expect("the input gradient was asked for");
        }
        let lin = self.linear(i);
        if self.trained(slots.weight) {
            let x = x.expect("the input of a trained projection is kept");
            grads[slots.weight] = Some(lin.grad_weight(dy, x));
        }
        if let Some(b) = slots.bias.filter(|&b| self.trained(b)) {
            grads[b] = Some(lin.grad_bias(dy));
        }
        lin.grad_input(dy, p.weight)
    }

    /// The trained parameters flattened and concatenated in order, or `None` if all are frozen.
    fn packed(&self) -> Result<Option<Tensor>> {
        let trained: Vec<Tensor> = self
            .tensors
            .iter()
            .filter(|t| t.track_op())
            .map(Tensor::flatten_all)
            .collect::<Result<_>>()?;
        if trained.is_empty() {
            return Ok(None);
        }
        Tensor::cat(&trained, 0).map(Some)
    }

    /// The gradient of [`Params::packed`] from each trained parameter's gradient.
    fn pack_grads<T: Real>(&self, grads: ParamGrads<T>) -> Result<Option<Tensor>> {
        let mut flat = Vec::new();
        for (t, g) in self.tensors.iter().zip(grads) {
            match (t.track_op(), g) {
                (true, Some(g)) => flat.extend(g),
                (false, None) => {}
                _ => candle_core::bail!("fused sublayer: a gradient for each trained parameter"),
            }
        }
        if flat.is_empty() {
            return Ok(None);
        }
        let len = flat.len();
        tensor(flat, &[len]).map(Some)
    }

    /// `f(norm (weight, bias), projections)` on the elements.
    fn with<T: Real, R>(
        &self,
        f: impl FnOnce((&[T], &[T]), &[ProjectionElems<'_, T>]) -> R,
    ) -> Result<R> {
        let guards: Vec<_> = self
            .tensors
            .iter()
            .map(|t| t.storage_and_layout())
            .collect();
        let mut slices = Vec::with_capacity(guards.len());
        for (storage, layout) in &guards {
            match &**storage {
                Storage::Cpu(cpu) => slices.push(contiguous::<T>(cpu, layout, "fused sublayer")?),
                _ => candle_core::bail!("fused sublayer: the kernel runs on the CPU only"),
            }
        }
        let norm = (slices[0], slices[1]);
        let projections: Vec<_> = self
            .slots
            .iter()
            .map(|s| ProjectionElems {
                weight: slices[s.weight],
                bias: s.bias.map(|b| slices[b]),
                low_rank: s.low_rank.map(|(a, b, _, _)| (slices[a], slices[b])),
            })
            .collect();
        Ok(f(norm, &projections))
    }

    /// The norm's backward pass on `dh`, from its input `x`, the forward pass's `stats` and its
    /// weight `w`: `dx` (when wanted) and the norm's gradients into `grads`.
    fn norm_backward<T: Real>(
        &self,
        norm: &LayerNorm,
        (x, stats, w): (&[T], &[T], &[T]),
        dh: &[T],
        want_dx: bool,
        grads: &mut ParamGrads<T>,
    ) -> Option<Vec<T>> {
        let want_params = self.trained(0) || self.trained(1);
        let (dx, dw, db) = norm.backward((x, Some(stats)), w, dh, want_dx, want_params);
        if self.trained(0) {
            grads[0] = Some(dw);
        }
        if self.trained(1) {
            grads[1] = Some(db);
        }
        dx
    }
}

/// The node's gradients, `(dx, d_trained)`, from the branch's input gradient `dx` and the trained
/// parameters' `grads`. With `residual` the stream's own gradient `dy` joins the branch's: candle
/// accumulates `(0 + dy) + dx` for the composed add, the same sum.
fn node_grads<T: Real>(
    params: &Params,
    residual: bool,
    (x, grad): (&Tensor, &Tensor),
    dx: Option<Vec<T>>,
    grads: ParamGrads<T>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dx = match dx {
        Some(mut dx) if residual => {
            with_slice::<T, _>(grad, "fused sublayer backward", |dy| {
                par_add_into(&mut dx, dy)
            })?;
            Some(dx)
        }
        dx => dx,
    };
    let dx = dx.map(|dx| tensor(dx, x.dims())).transpose()?;
    Ok((dx, params.pack_grads(grads)?))
}

/// What [`apply`] needs of a branch op.
trait Branch {
    fn params(&self) -> &Params;
}

/// What the attention branch keeps for its backward pass.
struct AttentionSaved {
    /// The norm's row statistics (`[rows, 2]`: mean, `1 / sqrt(var + eps)`).
    stats: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
    /// The normalised input, when a q/k/v weight is trained.
    normed: Option<Tensor>,
    /// The attention output, when the output projection's weight is trained.
    context: Option<Tensor>,
}

struct AttentionSublayer {
    batch: usize,
    tokens: usize,
    hidden: usize,
    heads: usize,
    /// Whether the output is `x + branch(x)`.
    residual: bool,
    params: Params,
    saved: Mutex<Option<AttentionSaved>>,
    /// Whether to keep what the backward pass needs (something is tracked).
    keep: bool,
}

impl Branch for AttentionSublayer {
    fn params(&self) -> &Params {
        &self.params
    }
}

impl AttentionSublayer {
    fn attention(&self) -> Attention {
        Attention {
            batch: self.batch,
            queries: self.tokens,
            keys: self.tokens,
            hidden: self.hidden,
            heads: self.heads,
            mask: None,
            probs: Mutex::new(None),
        }
    }

    fn run<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<T>(s, l, "attention sublayer")?;
        let params = &self.params;
        let norm = params.norm(self.hidden);
        let keep_normed = (0..3).any(|i| params.needs_input(i));
        let keep_context = params.needs_input(3);
        let (out, saved) = params.with::<T, _>(|(nw, nb), p| {
            let (h, stats) = norm.forward_keeping_stats(x, nw, nb);
            let q = params.project(0, &p[0], &h);
            let k = params.project(1, &p[1], &h);
            let v = params.project(2, &p[2], &h);
            let (context, probs) = self.attention().forward(&q, &k, &v, None);
            let mut out = params.project(3, &p[3], &context);
            if self.residual {
                par_add_into(&mut out, x);
            }
            let normed = keep_normed.then_some(h);
            let context = keep_context.then_some(context);
            (out, (stats, q, k, v, probs, normed, context))
        })?;
        if self.keep {
            let (b, t, d, heads) = (self.batch, self.tokens, self.hidden, self.heads);
            let (stats, q, k, v, probs, normed, context) = saved;
            let activation = |v: Vec<T>| tensor(v, &[b, t, d]);
            *self.saved.lock().expect("attention sublayer lock") = Some(AttentionSaved {
                stats: tensor(stats, &[b * t, 2])?,
                q: activation(q)?,
                k: activation(k)?,
                v: activation(v)?,
                probs: tensor(probs, &[b, heads, t, t])?,
                normed: normed.map(activation).transpose()?,
                context: context.map(activation).transpose()?,
            });
        }
        Ok((T::to_cpu_storage_owned(out), l.shape().clone()))
    }

    fn grads<T: Real>(
        &self,
        x: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let name = "attention sublayer backward";
        let Some(saved) = self.saved.lock().expect("attention sublayer lock").take() else {
            candle_core::bail!("{name}: no saved forward pass (backward ran twice?)");
        };
        let norm = self.params.norm(self.hidden);
        let mut grads: ParamGrads<T> = vec![None; self.params.tensors.len()];
        let optional = |t: &Option<Tensor>| t.as_ref().map(|t| t.contiguous()).transpose();
        let (normed, context) = (optional(&saved.normed)?, optional(&saved.context)?);
        let stats = saved.stats.flatten_all()?.to_vec1::<T>()?;
        let dx = with_slice::<T, _>(grad, name, |dy| {
            with_slice::<T, _>(x, name, |xs| {
                with_slice::<T, _>(&saved.q, name, |qs| {
                    with_slice::<T, _>(&saved.k, name, |ks| {
                        with_slice::<T, _>(&saved.v, name, |vs| {
                            with_slice::<T, _>(&saved.probs, name, |ps| {
                                with_optional::<T, _>(normed.as_ref(), |normed| {
                                    with_optional::<T, _>(context.as_ref(), |context| {
                                        self.params.with::<T, _>(|(nw, _), p| {
                                            let params = &self.params;
                                            let d_context = params.project_backward(
                                                3, &p[3], dy, context, &mut grads,
                                            );
                                            let (dq, dk, dv) = self.attention().backward(
                                                (qs, ks, vs),
                                                ps,
                                                &d_context,
                                                (true, true, true),
                                            );
                                            drop(d_context);
                                            let expect = "every gradient was asked for";
                                            let (dq, dk, dv) = (
                                                dq.expect(expect),
                                                dk.expect(expect),
                                                dv.expect(expect),
                                            );
                                            // candle's backward pass reaches the three projections in
                                            // reverse order of use (v, k, q) and sums their input
                                            // gradients in that order: so does this.
                                            let mut back = |i: usize, d: &[T]| {
                                                params.project_backward(
                                                    i, &p[i], d, normed, &mut grads,
                                                )
                                            };
                                            let mut dh = back(2, &dv);
                                            par_add_into(&mut dh, &back(1, &dk));
                                            par_add_into(&mut dh, &back(0, &dq));
                                            params.norm_backward(
                                                &norm,
                                                (xs, &stats, nw),
                                                &dh,
                                                x.track_op(),
                                                &mut grads,
                                            )
                                        })
                                    })
                                })
                            })
                        })
                    })
                })
            })
        })?????????;
        node_grads(&self.params, self.residual, (x, grad), dx, grads)
    }
}

/// `f(Some(elements))` of a CPU tensor, or `f(None)`.
fn with_optional<T: Real, R>(t: Option<&Tensor>, f: impl FnOnce(Option<&[T]>) -> R) -> Result<R> {
    match t {
        Some(t) => with_slice::<T, _>(t, "fused sublayer backward", |s| f(Some(s))),
        None => Ok(f(None)),
    }
}

/// What the MLP branch keeps for its backward pass.
struct MlpSaved {
    /// The norm's row statistics (`[rows, 2]`: mean, `1 / sqrt(var + eps)`).
    stats: Tensor,
    /// fc1's output, GELU's input.
    pre: Tensor,
    /// The normalised input, when fc1's weight is trained.
    normed: Option<Tensor>,
    /// GELU's output, when fc2's weight is trained.
    activated: Option<Tensor>,
}

struct MlpSublayer {
    hidden: usize,
    inner: usize,
    /// Whether the output is `x + branch(x)`.
    residual: bool,
    params: Params,
    saved: Mutex<Option<MlpSaved>>,
    /// Whether to keep what the backward pass needs (something is tracked).
    keep: bool,
}

impl Branch for MlpSublayer {
    fn params(&self) -> &Params {
        &self.params
    }
}

impl MlpSublayer {
    fn run<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<T>(s, l, "mlp sublayer")?;
        let params = &self.params;
        let norm = params.norm(self.hidden);
        let keep_normed = params.needs_input(0);
        let keep_activated = params.needs_input(1);
        let (out, (stats, pre, normed, activated)) = params.with::<T, _>(|(nw, nb), p| {
            let (h, stats) = norm.forward_keeping_stats(x, nw, nb);
            let pre = params.project(0, &p[0], &h);
            let activated = GeluErf::forward(&pre);
            let mut out = params.project(1, &p[1], &activated);
            if self.residual {
                par_add_into(&mut out, x);
            }
            (
                out,
                (
                    stats,
                    pre,
                    keep_normed.then_some(h),
                    keep_activated.then_some(activated),
                ),
            )
        })?;
        if self.keep {
            let rows = pre.len() / self.inner.max(1);
            let (d, f) = (self.hidden, self.inner);
            *self.saved.lock().expect("mlp sublayer lock") = Some(MlpSaved {
                stats: tensor(stats, &[rows, 2])?,
                pre: tensor(pre, &[rows, f])?,
                normed: normed.map(|v| tensor(v, &[rows, d])).transpose()?,
                activated: activated.map(|v| tensor(v, &[rows, f])).transpose()?,
            });
        }
        Ok((T::to_cpu_storage_owned(out), l.shape().clone()))
    }

    fn grads<T: Real>(
        &self,
        x: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let name = "mlp sublayer backward";
        let Some(saved) = self.saved.lock().expect("mlp sublayer lock").take() else {
            candle_core::bail!("{name}: no saved forward pass (backward ran twice?)");
        };
        let norm = self.params.norm(self.hidden);
        let mut grads: ParamGrads<T> = vec![None; self.params.tensors.len()];
        let stats = saved.stats.flatten_all()?.to_vec1::<T>()?;
        let dx = with_slice::<T, _>(grad, name, |dy| {
            with_slice::<T, _>(x, name, |xs| {
                with_slice::<T, _>(&saved.pre, name, |pre| {
                    with_optional::<T, _>(saved.normed.as_ref(), |normed| {
                        with_optional::<T, _>(saved.activated.as_ref(), |activated| {
                            self.params.with::<T, _>(|(nw, _), p| {
                                let params = &self.params;
                                let mut d_pre =
                                    params.project_backward(1, &p[1], dy, activated, &mut grads);
                                GeluErf::backward_in_place(pre, &mut d_pre);
                                let dh =
                                    params.project_backward(0, &p[0], &d_pre, normed, &mut grads);
                                drop(d_pre);
                                params.norm_backward(
                                    &norm,
                                    (xs, &stats, nw),
                                    &dh,
                                    x.track_op(),
                                    &mut grads,
                                )
                            })
                        })
                    })
                })
            })
        })??????;
        node_grads(&self.params, self.residual, (x, grad), dx, grads)
    }
}

/// `CustomOp1` (all parameters frozen) and `CustomOp2` (the second input is the trained
/// parameters' concatenation, which the forward pass does not read: the kernel reads the
/// parameters themselves) for a branch op with `run::<T>(storage, layout)` and
/// `grads::<T>(x, grad) -> (dx, d_trained)`.
macro_rules! branch_op {
    ($op:ty, $name:literal) => {
        impl CustomOp1 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
                by_dtype!(s, self.run::<f32>(s, l), self.run::<f64>(s, l))
            }

            fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
                let (dx, _) = by_tensor_dtype!(
                    grad,
                    self.grads::<f32>(x, grad)?,
                    self.grads::<f64>(x, grad)?
                );
                Ok(dx)
            }
        }

        impl CustomOp2 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s: &CpuStorage,
                l: &Layout,
                _trained: &CpuStorage,
                _trained_layout: &Layout,
            ) -> Result<(CpuStorage, Shape)> {
                by_dtype!(s, self.run::<f32>(s, l), self.run::<f64>(s, l))
            }

            fn bwd(
                &self,
                x: &Tensor,
                _trained: &Tensor,
                _res: &Tensor,
                grad: &Tensor,
            ) -> Result<(Option<Tensor>, Option<Tensor>)> {
                by_tensor_dtype!(grad, self.grads::<f32>(x, grad), self.grads::<f64>(x, grad))
            }
        }
    };
}

branch_op!(AttentionSublayer, "peftbench-attention-sublayer");
branch_op!(MlpSublayer, "peftbench-mlp-sublayer");

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;
    use crate::{ops, ForwardCtx, SeededInit};

    const HIDDEN: usize = 24;
    const INNER: usize = 40;

    fn random(init: &SeededInit, name: &str, shape: &[usize]) -> Tensor {
        init.fork(name)
            .normal(shape, 0.5)
            .unwrap()
            .as_tensor()
            .detach()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    /// Which parameters a test block trains.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Training {
        Frozen,
        All,
        /// BitFit's choice, with the norms.
        BiasesAndNorms,
        /// Frozen weights, LoRA on the query, value, output and fc2 projections.
        Lora,
    }

    const LORA_SCALING: f64 = 1.5;

    /// Weights of one block, `{name}.w` `[out, in]` and `{name}.b` `[out]`; the trained ones are
    /// variables, in `vars` in name order.
    struct Block {
        tensors: std::collections::BTreeMap<String, Tensor>,
        /// LoRA's A and B by projection.
        lora: std::collections::BTreeMap<&'static str, (Tensor, Tensor)>,
        vars: Vec<Var>,
    }

    impl Block {
        fn new(seed: u64, training: Training) -> Self {
            let init = SeededInit::new(seed, &Device::Cpu);
            let mut tensors = std::collections::BTreeMap::new();
            for (name, out, inp) in [
                ("q", HIDDEN, HIDDEN),
                ("k", HIDDEN, HIDDEN),
                ("v", HIDDEN, HIDDEN),
                ("o", HIDDEN, HIDDEN),
                ("fc1", INNER, HIDDEN),
                ("fc2", HIDDEN, INNER),
            ] {
                tensors.insert(format!("{name}.w"), random(&init, name, &[out, inp]));
                tensors.insert(
                    format!("{name}.b"),
                    random(&init, &format!("{name}b"), &[out]),
                );
            }
            for name in ["ln1", "ln2"] {
                let w = (random(&init, name, &[HIDDEN]) + 1.0).unwrap();
                tensors.insert(format!("{name}.w"), w);
                tensors.insert(
                    format!("{name}.b"),
                    random(&init, &format!("{name}b"), &[HIDDEN]),
                );
            }
            let mut vars = Vec::new();
            for (name, t) in tensors.iter_mut() {
                let trained = match training {
                    Training::Frozen | Training::Lora => false,
                    Training::All => true,
                    Training::BiasesAndNorms => name.ends_with(".b") || name.starts_with("ln"),
                };
                if trained {
                    let var = Var::from_tensor(t).unwrap();
                    *t = var.as_tensor().clone();
                    vars.push(var);
                }
            }
            let mut lora = std::collections::BTreeMap::new();
            if training == Training::Lora {
                for (name, out, inp) in [
                    ("q", HIDDEN, HIDDEN),
                    ("v", HIDDEN, HIDDEN),
                    ("o", HIDDEN, HIDDEN),
                    ("fc2", HIDDEN, INNER),
                ] {
                    let rank = 3;
                    let a = Var::from_tensor(&random(&init, &format!("{name}A"), &[rank, inp]))
                        .unwrap();
                    let b = Var::from_tensor(&random(&init, &format!("{name}B"), &[out, rank]))
                        .unwrap();
                    lora.insert(name, (a.as_tensor().clone(), b.as_tensor().clone()));
                    vars.extend([a, b]);
                }
            }
            Self {
                tensors,
                lora,
                vars,
            }
        }

        fn t(&self, name: &str) -> &Tensor {
            &self.tensors[name]
        }

        fn proj(&self, name: &str) -> Projection<'_> {
            Projection {
                weight: self.t(&format!("{name}.w")),
                bias: Some(self.t(&format!("{name}.b"))),
                low_rank: self.lora.get(name).map(|(a, b)| LowRank {
                    a,
                    b,
                    scaling: LORA_SCALING,
                }),
            }
        }

        fn norm(&self, name: &str) -> NormParams<'_> {
            NormParams {
                weight: self.t(&format!("{name}.w")),
                bias: self.t(&format!("{name}.b")),
                eps: 1e-6,
            }
        }

        fn linear(&self, x: &Tensor, name: &str) -> Tensor {
            let p = self.proj(name);
            match p.low_rank {
                Some(lr) => ops::lora_linear(x, p.weight, p.bias, lr.a, lr.b, lr.scaling).unwrap(),
                None => ops::linear(x, p.weight, p.bias).unwrap(),
            }
        }

        fn layer_norm(&self, x: &Tensor, name: &str) -> Tensor {
            let n = self.norm(name);
            ops::layer_norm(x, n.weight, n.bias, n.eps).unwrap()
        }

        /// The attention branch as the encoder composes it.
        fn attention_composed(&self, x: &Tensor, heads: usize) -> Tensor {
            let h = self.layer_norm(x, "ln1");
            let (q, k, v) = (
                self.linear(&h, "q"),
                self.linear(&h, "k"),
                self.linear(&h, "v"),
            );
            let ctx = ForwardCtx::eval();
            let context = ops::attention(&q, &k, &v, heads, None, 0.0, &ctx).unwrap();
            self.linear(&context, "o")
        }

        fn mlp_composed(&self, x: &Tensor) -> Tensor {
            let h = self.layer_norm(x, "ln2");
            let h = ops::Activation::Gelu
                .apply(&self.linear(&h, "fc1"))
                .unwrap();
            self.linear(&h, "fc2")
        }

        fn attention_fused(&self, x: &Tensor, heads: usize, residual: bool) -> Tensor {
            let projections = ["q", "k", "v", "o"].map(|n| self.proj(n));
            attention_sublayer(x, self.norm("ln1"), projections, heads, residual).unwrap()
        }

        fn mlp_fused(&self, x: &Tensor, residual: bool) -> Tensor {
            let (fc1, fc2) = (self.proj("fc1"), self.proj("fc2"));
            mlp_sublayer(x, self.norm("ln2"), fc1, fc2, residual).unwrap()
        }
    }

    /// Output, input gradient and trained parameters' gradients of `branch` for a loss that weighs
    /// every output differently (`None` for a parameter the branch does not use).
    fn run(
        x: &Var,
        block: &Block,
        branch: impl Fn(&Tensor) -> Tensor,
    ) -> (Vec<u32>, Vec<u32>, Vec<Option<Vec<u32>>>) {
        let y = branch(x.as_tensor());
        let weights = Tensor::arange(0u32, y.elem_count() as u32, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .affine(0.37, 0.0)
            .unwrap()
            .sin()
            .unwrap()
            .reshape(y.shape())
            .unwrap();
        let grads = (&y * weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let params = block.vars.iter().map(|v| grads.get(v).map(bits)).collect();
        (
            bits(&y),
            bits(grads.get(x).expect("the input gets a gradient")),
            params,
        )
    }

    /// Each fused branch gives the composed ops' output, input gradient and parameter gradients
    /// bit for bit, with frozen and trained parameters, at token counts that do and do not fill
    /// the matrix products' tiles.
    #[test]
    fn fused_branches_equal_the_composed_ops_bit_for_bit() {
        for (training, (batch, tokens)) in [
            (Training::Frozen, (2, 5)),
            (Training::Frozen, (3, 17)),
            (Training::Frozen, (1, 65)),
            (Training::All, (2, 5)),
            (Training::All, (2, 33)),
            (Training::BiasesAndNorms, (3, 17)),
            (Training::Lora, (2, 17)),
            (Training::Lora, (1, 65)),
        ] {
            let block = Block::new(5, training);
            let x = Var::from_tensor(&random(
                &SeededInit::new(9, &Device::Cpu),
                "x",
                &[batch, tokens, HIDDEN],
            ))
            .unwrap();
            let heads = 3;
            for residual in [false, true] {
                // The composed stream adds the branch to `x` as the encoder does.
                let plus_x = |branch: Tensor, x: &Tensor| {
                    if residual {
                        (x + branch).unwrap()
                    } else {
                        branch
                    }
                };
                let (fused, composed) = (
                    run(&x, &block, |x| block.attention_fused(x, heads, residual)),
                    run(&x, &block, |x| {
                        plus_x(block.attention_composed(x, heads), x)
                    }),
                );
                assert!(
                    fused == composed,
                    "attention branch, {training:?} {batch} x {tokens}, residual {residual}"
                );
                let (fused, composed) = (
                    run(&x, &block, |x| block.mlp_fused(x, residual)),
                    run(&x, &block, |x| plus_x(block.mlp_composed(x), x)),
                );
                assert!(
                    fused == composed,
                    "mlp branch, {training:?} {batch} x {tokens}, residual {residual}"
                );
            }
            let fused = run(&x, &block, |x| block.mlp_fused(x, false));
            // Every trained parameter of a branch gets a gradient.
            let used = fused.2.iter().filter(|g| g.is_some()).count();
            let mlp_params = block.vars.len() - used;
            assert!(training == Training::Frozen || (used > 0 && mlp_params > 0));
        }
    }

    /// Without gradient tracking nothing is kept for a backward pass, and the output is the same.
    #[test]
    fn an_untracked_input_keeps_nothing() {
        let block = Block::new(6, Training::Frozen);
        let x = random(&SeededInit::new(1, &Device::Cpu), "x", &[2, 7, HIDDEN]);
        assert_eq!(
            bits(&block.mlp_fused(&x, false)),
            bits(&block.mlp_composed(&x))
        );
        assert_eq!(
            bits(&block.attention_fused(&x, 2, false)),
            bits(&block.attention_composed(&x, 2))
        );
    }

    #[test]
    fn the_switch_takes_0_or_1_and_names_itself_otherwise() {
        assert_eq!(parse_fused_sublayers(None), Ok(true));
        assert_eq!(parse_fused_sublayers(Some("1")), Ok(true));
        assert_eq!(parse_fused_sublayers(Some(" 0 ")), Ok(false));
        let err = parse_fused_sublayers(Some("off")).unwrap_err();
        assert!(
            err.starts_with("PEFTBENCH_FUSED_SUBLAYERS=\"off\": use 1"),
            "{err}"
        );
    }

    #[test]
    fn bad_shapes_are_refused() {
        let block = Block::new(7, Training::Frozen);
        let x = random(&SeededInit::new(1, &Device::Cpu), "x", &[2, 7, HIDDEN]);
        let projections = ["q", "k", "v", "o"].map(|n| block.proj(n));
        let err = attention_sublayer(&x, block.norm("ln1"), projections, 5, false).unwrap_err();
        assert!(err.to_string().contains("5 heads for width 24"), "{err}");
        let err = mlp_sublayer(
            &x,
            block.norm("ln2"),
            block.proj("fc2"),
            block.proj("fc1"),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("projection"), "{err}");
    }
}
