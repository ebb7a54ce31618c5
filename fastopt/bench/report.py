"""Presenting bench results: the row record, the text table, the JSON file and the plot."""
import json
import math
import statistics

IMPLS = ("fastopt", "numpy", "torch")

# (header, width, row key, formatter) of the text table, in column order. Times are medians; a
# ratio is the median of the per-repeat ratios with their range (repeats are interleaved).
_COLUMNS = (
    ("kernel", 25, "kernel", str),
    ("size", 14, "size", str),
    ("dtype", 7, "dtype", str),
    ("fastopt", 10, "fastopt_median_s", lambda v: format_time(v)),
    ("numpy", 10, "numpy_median_s", lambda v: format_time(v)),
    ("speedup", 17, "speedup_median", None),
    ("GB/s", 7, "gbps", lambda v: f"{v:.1f}"),
    ("%roof", 6, "roofline_fraction", lambda v: f"{100 * v:.0f}%"),
    ("torch", 10, "torch_median_s", lambda v: format_time(v)),
    ("torch/fo", 17, "torch_ratio_median", None),
    ("torch impl", 14, "torch_impl", str),
    ("others / fastopt", 24, "others", str),
)


def _paired_ratios(num, den):
    """Per-repeat ratios num[r] / den[r] of two interleaved Timings: (median, min, max), or Nones."""
    if num is None or den is None:
        return None, None, None
    pairs = [a / b for a, b in zip(num.samples, den.samples) if b > 0]
    if not pairs:
        ratio = num.median / den.median
        return ratio, ratio, ratio
    return statistics.median(pairs), min(pairs), max(pairs)


def _ratio_text(row, key):
    median, spread = row.get(key), row.get(key.replace("_median", "_range"))
    if median is None:
        return "-"
    return f"{median:.2f}x" + (f" [{spread[0]:.2f}-{spread[1]:.2f}]" if spread else "")


def make_row(suite, case, timings, copy_bandwidth):
    """One JSON-ready row: the case, its timings (seconds per call) and the derived ratios.

    speedup = numpy / fastopt; torch_ratio = torch / fastopt (> 1: fastopt faster), from the min
    times; ``*_median`` / ``*_range``: the same ratios per interleaved repeat, their median and range;
    <extra>_ratio_* likewise for each extra implementation (numba, torch foreach, ...).
    gbps = bytes_moved / fastopt min time; copy_fraction = that bandwidth / the np.copyto probe's;
    roofline_fraction = the stream loop's median time with the case's access pattern (timings
    "roofline", same run, same threads) / fastopt's median time: the share of the achievable.
    """
    fast = timings["fastopt"].min
    row = {"suite": suite, "kernel": case.kernel, "size": case.size, "elements": case.elements,
           "dtype": case.dtype, "bytes_moved": case.bytes_moved, "torch_impl": case.torch_impl or None}
    for name in IMPLS + tuple(case.extra) + ("roofline",):
        t = timings.get(name)
        row[name] = t.as_dict() if t else None
        row[f"{name}_s"] = t.min if t else None
        row[f"{name}_median_s"] = t.median if t else None
    row["speedup"] = row["numpy_s"] / fast if row["numpy_s"] else None
    row["torch_ratio"] = row["torch_s"] / fast if row["torch_s"] else None
    ratio_keys = {"numpy": "speedup", "torch": "torch_ratio", **{n: f"{n}_ratio" for n in case.extra}}
    for name, key in ratio_keys.items():
        median, low, high = _paired_ratios(timings.get(name), timings["fastopt"])
        row[f"{key}_median"] = median
        row[f"{key}_range"] = [low, high] if median is not None else None
    row["others"] = "  ".join(f"{n} {row[f'{n}_ratio_median']:.2f}x" for n in case.extra
                              if row[f"{n}_ratio_median"] is not None) or None
    row["gbps"] = case.bytes_moved / fast / 1e9 if case.bytes_moved else None
    row["copy_fraction"] = row["gbps"] * 1e9 / copy_bandwidth if row["gbps"] and copy_bandwidth else None
    roof = timings.get("roofline")
    row["roofline_pattern"] = ({"reads": case.access[0], "writes": case.access[1]}
                               if case.access is not None else None)
    row["roofline_fraction"] = roof.median / timings["fastopt"].median if roof else None
    row.update({f"note_{k}": v for k, v in case.notes.items()})
    return row


def format_time(seconds):
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table_header():
    head = " ".join(f"{title:>{width}}" if i > 2 else f"{title:<{width}}"
                    for i, (title, width, _, _) in enumerate(_COLUMNS))
    return head + "\n" + "-" * len(head)


def table_row(row):
    cells = []
    for i, (_, width, key, fmt) in enumerate(_COLUMNS):
        value = row.get(key)
        if fmt is None:
            text = _ratio_text(row, key)
        else:
            text = "-" if value is None or value == "" else fmt(value)
        cells.append(f"{text:>{width}}" if i > 2 else f"{text:<{width}}")
    return " ".join(cells)


def machine_header(machine, copy_bandwidth, settings):
    """The lines printed above the table: what ran, on what, and the copy roofline."""
    blas = machine.get("blas") or {}
    env = machine.get("env") or {}
    coretype = env.get("OPENBLAS_CORETYPE")
    return "\n".join([
        f"fastopt {machine['fastopt_version']}  backend={machine['backend']}  "
        f"OpenMP={'on' if machine['openmp'] else 'off'}  threads={settings['threads']}  "
        f"build={' '.join(machine['simd']) or 'n/a'}  kernels: "
        + (" ".join(f"{f}={v}" for f, v in (machine.get("kernel_variants") or {}).items()) or "n/a"),
        f"NumPy {machine['numpy_version']} ({blas.get('name', 'BLAS unknown')} {blas.get('version', '')})".rstrip()
        + f"  OPENBLAS_CORETYPE={coretype if coretype is not None else 'unset'}"
        + f"  torch={settings['torch_version'] or 'not used'}",
        f"CPU {machine.get('cpu_model') or 'unknown'}  Python {machine['python']}  {machine['platform']}",
        f"times are medians of {settings['repeat']} interleaved repeats; ratios: the median of the "
        f"per-repeat ratios [their range]; %roof: a compiled stream loop over the kernel's arrays read "
        f"and written (same size, dtype, threads, run) / the kernel's time. np.copyto of "
        f"{settings['copy_mb']} MB: {copy_bandwidth / 1e9:.1f} GB/s (copy bandwidth, for reference)",
    ])


def write_json(path, document):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2, allow_nan=False)
        f.write("\n")


def plot(path, rows):
    """PNG: per suite, speedup over NumPy against size for each kernel (dashed: torch time / fastopt time);
    a suite with a single size per kernel (mlp) gets bars of time per call for each implementation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = list(dict.fromkeys(row["suite"] for row in rows))
    fig, axes = plt.subplots(len(suites), 1, figsize=(12, 5 * len(suites)), squeeze=False)
    for ax, suite in zip(axes[:, 0], suites):
        suite_rows = [row for row in rows if row["suite"] == suite]
        lines = {}
        for row in suite_rows:
            lines.setdefault((row["kernel"], row["dtype"]), []).append(row)
        if all(len(points) == 1 for points in lines.values()):
            _bars(ax, suite, suite_rows)
        else:
            _speedup_lines(ax, suite, lines)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _speedup_lines(ax, suite, lines):
    for (kernel, dtype), points in lines.items():
        points = sorted(points, key=lambda row: row["elements"])
        xs = [row["elements"] for row in points]
        label = f"{kernel} {dtype}"
        (line,) = ax.plot(xs, [row["speedup"] or math.nan for row in points], marker="o", label=label)
        if any(row["torch_ratio"] for row in points):
            ax.plot(xs, [row["torch_ratio"] or math.nan for row in points], marker="x", linestyle="--",
                    color=line.get_color(), label=f"{label}: torch / fastopt")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xlabel("elements")
    ax.set_ylabel("time ratio (other / fastopt)")
    ax.set_title(f"{suite}: speedup of fastopt over NumPy (solid) and over PyTorch (dashed)")
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _bars(ax, suite, suite_rows):
    labels = [f"{row['kernel']} {row['size']} {row['dtype']}" for row in suite_rows]
    width = 0.8 / len(IMPLS)
    for i, name in enumerate(IMPLS):
        values = [1e3 * row[f"{name}_s"] if row[f"{name}_s"] else math.nan for row in suite_rows]
        if any(math.isfinite(v) for v in values):
            ax.bar([j + (i - 1) * width for j in range(len(labels))], values, width, label=name)
    ax.set_xlim(-0.6, len(labels) - 0.4)  # keeps a lone case (mlp) from stretching into wide slabs
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8, rotation=30, ha="right")
    finite = [1e3 * row[f"{name}_s"] for row in suite_rows for name in IMPLS if row[f"{name}_s"]]
    if finite and max(finite) > 20 * min(finite):
        ax.set_yscale("log")  # implementations that differ by orders of magnitude
        ax.set_ylabel("ms per call (log scale)")
    else:
        ax.set_ylim(bottom=0)  # a linear axis from zero keeps bar heights proportional to time
        ax.set_ylabel("ms per call")
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", fontsize=8)
    ax.set_title(f"{suite}: time per call")
    ax.legend()
