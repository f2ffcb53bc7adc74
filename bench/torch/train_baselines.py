"""PyTorch training-step baselines (written from docs/math.md
s.6-8): CIFAR ResNet-18 -> 128-d L2-normalized embedding, NCE (K = 4096) or the
full non-parametric softmax, SGD (momentum 0.9, weight decay 5e-4), momentum
bank update; fp32 with TF32 tensor-core math allowed (PyTorch's defaults for
cuDNN convolutions, enabled here for matmuls too).

Two input pipelines:
  reference     the reference code's: torchvision transforms on PIL images in
                DataLoader worker processes on the CPU, batches copied to the GPU
  gpu_resident  the dataset kept on the GPU as uint8, batches gathered there and
                augmented with batched tensor ops (the fast-CIFAR-trainer way)

Images come from an image folder (root/<class>/<file>.jpg, e.g. CIFAR-10 from
../shared/data) or, without one, from seeded random uint8 images.
"""
import math
import os
import time

import torch
import torch.nn.functional as F

import npid_baselines as nb

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


# ---- model -------------------------------------------------------------------

class Embedding(torch.nn.Module):
    """torchvision's resnet18 with the CIFAR stem (3x3 stride-1 conv, no
    max-pool) and a 128-d head, L2-normalized: parameter names stay
    torchvision's, so weights map one to one onto libnpid_cuda's."""

    def __init__(self, dim=128):
        super().__init__()
        import torchvision
        net = torchvision.models.resnet18(num_classes=dim)
        net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        torch.nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = torch.nn.Identity()
        self.net = net

    def forward(self, x):
        return F.normalize(self.net(x), dim=1)


# ---- data --------------------------------------------------------------------

def load_images(root, limit=None):
    """uint8 (N, 32, 32, 3) images and labels from an image folder (sorted
    classes, sorted files), or None when root is missing."""
    if not root or not os.path.isdir(root):
        return None
    from PIL import Image
    import numpy as np
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    images, labels = [], []
    for c, name in enumerate(classes):
        folder = os.path.join(root, name)
        for f in sorted(os.listdir(folder)):
            images.append(np.asarray(Image.open(os.path.join(folder, f)).convert("RGB")))
            labels.append(c)
            if limit and len(images) >= limit:
                break
        if limit and len(images) >= limit:
            break
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def synthetic_images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8), torch.zeros(n, dtype=torch.long)


class InstanceDataset(torch.utils.data.Dataset):
    """(augmented image, instance index), as the reference's CIFAR10Instance."""

    def __init__(self, images, transform):
        self.images = images
        self.transform = transform

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i].numpy())), i


def reference_transform():
    import torchvision.transforms as T
    return T.Compose([
        T.RandomResizedCrop(32, scale=(0.2, 1.0)),
        T.ColorJitter(0.4, 0.4, 0.4, 0.4),
        T.RandomGrayscale(p=0.2),
        T.ToTensor(),
        T.Normalize(CIFAR_MEAN, CIFAR_STD),
    ])


def _rgb_to_hsv(x):
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    h = torch.where(maxc == r, ((g - b) / d) % 6, torch.where(maxc == g, (b - r) / d + 2, (r - g) / d + 4))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x):
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    r = torch.stack([v, q, p, p, t, v], 1).gather(1, i[:, None]).squeeze(1)
    g = torch.stack([t, v, v, q, p, p], 1).gather(1, i[:, None]).squeeze(1)
    b = torch.stack([p, p, t, v, v, q], 1).gather(1, i[:, None]).squeeze(1)
    return torch.stack([r, g, b], 1)


def gpu_augment(batch_u8, generator):
    """Batched GPU augmentation: RandomResizedCrop(32, (0.2, 1)) by affine
    grid sampling, ColorJitter(0.4, 0.4, 0.4, 0.4) in a fixed order,
    RandomGrayscale(0.2), Normalize. batch_u8: (B, 32, 32, 3) uint8 on the GPU."""
    b = batch_u8.shape[0]
    dev = batch_u8.device
    x = batch_u8.permute(0, 3, 1, 2).float().div_(255)
    rnd = lambda *shape: torch.rand(*shape, device=dev, generator=generator)
    area = 0.2 + 0.8 * rnd(b)
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rnd(b)
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (1 - w) * (2 * rnd(b) - 1)
    cy = (1 - h) * (2 * rnd(b) - 1)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta, (b, 3, 32, 32), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gray_w = torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)
    bright, contrast, sat = (0.6 + 0.8 * rnd(b, 1, 1, 1) for _ in range(3))
    x = (x * bright).clamp_(0, 1)
    mean = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp_(0, 1)
    gray = (x * gray_w).sum(1, keepdim=True)
    x = ((x - gray) * sat + gray).clamp_(0, 1)
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + (0.8 * rnd(b, 1, 1) - 0.4)) % 1.0
    x = _hsv_to_rgb(hsv)
    to_gray = rnd(b, 1, 1, 1) < 0.2
    x = torch.where(to_gray, (x * gray_w).sum(1, keepdim=True).expand_as(x), x)
    mean_t = torch.tensor(CIFAR_MEAN, device=dev).view(1, 3, 1, 1)
    std_t = torch.tensor(CIFAR_STD, device=dev).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


# ---- one training run ----------------------------------------------------------

def run_training(pipeline, criterion, images, device, batch=128, k=4096, steps=50, warmup=10,
                 workers=2, tau=0.1, seed=0):
    """Returns dict(images_per_s, loss_first, loss_last, steps)."""
    torch.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = device == "cuda"  # autotuned convolutions (the warm-up steps search)
    n = images.shape[0]
    model = Embedding().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    s = 1.0 / math.sqrt(128 / 3)
    bank = (torch.rand(n, 128, device=device) * 2 - 1) * s
    z = None

    if pipeline == "reference":
        loader = torch.utils.data.DataLoader(InstanceDataset(images, reference_transform()), batch_size=batch,
                                             shuffle=True, num_workers=workers, drop_last=True,
                                             pin_memory=(device == "cuda"), persistent_workers=workers > 0)

        def batches():
            while True:
                for x, idx in loader:
                    yield x.to(device, non_blocking=True), idx.to(device, non_blocking=True)
    else:
        data = images.to(device)
        gen = torch.Generator(device=device).manual_seed(seed)

        def batches():
            while True:
                perm = torch.randperm(n, device=device, generator=gen)
                for start in range(0, n - batch + 1, batch):
                    idx = perm[start:start + batch]
                    yield gpu_augment(data[idx], gen), idx

    it = batches()
    losses = []
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            t0 = time.perf_counter()
        x, idx = next(it)
        f = model(x)
        if criterion == "nce":
            neg = torch.randint(0, n, (batch, k), device=device)
            all_idx = torch.cat([idx[:, None], neg], 1)
            if z is None:  # first-batch Z, as the reference
                with torch.no_grad():
                    s_ = (bank[all_idx] * f[:, None, :]).sum(-1)
                    z = float(n * torch.exp(s_ / tau).mean())
            p = nb._GatherScore.apply(f, bank, all_idx, tau, z)
            loss = nb.nce_criterion(p, n)
        else:
            loss = F.cross_entropy(f @ bank.t() / tau, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        nb.momentum_update(bank, idx, f.detach(), 0.5)
        losses.append(float(loss) if step in (0, warmup + steps - 1) else None)
    sync()
    elapsed = time.perf_counter() - t0
    return {"images_per_s": steps * batch / elapsed, "loss_first": losses[0], "loss_last": losses[-1],
            "steps": steps, "batch": batch, "k": k if criterion == "nce" else 0}
