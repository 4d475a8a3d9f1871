//! Text datasets for peftbench's low-resource-language suites: topic classification in SIB-200's
//! layout, sentiment in TSV / CSV / JSONL, NER in CoNLL format (WikiANN, MasakhaNER), and
//! unlabelled corpora (plain text or parquet) for masked-language-model language adapters, with
//! BERT's 80/10/10 masking and first-subword label alignment for token classification.
//!
//! Malformed input is an error naming the file and line ([`TextDataError`]): a record without the
//! configured column, a CoNLL token without a tag, text that does not decode as UTF-8. Nothing is
//! guessed or skipped silently.
//!
//! - [`vl`]: vision-language annotations: VQAv2, GQA balanced, NLVR2, Karpathy COCO / Flickr30k
//!   captions.

pub mod alignment;
pub mod classification;
pub mod conll;
pub mod corpus;
pub mod error;
pub mod labels;
pub mod mlm;
pub mod sib200;
pub mod synthetic;
pub mod vl;

pub use classification::{
    read_classification, read_pair_classification, Columns, PairColumns, PairExample, TableFormat,
    TextExample,
};
pub use conll::{read_conll, TaggedSentence};
pub use corpus::read_corpus;
pub use error::TextDataError;
pub use labels::{FormatLabels, LabelMismatch, LabelSet};
pub use mlm::{mask_tokens, MaskingConfig};
pub use sib200::{read_sib200, SIB200_CATEGORIES, SIB200_LABELS};
