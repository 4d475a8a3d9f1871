"""PyTorch + HF peft reference for `harness bench train-step`.

Measures the same configuration as the Rust bench: a randomly initialised timm ViT (patch 16),
one optimisation step = forward + cross-entropy + backward + AdamW, median over timed steps after
warm-up steps, on the CPU with the given thread count. Prints one JSON object on its last line.

LoRA uses HF peft on timm's fused `qkv` projection (r 8, alpha 8). LoRA and the adapter go in
every block, or with `--top-blocks N` in the last N (for LoRA, peft's `layers_to_transform`; the
frozen blocks below still run every step, as in any PyTorch training loop). The bottleneck adapter,
AdaptFormer and VPT are written here in a few lines with hooks, as peft has no such methods.
"""

import argparse
import json
import re
import resource
import statistics
import time

import torch
import torch.nn as nn
import timm

SIZES = {"vit-tiny": "vit_tiny_patch16_224", "vit-small": "vit_small_patch16_224",
         "vit-base": "vit_base_patch16_224"}


class Bottleneck(nn.Module):
    def __init__(self, dim, hidden, scale=1.0):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def forward(self, x):
        return self.up(torch.relu(self.down(x))) * self.scale


def add_adapters(model, parallel, top_blocks=0):
    """Pfeiffer adapter after each MLP (sequential) or AdaptFormer beside it (parallel), in every
    block or in the last `top_blocks`."""
    for block in model.blocks[-top_blocks if top_blocks else 0:]:
        dim = block.norm2.normalized_shape[0]
        block.peft_adapter = Bottleneck(dim, 8, 0.1 if parallel else 1.0)
        mlp = block.mlp

        def hook(module, inputs, output, adapter=block.peft_adapter):
            if parallel:
                return output + adapter(inputs[0])
            return output + adapter(output)

        mlp.register_forward_hook(hook)


def add_deep_prompts(model, prompts):
    model.peft_prompts = nn.ParameterList(
        [nn.Parameter(torch.zeros(1, prompts, model.embed_dim).uniform_(-0.1, 0.1))
         for _ in model.blocks])

    def pre(module, inputs, index):
        x = inputs[0]
        if index > 0:
            x = torch.cat([x[:, :1], x[:, 1 + prompts:]], dim=1)
        p = model.peft_prompts[index].expand(x.shape[0], -1, -1)
        return (torch.cat([x[:, :1], p, x[:, 1:]], dim=1),)

    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda m, inp, i=i: pre(m, inp, i))


def build(args):
    model = timm.create_model(SIZES[args.backbone], pretrained=False, num_classes=100,
                              img_size=args.image)
    method = args.method
    depth = len(model.blocks)
    if args.top_blocks and method not in ("lora", "adapter"):
        raise SystemExit("--top-blocks applies to lora and adapter")
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        # --top-blocks: LoRA in the last N blocks only (timm names them `blocks.<i>`).
        layers = (dict(layers_to_transform=list(range(depth - args.top_blocks, depth)),
                       layers_pattern="blocks") if args.top_blocks else {})
        cfg = LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=["qkv"],
                         modules_to_save=["head"], **layers)
        return get_peft_model(model, cfg)
    if method == "full":
        return model
    for p in model.parameters():
        p.requires_grad_(False)
    if method == "bitfit":
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.requires_grad_(True)
    elif method in ("adapter", "adaptformer"):
        add_adapters(model, parallel=method == "adaptformer", top_blocks=args.top_blocks)
    elif method in ("vpt-deep", "vpt-shallow"):
        if method == "vpt-shallow":
            raise SystemExit("vpt-shallow has no reference here; use vpt-deep")
        add_deep_prompts(model, 10)
    elif method != "linear":
        raise SystemExit(f"unknown method {method}")
    for p in model.head.parameters():
        p.requires_grad_(True)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="vit-tiny")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top-blocks", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(args.batch, 3, args.image, args.image)
    y = torch.arange(args.batch) % 100
    steps, fwd, bwd = [], [], []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if step >= args.warmup:
            steps.append(t3 - t0)
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    print(json.dumps({
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "trainable_params": sum(p.numel() for p in params),
        "median_step_s": statistics.median(steps),
        "median_forward_s": statistics.median(fwd),
        "median_backward_s": statistics.median(bwd),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        # Which kernels ran: the instruction set of PyTorch's CPU kernels and the BLAS it calls.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas_info(),
    }))


def blas_info():
    """The BLAS PyTorch was built with, from its build configuration (`BLAS_INFO=mkl`)."""
    found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return found.group(1) if found else None


if __name__ == "__main__":
    main()
