# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Solvers and few-step generation
#
# **Learning goals**
# - write an explicit Runge-Kutta step from its tableau in plain PyTorch, then measure what the order of
#   Euler, midpoint, Heun and RK4 means on a real field: the error against a fine reference as the number
#   of function evaluations (NFE) grows, next to adaptive Dopri5;
# - see why a trained network's field can be rough in time where a closed-form field is smooth, and what
#   that costs a high-order or adaptive solver;
# - choose where the steps go: a uniform grid, a warped one, the grid a dynamic program finds best for the
#   summed local errors (the step-size search of *Bellman Optimal Step-size Straightening*), and a grid
#   fitted by gradient descent to the global error;
# - learn the *average velocity* $u(x_s, s, t)$ that jumps from time $s$ to $t$ in one evaluation, and train
#   it two ways: MeanFlow's differential identity (a Jacobian-vector product) and shortcut models'
#   self-consistency;
# - compare them with reflow and distillation at 1, 2 and 4 steps, and put every method of lessons 01-07
#   on one figure and one table: energy distance against NFE, on the same data and seed.
#
# **Prerequisites:** lesson 03 (flow matching, `ode_solve`, energy distance against its noise floor) and
# lesson 01 (DDPM's samplers). Lessons 05 (minibatch OT) and 06 (reflow, distillation) explain two of the
# baselines in depth; this lesson trains small versions of them with the library.
#
# **Run time** (measured by `make verify` on 2026-12-02, 2-core CPU busy with other work, load average 3.7): CPU standard ≈ 1.8 min · GPU standard: not measured yet · smoke ≈ 24 s. The last cell prints this run's time.
#
# **Loads:** the committed bench results of minibatch-OT flow matching (`bench/results/fm2d-standard.json`),
# for one row of the closing table, and, in the standard profile, the checkpoints the training code below
# made (`data/checkpoints/l07_*_standard.pt`, through `tutorlib.checkpoints.CheckpointChain`: each is loaded
# only where training would start from the same inputs, and the run prints what training prints).
# **Trains:** otherwise, on eight Gaussians, a flow-matching `TimeMLP`, a DDPM epsilon-model, a MeanFlow
# and a shortcut `TwoTimeMLP` (`P.steps_2d` steps each), a 2-rectified flow and a one-step distilled
# generator (`P.steps_2d // 2` steps each).

# %% [markdown]
# ## Setup

# %%
import copy
import json
import math
import time
from pathlib import Path

import torch

from tutorlib import data, metrics, plotting
from tutorlib.claims import claim
from tutorlib.ddpm import DDPMSchedule, ancestral_sample, ddim_sample, linear_betas
from tutorlib.device import get_device, profile, seed_everything, set_threads
from tutorlib.exercises.lesson07 import check_meanflow_target_paper, check_minimax_grid, check_rk3_step
from tutorlib.fewstep import MeanFlow, Shortcut, TwoTimeMLP, fewstep_sample
from tutorlib.losses import cfm_loss, ddpm_loss
from tutorlib.models import TimeMLP, count_parameters
from tutorlib.paths import CondOTPath, gmm_marginal_velocity
from tutorlib.reflow import distill_loss, pair_batches, reflow_loss
from tutorlib.solvers import (bellman_grid, euler_jump_costs, fit_time_grid, ode_solve, optimal_time_grid,
                              power_time_grid, reflow_coupling, steps_for_nfe)
from tutorlib.checkpoints import CheckpointChain
from tutorlib.train import TrainConfig, train
from tutorlib.widgets import choice_explorer

lesson_start = time.perf_counter()
device = get_device()
threads = set_threads()
gen = seed_everything(0)
P = profile()
print(f"torch {torch.__version__} on {device} ({threads} CPU threads); profile {P.name!r}")
# every model of this lesson is trained here, or loaded from the checkpoint this code made (standard profile:
# shipped in data/checkpoints); the generator then continues where training would have left it
trained = CheckpointChain("l07", P.name, gen)

# %% [markdown]
# ## 1. How accurate is a solver?
#
# *Sampling a flow is solving an ODE. How fast does a solver's error fall as we pay for more evaluations of
# the network, and does the textbook answer hold on a trained field?*
#
# The course's solvers are **explicit Runge-Kutta** methods. One step of size $h$ from $(x, t)$ evaluates
# the field at $s$ *stages* and combines them,
#
# $$k_i = v\Big(x + h \sum_{j < i} a_{ij} k_j,\; t + c_i h\Big), \qquad x_{\text{next}} = x + h \sum_i b_i k_i ,$$
#
# so a method is its **tableau** $(c, A, b)$:
#
# | method | stages (NFE per step) | $c$ | $A$ (rows below the diagonal) | $b$ | order $p$ |
# |---|---|---|---|---|---|
# | Euler | 1 | $0$ | | $1$ | 1 |
# | midpoint | 2 | $0, \tfrac12$ | $\tfrac12$ | $0, 1$ | 2 |
# | Heun | 2 | $0, 1$ | $1$ | $\tfrac12, \tfrac12$ | 2 |
# | RK4 | 4 | $0, \tfrac12, \tfrac12, 1$ | $\tfrac12;\ 0, \tfrac12;\ 0, 0, 1$ | $\tfrac16, \tfrac13, \tfrac13, \tfrac16$ | 4 |
#
# A method of **order** $p$ has a global error $\approx C h^p$ on a smooth field: halve the step and the
# error drops by $2^p$. At a fixed budget of NFE $= s/h$ evaluations the error is $\approx C' \,\text{NFE}^{-p}$,
# so on a log-log plot of error against NFE the slope is $-p$. That is what we measure, on the field of a
# flow-matching model trained on eight Gaussians (lesson 03's recipe) and on the same data's exact marginal
# field, which is known in closed form.

# %%
path = CondOTPath()
cfg = TrainConfig.from_profile(P)


def fm_loss(model, x_1):
    """CFM loss for a data batch x_1 (B, 2): fresh noise and uniform times from `gen`."""
    x_0 = data.gaussian(x_1.shape[0], generator=gen, device=device)  # (B, 2)
    t = torch.rand(x_1.shape[0], generator=gen).to(device)  # (B,)
    return cfm_loss(model, path, x_0, x_1, t)


def data_batch(step):
    return data.eight_gaussians(P.batch_2d, generator=gen, device=device)  # (B, 2)


def train_fm(model):
    hist = train(model, fm_loss, data_batch, cfg.replace(desc="flow matching"))
    hist.ema.copy_to(model)  # keep the EMA weights
    return hist


fm = TimeMLP.from_profile(P).to(device)
print(f"TimeMLP: {count_parameters(fm):,} parameters; {cfg.steps} steps, batch {P.batch_2d}")
run = trained("fm", train_fm, model=fm, config={"steps": cfg.steps, "batch": P.batch_2d})
print(f"flow matching: {run.describe()}")

# %% [markdown]
# First the step itself, from scratch: a loop over the stages of a tableau. The cell checks that it
# reproduces `tutorlib.solvers.ode_solve` for all four methods on the trained model.

# %%
TABLEAUS = {  # (c, A, b): stage i is evaluated at t + c[i] h, from x + h sum_j A[i][j] k_j
    "euler": ([0.0], [[]], [1.0]),
    "midpoint": ([0.0, 0.5], [[], [0.5]], [0.0, 1.0]),
    "heun": ([0.0, 1.0], [[], [1.0]], [0.5, 0.5]),
    "rk4": ([0.0, 0.5, 0.5, 1.0], [[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6]),
}


def rk_step(velocity, x, t, h, tableau):
    """One explicit Runge-Kutta step of size h from x (B, 2) at times t (B,)."""
    c, A, b = tableau
    ks = []
    for c_i, a_i in zip(c, A):
        x_i = x + h * sum(a * k for a, k in zip(a_i, ks)) if a_i else x  # (B, 2) the stage's point
        ks.append(velocity(x_i, t + c_i * h))  # (B, 2)
    return x + h * sum(b_i * k for b_i, k in zip(b, ks))


@torch.no_grad()
def rk_solve(velocity, x_0, steps, tableau):
    """Integrate dx/dt = velocity(x, t) from t = 0 to 1 in `steps` uniform steps."""
    x, h = x_0, 1.0 / steps
    for k in range(steps):
        x = rk_step(velocity, x, torch.full((x.shape[0],), k * h, dtype=x.dtype, device=x.device), h, tableau)
    return x


x_check = data.gaussian(256, generator=gen, device=device)  # (256, 2)
for method, tableau in TABLEAUS.items():
    torch.testing.assert_close(rk_solve(fm, x_check, 5, tableau), ode_solve(fm, x_check, method=method, steps=5).x)
print("from-scratch Runge-Kutta steps agree with ode_solve for", ", ".join(TABLEAUS))

# %% [markdown]
# Now the error against NFE. The reference is RK4 with 1024 steps (4096 evaluations), in float64 so that
# rounding stays far below the errors we measure; each method then runs at 4 to 512 NFE from the same
# noise, and the error is the root-mean-square distance of its endpoints to the reference's. The two
# fields are the exact marginal velocity of eight Gaussians (`gmm_marginal_velocity`, as in lesson 03) and
# a float64 copy of the trained network. The measured order is the slope between the two largest budgets,
# $\log_2(e_{256} / e_{512})$, where every method should be in its asymptotic regime if it ever is.

# %%
angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8  # (8,) the mixture of data.eight_gaussians
means = 2.5 * torch.stack([angles.cos(), angles.sin()], 1).to(device)  # (8, 2)
stds, weights = torch.full((8,), 0.2, dtype=torch.float64, device=device), torch.ones(8, dtype=torch.float64,
                                                                                       device=device)


def oracle(x, t):
    """The exact marginal velocity of eight Gaussians on the linear path (float64 or float32)."""
    return gmm_marginal_velocity(path, x, t, means.to(x.dtype), stds.to(x.dtype), weights.to(x.dtype))


fm64 = copy.deepcopy(fm).double()
FIELDS = {"exact field": oracle, "trained network": fm64}
ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
NFES = [4, 8, 16, 32, 64, 128, 256, 512]
TOLS = [1e-2, 1e-3, 1e-4, 1e-5]
x0_order = data.gaussian(P.n_eval_2d // 8, generator=gen, device=device).double()  # (M, 2) float64


def rms(a, b):
    return (a - b).square().sum(1).mean().sqrt().item()


errors, dopri, reference, paths = {}, {}, {}, {}
for field_name, field in FIELDS.items():
    ref = ode_solve(field, x0_order, method="rk4", steps=1024, return_trajectory=True)
    reference[field_name], paths[field_name] = ref.x, ref  # the end points, and the paths for later
    check_ref = ode_solve(field, x0_order, method="rk4", steps=512).x
    print(f"{field_name}: the reference moves by {rms(ref.x, check_ref):.1e} from 512 to 1024 RK4 steps")
    for method in ORDER:
        errors[field_name, method] = [(n, rms(ode_solve(field, x0_order, method=method,
                                                        steps=steps_for_nfe(method, n)).x, ref.x))
                                      for n in NFES]
    dopri[field_name] = []
    for tol in TOLS:
        sol = ode_solve(field, x0_order, method="dopri5", atol=tol, rtol=tol)
        dopri[field_name].append((sol.nfe, rms(sol.x, ref.x)))

measured = {key: math.log2(errs[-2][1] / errs[-1][1]) for key, errs in errors.items()}
print(f"\n{'method':9s} {'order':>5s}  {'measured: exact field':>22s}  {'trained network':>16s}")
for method, p in ORDER.items():
    print(f"{method:9s} {p:5d}  {measured['exact field', method]:22.2f}  {measured['trained network', method]:16.2f}")
print("\nRMS error at NFE", NFES)
for (field_name, method), errs in errors.items():
    print(f"  {field_name:15s} {method:8s}", " ".join(f"{e:8.1e}" for _, e in errs))
for field_name, runs in dopri.items():
    print(f"  {field_name:15s} dopri5 at tolerances {TOLS}: NFE {[n for n, _ in runs]}, "
          f"errors {[f'{e:.1e}' for _, e in runs]}")
for method, p in ORDER.items():
    claim(f"exact field: measured order of {method} (theory {p})", measured["exact field", method],
          at_least={"standard": p - 0.3, "smoke": p - 0.5}, at_most={"standard": p + 0.3, "smoke": p + 0.5})

# %%
curves = {f"{method} ({field_name})": ([n for n, _ in errs], [e for _, e in errs])
          for (field_name, method), errs in errors.items()}
curves.update({f"dopri5 ({field_name})": ([n for n, _ in runs], [e for _, e in runs])
               for field_name, runs in dopri.items()})
fig = plotting.metric_curves(curves, "NFE (network evaluations)", "RMS error against the reference", log_y=True,
                             title="error against NFE: exact field (dashed) and trained network (solid)")
fig.update_traces(line=dict(dash="dash"), selector=lambda tr: "exact field" in tr.name)
fig

# %% [markdown]
# On the exact field (dashed) the lines straighten into slopes of $-1$, $-2$, $-2$ and $-4$: the cell above
# prints the measured orders and claims (standard profile) that each lies within 0.3 of theory. It takes a
# while: below about 64 NFE even the exact field is not yet in the asymptotic regime, because its clusters
# are narrow (standard deviation 0.2) and the field changes fast near them. Dopri5 buys its accuracy with
# an error estimate per step, and its NFE grow as the tolerance shrinks.
#
# The trained network (solid) tells another story. Euler keeps its order, but midpoint, Heun and RK4 wobble
# and fall short, and Dopri5 needs several times the evaluations of the exact field for the same
# tolerance. Why? The field is close to the exact one where it matters for sampling (lesson 03 measured
# it), but not *smooth in time* at small scales: the network sees $t$ through sinusoidal features with
# frequencies up to 1000 radians per unit time (`tutorlib.models.sinusoidal_embedding`), and after training
# a little of every frequency is left in its output. A method of order $p$ has an error constant that grows
# with the $p$-th time derivative of the field along the path, and a ripple of frequency $\omega$ and
# amplitude $A$ has a $p$-th derivative of size $A\omega^p$. The next cell estimates the first and fourth
# time derivatives along the reference paths by finite differences at shrinking spacings, and plots the
# difference of the two fields along three paths.

# %%
def time_derivatives(field, sol, n_paths=32):
    """RMS of dv/dt and d^4v/dt^4 along the first paths of a solution, by finite differences at several spacings."""
    X, T = sol.trajectory[:, :n_paths], sol.times  # (S+1, n, 2), (S+1,)
    with torch.no_grad():
        V = field(X.reshape(-1, 2), T.to(device).repeat_interleave(n_paths)).reshape(X.shape)  # (S+1, n, 2)
    out = {}
    for every in (64, 16, 4, 1):
        W, dt = V[::every], every / (len(T) - 1)  # the velocity along the path at spacing dt
        d1 = (W[1:] - W[:-1]) / dt
        d4 = (W[4:] - 4 * W[3:-1] + 6 * W[2:-2] - 4 * W[1:-3] + W[:-4]) / dt**4
        out[every] = (dt, d1.square().sum(-1).mean().sqrt().item(), d4.square().sum(-1).mean().sqrt().item())
    return out


derivs = {name: time_derivatives(field, paths[name]) for name, field in FIELDS.items()}
print("RMS time derivatives of the velocity along the paths, by finite differences")
print(f"{'spacing':>9s}" + "".join(f"{'dv/dt ' + n[:7]:>18s}{'d4v/dt4 ' + n[:7]:>18s}" for n in derivs))
for every in (64, 16, 4, 1):
    dt = derivs["exact field"][every][0]
    print(f"{'1/' + str(round(1 / dt)):>9s}" + "".join(f"{derivs[n][every][1]:18.3g}{derivs[n][every][2]:18.3g}"
                                                        for n in derivs))
ratio4 = derivs["trained network"][1][2] / derivs["exact field"][1][2]
print(f"at the finest spacing the trained field's 4th derivative is {ratio4:.3g} times the exact field's")
claim("4th time derivative along the paths at spacing 1/1024: trained / exact field", ratio4,
      at_least={"standard": 100.0})
X, T = paths["trained network"].trajectory[:, :3], paths["trained network"].times
with torch.no_grad():
    T_b = T.to(device).repeat_interleave(3)
    ripple = (fm64(X.reshape(-1, 2), T_b) - oracle(X.reshape(-1, 2), T_b)).reshape(X.shape)  # (S+1, 3, 2)
fig = plotting.metric_curves({f"path {i}": (T, ripple[:, i, 0]) for i in range(3)}, "t",
                             "v_trained - v_exact (first coordinate)", log_x=False,
                             title="the trained field minus the exact one, along three of its paths")
fig

# %% [markdown]
# For the exact field the finite differences settle as the spacing shrinks: the derivatives exist and the
# estimates converge. For the network they keep growing, the signature of ripples finer than the spacing:
# the cell prints the fourth derivative at the finest spacing, orders of magnitude above the exact field's
# (the claim asks for at least a factor 100 in the standard profile). The curves show the ripples: the
# network's error along its paths is a slow drift (the part that matters for sampling) with fast
# oscillations on top, small in size, but a step of $h = 1/64$ at a frequency of a few hundred is
# several radians, so no method of order above 1 can follow them until the step is tiny. This
# is why samplers of trained flows rarely use RK4: at 4 to 64 NFE the extra stages mostly buy nothing, and
# the ranking that matters is the one at a small budget, in sample quality (section 5 measures it).

# %% [markdown]
# ## 2. Where should the steps go? Time grids
#
# *With a budget of a few Euler steps, is the uniform grid the best we can do?*
#
# `ode_solve(..., time_grid=...)` steps between any increasing times. Three ways to choose them:
#
# 1. **warped by hand**: `power_time_grid(K, rho)` takes $t_k = 1 - (1 - k/K)^\rho$, long steps first and
#    short ones near the data for $\rho > 1$ (a common guess: the paths bend as they approach the data);
# 2. **optimal for the summed local error** (the step-size search of *Bellman Optimal Step-size
#    Straightening*, BOSS): solve once accurately on $N + 1$ candidate times $\tau_0 < \dots < \tau_N$, and
#    cost every Euler jump from a reference state, $C_{ij} = \mathrm{RMS}_b \lVert x_i + (\tau_j - \tau_i)\, v(x_i, \tau_i) - x_j \rVert$
#    (no new network evaluations: the field at the reference states is enough). The cheapest chain of $K$
#    jumps from $\tau_0$ to $\tau_N$ is a shortest-path problem, solved by **Bellman's recursion**
#    $J_1(j) = C_{0j}$, $J_k(j) = \min_{i<j} J_{k-1}(i) + C_{ij}$;
# 3. **fitted to the global error**: parametrise the step sizes by a softmax and minimise the distance of the
#    $K$-step Euler endpoint to the accurate one by gradient descent, differentiating through the solver
#    (`fit_time_grid`; the step-time part of what *Bespoke Solvers for Generative Flow Models* learns).
#
# First Bellman's recursion from scratch, on the cost matrix of the trained field, against
# `tutorlib.solvers.bellman_grid`; then `optimal_time_grid`, which does all of it in one call.

# %%
CANDIDATES = 128
x0_grid = data.gaussian(P.n_eval_2d // 4, generator=gen, device=device)  # (M, 2) noise the grids are tuned on
fine = ode_solve(fm, x0_grid, method="rk4", steps=4 * CANDIDATES, return_trajectory=True)
states, cand_times = fine.trajectory[::4], fine.times[::4]  # (N+1, M, 2), (N+1,): the candidates
with torch.no_grad():
    v_states = fm(states.reshape(-1, 2), cand_times.float().to(device).repeat_interleave(x0_grid.shape[0]))
costs = euler_jump_costs(states, v_states.reshape(states.shape), cand_times)  # (N+1, N+1)


def bellman_scratch(C, K):
    """Indices 0 = i_0 < ... < i_K = N minimising sum_k C[i_{k-1}, i_k], by Bellman's recursion."""
    n = C.shape[0] - 1
    J, parents = C[0].clone(), []  # J[j]: the least cost of reaching j in k jumps (k = 1 now)
    for _ in range(K - 1):
        J, arg = (J[:, None] + C).min(0)  # reach i in k jumps, then jump i -> j
        parents.append(arg)
    idx = [n]
    for arg in reversed(parents):  # walk back from N through the minimisers
        idx.append(int(arg[idx[-1]]))
    return [0] + idx[::-1], float(J[n])


for K in (2, 4, 8):
    idx, cost = bellman_scratch(costs, K)
    lib = bellman_grid(costs, K, cand_times)
    assert idx == lib.indices and math.isclose(cost, lib.cost)
assert torch.equal(lib.times, optimal_time_grid(fm, x0_grid, 8, candidates=CANDIDATES).times)
print("from-scratch Bellman recursion agrees with bellman_grid and optimal_time_grid")

# %% [markdown]
# Now the four grids at 2, 4 and 8 Euler steps. The fitted grid is tuned on the same noise as the Bellman
# grid; both are then judged on fresh noise: the error of the endpoints against an accurate solve
# (RK4, 200 steps) and the energy distance of the samples to held-out data, in units of its noise floor
# (lesson 00). One draw of a V-statistic is noisy, so every energy distance in this lesson is the mean over
# a few independent draws of noise and held-out data, like the floor.

# %%
REPEATS = 4
floor = metrics.noise_floor(data.eight_gaussians, P.n_eval_2d, generator=gen, repeats=REPEATS)
print(f"noise floor of the energy distance at n = {P.n_eval_2d}: {floor} ({REPEATS} draws)")


def score(sample_fn):
    """Energy distance / noise floor of a sampler (n, generator) -> (n, 2), averaged over REPEATS draws."""
    return floor.ratio(metrics.model_score(sample_fn, data.eight_gaussians, P.n_eval_2d, generator=gen,
                                           repeats=REPEATS))


def from_noise(solve):
    """A sampler (n, generator) -> (n, 2): fresh noise, then solve(x_0)."""
    return lambda n, generator=None: solve(data.gaussian(n, generator=generator, device=device))


target_grid = ode_solve(fm, x0_grid, method="rk4", steps=200).x
x0_test = data.gaussian(P.n_eval_2d, generator=gen, device=device)  # (N, 2) fresh noise
target_test = ode_solve(fm, x0_test, method="rk4", steps=200).x
grids, grid_rows = {}, {}
for K in (2, 4, 8):
    grids[K] = {"uniform": torch.linspace(0, 1, K + 1, dtype=torch.float64),
                "power 1.5": power_time_grid(K, 1.5),
                "Bellman (local)": bellman_grid(costs, K, cand_times).times,
                "fitted (global)": fit_time_grid(fm, x0_grid, target_grid, K).times}
    grid_rows[K] = {name: (rms(ode_solve(fm, x0_test, time_grid=g).x, target_test),
                           score(from_noise(lambda x, g=g: ode_solve(fm, x, time_grid=g).x)))
                    for name, g in grids[K].items()}
print(f"{'Euler steps':>11s}  " + "  ".join(f"{name:>22s}" for name in grids[2]))
print(f"{'':11s}  " + "  ".join(f"{'error':>10s} {'x floor':>11s}" for _ in grids[2]))
for K, row in grid_rows.items():
    print(f"{K:11d}  " + "  ".join(f"{e:10.3f} {r:11.2f}" for e, r in row.values()))
for K in (4, 8):
    print(f"{K} steps: Bellman grid {[round(v, 3) for v in grids[K]['Bellman (local)'].tolist()]}, "
          f"fitted grid {[round(v, 3) for v in grids[K]['fitted (global)'].tolist()]}")
for K in (2, 4, 8):
    claim(f"{K} Euler steps: error of the fitted grid / the uniform grid's (fresh noise)",
          grid_rows[K]["fitted (global)"][0] / grid_rows[K]["uniform"][0], at_most={"standard": 1.0, "smoke": 1.2})

# %%
fig = plotting.metric_curves({name: (list(grid_rows), [grid_rows[K][name][0] for K in grid_rows])
                              for name in grids[2]}, "Euler steps (NFE)", "RMS error against an accurate solve",
                             log_y=True, title="Euler with four time grids: error at the end point")
fig

# %% [markdown]
# The table above holds the surprise of this section. On this field the hand-warped grid is *worse*
# than the uniform one (the paths of eight Gaussians bend most in the middle of the trip, when each
# point decides its cluster, not at the end), and the Bellman grid, although optimal for what it
# minimises, is not better in the endpoint error: the sum of local errors measured *from the reference
# states* ignores how an early error is carried along and grows. BOSS knows this; its second stage
# fine-tunes the network on the chosen steps so that the model's own jumps follow the reference
# (*straightening*), which we do not do here. The grid fitted to the global error is the only one that
# improves on the uniform grid at every budget (the cell claims it at 2, 4 and 8 steps, on fresh noise);
# its gain in energy distance is smaller. At 2 to 8 NFE the step times help a little; the next
# sections change the model instead.

# %% [markdown]
# ## 3. One jump per step: the average velocity
#
# *A solver needs many steps because the velocity changes along the path. What if the network predicted
# the whole displacement instead?*
#
# Along the flow $dx_\tau/d\tau = v(x_\tau, \tau)$ the **average velocity** from time $s$ to time $t \ge s$ is
#
# $$u(x_s, s, t) = \frac{1}{t - s} \int_s^t v(x_\tau, \tau)\, d\tau, \qquad\text{so that}\qquad x_t = x_s + (t - s)\, u(x_s, s, t)$$
#
# *exactly*, however curved the path: one evaluation jumps from $s$ to $t$. On the diagonal it is the
# velocity, $u(x, t, t) = v(x, t)$, so a network $u_\theta(x, s, t)$ of two times contains a flow-matching
# model; `tutorlib.fewstep.TwoTimeMLP` is lesson 03's MLP conditioned on $s$ and on the gap $t - s$
# (the step size), and `fewstep_sample` generates with $K$ jumps on the grid $t_k = k/K$. Two identities
# pin $u$ down without ever solving the ODE during training:
#
# - **MeanFlow** (*Mean Flows for One-step Generative Modeling*). Differentiate
#   $(t - s)\, u(x_s, s, t) = \int_s^t v\, d\tau$ in $s$, moving $x_s$ along the path ($dx_s/ds = v$):
#   $-u + (t - s)\frac{d}{ds}u = -v(x_s, s)$, that is
#
#   $$u(x_s, s, t) = v(x_s, s) + (t - s)\, \frac{d}{ds} u(x_s, s, t), \qquad \frac{d}{ds}u = v \cdot \nabla_x u + \partial_s u .$$
#
#   The total derivative is one **Jacobian-vector product** of the network with the tangent
#   $(v, 1, 0)$ for its inputs $(x, s, t)$ (`torch.func.jvp`, forward-mode autodiff: about the cost of a
#   second forward pass). The network is regressed on the right-hand side with a stop-gradient, with
#   the conditional velocity $v = x_1 - x_0$ in place of the marginal one, as in flow matching.
# - **Shortcut models** (*One Step Diffusion via Shortcut Models*). The average over a step of size $2d$ is
#   the mean of the averages over its two halves: $u(x, s, s + 2d) = \tfrac12\big[u(x, s, s + d) + u(x', s + d, s + 2d)\big]$
#   with $x' = x + d\, u(x, s, s + d)$. A big step learns from two small ones taken by the model itself,
#   on steps $1, \tfrac12, \dots, \tfrac1{128}$; the smallest uses instantaneous velocities, and those are
#   learned by flow matching.
#
# Both objectives take pairs $0 \le s \le t \le 1$; pairs with $s = t$ are plain flow matching (75 % of
# MeanFlow's pairs, the paper's choice; 75 % of the shortcut model's batch, as in its paper), the others
# teach the jumps. MeanFlow's loss in plain PyTorch, against `tutorlib.fewstep.MeanFlow`:

# %%
def meanflow_loss_scratch(u, x_0, x_1, s, t, p=1.0, eps=1e-3):
    """MeanFlow: regress u(x_s, s, t) on v + (t - s) du/ds (stop-gradient), adaptively weighted."""
    x_s = (1 - s[:, None]) * x_0 + s[:, None] * x_1  # (B, 2) on the linear path
    v = x_1 - x_0  # (B, 2) the conditional velocity
    u_pred, du_ds = torch.func.jvp(u, (x_s, s, t), (v, torch.ones_like(s), torch.zeros_like(t)))  # (B, 2) each
    target = (v + (t - s)[:, None] * du_ds).detach()  # (B, 2)
    err = (u_pred - target).square().sum(1)  # (B,) squared error per sample
    return (err / (err.detach() + eps) ** p).mean()  # the adaptive weight 1 / (err + eps)^p


meanflow = MeanFlow()
u_test = TwoTimeMLP.from_profile(P).to(device)  # untrained: the comparison needs no training
xb_0 = data.gaussian(P.batch_2d, generator=gen, device=device)  # (B, 2)
xb_1 = data.eight_gaussians(P.batch_2d, generator=gen, device=device)  # (B, 2)
sb, tb = meanflow.times(P.batch_2d, generator=gen, device=device)  # (B,) each, s <= t
torch.testing.assert_close(meanflow_loss_scratch(u_test, xb_0, xb_1, sb, tb), meanflow.loss(u_test, xb_0, xb_1, sb, tb))
print(f"from-scratch MeanFlow loss agrees with tutorlib.fewstep.MeanFlow; {float((sb == tb).float().mean()):.0%} "
      "of the pairs have s = t")

# %% [markdown]
# Both models train for the same `P.steps_2d` steps with the same recipe and batch as the flow-matching
# model; a MeanFlow step costs more (the JVP), a shortcut step a little more (two extra forward passes
# on a quarter of the batch, without gradients). The cell prints the time of each.

# %%
def pair_batch(step):
    """(x_0, x_1): fresh noise and data for one step."""
    x_1 = data.eight_gaussians(P.batch_2d, generator=gen, device=device)  # (B, 2)
    return data.gaussian(P.batch_2d, generator=gen, device=device), x_1


def objective_loss(objective):
    """loss_fn(model, (x_0, x_1)) for an objective with times() and loss() (MeanFlow, Shortcut)."""
    def loss_fn(model, batch):
        x_0, x_1 = batch
        return objective.loss(model, x_0, x_1, *objective.times(x_0.shape[0], generator=gen, device=device))
    return loss_fn


shortcut = Shortcut()
fewstep_models = {}
for name, objective in {"MeanFlow": meanflow, "shortcut": shortcut}.items():
    def train_fewstep(model, objective=objective, name=name):
        hist = train(model, objective_loss(objective), pair_batch, cfg.replace(desc=name))
        hist.ema.copy_to(model)
        return hist

    model = TwoTimeMLP.from_profile(P).to(device)
    run = trained(name, train_fewstep, model=model, config={"steps": cfg.steps, "objective": repr(objective)})
    fewstep_models[name] = run.model
    print(f"{name}: {count_parameters(model):,} parameters; {run.describe()}")

# %% [markdown]
# How good are one, two and four jumps? The cell scores each model's samples (energy distance over the
# noise floor) and, for comparison, the flow-matching model with the same NFE of Euler steps, and the
# instantaneous field $u_\theta(x, t, t)$ of each two-time model integrated by 100 Euler steps: that is what
# the network learned as a flow-matching model.

# %%
JUMPS = (1, 2, 4, 8)
few = {name: {K: score(from_noise(lambda x, m=m, K=K: fewstep_sample(m, x, steps=K).x)) for K in JUMPS}
       for name, m in fewstep_models.items()}
few["flow matching, Euler"] = {K: score(from_noise(lambda x, K=K: ode_solve(fm, x, steps=K).x)) for K in JUMPS}
print("energy distance / noise floor at", JUMPS, "NFE")
for name, row in few.items():
    print(f"  {name:22s}", "  ".join(f"{row[K]:7.2f}" for K in JUMPS))
for name, m in fewstep_models.items():
    print(f"  {name} as a flow (u(x, t, t), 100 Euler steps): "
          f"{score(from_noise(lambda x, m=m: ode_solve(m.velocity, x, steps=100).x)):.2f}")
for name in fewstep_models:
    claim(f"{name}, 1 jump: energy distance / that of 1 Euler step of flow matching", few[name][1] / few["flow matching, Euler"][1],
          at_most={"standard": 0.1, "smoke": 1.0})

# %%
x0_show = data.gaussian(1000, generator=gen, device=device)  # (1000, 2) the same noise for every panel
held_show = data.eight_gaussians(2000, generator=gen, device=device)
panels = {f"{name}, {K} jump{'s' if K > 1 else ''}": fewstep_sample(m, x0_show, steps=K).x
          for name, m in fewstep_models.items() for K in (1, 2, 4)}
panels.update({f"flow matching, {K} Euler steps": ode_solve(fm, x0_show, steps=K).x for K in (1, 2, 4)})
choice_explorer(panels, "model and steps", data=held_show)

# %% [markdown]
# Move the slider (in the static book it steps through the panels): with one Euler step flow matching
# lands every point on the average of the data, a blurred disc in the middle; its paths are curved, and a
# single step follows only their initial direction. The two-time models jump to the clusters in one
# evaluation; the cell before printed by how much.

# %% [markdown]
# ## 4. The baselines: reflow and distillation
#
# *How do the few-step models compare with the classic route to few steps, straightening the flow?*
#
# Lesson 06 explains both in depth; here we train small versions with the library. **Reflow** pairs each
# noise sample with the flow-matching model's own sample from it (`reflow_coupling`, 100 Euler steps) and
# trains a new flow on these pairs, initialised from the old one: a *2-rectified flow*, whose paths are
# nearly straight, so few Euler steps suffice. **Distillation** then trains a one-step generator
# $x_1 = x_0 + v(x_0, 0)$ to regress the 2-rectified flow's map $x_0 \mapsto x_1$ on its own pairs.

# %%
pairs_1 = reflow_coupling(fm, data.gaussian(8 * P.batch_2d, generator=gen, device=device), steps=100)
rf2 = copy.deepcopy(fm).requires_grad_(True)


# lesson 06's library: batches of fixed pairs with fresh times, the flow-matching loss on them, distillation
def train_rf2(model):
    hist = train(model, lambda m, b: reflow_loss(m, path, *b), pair_batches(pairs_1, P.batch_2d, generator=gen),
                 cfg.replace(steps=P.steps_2d // 2, desc="2-rectified flow"))
    hist.ema.copy_to(model)
    return hist


rf2 = trained("rf2", train_rf2, model=rf2, config={"steps": P.steps_2d // 2, "pairs": len(pairs_1.x_0)}).model
print(f"2-rectified flow on {len(pairs_1.x_0)} pairs: {trained.runs['rf2'].describe()}")

pairs_2 = reflow_coupling(rf2, data.gaussian(8 * P.batch_2d, generator=gen, device=device), steps=100)
distilled = copy.deepcopy(rf2).requires_grad_(True)


def train_distilled(model):
    hist = train(model, lambda m, b: distill_loss(m, b[0], b[1]),  # one step from t = 0 lands on 2-RF's sample
                 pair_batches(pairs_2, P.batch_2d, generator=gen), cfg.replace(steps=P.steps_2d // 2, desc="distillation"))
    hist.ema.copy_to(model)
    return hist


distilled = trained("distilled", train_distilled, model=distilled, config={"steps": P.steps_2d // 2}).model
print(f"distilled one-step generator: {trained.runs['distilled'].describe()}")

few["2-rectified flow, Euler"] = {K: score(from_noise(lambda x, K=K: ode_solve(rf2, x, steps=K).x)) for K in JUMPS}
few["distilled (1 step)"] = {1: score(from_noise(lambda x: ode_solve(distilled, x, steps=1).x))}
print("energy distance / noise floor at", JUMPS, "NFE")
for name, row in few.items():
    print(f"  {name:24s}", "  ".join(f"{row[K]:7.2f}" if K in row else "      -" for K in JUMPS))
best_few = min(fewstep_models, key=lambda name: few[name][2])
print(f"best few-step model at 2 NFE: {best_few} ({few[best_few][2]:.2f} x the floor)")
claim(f"best few-step model ({best_few}) at 2 NFE: energy distance / noise floor", few[best_few][2],
      at_most={"standard": 2.0, "smoke": 60.0})

# %% [markdown]
# The cell above prints the four routes to few steps side by side, and claims (standard profile) that the
# best two-time model at 2 NFE lands within twice the noise floor. Note what each one paid: reflow needed
# a trained flow, a pass of 100 steps over thousands of noise samples, and a second training; distillation
# a third. MeanFlow and the shortcut model trained once, from scratch, in the same number of steps as the
# flow they are compared with.

# %% [markdown]
# ## 5. Every method of lessons 01-07 on one dataset
#
# *Which sampler should I use at a given budget?*
#
# The closing comparison: every method of the course so far on eight Gaussians, every one scored the same
# way (energy distance over the noise floor, the mean over the same number of draws) against NFE. What is
# still missing is DDPM (lesson 01): an epsilon-model on the same data, sampled by the ancestral sampler
# and by DDIM. Minibatch-OT flow matching (lesson 05) costs an exact assignment per batch, too slow for
# this lesson's budget, so its row comes from the bench's committed standard run
# (`bench/results/fm2d-standard.json`: the same data and model, but its own seed, one draw of 1000 held-out
# points and its own noise floor), and the table marks it.

# %%
schedule = DDPMSchedule(linear_betas(1000))


def ddpm_batch(step):
    x_data = data.eight_gaussians(P.batch_2d, generator=gen, device=device)  # (B, 2)
    k = torch.randint(1, schedule.T + 1, (P.batch_2d,), generator=gen).to(device)  # (B,) DDPM indices
    return x_data, k, torch.randn(x_data.shape, generator=gen).to(device)


def train_ddpm(model):
    hist = train(model, lambda m, b: ddpm_loss(m, schedule, *b), ddpm_batch, cfg.replace(desc="DDPM"))
    hist.ema.copy_to(model)
    return hist


eps_model = TimeMLP.from_profile(P).to(device)
eps_model = trained("ddpm", train_ddpm, model=eps_model, config={"steps": cfg.steps, "T": schedule.T}).model
print(f"DDPM epsilon-model: {trained.runs['ddpm'].describe()}")

# %%
NFE_TABLE = (1, 2, 4, 8, 16, 32, 64)
table = {}  # method -> {nfe: energy distance / floor}


STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}  # evaluations per step


def fixed(method):
    return {n: score(from_noise(lambda x, n=n: ode_solve(fm, x, method=method, steps=steps_for_nfe(method, n)).x))
            for n in NFE_TABLE if n % STAGES[method] == 0}


table["DDPM, ancestral"] = {n: score(from_noise(lambda x, n=n: ancestral_sample(eps_model, x, schedule, steps=n,
                                                                                generator=gen).x))
                            for n in (8, 16, 32, 64, 128)}
table["DDPM, DDIM"] = {n: score(from_noise(lambda x, n=n: ddim_sample(eps_model, x, schedule, steps=n).x))
                       for n in NFE_TABLE}
for method in ("euler", "midpoint", "heun", "rk4"):
    table[f"FM, {method}"] = fixed(method)
dopri_nfe = ode_solve(fm, x0_test, method="dopri5").nfe
table["FM, dopri5"] = {dopri_nfe: score(from_noise(lambda x: ode_solve(fm, x, method="dopri5").x))}
table["FM, Euler, fitted grid"] = {K: score(from_noise(lambda x, g=grids[K]["fitted (global)"]: ode_solve(
    fm, x, time_grid=g).x)) for K in (2, 4, 8)}
table["2-RF, Euler"] = few["2-rectified flow, Euler"]
table["2-RF distilled"] = few["distilled (1 step)"]
table["MeanFlow (jumps)"] = few["MeanFlow"]
table["shortcut (jumps)"] = few["shortcut"]


def find_results(name):
    """bench/results/<name> in the first folder above this one that has it (None when absent)."""
    for folder in [Path.cwd(), *Path.cwd().parents]:
        candidate = folder / "bench" / "results" / name
        if candidate.is_file():
            return candidate
    return None


bench_file = find_results("fm2d-standard.json")
if bench_file is not None:
    entries = json.loads(bench_file.read_text())["metrics"]["eight_gaussians"]["entries"]
    table["OT-FM, Euler (bench)"] = {e["nfe"]: e["energy_x_floor"] for k, e in entries.items()
                                     if k.startswith("fm-ot@") and e["solver"] == "euler" and e["nfe"] <= 64}
    print(f"OT-FM row read from {bench_file.name}")
else:
    print("bench/results/fm2d-standard.json not found: the OT-FM row is left out")

print(f"\nenergy distance / noise floor (n = {P.n_eval_2d}, mean of {REPEATS} draws; floor {floor})")
cols = sorted({n for row in table.values() for n in row})
print(f"{'method':24s}" + "".join(f"{n:>8d}" for n in cols))
for name, row in table.items():
    print(f"{name:24s}" + "".join(f"{row[n]:8.2f}" if n in row else f"{'':>8s}" for n in cols))

# %%
fig = plotting.metric_curves({name: (sorted(row), [row[n] for n in sorted(row)]) for name, row in table.items()},
                             "NFE (network evaluations)", "energy distance / noise floor", floor=1.0,
                             floor_label="noise floor", log_y=True,
                             title="eight Gaussians: every method of lessons 01-07 against NFE")
fig

# %%
best_at = {n: min((row[n], name) for name, row in table.items() if n in row and "bench" not in name)
           for n in (1, 2, 4)}
for n, (value, name) in best_at.items():
    print(f"best at {n} NFE (trained here): {name} ({value:.2f} x the floor)")
two_time_best_2 = min(table["MeanFlow (jumps)"][2], table["shortcut (jumps)"][2])
claim("2 NFE: best two-time model / flow matching with the best fixed-step solver at 2 NFE",
      two_time_best_2 / min(table[f"FM, {m}"][2] for m in ("euler", "midpoint", "heun")),
      at_most={"standard": 0.2, "smoke": 1.5})
claim("DDIM at 64 NFE / DDIM at 4 NFE (energy distance)", table["DDPM, DDIM"][64] / table["DDPM, DDIM"][4],
      at_most={"standard": 0.5, "smoke": 1.5})

# %% [markdown]
# Read the figure from the left. At 1 to 4 NFE the methods that were *trained* for few steps (the
# two-time models, the 2-rectified flow and its distilled generator) are one to two orders of magnitude
# ahead of any solver applied to a flow-matching or DDPM model; the cell above prints the best at each
# budget and claims (standard profile) that at 2 NFE the best two-time model beats flow matching with the
# best fixed-step solver by at least a factor of five. From about 16 NFE on, plain flow matching with Euler
# is as good as any of them, and a better solver mostly moves the curve a little to the left. DDPM's
# samplers need the most evaluations (DDIM improves steadily with NFE, as the last claim checks); the
# ancestral sampler, which injects fresh noise at every step, needs more still.

# %% [markdown]
# ## Exercises
#
# **Exercise 1 (a variant: another solver).** Kutta's third-order method has the tableau
# $c = (0, \tfrac12, 1)$, $a_{21} = \tfrac12$, $a_{31} = -1$, $a_{32} = 2$, $b = (\tfrac16, \tfrac46, \tfrac16)$.
# Write one step of it, `rk3_step(velocity, x, t, dt)`, for states `x` `(B, D)` at times `t` `(B,)` and a
# float step `dt`. Then measure its order on the exact field of section 1 with the cell after the check:
# which slope do you expect, and how many NFE does each step cost?

# %%
def rk3_step(velocity, x, t, dt):
    # TODO: one step of Kutta's third-order method (three evaluations of the velocity)
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def rk3_step(velocity, x, t, dt):
    k1 = velocity(x, t)
    k2 = velocity(x + 0.5 * dt * k1, t + 0.5 * dt)
    k3 = velocity(x - dt * k1 + 2 * dt * k2, t + dt)
    return x + dt * (k1 + 4 * k2 + k3) / 6


# %%
if check_rk3_step(rk3_step):
    def rk3_error(steps):
        x = x0_order
        for k in range(steps):
            x = rk3_step(oracle, x, torch.full((x.shape[0],), k / steps, dtype=x.dtype, device=device), 1 / steps)
        return rms(x, reference["exact field"])

    e_coarse, e_fine = rk3_error(128), rk3_error(256)
    print(f"RK3 at 384 and 768 NFE: errors {e_coarse:.2e}, {e_fine:.2e}; measured order {math.log2(e_coarse / e_fine):.2f}")

# %% [markdown]
# **Exercise 2 (understanding the recursion).** Section 2's grid minimises the *sum* of the jump costs.
# A cautious user might prefer the grid whose *worst* jump is as small as possible. Write
# `minimax_grid(costs, steps)`: for an `(N + 1, N + 1)` cost matrix (`inf` where `j <= i`) it returns the
# int64 indices `0 = i_0 < ... < i_K = N` of the `K = steps` jumps that minimise the largest cost. Change
# Bellman's recursion, not the search: the check compares your grid's worst jump with a brute-force
# search over all grids, for several `N` and `K`.

# %%
def minimax_grid(costs, steps):
    # TODO: Bellman's recursion for the largest jump cost instead of the sum, then walk back from N
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def minimax_grid(costs, steps):
    n = costs.shape[0] - 1
    J, parents = costs[0].clone(), []
    for _ in range(steps - 1):
        J, arg = torch.maximum(J[:, None], costs).min(0)
        parents.append(arg)
    idx = [n]
    for arg in reversed(parents):
        idx.append(int(arg[idx[-1]]))
    return torch.tensor([0] + idx[::-1], dtype=torch.long)


# %%
if check_minimax_grid(minimax_grid):
    for K in (4, 8):
        mm = minimax_grid(costs, K).tolist()
        print(f"{K} jumps: worst jump of the minimax grid {max(costs[a, b].item() for a, b in zip(mm[:-1], mm[1:])):.4f}, "
              f"of Bellman's grid {max(costs[a, b].item() for a, b in zip(bellman_grid(costs, K).indices[:-1], bellman_grid(costs, K).indices[1:])):.4f}")

# %% [markdown]
# **Exercise 3 (understanding the identity).** The MeanFlow paper runs time the other way: $t = 0$ is data
# and $t = 1$ noise, $z_t = (1 - t)\,x + t\,\varepsilon$, and its network $u(z, r, t)$ with $r \le t$ is the
# average velocity over $[r, t]$, used as $z_r = z_t - (t - r)\, u(z_t, r, t)$. Derive the MeanFlow identity in
# this clock (start from the definition of $u$ as an integral, and ask at which time $z$ is given) and
# write `meanflow_target_paper(u, z_t, r, t, v)`: the regression target for `u` at `(z_t, r, t)`, with
# `v` the velocity $dz_t/dt$ at $(z_t, t)$, `z_t` and `v` `(B, D)`, `r` and `t` `(B,)`. Use
# `torch.func.jvp`; the check uses random smooth functions for `u`.

# %%
def meanflow_target_paper(u, z_t, r, t, v):
    # TODO: the MeanFlow target in the paper's clock, with one torch.func.jvp
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def meanflow_target_paper(u, z_t, r, t, v):
    _, du_dt = torch.func.jvp(u, (z_t, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    return (v - (t - r)[:, None] * du_dt).detach()


# %%
check_meanflow_target_paper(meanflow_target_paper)

# %% [markdown]
# ## Summary
#
# - A solver's **order** is an asymptotic statement about smooth fields: on the exact field of eight
#   Gaussians Euler, midpoint, Heun and RK4 reach slopes of 1, 2, 2 and 4, but only beyond about a hundred
#   NFE. A trained network's field carries small fast ripples in time (its sinusoidal time features), so
#   high-order and adaptive solvers gain less on it than on paper.
# - **Time grids**: warping by hand can hurt, the Bellman-optimal grid for the summed local error (BOSS's
#   search) need not reduce the global error, and a grid fitted to the global error by gradient descent
#   helps a little. At a handful of NFE, the model matters more than the grid.
# - The **average velocity** $u(x_s, s, t)$ makes a jump exact. **MeanFlow** learns it from the identity
#   $u = v + (t - s)\,\tfrac{d}{ds}u$ (one JVP per step), **shortcut models** from the self-consistency of
#   half steps; both train once, from scratch, and beat solvers on a flow by an order of magnitude at 1-4 NFE,
#   next to reflow and distillation, which need a trained flow first.
# - The closing figure: below about 8 NFE, models trained for few steps; above 16, any flow with Euler.
#
# ## References
# - *Bellman Optimal Step-size Straightening of Flow-Matching Models* (Nguyen, Nguyen, Nguyen, 2023): the
#   dynamic program over step sizes of section 2 (its first stage).
# - *Bespoke Solvers for Generative Flow Models* (Shaul, Perez, Chen, Thabet, Pumarola, Lipman, 2023):
#   solvers whose parameters (among them the step times) are fitted to one model's global error.
# - *Mean Flows for One-step Generative Modeling* (Geng, Deng, Bai, Kolter, He, 2025): the average velocity,
#   the MeanFlow identity and its JVP training.
# - *One Step Diffusion via Shortcut Models* (Frans, Hafner, Levine, Abbeel, 2024): conditioning on the step
#   size and self-consistency of half steps.
# - *Consistency Flow Matching: Defining Straight Flows with Velocity Consistency* (Yang et al., 2024): a third
#   few-step objective, consistency of the velocity along straight flows; not trained here.
# - *Inductive Moment Matching* (Zhou, Ermon, Song, 2025): one- and few-step models trained by matching
#   distributions rather than paths; further reading.
# - *Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow* (Liu, Gong, Liu, 2022):
#   reflow and distillation, the baselines of section 4 (lesson 06).
# - *Denoising Diffusion Probabilistic Models* (Ho, Jain, Abbeel, 2020): the ancestral sampler of section 5.

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
