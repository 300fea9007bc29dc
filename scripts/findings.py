#!/usr/bin/env python3
"""Prints the README's findings table from a `mechinterp translation-heads` output folder.

    python3 scripts/findings.py results/translation-heads
"""
import json
import pathlib
import sys


def main(folder: str) -> None:
    rows = []
    for f in sorted(pathlib.Path(folder).glob("*/scores.json")):
        j = json.loads(f.read_text())
        heads = j["heads"]
        confirmed = heads.get("confirmed") or []
        found = heads.get("found") or []
        top = ", ".join(
            f"{h['layer']}.{h['head']} {h['diff']:+.3f}" for h in confirmed[:3]
        )
        causal = j.get("causal") or {}
        mean = next((e for e in causal.get("effects", []) if e["mode"] == "mean"), None)
        second = j.get("second_format") or {}
        aligned = j["aligned"]
        rows.append(
            "| {d} | {n} | {pooled} | {found} | {conf} | {top} | {eff} | {second} | {rho:.2f} |".format(
                d=j["direction"].replace("-", "→").upper(),
                n=j["n_pairs"],
                pooled=len(heads["fdr"]),
                found=len(found),
                conf=len(confirmed),
                top=top or "—",
                eff=(
                    f"{mean['found']:+.2f} (random {sum(mean['random']) / len(mean['random']):+.2f}, z {mean['z']:.1f})"
                    if mean
                    else "—"
                ),
                second=(
                    f"{second['survivors']}/{len(second['heads'])}" if second else "—"
                ),
                rho=aligned["spearman_vs_diagonal"],
            )
        )
    print(
        "| direction | pairs | pooled FDR heads (original) | found (discovery half) | "
        "confirmed (held out) | largest confirmed (held-out diff) | mean ablation Δ log-prob "
        "(held out) | second format | alignment ρ |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/translation-heads")
