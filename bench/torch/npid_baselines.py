"""PyTorch baselines for the side-by-side (tools/side_by_side.sh).

Written from docs/math.md; the reference-style variant follows
the behaviour of the original NPID code (lemniscate.pytorch) without copying it.

Each step function performs one NCE training-step criterion on the memory bank:
forward, backward to the features, momentum update of the bank rows. All take
the same arguments so the harness can run them interchangeably:

    step(features, bank, targets, idx, tau, z, momentum) -> (loss, grad)

features (B, D) float32, bank (N, D) float32 (updated in place), targets (B)
int64, idx (B, K+1) int64 with idx[:, 0] == targets.
"""
import torch

EPS = 1e-7


class _GatherScore(torch.autograd.Function):
    """Reference style: gather the K+1 rows into a B x (K+1) x D copy, score
    them with a batched matmul, keep the copy for the backward matmul."""

    @staticmethod
    def forward(ctx, f, bank, idx, tau, z):
        b, d = f.shape
        rows = torch.index_select(bank, 0, idx.reshape(-1)).view(b, -1, d)  # (B, K+1, D)
        out = torch.bmm(rows, f.view(b, d, 1)).div_(tau).exp_().div_(z).view(b, -1)  # (B, K+1)
        ctx.save_for_backward(rows, out)
        ctx.tau = tau
        return out

    @staticmethod
    def backward(ctx, grad_out):
        rows, out = ctx.saved_tensors
        b, kp1, d = rows.shape
        g = (grad_out * out / ctx.tau).view(b, 1, kp1)
        return torch.bmm(g, rows).view(b, d), None, None, None, None


def nce_criterion(p, n):
    """NCE loss of the probabilities p (B, K+1), column 0 the positive."""
    b, kp1 = p.shape
    k = kp1 - 1
    kpn = k / n
    ln_pmt = torch.log(p[:, 0] / (p[:, 0] + kpn + EPS))
    ln_pon = torch.log(kpn / (p[:, 1:] + kpn + EPS))
    return -(ln_pmt.sum() + ln_pon.sum()) / b


@torch.no_grad()
def momentum_update(bank, targets, f, momentum):
    pos = torch.index_select(bank, 0, targets).mul_(momentum).add_(f * (1.0 - momentum))
    pos = pos / pos.pow(2).sum(1, keepdim=True).sqrt()
    bank.index_copy_(0, targets, pos)


def reference_style_step(features, bank, targets, idx, tau, z, momentum):
    f = features.detach().requires_grad_(True)
    p = _GatherScore.apply(f, bank, idx, tau, z)
    loss = nce_criterion(p, bank.shape[0])
    loss.backward()
    momentum_update(bank, targets, features, momentum)
    return loss.detach(), f.grad


def closed_form_loss_grad(f, bank, idx, tau, z):
    """Loss and dLoss/df in closed form (docs/math.md s.3): no autograd and
    no saved copy. Under torch.compile, Inductor fuses the row gather into the
    two reductions instead of materializing B x (K+1) x D."""
    b = f.shape[0]
    n = bank.shape[0]
    k = idx.shape[1] - 1
    kpn = k / n
    noise = kpn + EPS
    rows = bank[idx]                                   # (B, K+1, D), fused away when compiled
    s = (rows * f[:, None, :]).sum(-1)                 # (B, K+1)
    p = torch.exp(s / tau) / z
    h0 = p[:, 0] / (p[:, 0] + noise)
    loss = -(torch.log(h0).sum() + torch.log(kpn / (p[:, 1:] + noise)).sum()) / b
    coef = torch.cat([(h0 - 1.0)[:, None], p[:, 1:] / (p[:, 1:] + noise)], 1) / (b * tau)
    grad = (coef[:, :, None] * rows).sum(1)            # (B, D)
    return loss, grad


_compiled = None


def compiled_available():
    return hasattr(torch, "compile")


def compiled_step(features, bank, targets, idx, tau, z, momentum):
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(closed_form_loss_grad, dynamic=False)
    loss, grad = _compiled(features, bank, idx, tau, z)
    momentum_update(bank, targets, features, momentum)
    return loss, grad


def eager_closed_form_step(features, bank, targets, idx, tau, z, momentum):
    loss, grad = closed_form_loss_grad(features, bank, idx, tau, z)
    momentum_update(bank, targets, features, momentum)
    return loss, grad


VARIANTS = {
    # name: (function, description)
    "reference": (reference_style_step, "reference style: index_select copy + bmm + autograd + index_copy_"),
    "compiled": (compiled_step, "best PyTorch: closed form under torch.compile (gather fused, no copy)"),
    "eager_closed_form": (eager_closed_form_step, "closed form, eager (fallback where torch.compile is absent)"),
}


# ---- full non-parametric softmax (docs/math.md s.5) -----------------------

def softmax_reference_step(features, bank, targets, tau, momentum):
    """Reference style: logits = f V^T / tau over the whole bank (B x N
    materialized), cross-entropy against the instance index, autograd."""
    f = features.detach().requires_grad_(True)
    logits = torch.mm(f, bank.t()).div_(tau)
    loss = torch.nn.functional.cross_entropy(logits, targets)
    loss.backward()
    momentum_update(bank, targets, features, momentum)
    return loss.detach(), f.grad


def softmax_closed_form(f, bank, targets, tau):
    logits = (f @ bank.t()) / tau                       # (B, N)
    lse = torch.logsumexp(logits, 1)
    loss = (lse - logits.gather(1, targets[:, None])[:, 0]).mean()
    p = torch.softmax(logits, 1)
    p = p - torch.nn.functional.one_hot(targets, bank.shape[0]).to(p.dtype)
    grad = (p @ bank) / (f.shape[0] * tau)
    return loss, grad


_compiled_softmax = None


def softmax_compiled_step(features, bank, targets, tau, momentum):
    global _compiled_softmax
    if _compiled_softmax is None:
        _compiled_softmax = torch.compile(softmax_closed_form, dynamic=False)
    loss, grad = _compiled_softmax(features, bank, targets, tau)
    momentum_update(bank, targets, features, momentum)
    return loss, grad


def softmax_eager_step(features, bank, targets, tau, momentum):
    loss, grad = softmax_closed_form(features, bank, targets, tau)
    momentum_update(bank, targets, features, momentum)
    return loss, grad


SOFTMAX_VARIANTS = {
    "reference": (softmax_reference_step, "reference style: mm over the bank + cross_entropy + autograd"),
    "compiled": (softmax_compiled_step, "closed form under torch.compile"),
    "eager_closed_form": (softmax_eager_step, "closed form, eager (where torch.compile is absent)"),
}


# ---- weighted kNN (docs/math.md s.9) -------------------------------------

@torch.no_grad()
def knn_predict(queries, train_features, train_labels, num_classes, k=200, sigma=0.1, chunk=1000):
    """Weighted kNN the reference way: similarity by matmul, top-k, votes
    exp(sim / sigma) summed per class. Returns (B, num_classes) scores."""
    scores = []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        sim = q @ train_features.t()                    # (chunk, N)
        top_sim, top_idx = sim.topk(k, dim=1)
        w = (top_sim / sigma).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device, dtype=w.dtype)
        votes.scatter_add_(1, train_labels[top_idx], w)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(scores, labels):
    top5 = scores.topk(min(5, scores.shape[1]), 1).indices
    top1 = (top5[:, 0] == labels).float().mean().item()
    top5 = (top5 == labels[:, None]).any(1).float().mean().item()
    return top1, top5
