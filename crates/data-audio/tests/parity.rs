//! Filter banks and model inputs against values computed with torchaudio 2.11 and transformers 5.24:
//! `torchaudio.compliance.kaldi.fbank(w, htk_compat=True, sample_frequency=16000, use_energy=False,
//! window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)` on the fixture WAVs as read by
//! soundfile, and `ASTFeatureExtractor(max_length=N)` for the normalised inputs. The speech clip is
//! espeak-ng saying "yes", resampled to 16 kHz and stored as 16-bit PCM; the synthetic clip is a tone, a
//! chirp, noise, a DC offset and a stretch of silence, stored as float32. Every fixture here but the
//! speech recording is written by `ci/fixtures/audio.py` (regenerate every fixture with
//! `ci/fixtures/regenerate.sh`).

use std::path::{Path, PathBuf};

use peftbench_data_audio::npy::read_npy;
use peftbench_data_audio::{
    decode_file, AstFeatureConfig, AstFeatures, AudioSource, Fbank, FbankConfig,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_fbank(wav: &str, expected: &str) {
    let audio = decode_file(&fixture(wav)).unwrap();
    assert_eq!(audio.sample_rate, 16_000);
    let fbank = Fbank::new(FbankConfig::default()).unwrap();
    let ours = fbank.compute(&audio.samples);
    let (shape, reference) = read_npy(&fixture(expected)).unwrap();
    assert_eq!(ours.len(), shape[0] * shape[1]);
    let err = max_abs_diff(&ours, &reference);
    eprintln!("{wav}: {shape:?}, max |ours - torchaudio| = {err:e}");
    assert!(err < 1e-3, "{wav}: max error {err}");
}

#[test]
fn fbank_matches_torchaudio_on_speech() {
    check_fbank("speech_yes_16k.wav", "speech_yes_16k.fbank.npy");
}

#[test]
fn fbank_matches_torchaudio_on_synthetic_signal() {
    check_fbank("synthetic_16k_f32.wav", "synthetic_16k_f32.fbank.npy");
}

#[test]
fn model_input_matches_hf_ast_feature_extractor_padded_and_cut() {
    // The clip has 61 frames: 100 pads, 30 cuts.
    for frames in [100, 30] {
        let features = AstFeatures::new(
            AstFeatureConfig {
                target_frames: frames,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let ours = features
            .input(&AudioSource::File(fixture("speech_yes_16k.wav")), None)
            .unwrap();
        let (shape, reference) =
            read_npy(&fixture(&format!("speech_yes_16k.ast{frames}.npy"))).unwrap();
        assert_eq!(shape, vec![frames, 128]);
        let err = max_abs_diff(&ours, &reference);
        eprintln!("AST input {frames} frames: max error {err:e}");
        assert!(err < 1e-3 / (2.0 * 4.5689974), "max error {err}");
    }
}

/// Every lossless container/codec decodes to the same mono mixdown (within 16-bit quantisation), at
/// the file's rate.
#[test]
fn codecs_decode_to_the_reference_mixdown() {
    let (_, reference) = read_npy(&fixture("codec_mono_reference.npy")).unwrap();
    for (file, tol) in [
        ("codec_pcm16.wav", 1e-4),
        ("codec_pcm24.wav", 1e-6),
        ("codec_pcm32.wav", 1e-6),
        ("codec_float.wav", 1e-7),
        ("codec_flac.flac", 1e-4),
    ] {
        let audio = decode_file(&fixture(file)).unwrap();
        assert_eq!(audio.sample_rate, 44_100, "{file}");
        let err = max_abs_diff(&audio.samples, &reference);
        assert!(err < tol, "{file}: max error {err}");
    }
}

/// The lossy files decode to what libsndfile's decoders (libvorbis, mpg123; through soundfile)
/// give, `codec_{vorbis,mp3}.decoded.npy`, within float rounding (measured: 1.5e-7 for Vorbis,
/// 6.4e-7 for MP3), once aligned: symphonia runs without gapless trimming
/// (`FormatOptions::default()`), so it keeps what libsndfile trims: the MP3's 1105 samples of
/// encoder + decoder delay (LAME's 576 + 529) at the start and its padding to whole 1152-sample
/// frames at the end, and the Vorbis stream's samples past its last granule position at the end.
#[test]
fn lossy_codecs_decode_to_the_reference_decoders_output() {
    for (file, reference, delay) in [
        ("codec_vorbis.ogg", "codec_vorbis.decoded.npy", 0),
        ("codec_mp3.mp3", "codec_mp3.decoded.npy", 576 + 529),
    ] {
        let audio = decode_file(&fixture(file)).unwrap();
        assert_eq!(audio.sample_rate, 44_100, "{file}");
        let (_, theirs) = read_npy(&fixture(reference)).unwrap();
        let ours = &audio.samples;
        assert!(ours.len() >= theirs.len(), "{file}: {} samples", ours.len());
        // The offset (delay) with the smallest error over the reference's length.
        let (offset, err) = (0..=ours.len() - theirs.len())
            .map(|d| (d, max_abs_diff(&ours[d..d + theirs.len()], &theirs)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        let rms = (theirs.iter().map(|v| v * v).sum::<f32>() / theirs.len() as f32).sqrt();
        eprintln!(
            "{file}: {} samples decoded, {} from libsndfile; at offset {offset}: max |ours - \
             reference decoder| = {err:e} (signal rms {rms})",
            ours.len(),
            theirs.len()
        );
        assert_eq!(offset, delay, "{file}");
        assert!(err < 1e-6, "{file}: max error {err} at offset {offset}");
    }
}

#[test]
fn corrupt_and_missing_files_are_reported_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.wav");
    std::fs::write(&bad, b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
    let err = decode_file(&bad).unwrap_err().to_string();
    assert!(err.contains("broken.wav"), "{err}");
    let err = decode_file(&dir.path().join("missing.flac"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.flac"), "{err}");
}
