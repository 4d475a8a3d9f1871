//! Audio data for the Audio Spectrogram Transformer suites: decoding and resampling ([`decode`]), Kaldi
//! filter banks exactly as `torchaudio.compliance.kaldi.fbank` computes them for AST ([`fbank`]), the
//! model input with padding, normalisation, SpecAugment and a feature cache ([`features`]), `.npy`
//! files for comparing with Python ([`npy`]), music clips with text prompts for text-to-music
//! adaptation ([`music`]), and VGGish's log-mel examples ([`vggish_input`]).

pub mod datasets;
pub mod decode;
pub mod error;
pub mod fbank;
pub mod features;
pub mod music;
pub mod npy;
pub mod synthetic;
pub mod vggish_input;

pub use datasets::AudioDataset;
pub use decode::{decode_bytes, decode_file, resample, Audio};
pub use error::AudioError;
pub use fbank::{Fbank, FbankConfig, WindowType};
pub use features::{
    AstFeatureConfig, AstFeatures, AudioSource, SpecAugment, AUDIOSET_MEAN, AUDIOSET_STD,
};
