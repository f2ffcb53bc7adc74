#!/usr/bin/env python3
"""paper_table.py RUN [--json OUT] -- a finished `npid train` run beside the
paper's numbers (docs/math.md s.10; Wu et al., CVPR 2018, Table 1).

Reads RUN/config.json, RUN/final.json (or, for a run trained with
--no-final-eval, RUN/eval/eval.json from `npid eval`) and RUN/metrics.jsonl and prints a
markdown table: each published figure for the run's preset and criterion, the
run's own figure, and the difference. It also says whether the run is
comparable at all: the paper's protocol (the preset's data set and size, width
64, 200 epochs with x0.1 at 120 and 160, the preset's batch, tau, K and
augmentation) and every way this run departs from it. A run that departs
still gets its table; the verdict says what the difference means. Writes the
same as markdown to RUN/paper_comparison.md, and as JSON to --json when given.
Exit status: 0 when the table was written (whatever the verdict), 1 when the
run is unfinished or its files are missing or malformed.
"""
import json
import os
import sys

# (preset, criterion) -> rows of (metric, final.json path, paper figure in %, source)
PAPER = {
    ("cifar10", "nce"): [
        ("kNN top-1 (recomputed features, paper k = 200)", ("knn_recompute", "top1"), 80.4, "Table 1, NCE K = 4096"),
        ("linear SVM top-1", ("linear", "test_accuracy"), 70.2, "Table 1, NCE K = 4096"),
    ],
    ("cifar10", "softmax"): [
        ("kNN top-1 (recomputed features, paper k = 200)", ("knn_recompute", "top1"), 80.8, "Table 1, full softmax"),
        ("linear SVM top-1", ("linear", "test_accuracy"), 75.4, "Table 1, full softmax"),
    ],
    ("imagenet", "nce"): [
        ("kNN top-1 (recomputed features, paper k = 200)", ("knn_recompute", "top1"), 41.0, "reference README, ResNet-18"),
    ],
}
# The paper's protocol per preset (docs/math.md s.7 and s.8).
PROTOCOL = {
    "cifar10": {"train_size": 50000, "test_size": 10000, "image_size": 32, "stem": "cifar", "batch_size": 128,
                "temperature": 0.1, "weight_decay": 5e-4},
    "imagenet": {"train_size": 1281167, "test_size": 50000, "image_size": 224, "stem": "imagenet",
                 "batch_size": 256, "temperature": 0.07, "weight_decay": 1e-4},
}


class RunError(Exception):
    pass


def load(run, name):
    path = os.path.join(run, name)
    try:
        with open(path) as f:
            if name.endswith(".jsonl"):
                return [json.loads(line) for line in f if line.strip()]
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path}: missing (is the run finished, with its final evaluation?)")
    except (json.JSONDecodeError, OSError) as e:
        raise RunError(f"{path}: not readable as JSON: {e}")


def run_k(cfg, final):
    """The k the evaluation used (recorded in it), else the run's configured k."""
    return (final.get("knn") or {}).get("k", cfg.get("knn_k", "?"))


def close(a, b):
    return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))


def deviations(cfg, final, metrics):
    """Every way the run departs from the paper's protocol for its preset."""
    step, model = cfg["step"], cfg["step"]["model"]
    p = PROTOCOL[cfg["preset"]]
    out = []

    def want(what, got, expected):
        if isinstance(expected, float) and not isinstance(got, str):
            ok = close(got, expected)
        else:
            ok = got == expected
        if not ok:
            out.append(f"{what}: {got} (paper: {expected})")

    if str(cfg.get("data", "")).startswith("synthetic"):
        out.append(f"data: {cfg['data']} (paper: the real {cfg['preset']} images)")
    want("train images", final["train_size"], p["train_size"])
    want("test images", final["test_size"], p["test_size"])
    want("image size", model["image_size"], p["image_size"])
    want("stem", model["stem"], p["stem"])
    want("width", model["width"], 64)
    want("embedding dim", model["embedding_dim"], 128)
    want("epochs run", len(metrics), 200)
    want("epochs configured", cfg["epochs"], 200)
    if cfg.get("cosine"):
        out.append("lr schedule: cosine (paper: x0.1 at epochs 120 and 160)")
    else:
        want("lr milestones", list(cfg["lr_milestones"]), [120, 160])
        want("lr gamma", cfg["lr_gamma"], 0.1)
    want("lr", cfg["lr"], 0.03)
    if cfg.get("steps_per_epoch", 0):
        out.append(f"steps per epoch capped at {cfg['steps_per_epoch']} (paper: whole epochs)")
    want("kNN k", run_k(cfg, final), 200)
    # What the evaluation itself used (npid eval may have been given others).
    want("kNN sigma", (final.get("knn") or {}).get("sigma", step["temperature"]), p["temperature"])
    if final.get("linear"):
        want("linear classifier", final["linear"].get("loss", "hinge"), "hinge")
    want("batch", step["batch_size"], p["batch_size"])
    want("tau", step["temperature"], p["temperature"])
    want("weight decay", step["sgd"]["weight_decay"], p["weight_decay"])
    want("momentum", step["sgd"]["momentum"], 0.9)
    want("bank momentum", step["bank_momentum"], 0.5)
    want("proximal lambda", step["proximal_lambda"], 0.0)
    if step["criterion"] == "nce":
        want("NCE K", step["num_negatives"], 4096)
    want("augmentation flip", step["augment"]["flip_p"], 0.0 if cfg["preset"] == "cifar10" else 0.5)
    return out


def compare(run):
    cfg, metrics = load(run, "config.json"), load(run, "metrics.jsonl")
    # The run's final evaluation; for a run trained with --no-final-eval, the
    # one `npid eval` wrote into RUN/eval/ (its sizes and k are checked below).
    eval_file = "final.json"
    if not os.path.exists(os.path.join(run, "final.json")) and os.path.exists(os.path.join(run, "eval", "eval.json")):
        eval_file = os.path.join("eval", "eval.json")
    final = load(run, eval_file)
    try:
        preset, criterion = cfg["preset"], cfg["step"]["criterion"]
        rows_spec = PAPER.get((preset, criterion))
        if rows_spec is None:
            raise RunError(f"{run}: the paper reports no {criterion} figures for the {preset} preset "
                           f"(it has: {', '.join(f'{p} {c}' for p, c in PAPER)})")
        rows = []
        for metric, (section, key), paper, source in rows_spec:
            ours = final.get(section, {}) or {}
            if key not in ours:
                raise RunError(f"{run}/{eval_file}: no {section}.{key} (was that part of the evaluation turned off?)")
            value = 100.0 * float(ours[key])
            if section.startswith("knn"):
                metric = metric[:-1] + f", this run k = {run_k(cfg, final)})"
            rows.append({"metric": metric, "paper": paper, "ours": round(value, 2),
                         "difference": round(value - paper, 2), "source": source})
        devs = deviations(cfg, final, metrics)
    except KeyError as e:
        raise RunError(f"{run}: config.json or {eval_file} lacks the field {e}")
    return {"run": os.path.abspath(run), "preset": preset, "criterion": criterion, "evaluation": eval_file,
            "comparable": not devs, "deviations": devs, "rows": rows,
            "epochs": len(metrics), "last_epoch_images_per_s": metrics[-1].get("images_per_s") if metrics else None}


def markdown(r):
    lines = [f"# {r['run']} beside the paper ({r['preset']}, {r['criterion']})", "",
             f"Evaluation: {r['evaluation']}.", "",
             "| metric | paper | this run | difference | paper source |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['metric']} | {row['paper']:.1f} % | {row['ours']:.2f} % | "
                     f"{row['difference']:+.2f} | {row['source']} |")
    lines.append("")
    if r["comparable"]:
        lines.append("Comparable: the run follows the paper's protocol (docs/math.md s.7-9).")
    else:
        lines.append("Not comparable with the paper's figures; the run departs from its protocol in:")
        lines += [f"- {d}" for d in r["deviations"]]
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) >= 2 and argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--json"):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    run = argv[1]
    try:
        r = compare(run)
    except RunError as e:
        print(f"paper_table: {e}", file=sys.stderr)
        return 1
    text = markdown(r)
    sys.stdout.write(text)
    with open(os.path.join(run, "paper_comparison.md"), "w") as f:
        f.write(text)
    if len(argv) == 4:
        with open(argv[3], "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
