"""Side by side: libnpid_cuda against PyTorch baselines on the same GPU, same run.

For each pair and configuration: make one problem (seeded), run our side (the
npid_op tool, its own process) and the PyTorch variants (this process) on
exactly those inputs, check that losses, gradients and updated bank rows agree
within the stated tolerances, and only then time both sides (warm-up, then
CUDA events, median). Pairs whose libnpid_cuda side does not exist yet run the
PyTorch side alone ("baseline only"), with the PyTorch variants checked against
each other where they compute the same thing.

    python3 bench/torch/side_by_side.py --npid-op build/bench/npid_op --out OUT
        [--small] [--device cpu|cuda] [--pairs nce,softmax,knn,train] [--data DIR]

--small runs CPU-sized configurations (the CI check of the harness itself).
Exit status 1 when any equivalence check fails.
"""
import argparse
import math
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import npid_baselines as nb  # noqa: E402

# Stated tolerances (fp32; sums over thousands of rows in different orders
# differ by a few ulp of the largest terms; the softmax logits come from
# matmuls whose accumulation order differs between libraries).
TOL_LOSS_REL = 1e-4
TOL_GRAD_REL = 1e-4
TOL_ROWS_ABS = 1e-5
# A bf16 bank stores each updated row rounded to nearest (8 significant bits):
# |rounded - exact| <= 2^-9 |x| <= 2^-9 for unit rows; the baseline keeps fp32.
TOL_ROWS_ABS_BF16 = 2.0 ** -8

CONFIGS = {
    # pair: (full configs, small configs); each config is a dict
    "nce": ([dict(label="imagenet B=256 K=4096 N=1.28M", B=256, K=4096, D=128, N=1281167, tau=0.07),
             dict(label="imagenet B=256 K=4096 N=1.28M, our bank bf16", B=256, K=4096, D=128, N=1281167,
                  tau=0.07, bf16=1),
             dict(label="cifar B=128 K=4096 N=50k", B=128, K=4096, D=128, N=50000, tau=0.1)],
            [dict(label="small B=16 K=64 N=5000", B=16, K=64, D=128, N=5000, tau=0.1),
             dict(label="small B=16 K=64 N=5000, our bank bf16", B=16, K=64, D=128, N=5000, tau=0.1, bf16=1)]),
    "softmax": ([dict(label="cifar B=128 N=50k, TF32", B=128, D=128, N=50000, tau=0.1),
                 dict(label="imagenet B=256 N=1.28M, TF32", B=256, D=128, N=1281167, tau=0.07),
                 dict(label="imagenet B=256 N=1.28M, TF32, our bank bf16", B=256, D=128, N=1281167, tau=0.07,
                      bf16=1),
                 dict(label="imagenet B=256 N=1.28M, our bank bf16 + bf16 GEMMs (theirs TF32)", B=256, D=128,
                      N=1281167, tau=0.07, bf16=1, bf16_math=1)],
                [dict(label="small B=16 N=3000", B=16, D=128, N=3000, tau=0.1),
                 dict(label="small B=16 N=3000, our bank bf16", B=16, D=128, N=3000, tau=0.1, bf16=1),
                 dict(label="small B=16 N=3000, our bank bf16 + bf16 GEMMs", B=16, D=128, N=3000, tau=0.1, bf16=1,
                      bf16_math=1)]),
    "knn": ([dict(label="cifar 10k x 50k k=200", Q=10000, N=50000, D=128, k=200, C=10),
             dict(label="imagenet 50k x 1.28M k=200", Q=50000, N=1281167, D=128, k=200, C=1000)],
            [dict(label="small 200 x 2000 k=20", Q=200, N=2000, D=128, k=20, C=10)]),
    # Each shape twice: cuDNN's heuristic engines on both sides (PyTorch eager's
    # default, cudnn.benchmark off), then autotuned on both sides (ours:
    # autotune_convolutions; theirs: cudnn.benchmark).
    "resnet": ([dict(label="cifar width 64, 32x32, B=256, TF32", stem="cifar", width=64, S=32, B=256, autotune=0),
                dict(label="cifar width 64, 32x32, B=256, TF32, autotuned", stem="cifar", width=64, S=32, B=256,
                     autotune=1),
                # PyTorch allows nondeterministic engines by default
                # (cudnn.deterministic off): ours too, on this row only.
                dict(label="cifar width 64, 32x32, B=256, TF32, autotuned, ours nondeterministic too", stem="cifar",
                     width=64, S=32, B=256, autotune=1, deterministic=0),
                dict(label="imagenet width 64, 224x224, B=64, TF32", stem="imagenet", width=64, S=224, B=64,
                     autotune=0),
                dict(label="imagenet width 64, 224x224, B=64, TF32, autotuned", stem="imagenet", width=64, S=224,
                     B=64, autotune=1)],
               [dict(label="small cifar width 64, 16x16, B=2", stem="cifar", width=64, S=16, B=2),
                dict(label="small imagenet width 4, 32x32, B=3", stem="imagenet", width=4, S=32, B=3)]),
    "train": ([dict(label="cifar NCE K=4096 B=128", criterion="nce", B=128, K=4096, steps=40, warmup=8),
               dict(label="cifar softmax B=128", criterion="softmax", B=128, K=0, steps=40, warmup=8)],
              [dict(label="small NCE K=64 B=8", criterion="nce", B=8, K=64, steps=2, warmup=1, N=64),
               dict(label="small softmax B=8", criterion="softmax", B=8, K=0, steps=2, warmup=1, N=64)]),
}


class _TimedOut:
    def __init__(self, seconds, stderr):
        self.returncode = "timeout"
        self.stdout = ""
        self.stderr = f"timed out after {seconds} s" + (f"; stderr: {stderr.strip()[-500:]}" if stderr else "")


def run_op(args, cmd):
    """Our side (npid_op), bounded: a hang costs one pair, not the rest."""
    try:
        env = None
        if os.environ.get("NPID_OP_LD_LIBRARY_PATH"):
            # Our binary's libraries (device_check.sh): given to it alone, so they never shadow PyTorch's.
            env = dict(os.environ, LD_LIBRARY_PATH=os.environ["NPID_OP_LD_LIBRARY_PATH"])
        return subprocess.run(cmd, capture_output=True, text=True, timeout=args.op_timeout, env=env)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return _TimedOut(args.op_timeout, err)


_IMAGES = {}


def load_images_once(tb, root):
    """The training pair's image folder, decoded once per run (50,000 JPEGs)."""
    if root not in _IMAGES:
        _IMAGES[root] = tb.load_images(root)
    return _IMAGES[root]


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check(loss_a, grad_a, rows_a, loss_b, grad_b, rows_b, rows_tol=TOL_ROWS_ABS):
    c = {"loss_rel": abs(float(loss_a) - float(loss_b)) / max(abs(float(loss_b)), 1e-30),
         "grad_rel": rel(grad_a.float().cpu(), grad_b.float().cpu()),
         "rows_max_abs": float((rows_a.cpu() - rows_b.cpu()).abs().max())}
    c["ok"] = c["loss_rel"] < TOL_LOSS_REL and c["grad_rel"] < TOL_GRAD_REL and c["rows_max_abs"] < rows_tol
    return c


def run_ours(op, prob, meta, args, device, b, d):
    """Writes the problem, runs npid_op (its own process); returns
    ((loss, grad, updated_rows), median_ms) or raises RuntimeError."""
    import numpy as np
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        with open(os.path.join(folder, "meta.txt"), "w") as f:
            for key, val in meta.items():
                f.write(f"{key} {val!r}\n")
        for name, ext in (("features", "f32"), ("bank", "f32"), ("targets", "i64"), ("negatives", "i64")):
            if name in prob:
                prob[name].cpu().numpy().tofile(os.path.join(folder, f"{name}.{ext}"))
        proc = run_op(args, [args.npid_op, op, "--dir", folder, "--device", device,
                             "--warmup", str(args.warmup), "--iters", str(args.iters)])
        if proc.returncode != 0:
            raise RuntimeError(f"npid_op failed ({proc.returncode}): {proc.stderr.strip()}")
        rd = lambda name: torch.from_numpy(np.fromfile(os.path.join(folder, name), dtype=np.float32))
        outs = (rd("loss.f32")[0], rd("grad.f32").view(b, d), rd("updated_rows.f32").view(b, d))
        return outs, json.load(open(os.path.join(folder, "timing.json")))["median_ms"]


def widen_bf16(prob):
    """The problem as a bf16 bank holds it: the baseline gets the same values in fp32."""
    out = dict(prob)
    out["bank"] = prob["bank"].bfloat16().float()
    return out


class Timer:
    def __init__(self, device):
        self.device = device

    def median_ms(self, fn, warmup, iters):
        times = []
        for it in range(warmup + iters):
            if self.device == "cuda":
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                ms = start.elapsed_time(stop)
            else:
                t0 = time.perf_counter()
                fn()
                ms = (time.perf_counter() - t0) * 1e3
            if it >= warmup:
                times.append(ms)
        times.sort()
        return times[len(times) // 2]


def bank_problem(cfg, device, seed=1234):
    g = torch.Generator(device="cpu").manual_seed(seed)
    n, b, d = cfg["N"], cfg["B"], cfg["D"]
    bank = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    targets = torch.randperm(n, generator=g)[:b]  # unique: index_copy_ is then deterministic
    feats = torch.nn.functional.normalize(bank[targets] + 0.5 * torch.randn(b, d, generator=g), dim=1)
    out = dict(bank=bank, targets=targets, features=feats)
    if "K" in cfg:
        out["negatives"] = torch.randint(0, n, (b, cfg["K"]), generator=g)
    return {k: v.to(device) for k, v in out.items()}


# ---- pairs -------------------------------------------------------------------

def pair_nce(cfg, args, device, timer):
    b, k, d, n, tau, momentum = cfg["B"], cfg["K"], cfg["D"], cfg["N"], cfg["tau"], 0.5
    bf16 = cfg.get("bf16", 0)
    prob = bank_problem(cfg, device)
    if bf16:
        prob = widen_bf16(prob)
    idx = torch.cat([prob["targets"][:, None], prob["negatives"]], 1)
    s = (prob["bank"][idx] * prob["features"][:, None, :]).sum(-1)
    z = float(n * torch.exp(s / tau).mean())  # first-batch Z, as the reference
    # Bytes of bank rows each side gathers per step (the baseline's bank is fp32).
    res = {"rate_unit": "GB/s gathered", "work": b * (k + 1) * d * (2 if bf16 else 4) / 1e9,
           "work_theirs": b * (k + 1) * d * 4 / 1e9}
    meta = dict(B=b, K=k, D=d, N=n, tau=tau, z=z, momentum=momentum, bf16=bf16, **{"lambda": 0})
    try:
        ours, res["ours_ms"] = run_ours("nce", prob, meta, args, device, b, d)
    except RuntimeError as e:
        res["error"] = str(e)
        return res

    variants = ["reference", "compiled" if (nb.compiled_available() and device == "cuda") else "eager_closed_form"]
    res["theirs"] = {}
    for name in variants:
        fn = nb.VARIANTS[name][0]
        bank = prob["bank"].clone()
        try:
            loss, grad = fn(prob["features"], bank, prob["targets"], idx, tau, z, momentum)
        except Exception as e:  # a baseline that cannot run is reported, not hidden
            res["theirs"][name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        c = check(*ours, loss, grad, bank[prob["targets"]], TOL_ROWS_ABS_BF16 if bf16 else TOL_ROWS_ABS)
        entry = {"check": c, "what": nb.VARIANTS[name][1]}
        if c["ok"]:
            bank = prob["bank"].clone()

            def step():  # negatives drawn inside the timed step, as training does
                i = torch.cat([prob["targets"][:, None], torch.randint(0, n, (b, k), device=device)], 1)
                fn(prob["features"], bank, prob["targets"], i, tau, z, momentum)
            entry["ms"] = timer.median_ms(step, args.warmup, args.iters)
        res["theirs"][name] = entry
    return res


def pair_softmax(cfg, args, device, timer):
    """Equivalence in exact fp32 on both sides; timing with TF32 matmuls on both."""
    b, d, n, tau, momentum = cfg["B"], cfg["D"], cfg["N"], cfg["tau"], 0.5
    bf16 = cfg.get("bf16", 0)
    prob = bank_problem(cfg, device)
    if bf16:
        prob = widen_bf16(prob)
    res = {"rate_unit": "TFLOP/s", "work": 2 * 2 * b * n * d / 1e12, "theirs": {}}
    # bf16_math: our timed runs use bf16 GEMMs on the bf16 bank (equivalence stays in exact fp32).
    meta = dict(B=b, D=d, N=n, tau=tau, momentum=momentum, bf16=bf16, bf16_math=cfg.get("bf16_math", 0),
                **{"lambda": 0})
    try:
        ours, res["ours_ms"] = run_ours("softmax", prob, meta, args, device, b, d)
    except RuntimeError as e:
        res["error"] = str(e)
        return res
    best = "compiled" if (nb.compiled_available() and device == "cuda") else "eager_closed_form"
    for name in ["reference", best]:
        fn = nb.SOFTMAX_VARIANTS[name][0]
        entry = {"what": nb.SOFTMAX_VARIANTS[name][1]}
        try:
            torch.backends.cuda.matmul.allow_tf32 = False
            bank = prob["bank"].clone()
            loss, grad = fn(prob["features"], bank, prob["targets"], tau, momentum)
            entry["check"] = check(*ours, loss, grad, bank[prob["targets"]],
                                   TOL_ROWS_ABS_BF16 if bf16 else TOL_ROWS_ABS)
            if entry["check"]["ok"]:
                torch.backends.cuda.matmul.allow_tf32 = True
                bank = prob["bank"].clone()
                entry["ms"] = timer.median_ms(lambda: fn(prob["features"], bank, prob["targets"], tau, momentum),
                                              args.warmup, args.iters)
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
        res["theirs"][name] = entry
    torch.backends.cuda.matmul.allow_tf32 = False
    return res


def pair_resnet(cfg, args, device, timer):
    """ResNet-18 forward+backward+SGD. Equivalence at exact fp32 on both sides:
    our weights load into the PyTorch module (and, at width 64, into
    torchvision's resnet18 itself); embeddings, every parameter gradient and
    the running statistics after one training step are compared. Timing:
    TF32 convolutions on both sides, channels_last on PyTorch's, cuDNN's
    engine search on both sides or on neither (cfg autotune)."""
    import numpy as np
    import resnet_torch as rt
    stem, width, s, b, d = cfg["stem"], cfg["width"], cfg["S"], cfg["B"], 128
    g = torch.Generator().manual_seed(99)
    images = torch.randn(b, s, s, 3, generator=g)  # NHWC
    grad = torch.randn(b, d, generator=g)
    res = {"rate_unit": "images/s", "work": b, "theirs": {}}
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        autotune = cfg.get("autotune", 0)
        meta = dict(stem=0 if stem == "cifar" else 1, width=width, D=d, S=s, B=b, seed=3,
                    tf32=1 if device == "cuda" else 0, lr=0.03, autotune=autotune,
                    deterministic=cfg.get("deterministic", 1))
        with open(os.path.join(folder, "meta.txt"), "w") as f:
            for key, val in meta.items():
                f.write(f"{key} {val!r}\n")
        images.numpy().tofile(os.path.join(folder, "images.f32"))
        grad.numpy().tofile(os.path.join(folder, "grad.f32"))
        proc = run_op(args, [args.npid_op, "resnet", "--dir", folder, "--device", device,
                             "--warmup", str(min(args.warmup, 3)), "--iters", str(min(args.iters, 10))])
        if proc.returncode != 0:
            res["error"] = f"npid_op failed ({proc.returncode}): {proc.stderr.strip()}"
            return res
        rd = lambda name: torch.from_numpy(np.fromfile(os.path.join(folder, name), dtype=np.float32))
        layout = rt.read_layout(os.path.join(folder, "layout.txt"))
        params, grads, stats, emb = rd("params.f32"), rd("grads.f32"), rd("stats.f32"), rd("emb.f32").view(b, d)
        res["ours_ms"] = json.load(open(os.path.join(folder, "timing.json")))["median_ms"]

    # The initial running statistics (0, 1) go in; ours after the step come out.
    init_stats = torch.cat([torch.zeros(r[3]) if r[1].endswith("mean") else torch.ones(r[3])
                            for r in layout if r[0] == "buffer"])
    state = rt.state_from_npid(layout, params, init_stats)
    models = {"pytorch": rt.ResNet18Embedding(stem, width, d)}
    if width == 64:
        models["torchvision"] = rt.torchvision_embedding(stem, d)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for name, model in models.items():
        entry = {"what": {"pytorch": "PyTorch module written from the reference doc, torchvision names",
                          "torchvision": "torchvision.models.resnet18 itself, our weights loaded strictly"}[name]}
        # Every equivalence check at exact fp32 without autotuning (the timed
        # run of the previous model turned TF32 and cudnn.benchmark on).
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        try:
            prefix = "net." if name == "torchvision" else ""
            model.load_state_dict({prefix + k: v for k, v in state.items()}, strict=True)
            model = model.to(device).train()
            x = images.permute(0, 3, 1, 2).to(device)
            out = model(x)
            (out * grad.to(device)).sum().backward()
            ours_grads = rt.state_from_npid(layout, grads, init_stats)
            theirs = dict(model.named_parameters())
            g_ours = torch.cat([ours_grads[k].flatten() for k in ours_grads if prefix + k in theirs])
            g_theirs = torch.cat([theirs[prefix + k].grad.detach().cpu().flatten() for k in ours_grads
                                  if prefix + k in theirs])
            buffers = dict(model.named_buffers())
            st_ours = rt.state_from_npid(layout, params, stats)
            s_ours = torch.cat([st_ours[k].flatten() for k in st_ours if "running" in k])
            s_theirs = torch.cat([buffers[prefix + k].detach().cpu().flatten() for k in st_ours if "running" in k])
            c = {"loss_rel": rel(emb, out.detach().cpu()), "grad_rel": rel(g_ours, g_theirs),
                 "rows_max_abs": float((s_ours - s_theirs).abs().max())}
            # Gradients pass ReLU masks and max-pool picks: an input within
            # rounding of a boundary flips between two exact-fp32
            # implementations (our CPU float network against the double one
            # differs by up to 6.6e-3), so gradients agree to 1e-2 (cosine
            # ~0.9999), embeddings and statistics to rounding.
            c["ok"] = c["loss_rel"] < 1e-4 and c["grad_rel"] < 1e-2 and c["rows_max_abs"] < 1e-4
            c["against"] = "ours (emb, grads, running stats)"
            entry["check"] = c
            if c["ok"] and name == "pytorch":
                torch.backends.cudnn.allow_tf32 = device == "cuda"
                torch.backends.cuda.matmul.allow_tf32 = device == "cuda"
                # Autotuned configurations: cuDNN's search (run by the
                # warm-up steps) on their side too; else eager's default.
                torch.backends.cudnn.benchmark = device == "cuda" and autotune == 1
                model = rt.ResNet18Embedding(stem, width, d).to(device).train()
                xt, gt = images.permute(0, 3, 1, 2).to(device), grad.to(device)
                if device == "cuda":
                    model = model.to(memory_format=torch.channels_last)
                    xt = xt.contiguous(memory_format=torch.channels_last)
                opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)

                def step():
                    opt.zero_grad(set_to_none=True)
                    (model(xt) * gt).sum().backward()
                    opt.step()
                entry["ms"] = timer.median_ms(step, min(args.warmup, 3), min(args.iters, 10))
                entry["rate"] = b / entry["ms"] * 1e3
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
        res["theirs"][name] = entry
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    return res


def pair_knn(cfg, args, device, timer):
    """Weighted kNN (k, sigma = 0.1). Equivalence: the top-k similarities agree
    and predictions agree on all but near-tie queries (<= 0.5%); both sides in
    exact fp32 matmuls. Timing: the whole evaluation on each side."""
    import numpy as np
    q, n, d, k, c = cfg["Q"], cfg["N"], cfg["D"], cfg["k"], cfg["C"]
    g = torch.Generator(device="cpu").manual_seed(7)
    train = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    labels = torch.randint(0, c, (n,), generator=g)
    queries = torch.nn.functional.normalize(torch.randn(q, d, generator=g), dim=1)
    qlabels = torch.randint(0, c, (q,), generator=g)
    res = {"rate_unit": "M queries/s", "work": q / 1e6, "theirs": {}}
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        with open(os.path.join(folder, "meta.txt"), "w") as f:
            for key, val in dict(Q=q, N=n, D=d, k=k, C=c, sigma=0.1).items():
                f.write(f"{key} {val!r}\n")
        for name, t in (("queries.f32", queries), ("train.f32", train), ("labels.i64", labels),
                        ("qlabels.i64", qlabels)):
            t.numpy().tofile(os.path.join(folder, name))
        proc = run_op(args, [args.npid_op, "knn", "--dir", folder, "--device", device,
                             "--warmup", str(min(args.warmup, 2)), "--iters", str(min(args.iters, 5))])
        if proc.returncode != 0:
            res["error"] = f"npid_op failed ({proc.returncode}): {proc.stderr.strip()}"
            return res
        our_values = torch.from_numpy(np.fromfile(os.path.join(folder, "values.f32"), dtype=np.float32)).view(q, k)
        our_pred = torch.from_numpy(np.fromfile(os.path.join(folder, "predictions.i64"), dtype=np.int64))
        res["ours_ms"] = json.load(open(os.path.join(folder, "timing.json")))["median_ms"]
    train_d, labels_d, queries_d = train.to(device), labels.to(device), queries.to(device)
    entry = {"what": "matmul + topk + exp-weighted class votes, 1,000-query chunks"}
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        scores = nb.knn_predict(queries_d, train_d, labels_d, c, k=k)
        top_values = torch.cat([(queries_d[s:s + 1000] @ train_d.t()).topk(k, dim=1).values
                                for s in range(0, q, 1000)]).cpu()
        agree = float((scores.argmax(1).cpu() == our_pred).float().mean())
        c_ = {"values_max_abs": float((our_values - top_values).abs().max()), "prediction_agreement": agree}
        c_["ok"] = c_["values_max_abs"] < 1e-4 and agree >= 0.995
        c_["against"] = "ours (top-k similarities, predictions)"
        entry["check"] = c_
        if c_["ok"]:
            entry["ms"] = timer.median_ms(lambda: nb.knn_predict(queries_d, train_d, labels_d, c, k=k),
                                          min(args.warmup, 2), min(args.iters, 5))
    except Exception as e:
        entry["error"] = f"{type(e).__name__}: {e}"
    res["theirs"]["matmul_topk"] = entry
    return res


def pair_train(cfg, args, device, timer):
    """The whole training step, CIFAR preset (ResNet-18 width 64, 32x32), on the
    same images: ours (npid_op train: resident data, GPU augmentation, TrainStep)
    against the reference-style pipeline (torchvision transforms in DataLoader
    workers) and a GPU-resident PyTorch pipeline. Throughput only: the two
    sides draw different augmentations and negatives, so the check is that
    both losses are finite and of the same order."""
    import train_baselines as tb
    res = {"rate_unit": "images/s", "work": cfg["B"], "theirs": {}}
    data = load_images_once(tb, args.data) if args.data else None
    images = data[0] if data is not None else tb.synthetic_images(cfg.get("N", 50000))[0]
    if "N" in cfg:
        images = images[:cfg["N"]]
    res["data"] = f"{'image folder ' + args.data if data is not None else 'synthetic uint8'} ({images.shape[0]} images)"
    ours_losses = None
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        meta = dict(B=cfg["B"], K=cfg["K"] or 4096, softmax=1 if cfg["criterion"] == "softmax" else 0,
                    steps=cfg["steps"], warmup=cfg["warmup"], N=images.shape[0])
        with open(os.path.join(folder, "meta.txt"), "w") as f:
            for key, val in meta.items():
                f.write(f"{key} {val!r}\n")
        if data is not None:
            with open(os.path.join(folder, "data_path.txt"), "w") as f:
                f.write(os.path.abspath(args.data) + "\n")
        proc = run_op(args, [args.npid_op, "train", "--dir", folder, "--device", device])
        if proc.returncode != 0:
            res["error"] = f"npid_op failed ({proc.returncode}): {proc.stderr.strip()}"
            return res
        res["ours_ms"] = json.load(open(os.path.join(folder, "timing.json")))["median_ms"]
        ours_losses = [float(v) for v in open(os.path.join(folder, "losses.txt")).read().split()]
    for pipeline in ("reference", "gpu_resident"):
        if pipeline == "gpu_resident" and device != "cuda" and not args.small:
            continue
        entry = {"what": {"reference": "torchvision transforms in 2 DataLoader workers (CPU), as the reference",
                          "gpu_resident": "uint8 dataset on the GPU, batched tensor augmentation"}[pipeline]}
        try:
            r = tb.run_training(pipeline, cfg["criterion"], images, device, batch=cfg["B"], k=cfg["K"] or 4096,
                                steps=cfg["steps"], warmup=cfg["warmup"], workers=0 if args.small else 2)
            entry.update(r)
            entry["rate"] = r["images_per_s"]
            entry["ms"] = cfg["B"] / r["images_per_s"] * 1e3
            ok = all(math.isfinite(v) for v in ours_losses + [r["loss_first"], r["loss_last"]]) and \
                0.1 < ours_losses[0] / r["loss_first"] < 10
            entry["check"] = {"ok": ok, "ours_loss_first": ours_losses[0], "theirs_loss_first": float(r["loss_first"]),
                              "against": "first-step losses (finite, same order)"}
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
        res["theirs"][pipeline] = entry
    return res


PAIRS = {"nce": pair_nce, "softmax": pair_softmax, "resnet": pair_resnet, "knn": pair_knn, "train": pair_train}


# ---- report ------------------------------------------------------------------

def fmt(x, spec):
    return "" if x is None else format(x, spec)


def report(results, dev_name, commit):
    lines = [f"## Side by side: libnpid_cuda vs PyTorch {torch.__version__} on {dev_name}", "",
             f"commit {commit}. Times are medians of CUDA-event timings (wall clock on a CPU) per call; "
             "ratio = theirs / ours; 'equivalent' compares with our outputs on the same inputs (or, for "
             "baseline-only pairs, with the reference-style PyTorch variant).", "",
             "| pair | config | baseline | equivalent | ours ms | theirs ms | ratio | ours rate | theirs rate |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        head = f"| {r['pair']} | {r['config']} "
        if "error" in r:
            lines.append(head + f"| -- | ERROR: {r['error']} | | | | | |")
            continue
        unit = r.get("rate_unit", "")
        ours = r.get("ours_ms")
        for name, t in r["theirs"].items():
            if "error" in t:
                lines.append(head + f"| {name} | could not run: {t['error']} | | | | | |")
                continue
            c = t.get("check")
            if c is None:
                eq = "--"
            elif "loss_rel" in c:
                eq = (f"{'yes' if c['ok'] else 'NO'} (loss {c['loss_rel']:.1e}, grad {c['grad_rel']:.1e}, "
                      f"rows {c['rows_max_abs']:.1e}){' vs ' + c['against'] if 'against' in c else ''}")
            else:
                nums = ", ".join(f"{k} {v:.3g}" for k, v in c.items() if isinstance(v, float))
                eq = f"{'yes' if c['ok'] else 'NO'} ({nums}){' vs ' + c['against'] if 'against' in c else ''}"

            ms = t.get("ms")
            ratio = f"{ms / ours:.2f}x" if (ms and ours) else "--"
            if "rate" in t:  # throughput-only entries (training)
                theirs_rate = f"{t['rate']:.0f} {unit}"
            else:
                theirs_rate = f"{r.get('work_theirs', r['work']) * 1e3 / ms:.3g} {unit}" if ms else ""
            ours_rate = f"{r['work'] * 1e3 / ours:.3g} {unit}" if ours else f"not yet ({r.get('ours_missing', '')})"
            lines.append(head + f"| {name} | {eq} | {fmt(ours, '.3f')} | {fmt(ms, '.3f')} | {ratio} | "
                                f"{ours_rate} | {theirs_rate} |")
    return "\n".join(lines) + "\n"


def write_report(args, results, dev_name):
    md = report(results, dev_name, args.commit)
    for name, text in (("side_by_side.md", md),
                       ("side_by_side.json", json.dumps({"device": dev_name, "torch": torch.__version__,
                                                         "commit": args.commit, "results": results},
                                                        indent=1, default=str))):
        # Written beside, then moved in: no half file, and no extra file in
        # the output folder (the device tool returns at most 8).
        fd, tmp = tempfile.mkstemp(prefix="npid_sbs_")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        shutil.move(tmp, os.path.join(args.out, name))
    return md


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--npid-op", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--device", default="auto")
    # The issues' headline pairs first (NCE, softmax, the training step): a run
    # cut short by its time limit keeps them.
    ap.add_argument("--pairs", default="nce,softmax,train,resnet,knn")
    ap.add_argument("--op-timeout", type=int, default=150, help="seconds one npid_op call may take")
    ap.add_argument("--data", default=None, help="image folder for the training pair (e.g. CIFAR-10 train/)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--commit", default=os.environ.get("NPID_COMMIT", "unknown"))
    args = ap.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dev_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    timer = Timer(device)

    results = []
    md = write_report(args, results, dev_name)
    for pair in args.pairs.split(","):
        full, small = CONFIGS[pair]
        for cfg in (small if args.small else full):
            t0 = time.time()
            try:
                r = PAIRS[pair](cfg, args, device, timer)
            except Exception as e:
                r = {"error": f"{type(e).__name__}: {e}"}
            r.update(pair=pair, config=cfg["label"], seconds=round(time.time() - t0, 1))
            results.append(r)
            print(json.dumps(r, default=str), flush=True)
            torch.backends.cuda.matmul.allow_tf32 = False
            # The report so far, after every pair: a run stopped by its time
            # limit still leaves the pairs it finished.
            md = write_report(args, results, dev_name)
    print(md)
    failed = [r for r in results if "error" in r or any(
        not t.get("check", {"ok": True})["ok"] for t in r.get("theirs", {}).values())]
    if failed:
        print("side_by_side: FAILED: " + ", ".join(f"{r['pair']}/{r['config']}" for r in failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
