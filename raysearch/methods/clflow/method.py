"""clflow: a 2D normalizing flow strengthened by contrastive learning over synthetic anomalies.

Paper: Wang, Li and Luo, "CL-Flow: strengthening the normalizing flows by contrastive
learning for better anomaly detection", Proc. SPIE 13180 (ISPP 2024), 1318060
(arXiv 2311.06794); 99.6 image AUROC on MVTec AD, 96.8 on BTAD. The paper publishes an
abstract only; this is a reconstruction from it and the closest public work: FastFlow
(Yu et al. 2021) for the flow, DRAEM (Zavrtanik et al. 2021) for Perlin-mask synthesis,
CutPaste (Li et al. 2021) for patch synthesis, InfoNCE for the contrast.

What is built (``mode: clflow``):

- A frozen torchvision extractor (ResNet-18 / Wide-ResNet-50-2; ImageNet weights from
  the local torch cache or a file, random init otherwise, and the result row's
  ``weights`` says which), feature levels ``backbone.levels`` (FastFlow: layer1..3),
  a LayerNorm per level and one FastFlow 2D flow per level
  (:class:`~raysearch.components.flow.Flow2D`: soft-clamped affine couplings with
  3x3 or alternating 3x3 / 1x1 subnets, exact log-determinant).
- Each step, every clean image x also gets a synthetic copy x' (with probability
  ``synthesis.prob``): a Perlin mask filled from another training image of the batch
  or a texture of ``synthesis.texture_dir`` at opacity beta (DRAEM), or a CutPaste /
  scar patch; the kinds in ``synthesis.kinds`` are mixed per image. The model sees
  [x, x'], so half of the batch stays clean (the paper's ratio).
- L_nll: FastFlow's 0.5 ||z||^2 - log|det J| on the clean images only.
- L_cls (our reading of "proxy tasks"): a small conv head per level reads the flow's
  per-position score s = 0.5 mean_c z^2 and predicts clean vs synthetic with a
  label-smoothed cross-entropy, per image (top-k pooled pixel logits) or per pixel
  against the downsampled mask (``classification.target``). The heads are thrown
  away at inference; their gradient reaches the flow through s.
- L_con (our reading of "contrastive learning"): per level and synthetic copy, the
  region's scores are the positive against every position of its clean source,
  InfoNCE over positions at temperature tau (it lowers the flow's likelihood of the
  synthetic region below that of the clean image), plus a pull of the copy's flow
  outputs towards the source's at positions away from the region.
- Loss = L_nll + lambda_cls * L_cls + lambda_con * L_con; the proxy terms may start
  after ``loss.proxy_start_epoch`` epochs of NLL alone.
- Inference is the flow alone: per level 1 - exp(-s) (FastFlow's map, made positive)
  or s, upsampled bilinearly to the image, averaged over levels; the image score is
  the map's max (or the mean of its top fraction). Nothing is fitted on the training
  normals, so ``fit_scorer`` has nothing to do.

``mode: plain_fastflow`` is the ablation baseline: no synthesis, no heads, NLL only
(FastFlow itself). With ``loss.cls_weight`` and ``loss.con_weight`` both 0, clflow also
trains on NLL alone; this reconstruction has no proxy task without synthetic
anomalies, so "no synthesis" and "flow only" are the same ablation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raysearch.components.backbones import imagenet_weights_path
from raysearch.config.schema import SpecError
from raysearch.data.augment import normalize, to_float
from raysearch.data.perlin import draem_blend, perlin_masks
from raysearch.data.synthesis import cutpaste, scar
from raysearch.methods.base import Method, Scores
from raysearch.methods.clflow.loss import clflow_loss
from raysearch.methods.clflow.model import CLFlowNet, resolve_weights
from raysearch.methods.clflow.params import CLFlowParams

__all__ = ["CLFlow", "load_textures"]


def load_textures(folder: str, image_size: int) -> torch.Tensor:
    """Every image of ``folder`` (recursively), RGB, resized to ``image_size``: uint8 (N, 3, S, S)."""
    from raysearch.data.readers import IMAGE_SUFFIXES, Pool

    root = Path(folder).expanduser()
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir() else []
    if not paths:
        raise SpecError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(root)!r}", key="params.synthesis.texture_dir")
    return Pool.of_files(paths, image_size).read(range(len(paths)))


def _randint(high: int, n: int, generator: torch.Generator, device: torch.device, low: int = 0) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=generator, device=generator.device).to(device)


class CLFlow(Method):
    name = "clflow"
    Params = CLFlowParams
    params: CLFlowParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kinds = self.params.synthesis.parsed_kinds()
        self._textures: torch.Tensor | None = None  # uint8 (N, 3, S, S) on the device
        self._weights_loaded: str | None = None

    # -- model --------------------------------------------------------------------
    def build(self) -> nn.Module:
        cpu_gen = torch.Generator().manual_seed(self.seed)
        model = CLFlowNet(self.params, self.info.image_size, generator=cpu_gen).to(self.device)
        self._weights_loaded = model.backbone.weights_loaded
        s = self.params.synthesis
        if s.texture_dir is not None and self.params.uses_proxy_tasks() and "perlin" in self.kinds:
            self._textures = load_textures(s.texture_dir, self.info.image_size).to(self.device)
        return model

    def trainable_parameters(self, model: nn.Module) -> Iterator[nn.Parameter]:
        """Norms, flows and heads; the frozen backbone is not counted or optimised."""
        return self.unwrap(model).trainable_parameters()

    # -- synthesis ----------------------------------------------------------------
    def synthesize(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Synthetic copies of uint8 images (B, 3, H, W) and their masks uint8 (B, H, W).

        Each copy draws a kind from ``synthesis.kinds``; a copy left clean (chance
        1 - ``synthesis.prob``) has an empty mask. Batched per kind, no per-image loop.
        """
        s, g = self.params.synthesis, self.generator
        b, _, h, w = images.shape
        dev = images.device
        kind_of = _randint(len(self.kinds), b, g, dev)  # (B,)
        out, masks = images.clone(), torch.zeros(b, h, w, dtype=torch.uint8, device=dev)
        for k, kind in enumerate(self.kinds):
            idx = (kind_of == k).nonzero()[:, 0]
            n = idx.numel()
            if n == 0:
                continue
            part = images[idx]
            if kind == "perlin":
                pm = perlin_masks(
                    n, (h, w), generator=g, threshold=s.perlin_threshold,
                    scale_range=(s.perlin_min_scale, s.perlin_max_scale), device=dev,
                )
                out[idx], masks[idx] = draem_blend(part, self._donors(images, idx), pm, g, (s.beta_min, s.beta_max))
            elif kind == "cutpaste":
                out[idx], masks[idx] = cutpaste(
                    part, g, area=(s.cutpaste_area_min, s.cutpaste_area_max),
                    aspect=(s.cutpaste_aspect_min, s.cutpaste_aspect_max), jitter=s.patch_jitter,
                )
            else:  # scar (validated)
                out[idx], masks[idx] = scar(part, g, jitter=s.patch_jitter)
        if s.prob < 1:
            keep = torch.rand(b, generator=g, device=g.device).to(dev) < s.prob  # (B,)
            out = torch.where(keep.view(b, 1, 1, 1), out, images)
            masks = masks * keep.view(b, 1, 1).to(masks.dtype)
        return out, masks

    def _donors(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Fill images for the Perlin regions of ``images[idx]``: textures, or other batch images."""
        g, n = self.generator, idx.numel()
        if self._textures is not None:
            return self._textures[_randint(len(self._textures), n, g, images.device)]
        b = images.shape[0]
        if b == 1:  # no other image: the same image shifted by half its size
            return torch.roll(images[idx], shifts=(images.shape[-2] // 2, images.shape[-1] // 2), dims=(-2, -1))
        shift = _randint(b, n, g, images.device, low=1)  # never the image itself
        return images[(idx + shift) % b]

    # -- training -----------------------------------------------------------------
    def training_step(self, model: nn.Module, images: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        p = self.params
        proxy = p.uses_proxy_tasks() and epoch >= p.loss.proxy_start_epoch
        masks = None
        batch = images
        if proxy:
            synthetic, masks = self.synthesize(images)
            batch = torch.cat([images, synthetic])  # (2B, 3, H, W): clean first
        out = model(normalize(to_float(batch)))
        return clflow_loss(p, out, images.shape[0], masks)

    # -- scoring ------------------------------------------------------------------
    def fit_scorer(self, model: nn.Module, train_images: torch.Tensor) -> None:
        """Nothing to fit: the anomaly map is the flow's likelihood alone."""

    @torch.no_grad()
    def anomaly_maps(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Anomaly maps (N, H, W) of uint8 images at image size, higher = more anomalous."""
        net: CLFlowNet = self.unwrap(model)
        was_training = net.training
        net.eval()
        bs = self.params.score.batch_size
        maps = [
            net.anomaly_maps(normalize(to_float(images[i : i + bs])), self.params.score.level_map)
            for i in range(0, len(images), bs)
        ]
        net.train(was_training)
        return torch.cat(maps) if maps else images.new_zeros((0, *images.shape[-2:]), dtype=torch.float32)

    def score(self, model: nn.Module, images: torch.Tensor) -> Scores:
        maps = self.anomaly_maps(model, images)  # (N, H, W)
        flat = maps.flatten(1)
        sc = self.params.score
        if sc.reduce == "max":
            image = flat.amax(1)
        else:
            k = max(1, round(sc.topk_fraction * flat.shape[1]))
            image = flat.topk(k, dim=1).values.mean(1)
        return Scores(image=image, maps=maps)

    @classmethod
    def notes(cls, params: CLFlowParams, searched: Mapping[str, Sequence[Any]]) -> list[str]:
        if params.backbone.weights != "auto":
            return []
        names = {params.backbone.name, *searched.get("params.backbone.name", ())}
        fallback = sorted(n for n in names if resolve_weights(n, "auto") == "random" and n != "small_cnn")
        if not fallback:
            return []
        files = ", ".join(str(imagenet_weights_path(n)[0]) for n in fallback)
        return [f"note: backbone.weights auto: no ImageNet weights on this machine for {', '.join(fallback)}; "
                f"those backbones stay RANDOM and frozen (a weak clflow). Put {files} there, or set "
                "params.backbone.weights: random to silence this."]

    def describe(self) -> dict[str, str]:
        p = self.params
        return {
            "weights": self._weights_loaded or p.backbone.weights,
            "backbone": p.backbone.name,
            "mode": p.mode,
        }
