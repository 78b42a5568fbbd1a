"""Benchmark output: the printed table, the JSON rows and the scaling plot (PNG next to the JSON)."""
from __future__ import annotations

import json
from pathlib import Path

# (field, header, width, format of a value)
COLUMNS = [("model", "model", 16, "{}"), ("k", "k", 3, "{}"), ("impl", "impl", 20, "{}"), ("compile_s", "compile_s", 9, "{:.1f}"),
           ("step_s", "step_s", 8, "{:.4f}"), ("variant_samples_per_s", "samples/s", 9, "{:.0f}"),
           ("speedup", "speedup", 7, "{:.2f}"), ("peak_mem_mb", "peak_MiB", 8, "{:.0f}"), ("recompiles", "rec", 3, "{}")]


def add_speedups(rows: list[dict]):
    """``speedup`` = sequential's step time / this row's, at the same model, K, batch and precision."""
    key = lambda r: (r["model"], r["k"], r["batch"], r["bf16"], r["channels_last"])
    base = {key(r): r["step_s"] for r in rows if r["impl"] == "sequential"}
    for r in rows:
        r["speedup"] = base[key(r)] / r["step_s"] if key(r) in base else None


def line(row: dict) -> str:
    cell = lambda v, fmt: "-" if v is None else fmt.format(v)
    return " ".join(cell(row.get(f), fmt).ljust(w) if w >= 16 else cell(row.get(f), fmt).rjust(w)
                    for f, _, w, fmt in COLUMNS)


def header() -> str:
    return " ".join(h.ljust(w) if w >= 16 else h.rjust(w) for _, h, w, _ in COLUMNS)


def saturation(rows: list[dict], impl: str = "population") -> dict:
    """Per model: the smallest K whose throughput is within 10% of the best K's (more K buys < 10%)."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        pts = sorted((r["k"], r["variant_samples_per_s"]) for r in rows if r["model"] == model and r["impl"] == impl)
        if pts:
            best = max(t for _, t in pts)
            out[model] = next(k for k, t in pts if t >= 0.9 * best)
    return out


def write_json(rows: list[dict], path: Path, meta: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: v for k, v in r.items() if k != "step_s_all"} | {"step_s_all": [round(t, 6) for t in r["step_s_all"]]}
             for r in rows]
    path.write_text(json.dumps({"meta": meta, "rows": clean}, indent=1))


def plot(rows: list[dict], path: Path):
    """Throughput and memory per variant against K (log2), one line per model and implementation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5))
    for model in dict.fromkeys(r["model"] for r in rows):
        for impl in dict.fromkeys(r["impl"] for r in rows):
            pts = sorted((r["k"], r["variant_samples_per_s"], r["peak_mem_mb"] / r["k"]) for r in rows
                         if r["model"] == model and r["impl"] == impl)
            if pts:
                ks, thr, mem = zip(*pts)
                style = "-" if impl.startswith("population") else "--"
                ax_t.plot(ks, thr, style, marker="o", label=f"{model} {impl}")
                ax_m.plot(ks, mem, style, marker="o", label=f"{model} {impl}")
    for ax, ylabel in [(ax_t, "variant-samples / s"), (ax_m, "peak memory per variant (MiB)")]:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K (variants)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # python -m fer_func.bench.report BENCH.json: (re)draw BENCH.png, e.g. after a timeout
    import sys

    for arg in sys.argv[1:]:
        doc = json.loads(Path(arg).read_text())
        plot(doc["rows"], Path(arg).with_suffix(".png"))
