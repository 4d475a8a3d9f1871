//! Reranking: a cross-encoder (the backbone reading query and document, one relevance logit)
//! trained once per method and seed on the suite's training triples, then rescoring each task's
//! first-stage candidates (BM25 or a given run); scored with trec_eval's measures, nDCG first.
//! The pipeline itself is [`crate::rerank`]; this is how the sweep drives it.

use std::path::PathBuf;

use candle_core::Device;
use peftbench_backbones::TextEncoder;
use peftbench_suite::{RunSpec, Suite};

use super::Kind;
use crate::backbone::{BackboneModel, LoadedBackbone};
use crate::rerank::{check_files, data_root, execute_rerank, RerankTask};
use crate::run::{Finished, RunContext};
use crate::text::{check_text_backbone, suite_text_encoder};
use crate::Paths;

pub(crate) struct Reranking;

/// What a reranking suite's runs share: the tokenizer, and where first-stage indexes are kept
/// between sweeps (`retrieval.index_cache`).
pub(crate) struct RerankEncoders {
    text: TextEncoder,
    index_cache: Option<PathBuf>,
}

impl Kind for Reranking {
    type Encoders = RerankEncoders;
    /// The data root every file of the task was found under.
    type Located = PathBuf;
    type Prepared = RerankTask;

    fn locate(spec: &RunSpec, paths: &Paths, _quiet: bool) -> anyhow::Result<PathBuf> {
        let root = data_root(spec, paths)?;
        check_files(spec, &root)?;
        Ok(root)
    }

    fn check_backbone(spec: &RunSpec, backbone: &BackboneModel) -> anyhow::Result<()> {
        check_text_backbone(spec, backbone)
    }

    fn encoders(
        suite: &Suite,
        backbone: &mut LoadedBackbone,
        _: &Paths,
    ) -> anyhow::Result<RerankEncoders> {
        Ok(RerankEncoders {
            text: suite_text_encoder(suite, backbone)?,
            index_cache: suite.retrieval.as_ref().and_then(|r| r.index_cache.clone()),
        })
    }

    fn text_encoder(encoders: &RerankEncoders) -> Option<&TextEncoder> {
        Some(&encoders.text)
    }

    fn prepare(
        spec: &RunSpec,
        root: &PathBuf,
        encoders: &RerankEncoders,
        device: &Device,
        _quiet: bool,
    ) -> anyhow::Result<RerankTask> {
        RerankTask::prepare(
            spec,
            root,
            encoders.index_cache.as_deref(),
            &encoders.text,
            device,
        )
    }

    fn run(
        spec: &RunSpec,
        task: &RerankTask,
        ctx: &RunContext<'_>,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Finished> {
        execute_rerank(spec, task, ctx, progress)
    }

    fn primary_metric(spec: &RunSpec) -> String {
        let run = spec.retrieval.as_ref().expect("a reranking run");
        format!("ndcg_cut_{}", run.measures.ndcg_cutoff)
    }
}
