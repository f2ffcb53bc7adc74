"""Side by side: libnpid_cuda against PyTorch baselines on the same GPU, same run.

For each configuration: make one problem (seeded), write it to a folder, run
our side (the npid_op tool, its own process) and the PyTorch variants (this
process) on exactly those inputs and check that losses, gradients and updated
bank rows agree; only then time both sides (warm-up, CUDA events, median) and
write a markdown table and JSON.

    python3 bench/torch/side_by_side.py --npid-op build/bench/npid_op --out OUT [--small] [--device cpu|cuda]

--small runs a CPU-sized configuration (the CI check of the harness itself).
Exit status 1 when any equivalence check fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import npid_baselines as nb  # noqa: E402

# Stated tolerances: fp32 everywhere; sums over K+1 = 4097 rows in different
# orders differ by a few ulp of the largest terms.
TOL_LOSS_REL = 1e-4
TOL_GRAD_REL = 1e-4
TOL_ROWS_ABS = 1e-5

FULL_CONFIGS = [
    # (label, B, K, D, N, tau)
    ("imagenet B=256 K=4096 N=1.28M", 256, 4096, 128, 1281167, 0.07),
    ("cifar B=128 K=4096 N=50k", 128, 4096, 128, 50000, 0.1),
]
SMALL_CONFIGS = [("small B=16 K=64 N=5000", 16, 64, 128, 5000, 0.1)]


def make_problem(b, k, d, n, tau, device, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    bank = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    targets = torch.randperm(n, generator=g)[:b]          # unique: index_copy_ is then deterministic
    noise = torch.randn(b, d, generator=g)
    feats = torch.nn.functional.normalize(bank[targets] + noise * 0.5, dim=1)
    negatives = torch.randint(0, n, (b, k), generator=g)
    idx = torch.cat([targets[:, None], negatives], 1)
    # Z as the reference estimates it on its first batch.
    s = (bank[idx] * feats[:, None, :]).sum(-1)
    z = float(n * torch.exp(s / tau).mean())
    return {k_: v.to(device) for k_, v in dict(bank=bank, targets=targets, features=feats,
                                               negatives=negatives, idx=idx).items()}, z


def write_problem(folder, prob, b, k, d, n, tau, z, momentum):
    with open(os.path.join(folder, "meta.txt"), "w") as f:
        for key, val in dict(B=b, K=k, D=d, N=n, tau=tau, z=z, momentum=momentum, **{"lambda": 0}).items():
            f.write(f"{key} {val!r}\n")
    prob["features"].cpu().numpy().tofile(os.path.join(folder, "features.f32"))
    prob["bank"].cpu().numpy().tofile(os.path.join(folder, "bank.f32"))
    prob["targets"].cpu().numpy().tofile(os.path.join(folder, "targets.i64"))
    prob["negatives"].cpu().numpy().tofile(os.path.join(folder, "negatives.i64"))


def read_f32(path, shape):
    import numpy as np
    return torch.from_numpy(np.fromfile(path, dtype=np.float32)).view(*shape)


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def time_torch(fn, prob, tau, z, momentum, k, device, warmup, iters):
    bank = prob["bank"].clone()
    b = prob["features"].shape[0]
    n = bank.shape[0]
    times = []
    for it in range(warmup + iters):
        if device == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            t0 = time.perf_counter()
        # negatives drawn inside the timed step, as training does
        idx = torch.cat([prob["targets"][:, None], torch.randint(0, n, (b, k), device=device)], 1)
        fn(prob["features"], bank, prob["targets"], idx, tau, z, momentum)
        if device == "cuda":
            stop.record()
            stop.synchronize()
            ms = start.elapsed_time(stop)
        else:
            ms = (time.perf_counter() - t0) * 1e3
        if it >= warmup:
            times.append(ms)
    times.sort()
    return times[len(times) // 2]


def run_config(label, b, k, d, n, tau, args, device, momentum=0.5):
    res = {"pair": "nce_step", "config": label, "B": b, "K": k, "D": d, "N": n, "checks": {}, "theirs": {}}
    prob, z = make_problem(b, k, d, n, tau, device, seed=1234)
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        write_problem(folder, prob, b, k, d, n, tau, z, momentum)
        cmd = [args.npid_op, "nce", "--dir", folder, "--device", device,
               "--warmup", str(args.warmup), "--iters", str(args.iters)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            res["error"] = f"npid_op failed ({proc.returncode}): {proc.stderr.strip()}"
            return res
        ours_loss = float(read_f32(os.path.join(folder, "loss.f32"), (1,))[0])
        ours_grad = read_f32(os.path.join(folder, "grad.f32"), (b, d))
        ours_rows = read_f32(os.path.join(folder, "updated_rows.f32"), (b, d))
        res["ours_ms"] = json.load(open(os.path.join(folder, "timing.json")))["median_ms"]

    ok_all = True
    variants = ["reference", "compiled" if (nb.compiled_available() and device == "cuda") else "eager_closed_form"]
    for name in variants:
        fn = nb.VARIANTS[name][0]
        bank = prob["bank"].clone()
        try:
            loss, grad = fn(prob["features"], bank, prob["targets"], prob["idx"], tau, z, momentum)
        except Exception as e:  # a baseline that cannot run is reported, not hidden
            res["theirs"][name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        rows = bank[prob["targets"]].cpu()
        check = {
            "loss_rel": abs(ours_loss - float(loss)) / abs(float(loss)),
            "grad_rel": rel(ours_grad, grad.detach().cpu()),
            "rows_max_abs": float((ours_rows - rows).abs().max()),
        }
        check["ok"] = (check["loss_rel"] < TOL_LOSS_REL and check["grad_rel"] < TOL_GRAD_REL
                       and check["rows_max_abs"] < TOL_ROWS_ABS)
        ok_all &= check["ok"]
        res["checks"][name] = check
        if check["ok"]:
            ms = time_torch(fn, prob, tau, z, momentum, k, device, args.warmup, args.iters)
            res["theirs"][name] = {"ms": ms, "what": nb.VARIANTS[name][1]}
    res["ok"] = ok_all
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--npid-op", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--commit", default=os.environ.get("NPID_COMMIT", "unknown"))
    args = ap.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dev_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)

    results = []
    for cfg in (SMALL_CONFIGS if args.small else FULL_CONFIGS):
        r = run_config(*cfg, args=args, device=device)
        results.append(r)
        print(json.dumps(r), flush=True)

    gathered = lambda r: r["B"] * (r["K"] + 1) * r["D"] * 4  # bytes of bank rows one step reads
    lines = [f"## Side by side: libnpid_cuda vs PyTorch {torch.__version__} on {dev_name}", "",
             f"commit {args.commit}; time per NCE training step (forward + backward + bank update), "
             "median of CUDA-event timings (wall clock on a CPU); ratio = theirs / ours.", "",
             "| config | baseline | equivalent | ours ms | theirs ms | ratio | ours GB/s gathered |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['config']} | -- | ERROR: {r['error']} | | | | |")
            continue
        for name, check in r["checks"].items():
            t = r["theirs"].get(name, {})
            ms = t.get("ms")
            ratio = f"{ms / r['ours_ms']:.2f}x" if ms else "--"
            lines.append(f"| {r['config']} | {name} | {'yes' if check['ok'] else 'NO'} "
                         f"(loss {check['loss_rel']:.1e}, grad {check['grad_rel']:.1e}, rows {check['rows_max_abs']:.1e}) | "
                         f"{r['ours_ms']:.3f} | {'' if ms is None else f'{ms:.3f}'} | {ratio} | "
                         f"{gathered(r) / r['ours_ms'] / 1e6:.0f} |")
        for name, t in r["theirs"].items():
            if "error" in t:
                lines.append(f"| {r['config']} | {name} | could not run: {t['error']} | | | | |")
    md = "\n".join(lines) + "\n"
    open(os.path.join(args.out, "side_by_side.md"), "w").write(md)
    json.dump({"device": dev_name, "torch": torch.__version__, "commit": args.commit, "results": results},
              open(os.path.join(args.out, "side_by_side.json"), "w"), indent=1)
    print(md)
    ok = all(r.get("ok") for r in results)
    if not ok:
        print("side_by_side: EQUIVALENCE CHECK FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
