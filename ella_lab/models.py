"""Reference networks for the bundled data sets.

Every constructor takes ``seed``: an integer initialises the weights from that seed inside
``torch.random.fork_rng`` (the global RNG is left untouched, the same seed gives the same weights);
``seed=None`` draws from the global RNG as plain PyTorch would. Models are built on the CPU in the default
dtype; move them with ``.to(device, dtype)``. None of them has dropout, and only ``mnist1d_cnn(batch_norm=True)``
has batch norm, so the others compute the same function in training and evaluation mode.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from ella.checks import check_positive_int

__all__ = ["mnist1d_cnn", "mnist1d_mlp", "digits_mlp", "regression_mlp", "mlp", "SignalToImage", "cifar_resnet"]


class SignalToImage(nn.Module):
    """Reshape a batch of 1-D signals ``(B, L)`` to images ``(B, 1, 1, L)``.

    Lets 1-D convolutions be written as ``nn.Conv2d`` with ``(1, w)`` kernels, which laplace-torch's
    KFAC supports (it rejects ``nn.Conv1d``). Inputs that already have 4 dimensions pass through.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x
        if x.dim() == 3:  # (B, 1, L)
            return x.unsqueeze(1)
        if x.dim() != 2:
            raise ValueError(f"expected signals of shape (B, L), got input of shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], 1, 1, x.shape[1])


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Context in which parameter initialisation draws from ``seed`` without touching the global RNG."""
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer or None, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only: no CUDA side effects
        yield


def mlp(
    in_features: int,
    hidden: tuple[int, ...] | list[int],
    out_features: int,
    activation: Callable[[], nn.Module] = nn.ReLU,
    seed: int | None = 0,
) -> nn.Sequential:
    """A fully connected network ``in -> hidden[0] -> ... -> out`` with ``activation`` between layers.

    Args:
        in_features: Input dimension.
        hidden: Widths of the hidden layers.
        out_features: Output dimension (logits or regression outputs).
        activation: Constructor of the nonlinearity, e.g. ``nn.ReLU`` or ``nn.Tanh``.
        seed: Initialisation seed (``None``: global RNG).
    """
    widths = [check_positive_int(in_features, "in_features")]
    widths += [check_positive_int(h, "hidden") for h in hidden]
    widths.append(check_positive_int(out_features, "out_features"))
    layers: list[nn.Module] = []
    with _seeded(seed):
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(activation())
    return nn.Sequential(*layers)


def mnist1d_cnn(
    num_classes: int = 10, channels: int = 25, seed: int | None = 0, batch_norm: bool = False
) -> nn.Sequential:
    """The MNIST-1D reference CNN (Greydanus's ``ConvBase``) with ``Conv2d`` ``(1, w)`` kernels.

    ``(B, 40)`` -> reshape to ``(B, 1, 1, 40)`` -> conv ``(1, 5)`` stride 2 -> ReLU -> conv ``(1, 3)`` stride 2
    -> ReLU -> conv ``(1, 3)`` stride 2 -> ReLU -> flatten ``(B, channels * 5)`` -> linear to ``num_classes``.
    With the defaults it has 5,210 parameters.

    Args:
        num_classes: Number of output logits.
        channels: Channels of every convolution.
        seed: Initialisation seed (``None``: global RNG).
        batch_norm: a ``BatchNorm2d`` after every convolution (put the network in eval mode after training).
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(channels, "channels")
    kernels, layers = ((5, 1), (3, channels), (3, channels)), [SignalToImage()]
    with _seeded(seed):
        for width, inputs in kernels:
            layers.append(nn.Conv2d(inputs, channels, kernel_size=(1, width), stride=(1, 2), padding=(0, 1)))
            layers += [nn.BatchNorm2d(channels), nn.ReLU()] if batch_norm else [nn.ReLU()]
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 5, num_classes))


def mnist1d_mlp(num_classes: int = 10, seed: int | None = 0) -> nn.Sequential:
    """The MNIST-1D reference MLP 40-100-100-``num_classes`` with ReLU (15,210 parameters for 10 classes)."""
    return mlp(40, (100, 100), num_classes, nn.ReLU, seed=seed)


def digits_mlp(num_classes: int = 10, hidden: int = 32, seed: int | None = 0) -> nn.Sequential:
    """An MLP 64-``hidden``-``hidden``-``num_classes`` with ReLU for scikit-learn digits (3,466 parameters)."""
    return mlp(64, (hidden, hidden), num_classes, nn.ReLU, seed=seed)


def regression_mlp(
    hidden: int = 50, in_features: int = 1, out_features: int = 1, seed: int | None = 0
) -> nn.Sequential:
    """An MLP 1-``hidden``-``hidden``-1 with tanh for the toy regression (2,701 parameters by default)."""
    return mlp(in_features, (hidden, hidden), out_features, nn.Tanh, seed=seed)


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; the shortcut subsamples and zero-pads channels ("option A")."""

    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.stride, self.pad = stride, outputs - inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            shortcut = nn.functional.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return torch.relu(out + shortcut)


def cifar_resnet(depth: int = 20, num_classes: int = 10, width: int = 16, seed: int | None = 0) -> nn.Sequential:
    """The CIFAR ResNet of He et al. (2016): ``depth = 6 n + 2`` layers, three stages of ``n`` basic blocks with
    ``width``, ``2 width`` and ``4 width`` channels, identity shortcuts with zero padding, global average pooling and
    a linear head. ResNet-20 (``n = 3``) has 269,722 parameters."""
    check_positive_int(depth, "depth")
    if (depth - 2) % 6:
        raise ValueError(f"`depth` must be 6 n + 2 (20, 32, 44, 56, ...), got {depth}")
    n, layers = (depth - 2) // 6, []
    with _seeded(seed):
        layers += [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
        for stage in range(3):
            for block in range(n):
                outputs = width * 2**stage
                layers.append(_BasicBlock(channels, outputs, 2 if stage and not block else 1))
                channels = outputs
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
