#!/usr/bin/env python3
"""Loads SAE folders written by mechinterp's `Sae::save` with SAELens's own
`SAE.load_from_disk` and compares SAELens's outputs with ours.

Every folder under DIR with a cfg.json must also hold `ours.safetensors` (the inputs `x` and our
`feature_acts` and `output`), as the round-trip test leaves them:
    MECHINTERP_SAE_SAVE_DIR=/tmp/saved cargo test --release --test it -- sae_formats_save_load
    ~/.cache/tlvenv/bin/python scripts/check_sae_saved.py /tmp/saved
Prints the error relative to each tensor's largest value and exits non-zero above 1e-5.
"""

import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

warnings.filterwarnings("ignore")

from sae_lens import SAE  # noqa: E402

TOL = 1e-5


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    folders = sorted(p.parent for p in root.rglob("cfg.json"))
    if not folders:
        sys.exit(f"no cfg.json under {root}")
    worst = 0.0
    for folder in folders:
        sae = SAE.load_from_disk(folder)
        ours = load_file(folder / "ours.safetensors")
        with torch.no_grad():
            feats = sae.encode(ours["x"])
            out = sae(ours["x"])
        errs = {"feature_acts": rel(ours["feature_acts"], feats), "output": rel(ours["output"], out)}
        worst = max(worst, *errs.values())
        sparsity = " +sparsity" if (folder / "sparsity.safetensors").exists() else ""
        print(
            f"{folder.name:<58} {type(sae).__name__:<22} "
            + "  ".join(f"{k} {v:.1e}" for k, v in errs.items())
            + sparsity
        )
    print(f"{len(folders)} folders, worst relative error {worst:.1e} (tolerance {TOL:g})")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
