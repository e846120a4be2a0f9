"""Markdown table of a post-processing sweep: one row per setting folder (each an
`explainseg eval` output), mean Dice % per method, best per column in bold.

    python3 tools/sweep_table.py runs/sweep/kvasir
"""
import json
import pathlib
import sys


def main(root: str) -> None:
    runs = {}
    for summary in sorted(pathlib.Path(root).glob("*/summary.json")):
        methods = json.loads(summary.read_text())["methods"]
        runs[summary.parent.name] = {m["method"]: m for m in methods}
    if not runs:
        sys.exit(f"no */summary.json under {root}")
    names = sorted({m for r in runs.values() for m in r})
    best = {m: max(r[m]["dice"] for r in runs.values() if m in r) for m in names}
    print("| setting | " + " | ".join(f"{m} Dice % (mIoU %)" for m in names) + " |")
    print("|---|" + "---:|" * len(names))
    order = sorted(runs, key=lambda k: (k != "defaults", k))
    for tag in order:
        cells = []
        for m in names:
            r = runs[tag].get(m)
            if r is None:
                cells.append("-")
                continue
            cell = f"{100 * r['dice']:.1f} ({100 * r['miou']:.1f})"
            cells.append(f"**{cell}**" if r["dice"] == best[m] else cell)
        print(f"| {tag} | " + " | ".join(cells) + " |")
    n = {m: r["images"] for r in runs["defaults"].values() for m in [r["method"]]} if "defaults" in runs else {}
    if n:
        print(f"\nimages: {n}")


if __name__ == "__main__":
    main(sys.argv[1])
