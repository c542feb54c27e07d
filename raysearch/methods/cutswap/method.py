"""cutswap: multilevel saliency-guided self-supervised learning for image anomaly detection.

Paper: Qin, Gu, Yu, Zhang, "Multilevel saliency-guided self-supervised learning for
image anomaly detection", Signal, Image and Video Processing 18 (2024) 6339-6351
(arXiv 2311.18332). Only the abstract is available to us; this is a reconstruction from
it and the closest public work: CutPaste (Li et al. 2021: the classifier, the patch
size distribution, the 3-way task, Gaussian density scoring) and LayerCAM (Jiang et al.
2021: multilevel saliency with tanh rescaling of shallow layers).

Training, per batch of B normal images (all batched tensor code, one generator):

1. Colour jitter of the batch (CutPaste; ``augment.*``).
2. Saliency (``saliency.*``): the saliency network (the one being trained, or a frozen
   copy refreshed every ``refresh_every`` epochs) runs in eval mode (LayerCAM needs a
   network without batch statistics, see ``raysearch.components.layercam``); one
   backward pass of the summed target logit (default: the *normal* logit) gives the
   LayerCAM maps of every chosen level for the whole batch; shallow levels get
   tanh(gamma * M); maps are upsampled to ``cluster.grid``. Train mode is restored.
3. Pair selection (``cluster.*``, ``patch.*``, see ``swap.py``): batched k-means on
   every map (saliency alone, or with pixel coordinates), K clusters; two patch
   centres at least one patch apart in the cluster with the highest centroid
   saliency (fallbacks: the next clusters, then the whole image; the fraction of
   swaps that needed one is logged as the loss term ``fallback``); patches of
   CutPaste's area / aspect distribution are swapped. The negative's mask is the
   union of the two boxes.
4. Classification (``task.*``): cross-entropy over normal (0) / CutSwap (1), plus a
   CutPaste or scar class (2) in the 3-way task (default: 3-way, as CutPaste-3way).

Scoring: a Gaussian with Ledoit-Wolf covariance on the training-normal embeddings
(pooled backbone features by default); image score = Mahalanobis distance. Pixel maps
(``score.maps``): ``patch_gde`` = the Mahalanobis distance of every position of one
backbone level to a single Gaussian fitted on all positions of the training normals
(ours: a map that needs no gradient), upsampled bilinearly; ``layercam`` = LayerCAM of
the anomalous logit (logsumexp of the non-normal logits minus the normal one) fused by
the maximum over the saliency levels, times P(not normal), so that the per-image
min-max normalisation does not give normal images full-range maps; ``none``.

Ablation modes (all ``params`` fields): ``patch.locations: random`` (pairs anywhere,
no LayerCAM: the CutPaste-like baseline), ``saliency.layers: layer4`` (single level),
``patch.mode: paste`` (copy patch 1 over patch 2 instead of swapping),
``saliency.source: frozen`` (+ ``saliency.refresh_every``), ``task.classes: binary``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from raysearch.components.layercam import capture_activations, combine, layercam
from raysearch.config.schema import SpecError
from raysearch.data.augment import color_jitter, normalize, to_float
from raysearch.data.synthesis import cutpaste, scar
from raysearch.methods.base import Method, Scores
from raysearch.methods.cutswap.density import GaussianDensity
from raysearch.methods.cutswap.model import NORMAL, CutSwapNet, NetOutput
from raysearch.methods.cutswap.params import CutSwapParams, parse_levels
from raysearch.methods.cutswap.swap import cutswap

__all__ = ["CutSwap"]


class CutSwap(Method):
    name = "cutswap"
    Params = CutSwapParams
    params: CutSwapParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.levels: list[str] = []  # LayerCAM levels, resolved against the backbone in build()
        self._frozen: CutSwapNet | None = None  # saliency network when saliency.source = frozen
        self._image_gde: GaussianDensity | None = None
        self._map_gde: GaussianDensity | None = None

    # -- model --------------------------------------------------------------------
    def build(self) -> nn.Module:
        p = self.params
        model = CutSwapNet(p, self.info.image_size).to(self.device)
        available = model.backbone.level_names
        wanted = parse_levels(p.saliency.layers, key="params.saliency.layers")
        unknown = [n for n in wanted or [] if n not in available]
        if unknown:
            raise SpecError(
                f"backbone {p.backbone.name} has no levels {unknown}; it has {'+'.join(available)}",
                key="params.saliency.layers",
            )
        self.levels = list(available) if wanted is None else [n for n in available if n in wanted]
        if p.score.maps == "patch_gde" and p.score.map_level not in available:
            raise SpecError(
                f"backbone {p.backbone.name} has no level {p.score.map_level!r}; it has {'+'.join(available)}",
                key="params.score.map_level",
            )
        if p.saliency.source == "frozen":
            self._frozen = self._frozen_copy(model)
        return model

    @staticmethod
    def _frozen_copy(net: nn.Module) -> CutSwapNet:
        frozen = copy.deepcopy(Method.unwrap(net))
        frozen.requires_grad_(False)
        return frozen.eval()

    # -- saliency and synthesis ------------------------------------------------------
    def _target(self, out: NetOutput) -> torch.Tensor:
        """(B,) the score LayerCAM explains (``saliency.target``)."""
        target = self.params.saliency.target
        logits = out.logits.float()
        if target == "normal":
            return logits[:, NORMAL]
        if target == "anomalous":
            return torch.logsumexp(logits[:, NORMAL + 1 :], dim=1)
        return out.h.float().pow(2).sum(dim=1)  # embedding_norm

    def saliency_maps(self, net: CutSwapNet, x: torch.Tensor, size: int) -> torch.Tensor:
        """LayerCAM maps (L, B, size, size) in [0, 1] of normalised images ``x`` (B, 3, H, W).

        One forward and one backward pass for the batch, with ``net`` in eval mode (no
        batch statistics, so the per-sample gradients do not mix); its mode is restored.
        """
        s = self.params.saliency
        was_training = net.training
        net.eval()
        try:
            with torch.enable_grad(), capture_activations(net.backbone, self.levels) as acts:
                out = net(x.detach())
                maps = layercam(
                    acts,
                    self._target(out),
                    image_size=size,
                    shallow=s.shallow_levels(),
                    gamma=s.gamma,
                    renormalize_shallow=s.renormalize_shallow,
                )
        finally:
            net.train(was_training)
        return torch.stack([maps[n].float() for n in self.levels])  # (L, B, size, size)

    def negatives(self, net: CutSwapNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CutSwap negatives of float images ``x`` (B, 3, H, W) in [0, 1].

        Returns the images, their uint8 masks (B, H, W) and the fraction of swaps whose
        pair did not come from the most salient cluster (0 in random mode).
        """
        p, g = self.params, self.generator
        b, _, h, _ = x.shape
        swaps = p.patch.swaps
        per_swap: list[torch.Tensor | None] = [None] * swaps
        if p.patch.locations == "saliency":
            source = self._frozen if p.saliency.source == "frozen" else net
            assert source is not None, "build() makes the frozen copy"
            maps = self.saliency_maps(source, normalize(x), p.cluster.grid or h)  # (L, B, g, g)
            if p.saliency.fusion == "random_level":
                # Ours: "on each map" -> every swap uses the map of one level drawn uniformly.
                dev = g.device
                level = (torch.rand(swaps, b, generator=g, device=dev) * len(maps)).long().to(x.device)
                chosen = maps[level.clamp_max(len(maps) - 1), torch.arange(b, device=x.device)]  # (S, B, g, g)
            else:
                chosen = combine(list(maps), how=p.saliency.fusion).expand(swaps, -1, -1, -1)
            per_swap = list(chosen)
        out, mask = x, torch.zeros(b, *x.shape[-2:], dtype=torch.uint8, device=x.device)
        fallback = x.new_zeros(())
        for maps_s in per_swap:  # a loop over swaps, never over images
            res = cutswap(
                out,
                g,
                maps_s,
                locations=p.patch.locations,
                mode=p.patch.mode,
                area=(p.patch.area_min, p.patch.area_max),
                aspect=(p.patch.aspect_min, p.patch.aspect_max),
                min_distance=p.patch.min_distance,
                k=p.cluster.k,
                with_coords=p.cluster.with_coords,
                coord_weight=p.cluster.coord_weight,
                iters=p.cluster.iters,
                init=p.cluster.init,
            )
            out, mask = res.images, mask | res.mask
            fallback = fallback + (res.rank > 0).float().mean() / swaps
        return out, mask, fallback

    # -- training -----------------------------------------------------------------
    def training_step(self, model: nn.Module, images: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        p, g = self.params, self.generator
        net = self.unwrap(model)
        x = to_float(images)
        if p.augment.jitter > 0 or p.augment.hue > 0:
            j = p.augment.jitter
            x = color_jitter(x, g, j, j, j, p.augment.hue, p=1.0)
        # Saliency, k-means and pair selection in full precision (bf16 would blur the
        # k-means sums and the saliency ranks); the classifier pass stays in autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            swapped, _, fallback = self.negatives(net, x)
            parts = [x, swapped]
            if p.task.classes == "three_way":
                synth = cutpaste if p.task.third == "cutpaste" else scar
                kwargs = {"area": (p.patch.area_min, p.patch.area_max), "aspect": (p.patch.aspect_min, p.patch.aspect_max)}
                third, _ = synth(x, g, jitter=p.task.third_jitter, **(kwargs if p.task.third == "cutpaste" else {}))
                parts.append(third)
        b = x.shape[0]
        labels = torch.arange(len(parts), device=x.device).repeat_interleave(b)  # (P * B,)
        logits = model(normalize(torch.cat(parts))).logits.float()  # (P * B, classes)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        terms = {"loss": loss, "accuracy": accuracy}
        if p.patch.locations == "saliency":
            terms["fallback"] = fallback
        return terms

    def on_epoch_end(self, model: nn.Module, train_images: torch.Tensor, epoch: int) -> None:
        s = self.params.saliency
        if s.source == "frozen" and s.refresh_every > 0 and (epoch + 1) % s.refresh_every == 0:
            self._frozen = self._frozen_copy(model)

    # -- scoring ------------------------------------------------------------------
    @torch.no_grad()
    def _forward_all(self, net: CutSwapNet, images: torch.Tensor, with_level: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (N, D) and, if asked, ``score.map_level`` features (N, C, h, w)."""
        sp = self.params.score
        net.eval()
        level = sp.map_level if with_level else None
        embs, feats = [], []
        for i in range(0, len(images), sp.batch_size):
            out = net(normalize(to_float(images[i : i + sp.batch_size])), level=level)
            emb = (out.h if sp.embedding == "backbone" else out.e).float()
            embs.append(F.normalize(emb, dim=1) if sp.l2_normalize else emb)
            if with_level:
                feats.append(out.level.float())
        return torch.cat(embs), (torch.cat(feats) if with_level else None)

    def fit_scorer(self, model: nn.Module, train_images: torch.Tensor) -> None:
        sp = self.params.score
        net = self.unwrap(model)
        patch = sp.maps == "patch_gde"
        emb, feats = self._forward_all(net, train_images, with_level=patch)
        self._image_gde = GaussianDensity.fit(emb)
        self._map_gde = None
        if patch:
            assert feats is not None
            positions = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])  # (N * h * w, C)
            # Evenly strided positions: deterministic and independent of the eval schedule.
            n = min(sp.map_samples, len(positions))
            idx = torch.linspace(0, len(positions) - 1, n, device=positions.device).round().long()
            self._map_gde = GaussianDensity.fit(positions[idx])

    def _layercam_maps(self, net: CutSwapNet, images: torch.Tensor) -> torch.Tensor:
        """LayerCAM of the anomalous logit, max-fused over levels, times P(not normal): (N, H, W)."""
        s = self.params.saliency
        parts = []
        net.eval()
        for i in range(0, len(images), self.params.score.batch_size):
            x = normalize(to_float(images[i : i + self.params.score.batch_size]))
            with torch.enable_grad(), capture_activations(net.backbone, self.levels) as acts:
                out = net(x)
                logits = out.logits.float()
                target = torch.logsumexp(logits[:, NORMAL + 1 :], dim=1) - logits[:, NORMAL]
                maps = layercam(acts, target, image_size=tuple(x.shape[-2:]), shallow=s.shallow_levels(),
                                gamma=s.gamma, renormalize_shallow=s.renormalize_shallow)
            p_anomalous = 1.0 - torch.softmax(logits.detach(), dim=1)[:, NORMAL]  # (B,)
            parts.append(combine(maps, how="max") * p_anomalous.view(-1, 1, 1))
        return torch.cat(parts)

    def score(self, model: nn.Module, images: torch.Tensor) -> Scores:
        if self._image_gde is None:
            raise RuntimeError("score() before fit_scorer(): the Gaussian of the training normals is missing.")
        sp = self.params.score
        net = self.unwrap(model)
        emb, feats = self._forward_all(net, images, with_level=sp.maps == "patch_gde")
        image = self._image_gde.mahalanobis(emb)
        maps = None
        if sp.maps == "patch_gde":
            assert feats is not None and self._map_gde is not None
            n, c, h, w = feats.shape
            d = self._map_gde.mahalanobis(feats.permute(0, 2, 3, 1).reshape(-1, c)).view(n, 1, h, w)
            maps = F.interpolate(d, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        elif sp.maps == "layercam":
            maps = self._layercam_maps(net, images)
        return Scores(image=image, maps=maps)

    # -- state ----------------------------------------------------------------------
    def extra_state(self) -> dict[str, object]:
        if self._frozen is None:
            return {}
        return {"frozen": {k: v.detach().cpu().clone() for k, v in self._frozen.state_dict().items()}}

    def load_extra_state(self, state: dict[str, object]) -> None:
        frozen = state.get("frozen")
        if frozen is not None and self._frozen is not None:
            self._frozen.load_state_dict(frozen)  # type: ignore[arg-type]

    def describe(self) -> dict[str, str]:
        p = self.params
        return {
            "weights": p.backbone.weights,
            "saliency_levels": "+".join(self.levels) if p.patch.locations == "saliency" else "none",
        }
