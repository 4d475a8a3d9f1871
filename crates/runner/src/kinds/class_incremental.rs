//! Class-incremental learning: one image task's classes streamed in stages (section
//! `continual`), learned by the entry's `learner` over the entry's method, tested after every
//! stage on all classes seen; the protocol and the learners are in [`crate::continual`].

use candle_core::Device;
use peftbench_backbones::TextEncoder;
use peftbench_data_vision::Preprocess;
use peftbench_suite::{RunSpec, Suite};

use super::Kind;
use crate::backbone::LoadedBackbone;
use crate::continual::{run_stream, Stream, AVERAGE_INCREMENTAL_ACCURACY};
use crate::data::preprocess;
use crate::run::{Finished, RunContext};
use crate::Paths;

pub(crate) struct ClassIncremental;

/// A task's stream and how its images are preprocessed; every run decodes the stages it reads.
pub(crate) struct PreparedStream {
    stream: Stream,
    preprocess: Preprocess,
}

impl Kind for ClassIncremental {
    type Encoders = ();
    type Located = Stream;
    type Prepared = PreparedStream;

    fn locate(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<Stream> {
        Stream::locate(spec, paths, quiet)
    }

    fn encoders(_: &Suite, _: &mut LoadedBackbone, _: &Paths) -> anyhow::Result<()> {
        Ok(())
    }

    fn text_encoder(_: &()) -> Option<&TextEncoder> {
        None
    }

    fn prepare(
        spec: &RunSpec,
        stream: &Stream,
        _: &(),
        _device: &Device,
        _quiet: bool,
    ) -> anyhow::Result<PreparedStream> {
        Ok(PreparedStream {
            stream: stream.clone(),
            preprocess: preprocess(spec),
        })
    }

    fn run(
        spec: &RunSpec,
        task: &PreparedStream,
        ctx: &RunContext<'_>,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Finished> {
        Ok(
            run_stream(spec, &task.stream, ctx, &task.preprocess, progress, None)?
                .expect("a stream run without a stop runs to its end"),
        )
    }

    fn primary_metric(_: &RunSpec) -> String {
        AVERAGE_INCREMENTAL_ACCURACY.into()
    }
}
