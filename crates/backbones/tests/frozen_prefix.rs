//! Frozen-prefix caching: the stream a backbone returns for its first blocks, resumed with a
//! method's hooks, gives exactly the features of the whole forward pass when the hooks change
//! nothing in those blocks; BERT, whose padding mask is not part of the stream, declines.

use candle_core::{Device, Result, Tensor};
use peftbench_backbones::{
    Ast, AstConfig, Backbone, Bert, BertConfig, Hooks, Linear, LinearSite, Vit, VitConfig,
};
use peftbench_core::{ForwardCtx, SeededInit};

/// Changes every projection of blocks `from..` (and prepends a prompt token there), leaving the
/// blocks below as pretrained, the way a method placed in the top blocks does.
struct TopBlocks {
    from: usize,
    prompt: Tensor,
}

impl Hooks for TopBlocks {
    fn linear(
        &self,
        layer: usize,
        _site: LinearSite,
        x: &Tensor,
        base: &Linear,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let y = base.forward(x)?;
        if layer >= self.from {
            y.affine(1.5, 0.25)
        } else {
            Ok(y)
        }
    }

    fn tokens(&self, layer: usize, tokens: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        if layer != self.from {
            return Ok(tokens);
        }
        let (b, _, d) = tokens.dims3()?;
        let prompt = self.prompt.broadcast_as((b, 1, d))?;
        // After the CLS token, where prompt methods put theirs.
        Tensor::cat(
            &[
                &tokens.narrow(1, 0, 1)?,
                &prompt,
                &tokens.narrow(1, 1, tokens.dim(1)? - 1)?,
            ],
            1,
        )
    }
}

fn check_resumes_exactly(backbone: &dyn Backbone, input: &Tensor, init: &SeededInit) {
    let d = backbone.info().hidden_size;
    let ctx = ForwardCtx::eval();
    for from in 0..=backbone.info().num_layers {
        let hooks = TopBlocks {
            from,
            prompt: init
                .fork("prompt")
                .normal((1, 1, d), 1.0)
                .unwrap()
                .as_tensor()
                .clone(),
        };
        let whole: Vec<f32> = backbone
            .forward_features(input, &hooks, &ctx)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let stream = backbone
            .forward_frozen_prefix(input, from, &ctx)
            .unwrap()
            .expect("the stream resumes the forward pass");
        assert_eq!(stream.dims()[0], input.dims()[0]);
        let resumed: Vec<f32> = backbone
            .forward_features_from(&stream, from, &hooks, &ctx)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(
            whole,
            resumed,
            "{} resumed after {from} blocks",
            backbone.info().family
        );
    }
}

#[test]
fn vit_resumes_from_its_frozen_prefix_bit_exactly() {
    let init = SeededInit::new(4, &Device::Cpu);
    let vit = Vit::random(VitConfig::new(16, 3, 2, 32, 16, 8), &init.fork("vit")).unwrap();
    let pixels = init.fork("x").normal((3, 3, 16, 16), 1.0).unwrap();
    check_resumes_exactly(&vit, pixels.as_tensor(), &init);
}

#[test]
fn ast_resumes_from_its_frozen_prefix_bit_exactly() {
    let init = SeededInit::new(5, &Device::Cpu);
    let ast = Ast::random(AstConfig::new(16, 3, 2, 32, 40, 32), &init.fork("ast")).unwrap();
    let spectrogram = init.fork("x").normal((2, 40, 32), 1.0).unwrap();
    check_resumes_exactly(&ast, spectrogram.as_tensor(), &init);
}

#[test]
fn bert_declines_to_cache_a_stream_without_its_mask() {
    let init = SeededInit::new(6, &Device::Cpu);
    let mut cfg: BertConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 16
    }))
    .unwrap();
    cfg.hidden_dropout_prob = 0.0;
    let bert = Bert::random(cfg, &init).unwrap();
    let ids = Tensor::new(&[[2u32, 5, 7, 3]], &Device::Cpu).unwrap();
    let stream = bert
        .forward_frozen_prefix(&ids, 1, &ForwardCtx::eval())
        .unwrap();
    assert!(stream.is_none());
    let err = bert
        .forward_features_from(&ids, 1, &peftbench_backbones::NoHooks, &ForwardCtx::eval())
        .unwrap_err();
    assert!(err.to_string().contains("cannot resume"), "{err}");
}
