"""ResNet-18 embedding network in PyTorch, written from docs/math.md
s.6 with torchvision's module names, so a state_dict moves between it,
torchvision's resnet18 and libnpid_cuda unchanged (any width; width 64 is
torchvision's network). Used by the side-by-side harness for parity and timing.
"""
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18Embedding(nn.Module):
    def __init__(self, stem="cifar", width=64, dim=128):
        super().__init__()
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers, cin = [], width
        for stage in range(4):
            cout = width << stage
            stride = 1 if stage == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, dim)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.normalize(self.fc(torch.flatten(self.avgpool(x), 1)), dim=1)


def torchvision_embedding(stem, dim):
    """torchvision's own resnet18 as the same embedding (CIFAR stem swapped in)."""
    import torchvision
    net = torchvision.models.resnet18(num_classes=dim)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return F.normalize(self.net(x), dim=1)

    return Wrapped()


def state_from_npid(layout, params, stats):
    """A state_dict from libnpid_cuda's flat buffers: conv weights stored
    (O, KH, KW, I) become (O, I, KH, KW); num_batches_tracked is set to 0."""
    state = {}
    for kind, name, offset, numel, shape, storage in layout:
        src = params if kind == "param" else stats
        t = src[offset:offset + numel].view(*storage)
        if len(shape) == 4:
            t = t.permute(0, 3, 1, 2)
        state[name] = t.contiguous().view(*shape)
    for name in list(state):
        if name.endswith(".running_var"):
            state[name[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(0)
    return state


def read_layout(path):
    rows = []
    for line in open(path):
        left, right = line.split("|")
        parts = left.split()
        rows.append((parts[0], parts[1], int(parts[2]), int(parts[3]), [int(v) for v in parts[4:]],
                     [int(v) for v in right.split()]))
    return rows
