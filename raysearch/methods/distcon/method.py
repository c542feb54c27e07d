"""distcon: self-supervised distributional and contrastive learning for image anomaly detection.

Paper: "Self-supervised distributional and contrastive learning model for image
anomaly detection", Knowledge-Based Systems 316 (2025), 113348. The paper publishes an
abstract only; this is a reconstruction from it and the closest public work (GOAD's
transformation classifier with centres, SimCLR's NT-Xent, CSI's shifted instances).

Each image is seen under every transformation r of a rotation set, two augmented views
each. A per-rotation Gaussian mixture models the normal embeddings under r; the GMM
clustering loss is the cross-entropy of softmax_r(log p_r(z) / T_gmm) against the
applied rotation. NT-Xent treats (image, rotation) pairs as instances: the positive of a
view is the other view of the same image under the same rotation. An optional rotation
head adds a rotation-classification cross-entropy.

Scores (higher = more anomalous), each averaged over the rotations and standardised by
its mean and spread on the training normals, then summed over ``score.components``:
``gmm`` = -log p_r(z) under the own rotation's mixture, ``cosine`` = -max cosine
similarity to the training embeddings of the same rotation, ``rotation`` = -log P(r | x)
of the rotation head.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from raysearch.components.gmm import RotationGMM
from raysearch.data.augment import normalize, simclr_augment, to_float
from raysearch.methods.base import Method, Scores
from raysearch.methods.distcon.loss import distcon_loss
from raysearch.methods.distcon.model import DistConNet
from raysearch.methods.distcon.params import DistConParams, parse_rotations

__all__ = ["DistCon", "apply_transform"]


def apply_transform(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """Rotate (B, C, H, W) by ``turns`` quarter turns counter-clockwise, then flip if asked."""
    x = torch.rot90(x, turns, dims=(2, 3)) if turns else x
    return x.flip(3) if flip else x


class DistCon(Method):
    name = "distcon"
    Params = DistConParams
    params: DistConParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.transforms = parse_rotations(self.params.rotations)
        self._gmm_ready = False
        self._scorer: dict[str, torch.Tensor | RotationGMM] = {}

    # -- model --------------------------------------------------------------------
    def build(self) -> nn.Module:
        cpu_gen = torch.Generator().manual_seed(self.seed)
        model = DistConNet(self.params, self.info.image_size, generator=cpu_gen).to(self.device)
        self._gmm_ready = self.params.gmm.update == "gradient"
        return model

    def _rotated(self, x: torch.Tensor) -> torch.Tensor:
        """(V, B, C, H, W) -> (V, B * R, C, H, W), rows ordered image-major then rotation."""
        v, b = x.shape[:2]
        flat = x.reshape(v * b, *x.shape[2:])
        out = torch.stack([apply_transform(flat, k, f) for k, f in self.transforms], dim=1)  # (VB, R, C, H, W)
        return out.reshape(v, b * len(self.transforms), *x.shape[2:])

    # -- training -----------------------------------------------------------------
    def training_step(self, model: nn.Module, images: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        p = self.params
        b = images.shape[0]
        x = to_float(images)
        views = simclr_augment(
            torch.cat([x, x]),
            self.generator,
            crop_scale=(p.augment.crop_scale, 1.0),
            jitter=(p.augment.jitter, p.augment.jitter, p.augment.jitter, p.augment.hue),
            jitter_p=p.augment.jitter_p,
            gray_p=p.augment.gray_p,
            # (k quarter turns, flipped) of an image equals (-k, not flipped) of its mirror:
            # with flipped transformations a random flip would make the classes collide.
            flip=not p.flips_rotations(),
        ).reshape(2, b, *x.shape[1:])
        rotated = self._rotated(normalize(views))  # (2, M, C, H, W), M = B * R
        n_rot = len(self.transforms)
        _, z, logits = model(rotated.reshape(-1, *rotated.shape[2:]))
        z = z.reshape(2, b * n_rot, -1)  # (2, M, D)
        logits = None if logits is None else logits.reshape(2, b * n_rot, -1)
        targets = torch.arange(n_rot, device=images.device).repeat(b)  # (M,)
        gmm = self.unwrap(model).gmm
        if not self._gmm_ready:
            # EM / k-means mixtures start from the first batch's embeddings.
            by_rot = z.detach().reshape(2, b, n_rot, -1).permute(2, 0, 1, 3).reshape(n_rot, 2 * b, -1)
            gmm.refit(by_rot, iters=p.gmm.em_iters, method=self._refit_kind(), generator=self.generator)
            self._gmm_ready = True
        return distcon_loss(p, z, logits, targets, gmm)

    def _refit_kind(self) -> str:
        return "kmeans" if self.params.gmm.update == "kmeans" else "em"

    def on_epoch_end(self, model: nn.Module, train_images: torch.Tensor, epoch: int) -> None:
        g = self.params.gmm
        if g.update == "gradient" or (epoch + 1) % g.refit_every:
            return
        net = self.unwrap(model)
        was_training = net.training
        z, _ = self._embed(net, train_images)
        net.gmm.refit(z, iters=g.em_iters, method=self._refit_kind(), generator=self.generator)
        net.train(was_training)

    # -- scoring ------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, net: DistConNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (R, N, D) and rotation log-probabilities (R, N) of uint8 images."""
        net.eval()
        bs = self.params.score.batch_size
        zs, lps = [], []
        for k, f in self.transforms:
            z_parts, lp_parts = [], []
            for i in range(0, len(images), bs):
                x = apply_transform(normalize(to_float(images[i : i + bs])), k, f)
                _, z, logits = net(x)
                z_parts.append(z.float())
                if logits is not None:
                    lp_parts.append(torch.log_softmax(logits.float(), dim=1))
            zs.append(torch.cat(z_parts))
            if lp_parts:
                lps.append(torch.cat(lp_parts))
        z = torch.stack(zs)  # (R, N, D)
        if not lps:
            return z, None
        lp = torch.stack(lps)  # (R, N, R')
        own = torch.arange(len(self.transforms), device=z.device)
        return z, lp[own, :, own]  # (R, N): log P(applied rotation | x)

    def _raw_scores(
        self, z: torch.Tensor, rot_lp: torch.Tensor | None, exclude_self: bool = False
    ) -> dict[str, torch.Tensor]:
        """Unnormalised per-component scores (N,), averaged over rotations."""
        out: dict[str, torch.Tensor] = {}
        for comp in self.params.score.parsed():
            if comp == "gmm":
                gmm: RotationGMM = self._scorer["gmm"]  # type: ignore[assignment]
                own = torch.stack([gmm.log_prob(z[r])[:, r] for r in range(len(z))])  # (R, N)
                out["gmm"] = -own.mean(0)
            elif comp == "cosine":
                bank: torch.Tensor = self._scorer["bank"]  # type: ignore[assignment]  # (R, N_train, D)
                sims = []
                for r in range(len(z)):
                    s = z[r] @ bank[r].t()  # (N, N_train)
                    if exclude_self:
                        s.fill_diagonal_(float("-inf"))
                    sims.append(s.max(dim=1).values)
                out["cosine"] = -torch.stack(sims).mean(0)
            elif comp == "rotation":
                assert rot_lp is not None, "validated: rotation scores need the rotation head"
                out["rotation"] = -rot_lp.mean(0)
        return out

    def fit_scorer(self, model: nn.Module, train_images: torch.Tensor) -> None:
        net = self.unwrap(model)
        z, rot_lp = self._embed(net, train_images)
        gmm = net.gmm
        untrained = self.params.gmm.update == "gradient" and self.params.loss.gmm_weight == 0
        if self.params.score.refit_gmm or untrained:
            # Mixtures that nothing trained (gmm_weight = 0), or an explicit request: fit by EM.
            gmm = copy.deepcopy(gmm)
            gmm.refit(z, iters=self.params.gmm.em_iters, method="em", generator=self.generator)
        self._scorer = {"gmm": gmm, "bank": z}
        raw = self._raw_scores(z, rot_lp, exclude_self=True)
        for name, values in raw.items():
            self._scorer[f"{name}_mean"] = values.mean()
            self._scorer[f"{name}_std"] = values.std().clamp_min(1e-6)

    def score(self, model: nn.Module, images: torch.Tensor) -> Scores:
        z, rot_lp = self._embed(self.unwrap(model), images)
        raw = self._raw_scores(z, rot_lp)
        total = sum((v - self._scorer[f"{k}_mean"]) / self._scorer[f"{k}_std"] for k, v in raw.items())
        return Scores(image=total)  # type: ignore[arg-type]

    # -- state ----------------------------------------------------------------------
    def extra_state(self) -> dict[str, bool]:
        """Whether EM / k-means mixtures have had their first fit (from the first batch);
        the mixtures themselves are buffers of the model."""
        return {"gmm_ready": self._gmm_ready}

    def load_extra_state(self, state: dict[str, object]) -> None:
        # Default True: every checkpoint is taken after training steps ran, so the mixtures
        # of one written without this key had been fit already.
        self._gmm_ready = bool(state.get("gmm_ready", True))

    def describe(self) -> dict[str, str]:
        facts = {"weights": self.params.backbone.weights}
        if self.params.flips_rotations():
            facts["view_flip"] = "off (the rotation set has flipped transformations)"
        return facts
