"""Reference for `harness bench fbank`: clips/s of torchaudio's Kaldi filter banks with AST's settings
(HF ASTFeatureExtractor: 128 mel bins, Hanning window, 25 ms / 10 ms, 16 kHz, no dither, htk_compat,
no energy) on random clips. Prints one JSON object. `--threads 0` keeps torch's default thread count."""

import argparse
import json
import time

import torch
from torchaudio.compliance import kaldi


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    samples = int(a.seconds * 16000)
    clips = [torch.rand(1, samples, generator=gen) * 2 - 1 for _ in range(a.clips)]

    def fbank(x):
        return kaldi.fbank(x, htk_compat=True, sample_frequency=16000, use_energy=False,
                           window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)

    fbank(clips[0])
    start = time.perf_counter()
    for x in clips:
        fbank(x)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "clips_per_s": a.clips / seconds,
    }))


if __name__ == "__main__":
    main()
