//! Music-generation records seen as the adapter study needs them: the cross-entropy a method
//! reaches on held-out clips of the target style (nats per token, mean over codebooks, lower is
//! better) beside the source style's (forgetting), and the measures of its generated clips
//! against the target's test clips through the codec, with their noise floors and set sizes
//! printed, never as a published FAD.

use peftbench_records::{RunRecord, RunStatus};
use serde::Serialize;

pub use crate::spread::Spread;

/// The primary metric of music-generation records.
pub const CE_REDUCTION: &str = "ce_reduction";

/// The columns every music table has, in order: record metric, column title, decimals.
pub const COLUMNS: &[(&str, &str, usize)] = &[
    ("ce", "CE target", 3),
    ("ppl", "PPL target", 1),
    ("ce_source", "CE source", 3),
    ("fd_codec", "FD codec", 3),
    ("kd_codec", "KD codec ×1e3", 3),
    ("pitch_class_tv_target", "PC dist. target", 3),
    ("non_pentatonic", "non-pentatonic", 3),
    ("distinct_4gram", "distinct-4", 3),
];

/// A column of the table: the record metric, its title, decimals, and the factor it is shown
/// multiplied by (the codec's kernel distance ×1000; an embedding's is larger and shown as it is).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MusicColumn {
    pub key: String,
    pub title: String,
    pub decimals: usize,
    pub scale: f64,
}

impl MusicColumn {
    fn new(key: &str, title: &str, decimals: usize) -> Self {
        let scale = if key == "kd_codec" { 1e3 } else { 1.0 };
        Self {
            key: key.into(),
            title: title.into(),
            decimals,
            scale,
        }
    }
}

/// The pretrained embeddings the runs were also measured in (`music.embedding`), by metric stem
/// (`crepe_tiny` for `fd_crepe_tiny`): every `fd_<stem>_floor` but the codec's.
fn embedding_stems(runs: &[&RunRecord]) -> Vec<String> {
    let mut stems: Vec<String> = runs
        .iter()
        .flat_map(|r| r.metrics.keys())
        .filter_map(|k| k.strip_prefix("fd_")?.strip_suffix("_floor"))
        .filter(|stem| *stem != "codec")
        .map(str::to_string)
        .collect();
    stems.sort();
    stems.dedup();
    stems
}

/// The columns: [`COLUMNS`], with each embedding's Fréchet and kernel distances after the
/// codec's.
fn columns(stems: &[String]) -> Vec<MusicColumn> {
    let mut out = Vec::new();
    for &(key, title, decimals) in COLUMNS {
        out.push(MusicColumn::new(key, title, decimals));
        if key == "kd_codec" {
            for stem in stems {
                let name = stem.replace('_', "-");
                out.push(MusicColumn::new(
                    &format!("fd_{stem}"),
                    &format!("FD {name}"),
                    3,
                ));
                out.push(MusicColumn::new(
                    &format!("kd_{stem}"),
                    &format!("KD {name}"),
                    3,
                ));
            }
        }
    }
    out
}

/// One method on one task: each column's spread over its runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MusicRow {
    pub label: String,
    pub task: String,
    pub runs: usize,
    pub values: Vec<Option<Spread>>,
    pub trainable: u64,
}

/// Measures of the references alone (the same in every run of a task).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MusicReferences {
    pub task: String,
    pub ce_unigram: Option<f64>,
    pub fd_floor: Option<f64>,
    pub fd_source: Option<f64>,
    pub non_pentatonic_target: Option<f64>,
    pub non_pentatonic_source: Option<f64>,
    pub distinct_4gram: Option<f64>,
    pub generated_clips: Option<f64>,
    pub reference_clips: Option<f64>,
    pub clip_seconds: Option<f64>,
    /// Each embedding's noise floor and source distance (`fd_<stem>_floor`, `fd_<stem>_source`).
    pub embeddings: Vec<EmbeddingReferences>,
}

/// A pretrained embedding's distances between references, by its name (`crepe-tiny`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingReferences {
    pub name: String,
    pub fd_floor: Option<f64>,
    pub fd_source: Option<f64>,
}

/// Every method's music measures, in row order then task order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MusicTable {
    pub columns: Vec<MusicColumn>,
    pub rows: Vec<MusicRow>,
    pub references: Vec<MusicReferences>,
}

/// The table of the completed music-generation runs among `records` (rows in `labels` order,
/// tasks in `tasks` order); `None` when there are none.
pub fn music_table(
    records: &[&RunRecord],
    labels: &[String],
    tasks: &[String],
) -> Option<MusicTable> {
    let runs: Vec<&RunRecord> = records
        .iter()
        .copied()
        .filter(|r| r.status == RunStatus::Completed && r.primary_metric == CE_REDUCTION)
        .collect();
    let stems = embedding_stems(&runs);
    let columns = columns(&stems);
    let mut rows = Vec::new();
    let mut references = Vec::new();
    for task in tasks {
        let of_task: Vec<&RunRecord> = runs.iter().copied().filter(|r| &r.task == task).collect();
        let Some(first) = of_task.first() else {
            continue;
        };
        let get = |k: &str| first.metrics.get(k).copied();
        references.push(MusicReferences {
            task: task.clone(),
            ce_unigram: get("ce_unigram"),
            fd_floor: get("fd_codec_floor"),
            fd_source: get("fd_codec_source"),
            non_pentatonic_target: get("non_pentatonic_reference"),
            non_pentatonic_source: get("non_pentatonic_source_reference"),
            distinct_4gram: get("distinct_4gram_reference"),
            generated_clips: get("generated_clips"),
            reference_clips: get("reference_clips"),
            clip_seconds: get("clip_seconds"),
            embeddings: stems
                .iter()
                .map(|stem| EmbeddingReferences {
                    name: stem.replace('_', "-"),
                    fd_floor: get(&format!("fd_{stem}_floor")),
                    fd_source: get(&format!("fd_{stem}_source")),
                })
                .collect(),
        });
        for label in labels {
            let mine: Vec<&RunRecord> = of_task
                .iter()
                .copied()
                .filter(|r| &r.label == label)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let values = columns
                .iter()
                .map(|c| {
                    Spread::of(
                        &mine
                            .iter()
                            .filter_map(|r| r.metrics.get(&c.key).map(|v| v * c.scale))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            rows.push(MusicRow {
                label: label.clone(),
                task: task.clone(),
                runs: mine.len(),
                values,
                trainable: mine[0].trainable_params,
            });
        }
    }
    (!rows.is_empty()).then_some(MusicTable {
        columns,
        rows,
        references,
    })
}

fn optional(v: Option<f64>, decimals: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.decimals$}"))
}

impl MusicTable {
    /// The measures side by side, then each task's references and sizes.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "## Music generation: likelihoods and generated clips\n\n\
             CE: held-out cross-entropy in nats per token, mean over codebooks (lower is \
             better); PPL its exponential; CE source: on the source style's test clips (what \
             adaptation forgot). Generated clips against the target's test clips passed through \
             the codec: FD codec and KD codec are the Fréchet and kernel (MMD, ×1000) distances \
             of their 88-band semitone frames (the codec's own features, not a published FAD); \
             PC dist.: total variation between the mean key-normalised pitch-class profiles (each \
             clip rotated to its strongest class); non-pentatonic: the clips' mean share of \
             energy outside their best pentatonic scale; distinct-4: distinct 4-grams of \
             codebook 0 over all (lower is more repetitive). Mean ±sample std over seeds.\n\n",
        );
        if let Some(r) = self.references.first().filter(|r| !r.embeddings.is_empty()) {
            let names: Vec<&str> = r.embeddings.iter().map(|e| e.name.as_str()).collect();
            out.push_str(&format!(
                "FD / KD {}: the same distances over the clips' audio embedded frame by frame \
                 by that pretrained network (a pitch network's space; not a VGGish FAD).\n\n",
                names.join(", ")
            ));
        }
        out.push_str("| method | task |");
        for c in &self.columns {
            out.push_str(&format!(" {} |", c.title));
        }
        out.push_str(" trainable | seeds |\n|---|---|");
        for _ in &self.columns {
            out.push_str("---:|");
        }
        out.push_str("---:|---:|\n");
        for row in &self.rows {
            out.push_str(&format!("| {} | {} |", row.label, row.task));
            for (v, c) in row.values.iter().zip(&self.columns) {
                out.push_str(&format!(
                    " {} |",
                    v.map_or("—".into(), |v| v.text(c.decimals))
                ));
            }
            out.push_str(&format!(" {} | {} |\n", row.trainable, row.runs));
        }
        out.push('\n');
        for r in &self.references {
            out.push_str(&format!(
                "References for `{}`: {} generated clips (prompted from the first half of the \
                 test clips) against {} test clips (the second half) of {} s; FD noise floor \
                 (first half against second half) {}, source style against the target {}; \
                 unigram cross-entropy {}; test clips through the codec: non-pentatonic {} \
                 (source style {}), distinct-4 {} (second half){}.\n\n",
                r.task,
                optional(r.generated_clips, 0),
                optional(r.reference_clips, 0),
                optional(r.clip_seconds, 1),
                optional(r.fd_floor, 3),
                optional(r.fd_source, 3),
                optional(r.ce_unigram, 3),
                optional(r.non_pentatonic_target, 3),
                optional(r.non_pentatonic_source, 3),
                optional(r.distinct_4gram, 3),
                r.embeddings
                    .iter()
                    .map(|e| format!(
                        "; {}: FD noise floor {}, source style against the target {}",
                        e.name,
                        optional(e.fd_floor, 3),
                        optional(e.fd_source, 3)
                    ))
                    .collect::<String>(),
            ));
        }
        out
    }
}
