"""The morphable model as a torch ``nn.Module``: arrays as buffers, coefficients as inputs.

Only this module imports torch, and nothing in the numpy side imports it, so ``morphable_model``
works without torch. Build it from a model: ``MorphableModelModule(model, dtype=..., device=...)``.

The buffers are registered with ``persistent=False``: they are not part of ``state_dict()``, so a
network that holds this module does not copy the whole model into every checkpoint (store
``model.fingerprint`` instead and rebuild the module from the model file).
"""

from __future__ import annotations

import torch
from torch import nn

from .model import _FLOAT_FIELDS, MorphableModel

__all__ = ["MorphableModelModule", "linear_combination"]


def linear_combination(mean: torch.Tensor, basis: torch.Tensor, std: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``mean + basis[:, :k] @ (std[:k] * coef)`` for ``coef (B, k)``; mean ``(N, 3)`` -> ``(B, N, 3)``."""
    k = coef.shape[-1]
    # (B, k) * (k,) -> (B, k); (B, k) @ (k, 3N) -> (B, 3N)
    flat = (coef * std[:k]) @ basis[:, :k].T
    # (B, 3N) -> (B, N, 3) (rows x0, y0, z0, ...); + (N, 3) broadcast over B
    return flat.reshape(coef.shape[0], -1, 3) + mean


class MorphableModelModule(nn.Module):
    """``nn.Module`` view of a :class:`MorphableModel`.

    Buffers: ``mean_shape (N, 3)``, ``id_basis (3N, Kid)``, ``id_std (Kid,)``, ``exp_basis``,
    ``exp_std``, ``albedo_mean (N, 3)``, ``albedo_basis``, ``albedo_std``, ``pncc_colors (N, 3)``
    (float, ``dtype``), ``triangles (T, 3)`` and ``landmarks (68,)`` (long; ``landmarks`` is
    None when the model has none). ``.to(device)`` / ``.to(dtype)`` / ``.double()`` move or cast
    the float buffers; index buffers stay long.
    """

    def __init__(self, model: MorphableModel, dtype: torch.dtype | None = None, device=None):
        super().__init__()
        if not isinstance(model, MorphableModel):
            raise ValueError(f"model must be a MorphableModel, got {type(model).__name__}")
        dtype = torch.float32 if dtype is None else dtype
        self.fingerprint = model.fingerprint
        self.n_vertices = model.n_vertices
        self.n_id, self.n_exp, self.n_albedo = model.n_id, model.n_exp, model.n_albedo
        for name in _FLOAT_FIELDS + ("pncc_colors",):
            t = torch.tensor(getattr(model, name), dtype=dtype, device=device)  # copies the read-only array
            self.register_buffer(name, t, persistent=False)
        self.register_buffer(
            "triangles", torch.tensor(model.triangles, dtype=torch.long, device=device), persistent=False
        )
        lm = None if model.landmarks is None else torch.tensor(model.landmarks, dtype=torch.long, device=device)
        self.register_buffer("landmarks", lm, persistent=False)

    def forward(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices ``(B, N, 3)`` for ``alpha_id (B, k_id)`` and optional ``alpha_exp (B, k_exp)``
        (std units, ``k <= K``). 1-D inputs give ``(N, 3)``."""
        a_id, batched = _coefficients(alpha_id, self.n_id, "alpha_id", self.id_basis)
        out = linear_combination(self.mean_shape, self.id_basis, self.id_std, a_id)  # (B, N, 3)
        if alpha_exp is not None:
            a_exp, batched_exp = _coefficients(alpha_exp, self.n_exp, "alpha_exp", self.exp_basis)
            if batched_exp != batched or a_exp.shape[0] != a_id.shape[0]:
                raise ValueError(
                    f"alpha_exp must match alpha_id's batch shape {tuple(alpha_id.shape[:-1])}, "
                    f"got {tuple(alpha_exp.shape[:-1])}"
                )
            zero = torch.zeros_like(self.mean_shape)
            out = out + linear_combination(zero, self.exp_basis, self.exp_std, a_exp)  # (B, N, 3)
        return out if batched else out[0]

    def albedo(self, beta: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """Albedo ``(B, N, 3)`` for ``beta (B, k)`` (1-D -> ``(N, 3)``), clipped to [0, 1] unless
        ``clip=False`` (clipping stops gradients outside the range)."""
        b, batched = _coefficients(beta, self.n_albedo, "beta", self.albedo_basis)
        out = linear_combination(self.albedo_mean, self.albedo_basis, self.albedo_std, b)  # (B, N, 3)
        if clip:
            out = out.clamp(0.0, 1.0)
        return out if batched else out[0]

    def landmark_points(self, vertices: torch.Tensor) -> torch.Tensor:
        """``(..., 68, 3)`` landmark positions picked from ``vertices (..., N, 3)``."""
        if self.landmarks is None:
            raise ValueError("this model has no landmarks (landmarks is None)")
        if vertices.ndim < 2 or vertices.shape[-2:] != (self.n_vertices, 3):
            raise ValueError(f"vertices must be (..., {self.n_vertices}, 3), got {tuple(vertices.shape)}")
        return vertices[..., self.landmarks, :]  # (..., N, 3)[..., (68,), :] -> (..., 68, 3)

    def extra_repr(self) -> str:
        return (
            f"n_vertices={self.n_vertices}, n_triangles={self.triangles.shape[0]}, n_id={self.n_id}, "
            f"n_exp={self.n_exp}, n_albedo={self.n_albedo}, fingerprint={self.fingerprint[:12]}"
        )


def _coefficients(coef, k_max: int, name: str, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``coef`` as a ``(B, k)`` tensor on ``like``'s device/dtype, plus whether it was batched."""
    if not isinstance(coef, torch.Tensor):
        coef = torch.as_tensor(coef)
    if coef.ndim not in (1, 2):
        raise ValueError(f"{name} must be (k,) or (B, k) with k <= {k_max}, got {tuple(coef.shape)}")
    if coef.shape[-1] > k_max:
        raise ValueError(f"{name} must have at most {k_max} coefficients, got {tuple(coef.shape)}")
    coef = coef.to(device=like.device, dtype=like.dtype)
    batched = coef.ndim == 2
    return (coef if batched else coef[None]), batched
