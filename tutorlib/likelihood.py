"""Exact likelihoods of continuous normalising flows (lesson 02; used again in lesson 03).

For the flow dx/dt = v(x, t) from the source p_0 (t = 0) to p_1 (t = 1), the instantaneous
change of variables gives d/dt log p_t(x_t) = -div v(x_t, t), hence::

    log p_1(x_1) = log p_0(x_0) - int_0^1 div v(x_t, t) dt,

with x_t the trajectory through x_1. :func:`log_prob` integrates the augmented state
[x_t, int div] backwards from t = 1 to t = 0. The divergence is exact (one autograd pass per
dimension, :func:`divergence_exact`; fine for 2D) or Hutchinson's unbiased estimate
E_eps[eps^T (dv/dx) eps] with E[eps eps^T] = I (:func:`divergence_hutchinson`, one pass per probe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from tutorlib.paths import randn_like
from tutorlib.solvers import ode_solve

__all__ = [
    "DivergenceOutput",
    "LikelihoodOutput",
    "bits_per_dim",
    "divergence_exact",
    "divergence_hutchinson",
    "log_prob",
    "standard_normal_log_prob",
]

VelocityField = Callable[[Tensor, Tensor], Tensor]


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """log N(x; 0, I) = -||x||^2 / 2 - D/2 log(2 pi) per sample, x (B, ...) -> (B,)."""
    xf = x.reshape(x.shape[0], -1)  # (B, D)
    return -0.5 * xf.square().sum(1) - 0.5 * xf.shape[1] * math.log(2 * math.pi)


def bits_per_dim(log_prob: Tensor, dim: int, *, data_scale: float = 1.0) -> Tensor:
    """Negative log-likelihood in bits per dimension, -log p(x_raw) / (D ln 2).

    If the model sees scaled data x = data_scale * x_raw (e.g. pixels in [0, 256) mapped to
    [0, 1] with data_scale = 1/256), the density of the raw data is
    p_raw = p_model * data_scale^D, so ``data_scale`` adds -log2(data_scale) bits per dim
    (8 bits for 1/256). For discrete pixels, dequantise (add uniform noise) before scaling.

    Args:
        log_prob: log-densities from the model, shape (B,) (nats).
        dim: D, the number of dimensions per sample.
        data_scale: the factor from raw to model data.

    Returns:
        Bits per dimension, shape (B,).
    """
    return -(log_prob + dim * math.log(data_scale)) / (dim * math.log(2.0))


@dataclass
class DivergenceOutput:
    """A velocity evaluation together with its divergence."""

    dx_t: Tensor  # (B, ...) f(x, t)
    divergence: Tensor  # (B,) div_x f(x, t), exact or estimated


def _tracked(x: Tensor, create_graph: bool) -> Tensor:
    """``x`` ready for autograd: keep its graph when building one, else a fresh leaf."""
    return x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)


def divergence_exact(f: VelocityField, x: Tensor, t: Tensor, *, create_graph: bool = False) -> DivergenceOutput:
    """f(x, t) and its exact divergence sum_i d f_i / d x_i, one autograd pass per dimension.

    Cost: D backward passes; use it for small D (2D toys), Hutchinson otherwise.

    Args:
        f: ``f(x, t)`` -> (B, ...), each sample depending only on its own row.
        x: points, shape (B, ...).
        t: times, shape (B,).
        create_graph: keep the graph (to train through the divergence, lesson 02).

    Returns:
        A :class:`DivergenceOutput`, detached unless ``create_graph``.
    """
    with torch.enable_grad():
        x_in = _tracked(x, create_graph)
        v = f(x_in, t)  # (B, ...)
        vf = v.reshape(v.shape[0], -1)  # (B, D)
        div = torch.zeros(vf.shape[0], dtype=vf.dtype, device=vf.device)  # (B,)
        for i in range(vf.shape[1]):
            (g,) = torch.autograd.grad(vf[:, i].sum(), x_in, retain_graph=True, create_graph=create_graph)
            div = div + g.reshape(g.shape[0], -1)[:, i]
    if not create_graph:
        v, div = v.detach(), div.detach()
    return DivergenceOutput(dx_t=v, divergence=div)


def divergence_hutchinson(f: VelocityField, x: Tensor, t: Tensor, eps: Tensor, *,
                          create_graph: bool = False) -> DivergenceOutput:
    """f(x, t) and Hutchinson's estimate of its divergence, mean_p eps_p^T (df/dx) eps_p.

    Unbiased whenever E[eps eps^T] = I (Gaussian or Rademacher probes); one vector-Jacobian
    product per probe.

    Args:
        f: ``f(x, t)`` -> (B, ...).
        x: points, shape (B, ...).
        t: times, shape (B,).
        eps: probes, shape (B, ...) (one probe) or (P, B, ...) (P probes, averaged).
        create_graph: keep the graph.

    Returns:
        A :class:`DivergenceOutput`, detached unless ``create_graph``.
    """
    probes = eps.unsqueeze(0) if eps.shape == x.shape else eps  # (P, B, ...)
    if probes.shape[1:] != x.shape:
        raise ValueError(f"eps must have shape {tuple(x.shape)} or (P, *{tuple(x.shape)}), got {tuple(eps.shape)}")
    with torch.enable_grad():
        x_in = _tracked(x, create_graph)
        v = f(x_in, t)  # (B, ...)
        div = torch.zeros(x.shape[0], dtype=v.dtype, device=v.device)  # (B,)
        for e in probes:
            (g,) = torch.autograd.grad(v, x_in, grad_outputs=e, retain_graph=True, create_graph=create_graph)
            div = div + (g * e).reshape(x.shape[0], -1).sum(1)  # eps^T J eps, (B,)
        div = div / len(probes)
    if not create_graph:
        v, div = v.detach(), div.detach()
    return DivergenceOutput(dx_t=v, divergence=div)


@dataclass
class LikelihoodOutput:
    """The result of :func:`log_prob`."""

    log_prob: Tensor  # (B,) log p_1(x_1) in nats
    x_0: Tensor  # (B, ...) the source point the flow maps to x_1
    source_log_prob: Tensor  # (B,) log p_0(x_0)
    divergence_integral: Tensor  # (B,) int_0^1 div v(x_t, t) dt along the trajectory
    nfe: int  # evaluations of the augmented dynamics


_DIVERGENCES = ("exact", "hutchinson")
_NOISES = ("gaussian", "rademacher")


def log_prob(velocity: VelocityField, x_1: Tensor, *,
             source_log_prob: Callable[[Tensor], Tensor] = standard_normal_log_prob, method: str = "dopri5",
             steps: int = 100, atol: float = 1e-5, rtol: float = 1e-5, divergence: str = "exact",
             noise: str = "gaussian", n_probes: int = 1, generator: torch.Generator | None = None,
             enable_grad: bool = False) -> LikelihoodOutput:
    """log p_1(x_1) of the flow of ``velocity`` from the source density ``source_log_prob``.

    Integrates d/dt [x_t, a_t] = [v(x_t, t), div v(x_t, t)] from t = 1 (x_1, a = 0) down to
    t = 0, so a_0 = -int_0^1 div v dt and log p_1(x_1) = log p_0(x_0) + a_0.

    Args:
        velocity: ``velocity(x, t)``, x (B, ...), t (B,).
        x_1: data points, shape (B, ...).
        source_log_prob: ``log p_0(x_0)`` per sample, (B, ...) -> (B,).
        method, steps, atol, rtol: passed to :func:`tutorlib.solvers.ode_solve` (the error
            control of dopri5 covers the divergence integral too).
        divergence: "exact" (D autograd passes per evaluation) or "hutchinson".
        noise: Hutchinson probe distribution, "gaussian" or "rademacher".
        n_probes: Hutchinson probes per evaluation; the probes are drawn once per solve from
            ``generator`` and reused at every time, so the integrand is a smooth ODE.
        generator: the source of the probes.
        enable_grad: differentiate through the solve (maximum-likelihood training, lesson 02).

    Returns:
        A :class:`LikelihoodOutput` (log_prob, x_0, source_log_prob, divergence_integral, nfe).
    """
    if divergence not in _DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; valid: {', '.join(_DIVERGENCES)}")
    if noise not in _NOISES:
        raise ValueError(f"unknown noise {noise!r}; valid: {', '.join(_NOISES)}")
    shape, B = x_1.shape, x_1.shape[0]
    D = x_1[0].numel()
    eps = None
    if divergence == "hutchinson":
        eps = randn_like(x_1.new_empty((n_probes, *shape)), generator=generator)  # (P, B, ...)
        if noise == "rademacher":
            eps = torch.sign(eps)

    def dynamics(z: Tensor, t: Tensor) -> Tensor:
        x = z[:, :D].reshape(shape)  # (B, ...)
        if eps is None:
            out = divergence_exact(velocity, x, t, create_graph=enable_grad)
        else:
            out = divergence_hutchinson(velocity, x, t, eps, create_graph=enable_grad)
        return torch.cat([out.dx_t.reshape(B, D), out.divergence[:, None]], dim=1)  # (B, D+1)

    z_1 = torch.cat([x_1.reshape(B, D), x_1.new_zeros(B, 1)], dim=1)  # (B, D+1)
    sol = ode_solve(dynamics, z_1, method=method, steps=steps, t0=1.0, t1=0.0, atol=atol, rtol=rtol,
                    enable_grad=enable_grad)
    x_0 = sol.x[:, :D].reshape(shape)  # (B, ...)
    integral = -sol.x[:, D]  # (B,) int_0^1 div v dt
    with torch.set_grad_enabled(enable_grad):
        lp0 = source_log_prob(x_0)  # (B,)
    return LikelihoodOutput(log_prob=lp0 - integral, x_0=x_0, source_log_prob=lp0,
                            divergence_integral=integral, nfe=sol.nfe)
