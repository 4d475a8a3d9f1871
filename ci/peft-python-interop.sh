#!/usr/bin/env bash
# Adapters saved by peftbench load in Python: the fixture adapters of
# crates/methods/tests/peft_interop.rs are re-saved by peftbench (LoRA, LoRA on chosen blocks
# (`layers_to_transform`), DoRA, IA3, SHiRA, and the Poly and MHR adapters of
# crates/methods/tests/poly.rs, in Hugging Face PEFT's format, ViT module names as
# transformers 5 has them), loaded with PEFT's
# `PeftModel.from_pretrained` on the fixture ViT, and their logits compared with the ones PyTorch
# computed for the original adapters (max error 1e-4; Poly/MHR for the fixture's task ids, through
# PEFT's PolyModel, which passes `task_ids` to its layers; the MHR adapter carried to a new task
# by both transfers against the logits peftbench computed before saving it).
#   ci/peft-python-interop.sh [PYTHON]
# PYTHON needs torch, transformers and peft (pip install torch==2.11.0 transformers peft).
# PEFT_INTEROP_CARGO_ARGS (default `-p peftbench-methods`) selects the cargo build; .ci/run passes
# `--workspace --locked` so that the export reuses what `cargo test --workspace` built.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
out=$(mktemp -d)
read -r -a cargo_args <<< "${PEFT_INTEROP_CARGO_ARGS:--p peftbench-methods}"
PEFTBENCH_EXPORT_DIR="$out" cargo test -q "${cargo_args[@]}" --test peft_interop \
    export_adapters_for_python -- --ignored --exact > /dev/null
"$python" - "$out" <<'PY'
import json, sys, warnings
warnings.filterwarnings("ignore")
import peft, torch, transformers
from peft import PeftModel
from safetensors.torch import load_file
from transformers import ViTForImageClassification

exported = sys.argv[1]
fixtures = "crates/methods/tests/fixtures/peft_vit"
pixels = load_file(f"{fixtures}/pixels.safetensors")["pixel_values"]
expected = json.load(open(f"{fixtures}/expected_logits.json"))
print(f"peft {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
worst = 0.0
for name in ["lora", "lora_top", "dora", "ia3", "shira"]:
    base = ViTForImageClassification.from_pretrained(f"{fixtures}/backbone").eval()
    model = PeftModel.from_pretrained(base, f"{exported}/{name}").eval()
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    err = (logits - torch.tensor(expected[name])).abs().max().item()
    worst = max(worst, err)
    print(f"{name}: saved by peftbench, loaded by PEFT: max |logit - expected| = {err:.2e}")
poly_expected = json.load(open("crates/methods/tests/fixtures/peft_poly/expected_logits.json"))
for name in ["poly", "mhr"]:
    base = ViTForImageClassification.from_pretrained(f"{fixtures}/backbone").eval()
    model = PeftModel.from_pretrained(base, f"{exported}/{name}").eval()
    for key in ["2,0", "1,1"]:
        task_ids = torch.tensor([int(t) for t in key.split(",")])
        with torch.no_grad():
            logits = model.base_model(pixel_values=pixels, task_ids=task_ids).logits
        err = (logits - torch.tensor(poly_expected[f"{name}/{key}"])).abs().max().item()
        worst = max(worst, err)
        print(f"{name} (tasks {key}): saved by peftbench, loaded by PEFT: max |logit - expected| = {err:.2e}")
# MHR-z and MHR-μ transfers saved by peftbench as one-task Poly adapters: PEFT's logits (task 0)
# against the ones peftbench computed before saving.
for name in ["mhr_routing", "mhr_average"]:
    base = ViTForImageClassification.from_pretrained(f"{fixtures}/backbone").eval()
    model = PeftModel.from_pretrained(base, f"{exported}/{name}").eval()
    with torch.no_grad():
        logits = model.base_model(pixel_values=pixels, task_ids=torch.tensor([0, 0])).logits
    want = torch.tensor(json.load(open(f"{exported}/{name}/peftbench_logits.json")))
    err = (logits - want).abs().max().item()
    worst = max(worst, err)
    print(f"{name}: saved by peftbench, loaded by PEFT: max |logit - peftbench's| = {err:.2e}")
print(f"{'PASS' if worst < 1e-4 else 'FAIL'}: max error {worst:.2e} (limit 1e-4)")
sys.exit(0 if worst < 1e-4 else 1)
PY
