"""What ViG and ViT share: patchify, learned positions, a stack of blocks, mean-pool, classify.

Images ``[B, C, H, W]`` float32 are optionally upsampled (digits are 8x8), cut into
non-overlapping patches by a strided convolution, and read as a row-major grid of tokens.
Subclasses build the blocks; a block maps ``x [B, N, d]`` on a ``(rows, cols)`` grid to
``[B, N, d]``.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganglion.models.errors import ShapeError
from ganglion.models.sequence.layers import (
    MAX_LAYERS,
    MAX_PARAMETERS,
    MAX_WIDTH,
    check_int,
    config_from_dict,
)

POS_STD = 0.2  # initial position scale: near the patch tokens' (0.02 leaves ViT near chance)
# A config is checked against these (and the token models' MAX_WIDTH, MAX_LAYERS and
# MAX_PARAMETERS) before anything is allocated: it may come from a bundle's config.json.
MAX_SIDE = 4096  # image side after upsampling
MAX_TOKENS = 1 << 16  # patches per image
MAX_CLASSES = 1 << 20
MAX_CHANNELS = 1024


@dataclass
class VisionConfig:
    """Hyper-parameters shared by the vision classifiers (checked: a config may come from a
    file, so types and sizes are bounded before any weight is allocated)."""

    image_size: int = 8  # input height and width (digits: 8)
    channels: int = 1  # input channels
    upsample: int = 1  # nearest-neighbour upsampling factor applied before patchifying
    patch_size: int = 2  # patch height and width after upsampling
    num_classes: int = 10  # output logits
    d_model: int = 64  # token width
    n_layers: int = 4  # blocks
    n_heads: int = 2  # attention heads (ViT) / GLA heads (ViG)

    def __post_init__(self) -> None:
        check_int("image_size", self.image_size, 1, MAX_SIDE)
        check_int("channels", self.channels, 1, MAX_CHANNELS)
        check_int("upsample", self.upsample, 1, MAX_SIDE // self.image_size)
        side = self.image_size * self.upsample
        check_int("patch_size", self.patch_size, 1, side)
        check_int("num_classes", self.num_classes, 1, MAX_CLASSES)
        check_int("d_model", self.d_model, 1, MAX_WIDTH)
        check_int("n_layers", self.n_layers, 1, MAX_LAYERS)
        check_int("n_heads", self.n_heads, 1, self.d_model)
        if side % self.patch_size:
            raise ValueError(
                f"image side {side} (after upsampling) is not a multiple of patch {self.patch_size}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.grid**2 > MAX_TOKENS:
            raise ValueError(
                f"image side {side} in patches of {self.patch_size} is {self.grid**2:,} tokens, "
                f"more than {MAX_TOKENS:,}"
            )

    def check_parameters(self) -> None:
        """ValueError when the model would hold more than MAX_PARAMETERS weights (estimated
        from the sizes, before anything is allocated)."""
        d = self.d_model
        outside = self.channels * d * self.patch_size**2 + self.grid**2 * d + d * self.num_classes
        total = outside + self.n_layers * self.block_parameters()
        if total > MAX_PARAMETERS:
            raise ValueError(
                f"d_model {d}, n_layers {self.n_layers}, {self.grid**2:,} tokens and "
                f"num_classes {self.num_classes} make about {total:,} parameters, more than "
                f"{MAX_PARAMETERS:,}"
            )

    def block_parameters(self) -> int:
        """About how many weights one block holds: attention 4 d^2, a 4d FFN 8 d^2."""
        return 12 * self.d_model**2

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size * self.upsample // self.patch_size


class VisionClassifier(nn.Module):
    """Patch tokens -> blocks -> final norm -> mean over tokens -> linear head."""

    architecture: str
    config_class: type[VisionConfig] = VisionConfig

    def __init__(self, config: VisionConfig | None = None) -> None:
        super().__init__()
        self.config = config or self.config_class()
        c = self.config
        c.check_parameters()
        self.patch_embed = nn.Conv2d(c.channels, c.d_model, c.patch_size, stride=c.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.grid * c.grid, c.d_model))
        self.blocks = nn.ModuleList(self.build_block() for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=POS_STD)
        for module in self.modules():  # timm's ViT initialization
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @abstractmethod
    def build_block(self) -> nn.Module:
        """One block for ``self.config``: ``block(x [B, N, d], (rows, cols)) -> [B, N, d]``."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] float32 -> logits [B, num_classes]."""
        c = self.config
        expected = (c.channels, c.image_size, c.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ShapeError(
                f"images must be [B, {', '.join(map(str, expected))}], got {list(images.shape)}"
            )
        if images.dtype != torch.float32:
            raise ShapeError(f"images must be float32, got {images.dtype}")
        if c.upsample > 1:
            images = F.interpolate(images, scale_factor=c.upsample, mode="nearest")
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed  # [B, N, d]
        for block in self.blocks:
            x = block(x, (c.grid, c.grid))
        return self.head(self.norm(x).mean(1))

    def to_config(self) -> dict[str, Any]:
        """The config's fields and ``architecture``."""
        return {"architecture": self.architecture, **asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VisionClassifier:
        """A freshly initialized model described by ``to_config``'s output."""
        return cls(config_from_dict(cls.config_class, config, cls.architecture))
