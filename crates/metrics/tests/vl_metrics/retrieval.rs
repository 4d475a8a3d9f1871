//! Retrieval Recall@1/5/10 against clip-benchmark 1.6.2's `zeroshot_retrieval.evaluate`
//! (`fixtures/retrieval_clip_benchmark.json`, written by `ci/fixtures/retrieval_clip_benchmark.py`):
//! the same float32 score matrices, five captions per image and a variable number per image.
//! clip-benchmark averages in float32, hence the 1e-6 tolerance.

use peftbench_metrics::retrieval::retrieval_recalls;

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    scores: Vec<Vec<f64>>,
    caption_image: Vec<usize>,
    text_to_image: [f64; 3],
    image_to_text: [f64; 3],
}

#[test]
fn recalls_equal_clip_benchmark() {
    let f: Fixture =
        serde_json::from_str(include_str!("../fixtures/retrieval_clip_benchmark.json")).unwrap();
    for (i, case) in f.cases.iter().enumerate() {
        let r = retrieval_recalls(&case.scores, &case.caption_image).unwrap();
        for (name, ours, theirs) in [
            ("text->image", r.text_to_image, case.text_to_image),
            ("image->text", r.image_to_text, case.image_to_text),
        ] {
            for k in 0..3 {
                assert!(
                    (ours[k] - theirs[k]).abs() < 1e-6,
                    "case {i} {name}: ours {ours:?}, clip-benchmark {theirs:?}"
                );
            }
        }
        let rsum = 100.0
            * (case.text_to_image.iter().sum::<f64>() + case.image_to_text.iter().sum::<f64>());
        assert!(
            (r.rsum - rsum).abs() < 1e-4,
            "case {i} RSUM {} vs {rsum}",
            r.rsum
        );
    }
}
