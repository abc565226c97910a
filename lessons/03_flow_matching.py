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
# # 03 · Flow matching
#
# **Learning goals**
# - tell a *conditional* probability path (one data point) from the *marginal* path (the whole
#   data set), and see why the marginal velocity is the one a generator needs;
# - write the conditional flow matching (CFM) loss and an Euler sampler in plain PyTorch, then use
#   `tutorlib.losses.cfm_loss` and `tutorlib.solvers.ode_solve`;
# - check numerically, on a Gaussian mixture whose marginal velocity is known in closed form, that
#   a CFM-trained network learns the marginal field, and that the CFM and FM losses differ by a
#   constant while their gradients agree;
# - use the linear (conditional OT) path, compare Euler and midpoint sampling against the number
#   of function evaluations (NFE), and compute the trained model's exact log-likelihood.
#
# **Prerequisites:** lesson 00 (notation, metrics), lesson 02 (ODE flows, the instantaneous change of
# variables, `tutorlib.likelihood.log_prob`). Lesson 01 (DDPM) helps for the comparison at 10 steps.
#
# **Run time** (measured by `make verify` on 2026-12-02, 2-core CPU busy with other work, load average 3.4): CPU standard ≈ 88 s · GPU standard: not measured yet · smoke ≈ 24 s. The last cell prints this run's time.
#
# **Loads:** nothing. **Trains:** two small MLP velocity fields (eight Gaussians, checkerboard),
# `P.steps_2d` steps each.

# %% [markdown]
# ## Setup

# %%
import math
import time

import torch

from tutorlib import data, metrics, plotting
from tutorlib.claims import claim
from tutorlib.device import get_device, profile, seed_everything, set_threads
from tutorlib.exercises import Hint, Mistake, check
from tutorlib.exercises.lesson03 import check_cfm_target, check_midpoint_step, check_polynomial_target
from tutorlib.likelihood import log_prob
from tutorlib.losses import cfm_loss
from tutorlib.models import TimeMLP, count_parameters
from tutorlib.paths import CondOTPath, gmm_marginal_velocity
from tutorlib.solvers import ode_solve
from tutorlib.train import TrainConfig, train
from tutorlib.widgets import flow_explorer

lesson_start = time.perf_counter()
device = get_device()
threads = set_threads()
gen = seed_everything(0)
P = profile()
print(f"torch {torch.__version__} on {device} ({threads} CPU threads); profile {P.name!r}")

# %% [markdown]
# ## 1. Conditional paths: the linear (OT) path
#
# *How do we build a path from noise to data when we only know how to handle one data point at a time?*
#
# Fix one data point $x_1$. The **linear path** moves a noise sample $x_0 \sim \mathcal N(0, I)$ in
# a straight line, at constant speed, to $x_1$:
#
# $$x_t = (1 - t)\,x_0 + t\,x_1, \qquad dx_t = \frac{d x_t}{dt} = x_1 - x_0 .$$
#
# Over the noise, $x_t$ is distributed as $p_t(x \mid x_1) = \mathcal N(t\,x_1, (1-t)^2 I)$: a
# Gaussian whose mean slides to $x_1$ while it shrinks to a point. This is the *conditional*
# probability path, and $u_t(x \mid x_1) = (x_1 - x)/(1-t)$ the *conditional* velocity that
# generates it (at $x = x_t$ it equals $x_1 - x_0$). It is an affine path
# $x_t = \alpha_t x_1 + \sigma_t x_0$ with $\alpha_t = t$, $\sigma_t = 1 - t$; it is called the
# conditional **optimal-transport** (OT) path because, between the two Gaussians
# $\mathcal N(0, I)$ and $\mathcal N(x_1, \sigma^2 I)$, the straight, constant-speed displacement
# is the optimal transport map (lesson 04 meets other choices of $\alpha_t, \sigma_t$).
#
# `tutorlib.paths.CondOTPath` implements it: `sample(x_0, x_1, t)` returns the point and its
# velocity.

# %%
path = CondOTPath()
x_0 = data.gaussian(4, generator=gen, device=device)  # (4, 2) noise
x_1 = data.eight_gaussians(4, generator=gen, device=device)  # (4, 2) data
t = torch.tensor([0.0, 0.25, 0.5, 1.0], device=device)  # (4,)
s = path.sample(x_0, x_1, t)
torch.testing.assert_close(s.x_t, (1 - t[:, None]) * x_0 + t[:, None] * x_1)
torch.testing.assert_close(s.dx_t, x_1 - x_0)
print("t    =", t.tolist())
print("x_t  =", [[round(v, 2) for v in row] for row in s.x_t.tolist()])
print("x_t at t=0 is x_0 and at t=1 is x_1:", torch.equal(s.x_t[0], x_0[0]), torch.allclose(s.x_t[3], x_1[3]))

# %% [markdown]
# ## 2. The marginal path and its velocity
#
# *A generator cannot know which $x_1$ it is heading for: which single velocity field carries all
# the noise to all the data?*
#
# Average the conditional paths over the data: the **marginal path**
# $p_t(x) = \int p_t(x \mid x_1)\, p_1(x_1)\, dx_1$ runs from $p_0 = \mathcal N(0, I)$ to
# $p_1 = $ the data. The field that generates it is the average of the conditional velocities of
# all the paths that pass through $x$ at time $t$:
#
# $$u_t(x) = \mathbb E\left[\, dx_t \mid x_t = x \,\right] = \mathbb E\left[\, x_1 - x_0 \mid x_t = x \,\right].$$
#
# (It satisfies the continuity equation of $p_t$ because every conditional pair does and the
# equation is linear; see *Flow Matching for Generative Modeling*, Theorem 1.) Solving
# $dx/dt = u_t(x)$ from noise gives data. In general $u_t$ is intractable: it needs the posterior
# over $x_1$ given $x_t$. For a **Gaussian mixture** it has a closed form, which
# `tutorlib.paths.gmm_marginal_velocity` computes. Our test bed is `eight_gaussians`: eight
# components of standard deviation 0.2 on a circle of radius 2.5, at angles $2\pi k / 8$,
# $k = 0, \dots, 7$, equally weighted (the parameters in `tutorlib/data.py`). The cell below writes
# them down and checks them against the sampler.

# %%
angles = 2 * math.pi * torch.arange(8, dtype=torch.float32) / 8  # (8,)
means = 2.5 * torch.stack([angles.cos(), angles.sin()], 1).to(device)  # (8, 2)
stds = torch.full((8,), 0.2, device=device)  # (8,)
weights = torch.ones(8, device=device)  # (8,) uniform (normalised by the library)


def oracle(x, t):
    """The closed-form marginal velocity u_t(x) of eight_gaussians on the linear path."""
    return gmm_marginal_velocity(path, x, t, means, stds, weights)  # (B, 2)


# the sampler's clusters have these means and this spread (within a few standard errors)
x_lab, y_lab = data.sample_labelled("eight_gaussians", 8 * P.n_eval_2d, generator=gen, device=device)
cluster_means = torch.stack([x_lab[y_lab == k].mean(0) for k in range(8)])  # (8, 2)
cluster_stds = torch.stack([x_lab[y_lab == k].std(0) for k in range(8)])  # (8, 2)
print(f"largest |cluster mean - centre| = {(cluster_means - means).abs().max():.3f}, "
      f"cluster stds in [{cluster_stds.min():.3f}, {cluster_stds.max():.3f}]")
claim("largest |cluster mean - centre|", float((cluster_means - means).abs().max()), at_most={"standard": 0.05, "smoke": 0.1})
claim("largest |cluster std - 0.2|", float((cluster_stds - 0.2).abs().max()), at_most={"standard": 0.03, "smoke": 0.06})

# %% [markdown]
# First check that the oracle really is a generator: solve $dx/dt = u_t(x)$ from noise with 100
# Euler steps and measure the energy distance to held-out data, next to its noise floor (the
# same distance between two independent data draws of the same size, lesson 00). One value is
# noisy (how many points land in each cluster varies from draw to draw), so, like the floor, the
# model's score is averaged over ten independent draws of noise and held-out data.

# %%
def euler_sampler(velocity, steps):
    """A sampler ``(n, generator) -> (n, 2)``: fresh noise, then `steps` Euler steps of `velocity`."""
    return lambda n, generator=None: ode_solve(velocity, data.gaussian(n, generator=generator, device=device),
                                               steps=steps).x


floor_8g = metrics.noise_floor(data.eight_gaussians, P.n_eval_2d, generator=gen, repeats=10)
score_oracle = metrics.model_score(euler_sampler(oracle, 100), data.eight_gaussians, P.n_eval_2d,
                                   generator=gen, repeats=10)
print(f"oracle flow, 100 Euler steps: energy distance {score_oracle} "
      f"(= {floor_8g.ratio(score_oracle):.2f} x the noise floor {floor_8g})")

x0_eval = data.gaussian(P.n_eval_2d, generator=gen, device=device)  # (N, 2) noise for the figures
held_8g = data.eight_gaussians(P.n_eval_2d, generator=gen, device=device)  # (N, 2) held-out data
sol_oracle = ode_solve(oracle, x0_eval, steps=100, return_trajectory=True)
x_half = path.sample(x0_eval, held_8g, torch.full((P.n_eval_2d,), 0.5, device=device)).x_t  # (N, 2) ~ p_{1/2}
plotting.vector_field(oracle, 0.5, data=held_8g[:2000], samples=x_half[:2000], like=x0_eval,
                      title="marginal velocity u_t at t = 0.5, over samples of p_t (blue) and data (grey)")

# %% [markdown]
# The arrows point from the blurred ring $p_{1/2}$ towards the nearest cluster: near a cluster
# the average of the conditional velocities is dominated by that cluster's data.
#
# The conditional paths are straight by construction. The marginal paths are not: each one
# follows the *average* direction, which changes as the posterior over $x_1$ sharpens. Lesson 06
# measures this with `metrics.straightness` (0 for straight, constant-speed paths); here it
# already tells the two apart.

# %%
traj_cond = torch.stack([path.sample(x0_eval, held_8g, torch.full((P.n_eval_2d,), float(tk), device=device)).x_t
                         for tk in sol_oracle.times])  # (S+1, N, 2) conditional (straight) paths
print(f"straightness: conditional paths {metrics.straightness(traj_cond, sol_oracle.times):.2e}, "
      f"marginal (oracle) paths {metrics.straightness(sol_oracle.trajectory, sol_oracle.times):.3f}")
plotting.trajectories(sol_oracle.trajectory, n_paths=60, data=held_8g[:2000],
                      title="paths of the marginal flow (oracle): curved, never crossing")

# %% [markdown]
# Paths of an ODE cannot cross (the velocity at a point is unique), so where straight conditional
# lines would cross, the marginal paths bend around each other instead.

# %% [markdown]
# ## 3. The CFM loss and an Euler sampler, from scratch
#
# *If $u_t$ is intractable, how do we learn it?* The **flow matching** (FM) loss regresses a
# network $v_\theta$ on the marginal field,
# $\mathcal L_{FM}(\theta) = \mathbb E_{t, x_t} \lVert v_\theta(x_t, t) - u_t(x_t) \rVert^2$, but we
# cannot evaluate $u_t$. The **conditional** flow matching loss uses the conditional velocity
# instead, which we can:
#
# $$\mathcal L_{CFM}(\theta) = \mathbb E_{t \sim U[0,1],\, x_0,\, x_1} \left\lVert v_\theta(x_t, t) - (x_1 - x_0) \right\rVert^2,
# \qquad x_t = (1-t)\,x_0 + t\,x_1 .$$
#
# Sampling then integrates $dx/dt = v_\theta(x, t)$ from $t = 0$ to $1$; the simplest solver is
# Euler's, $x \leftarrow x + h\, v_\theta(x, t)$ with $h = 1/\text{steps}$. Both fit in a few lines:

# %%
def cfm_loss_scratch(model, x_0, x_1, t):
    """Mean over batch and coordinates of ||model(x_t, t) - (x_1 - x_0)||^2 on the linear path."""
    t_ = t[:, None]  # (B, 1) to broadcast against (B, 2)
    x_t = (1 - t_) * x_0 + t_ * x_1  # (B, 2) a point on the straight line
    dx_t = x_1 - x_0  # (B, 2) its velocity: the regression target
    return (model(x_t, t) - dx_t).square().mean()


@torch.no_grad()
def euler_sample_scratch(velocity, x_0, steps):
    """Integrate dx/dt = velocity(x, t) from t = 0 to 1 with `steps` Euler steps."""
    x, h = x_0, 1.0 / steps
    for k in range(steps):
        t = torch.full((x.shape[0],), k * h, dtype=x.dtype, device=x.device)  # (B,)
        x = x + h * velocity(x, t)  # (B, 2)
    return x


model = TimeMLP.from_profile(P).to(device)  # untrained: the comparison needs no training
xb_0 = data.gaussian(P.batch_2d, generator=gen, device=device)  # (B, 2)
xb_1 = data.checkerboard(P.batch_2d, generator=gen, device=device)  # (B, 2)
tb = torch.rand(P.batch_2d, generator=gen).to(device)  # (B,)
with torch.no_grad():
    torch.testing.assert_close(cfm_loss_scratch(model, xb_0, xb_1, tb), cfm_loss(model, path, xb_0, xb_1, tb))
torch.testing.assert_close(euler_sample_scratch(model, xb_0, 20), ode_solve(model, xb_0, method="euler", steps=20).x)
print("from-scratch CFM loss and Euler sampler agree with tutorlib.losses.cfm_loss and tutorlib.solvers.ode_solve")

# %% [markdown]
# From now on we use the library: `cfm_loss(model, path, x_0, x_1, t)` takes any affine path
# (lesson 04) and `ode_solve` any solver. One training step draws a data batch, fresh noise and
# uniform times; `tutorlib.train.train` runs the loop with the course's measured 2D recipe
# (`TrainConfig.from_profile(P)`: AdamW at a peak learning rate of 3e-3, warm-up and cosine decay,
# gradient clipping, and an exponential moving average (EMA) of the weights, which lesson 09 explains).
# We keep the averaged weights: `hist.ema.copy_to(model)` puts them into the trained network.

# %%
cfg = TrainConfig.from_profile(P)


def fm_loss_fn(model, x_1):
    """CFM loss for one data batch x_1 (B, 2): fresh noise and uniform times from `gen`."""
    x_0 = data.gaussian(x_1.shape[0], generator=gen, device=device)  # (B, 2)
    t = torch.rand(x_1.shape[0], generator=gen).to(device)  # (B,)
    return cfm_loss(model, path, x_0, x_1, t)


model_8g = TimeMLP.from_profile(P).to(device)
init_state = {k: v.clone() for k, v in model_8g.state_dict().items()}  # kept for section 4
print(f"TimeMLP: {count_parameters(model_8g):,} parameters; {cfg.steps} steps, batch {P.batch_2d}")
hist_8g = train(model_8g, fm_loss_fn,
                lambda step: data.eight_gaussians(P.batch_2d, generator=gen, device=device),
                cfg.replace(desc="eight_gaussians"))
hist_8g.ema.copy_to(model_8g)  # keep the averaged weights
print(f"trained: {hist_8g.describe()}")
tenth = max(1, len(hist_8g.losses) // 10)
claim("eight_gaussians: CFM loss over the last tenth of training / over the first tenth",
      (sum(hist_8g.losses[-tenth:]) / tenth) / (sum(hist_8g.losses[:tenth]) / tenth), at_most=0.95)

# %% [markdown]
# ## 4. Does CFM learn the marginal field? A numerical proof on the mixture
#
# *The network only ever saw conditional targets $x_1 - x_0$. Did it learn $u_t$?* Compare it with
# the oracle at several times, on points $x_t \sim p_t$, and scale the error by the field's own
# size: the relative error $\mathbb E\lVert v_\theta - u_t\rVert^2 / \mathbb E\lVert u_t \rVert^2$.

# %%
t_grid = (0.1, 0.3, 0.5, 0.7, 0.9)
rel_errors = []
with torch.no_grad():
    for tv in t_grid:
        x0_t = data.gaussian(P.n_eval_2d, generator=gen, device=device)
        x1_t = data.eight_gaussians(P.n_eval_2d, generator=gen, device=device)
        tt = torch.full((P.n_eval_2d,), tv, device=device)  # (N,)
        x_t = path.sample(x0_t, x1_t, tt).x_t  # (N, 2) ~ p_t
        u, v = oracle(x_t, tt), model_8g(x_t, tt)  # (N, 2) each
        mse, size = (v - u).square().sum(1).mean().item(), u.square().sum(1).mean().item()
        rel_errors.append(mse / size)
        print(f"t = {tv:.1f}:  E|v - u|^2 = {mse:.4f}   E|u|^2 = {size:.3f}   relative {mse / size:.4f}")
claim("CFM-trained field vs the closed-form marginal field: largest relative error over t", max(rel_errors),
      at_most={"standard": 0.05, "smoke": 0.9})

# %% [markdown]
# The cell above prints relative errors of a few percent at most (its claim: below 5 % in the
# standard profile): the network has learned the marginal field although no training target was
# ever a value of it.
#
# *Why does this work?* Expand the two losses at the same $x_t$. With $y = x_1 - x_0$ and
# $u_t(x_t) = \mathbb E[y \mid x_t]$,
#
# $$\lVert v - y\rVert^2 = \lVert v - u_t\rVert^2 + \lVert u_t - y\rVert^2 + 2\,(v - u_t)\cdot(u_t - y),$$
#
# and the cross term has zero mean given $x_t$. So
# $\mathcal L_{CFM}(\theta) = \mathcal L_{FM}(\theta) + C$ with
# $C = \mathbb E\lVert x_1 - x_0 - u_t(x_t)\rVert^2$ independent of $\theta$: the losses differ by a
# constant and **their gradients are equal**. Here we can check both, because the FM target is
# available in closed form. We take one large batch, the same $(x_0, x_1, t)$ for both losses,
# and two sets of parameters: the fresh initialisation and the trained network.

# %%
def flat_grad(loss, model):
    """All parameter gradients of `loss`, flattened into one vector."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


n_grad = 32 * P.batch_2d
g0 = data.gaussian(n_grad, generator=gen, device=device)  # (N, 2)
g1 = data.eight_gaussians(n_grad, generator=gen, device=device)  # (N, 2)
gt = torch.rand(n_grad, generator=gen).to(device)  # (N,)
sg = path.sample(g0, g1, gt)
u_g = oracle(sg.x_t, gt)  # (N, 2): the FM target u_t(x_t)
C = (sg.dx_t - u_g).square().mean().item()  # the constant, per coordinate
model_init = TimeMLP.from_profile(P).to(device)
model_init.load_state_dict(init_state)
print(f"batch of {n_grad} points; C = E|x_1 - x_0 - u_t(x_t)|^2 / 2 = {C:.4f}")
grad_stats = {}
for name, m in {"initial": model_init, "trained": model_8g}.items():
    loss_cfm = cfm_loss(m, path, g0, g1, gt)
    loss_fm = (m(sg.x_t, gt) - u_g).square().mean()
    grad_cfm, grad_fm = flat_grad(loss_cfm, m), flat_grad(loss_fm, m)
    cos = torch.nn.functional.cosine_similarity(grad_cfm, grad_fm, dim=0).item()
    rel = ((grad_cfm - grad_fm).norm() / grad_fm.norm()).item()
    grad_stats[name] = (cos, rel)
    print(f"{name:8s} L_CFM = {loss_cfm.item():.4f}  L_FM = {loss_fm.item():.4f}  difference {loss_cfm.item() - loss_fm.item():.4f}"
          f"   |grad FM| = {grad_fm.norm():.2e}  cosine(grad CFM, grad FM) = {cos:.5f}  relative difference {rel:.3f}")
claim("cosine(grad CFM, grad FM) at the initial parameters", grad_stats["initial"][0],
      at_least={"standard": 0.999, "smoke": 0.99})
claim("|grad CFM - grad FM| / |grad FM| at the initial parameters", grad_stats["initial"][1],
      at_most={"standard": 0.05, "smoke": 0.15})

# %% [markdown]
# Read the cell above row by row:
#
# - the two losses differ a lot, by about the same amount for both parameter sets, and that
#   amount is close to $C$ (exact agreement only in expectation: the cross term averages to zero
#   over the batch);
# - at the initial parameters the two gradients point the same way (cosine close to 1, claimed
#   above 0.999 in the standard profile) and differ by a few percent;
# - at the trained parameters the FM gradient is tiny (the network already matches $u_t$), so
#   what is left of the CFM gradient is mostly its zero-mean noise, and the cosine drops. This
#   is CFM's price: an unbiased but noisier gradient. Lesson 05 reduces that noise with better
#   couplings.
#
# The training loss tells the same story: it does not approach zero but levels off near $C$,
# the part of the CFM loss that no network can remove (the dashed line below).

# %%
print(f"final CFM training loss {hist_8g.final_loss:.3f} vs the constant C = {C:.3f}")
fig = plotting.loss_curve(hist_8g.steps, hist_8g.losses, window=50, log_y=False,
                          title="CFM training loss on eight_gaussians")
fig.add_hline(y=C, line=dict(dash="dash", color="grey"), annotation_text="C (irreducible part)")
fig

# %% [markdown]
# The loss flattens at the grey line: what the network can still reduce, the FM loss, is small by
# comparison (the cell before printed it for the trained parameters).

# %% [markdown]
# ## 5. A harder target: the checkerboard
#
# *Does the same recipe make a good generator for data with sharp edges and no closed form?*
# We train the same network on the checkerboard, then sample with 100 Euler steps.

# %%
model_cb = TimeMLP.from_profile(P).to(device)
hist_cb = train(model_cb, fm_loss_fn, lambda step: data.checkerboard(P.batch_2d, generator=gen, device=device),
                cfg.replace(desc="checkerboard"))
hist_cb.ema.copy_to(model_cb)
print(f"trained: {hist_cb.describe()}")
held_cb = data.checkerboard(P.n_eval_2d, generator=gen, device=device)  # (N, 2) held-out data
x_gen = ode_solve(model_cb, x0_eval, method="euler", steps=100).x  # (N, 2)
inside = float(data.in_checkerboard(x_gen).float().mean())
print(f"share of the samples inside a filled square: {inside:.1%} (the data: 100 %)")
claim("checkerboard, 100 Euler steps: share of samples inside a filled square", inside, at_least={"standard": 0.85})
plotting.scatter_2d({"held-out data": held_cb[:2000], "flow matching, 100 Euler steps": x_gen[:2000]},
                    title="checkerboard: data vs samples")

# %% [markdown]
# The samples fill the eight squares: about nine in ten land inside one (the cell prints the share).
# Those that stray sit mostly at the squares' edges and corners, where the data's density jumps from
# its full value to zero and a smooth velocity field cannot follow it exactly.

# %% [markdown]
# ## 6. Euler vs midpoint: quality against NFE
#
# *How many network evaluations does sampling need, and does a better solver help?* Euler makes
# an $O(h)$ error per unit time; the midpoint method
# $x \leftarrow x + h\, v\!\left(x + \tfrac h2 v(x, t),\, t + \tfrac h2\right)$ makes $O(h^2)$ but
# costs two evaluations per step. The fair comparison is at equal NFE (lesson 07 adds more
# solvers and measures their order). Each point of the curves is one draw of noise and
# held-out data, so expect wiggles of the size of the shaded band (the floor's spread).

# %%
floor_cb = metrics.noise_floor(data.checkerboard, P.n_eval_2d, generator=gen, repeats=10)
nfes = [2, 4, 10, 20, 50, 100, 200]
ed = {"euler": [], "midpoint": []}
for nfe in nfes:
    for method, per_step in (("euler", 1), ("midpoint", 2)):
        sol = ode_solve(model_cb, x0_eval, method=method, steps=nfe // per_step)
        assert sol.nfe == nfe
        ed[method].append(float(metrics.energy_distance(sol.x, held_cb)))
print(f"noise floor (n = {P.n_eval_2d}): {floor_cb.mean:.5f} ± {floor_cb.std:.5f}")
for i, nfe in enumerate(nfes):
    print(f"NFE {nfe:4d}: Euler {ed['euler'][i]:.5f} ({floor_cb.ratio(ed['euler'][i]):5.2f} x floor)   "
          f"midpoint {ed['midpoint'][i]:.5f} ({floor_cb.ratio(ed['midpoint'][i]):5.2f} x floor)")
for small in (4, 10):
    i = nfes.index(small)
    claim(f"checkerboard, {small} NFE: midpoint / Euler (energy distance)", ed["midpoint"][i] / ed["euler"][i],
          at_most={"standard": 1.0})
plotting.metric_curves({m: (nfes, v) for m, v in ed.items()}, "NFE (network evaluations)", "energy distance",
                       floor=floor_cb, log_y=True, title="checkerboard: sample quality against NFE")

# %% [markdown]
# Both curves fall towards the floor as NFE grows; at a small budget the midpoint method is
# ahead, because its error shrinks faster with the step size. With many steps both curves
# flatten out close to the floor: there the network's own error and the sampling noise, not the
# solver, set the value.
#
# The course compares models at fixed step counts, averaged over ten draws like the floor. Here
# are the numbers for 100 and 10 Euler steps (lesson 01 reports DDPM's ancestral sampler at 10
# steps):

# %%
repeats = len(floor_cb.values)
ed_100 = metrics.model_score(euler_sampler(model_cb, 100), data.checkerboard, P.n_eval_2d, generator=gen, repeats=repeats)
ed_10 = metrics.model_score(euler_sampler(model_cb, 10), data.checkerboard, P.n_eval_2d, generator=gen, repeats=repeats)
print(f"noise floor: {floor_cb} (n = {P.n_eval_2d}, {repeats} draws)")
for name, score in {"100 Euler steps": ed_100, " 10 Euler steps": ed_10}.items():
    print(f"flow matching, {name}: energy distance {score} = {floor_cb.ratio(score):.2f} x the noise floor")
claim("checkerboard, 100 Euler steps: energy distance / noise floor", floor_cb.ratio(ed_100),
      at_most={"standard": 2.0, "smoke": 30.0})
claim("checkerboard: 10 Euler steps / 100 Euler steps (energy distance)", ed_10.mean / ed_100.mean,
      at_least={"standard": 1.0})

# %% [markdown]
# The cell above claims (standard profile) that 100 Euler steps land within twice the noise
# floor, and that 10 steps are worse.

# %% [markdown]
# ## 7. Exact log-likelihood with the lesson-02 machinery
#
# *A flow-matching model was never trained by maximum likelihood. Can we still ask for its
# likelihood?* Yes: it is an ODE flow, so the instantaneous change of variables (lesson 02,
# *Neural Ordinary Differential Equations*) applies,
#
# $$\log p_1(x_1) = \log p_0(x_0) - \int_0^1 \nabla\!\cdot v_\theta(x_t, t)\, dt,$$
#
# integrated backwards from the data point with `tutorlib.likelihood.log_prob` (adaptive dopri5,
# exact divergence: two autograd passes in 2D). On eight Gaussians the true density is known
# (`data.gmm_log_prob`), so we can compare. First a check of the machinery itself: the oracle
# flow carries $\mathcal N(0, I)$ *exactly* to the mixture, so its likelihood must equal the
# mixture's, in float64, up to the solver's error: at a tolerance of $10^{-7}$ per step the error
# accumulated along the path stays of order $10^{-5}$ (the cell prints it; the claim asks for less than
# $10^{-4}$). For the float32 network we loosen the tolerance to $10^{-4}$: the divergence stays exact,
# the solver takes fewer, coarser steps.

# %%
x_ll = data.eight_gaussians(P.n_eval_2d // 4, generator=gen, device=device)  # (M, 2) held-out points
true_lp = data.gmm_log_prob(x_ll, means, stds)  # (M,)
means64, stds64, weights64 = means.double(), stds.double(), weights.double()
lp_oracle = log_prob(lambda x, t: gmm_marginal_velocity(path, x, t, means64, stds64, weights64), x_ll.double(),
                     atol=1e-7, rtol=1e-7)
gap_oracle = (lp_oracle.log_prob - data.gmm_log_prob(x_ll.double(), means64, stds64)).abs().max().item()
print(f"oracle flow: largest |log p_flow - log p_true| = {gap_oracle:.2e} over {x_ll.shape[0]} points ({lp_oracle.nfe} NFE)")
claim("oracle flow: largest |log p_flow - log p_true| (float64, tolerance 1e-7)", gap_oracle, at_most=1e-4)

start = time.perf_counter()
lp_model = log_prob(model_8g, x_ll, method="dopri5", divergence="exact", atol=1e-4, rtol=1e-4)
nll_model, nll_true = -lp_model.log_prob.mean().item(), -true_lp.mean().item()
print(f"trained model: NLL {nll_model:.4f} nats vs the true NLL {nll_true:.4f} "
      f"(gap {nll_model - nll_true:+.4f}; {lp_model.nfe} NFE, {time.perf_counter() - start:.1f} s)")
nll_source = -torch.distributions.Normal(0.0, 1.0).log_prob(x_ll).sum(-1).mean().item()  # no flow at all
print(f"for scale: the source N(0, I) itself has NLL {nll_source:.4f} (gap {nll_source - nll_true:+.4f})")
claim("trained model: |NLL - true NLL| (nats)", abs(nll_model - nll_true), at_most={"standard": 0.1})
claim("trained model's NLL gap / the source N(0, I)'s gap", abs(nll_model - nll_true) / (nll_source - nll_true),
      at_most={"standard": 0.05, "smoke": 0.9})

# %% [markdown]
# The gap between the two NLLs estimates $\mathrm{KL}(p_{data} \,\Vert\, p_\theta)$; the cell above
# prints it and claims (standard profile) that it is below 0.1 nats, a twentieth of the gap of the
# source Gaussian itself. A model trained only by
# regressing velocities has a likelihood within a small fraction of a nat of the truth. Its
# density, on a grid:

# %%
plotting.density_from_log_prob(lambda x: log_prob(model_8g, x, atol=1e-4, rtol=1e-4).log_prob,
                               resolution=int(P.n_eval_2d ** 0.5), device=device,
                               title="density of the trained flow (exact change of variables)")

# %% [markdown]
# Eight sharp, round bumps on the ring, with a faint haze between them where the model is less
# certain than the data.

# %% [markdown]
# ## 8. Explore: time, steps and solver
#
# Move $t$ to watch the samples and the learned field of the checkerboard model; change the
# number of steps and the solver to see where few steps go wrong (in the static book, the slider
# moves $t$ with 100 Euler steps).

# %%
flow_explorer(model_cb, x0_eval[:1000], held_cb[:2000], steps=(100, 20, 10, 5, 2, 1), methods=("euler", "midpoint"))

# %% [markdown]
# Early on the field mostly pushes the cloud outwards; near $t = 1$ it sorts points into squares.
# With one or two Euler steps the samples land on the average direction and blur the board.

# %% [markdown]
# ## Exercises
#
# **Exercise 1 (warm-up): the CFM target.** Write `cfm_target(x_0, x_1, t)` returning the pair
# `(x_t, dx_t)` of section 1: the point of the linear path at time `t` and its velocity, for noise
# `x_0` and data `x_1` of shape `(B, D)` and per-sample times `t` of shape `(B,)`.

# %%
def cfm_target(x_0, x_1, t):
    # TODO: the point on the linear path at time t, and its velocity
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def cfm_target(x_0, x_1, t):
    t_ = t[:, None]  # (B, 1)
    return (1 - t_) * x_0 + t_ * x_1, x_1 - x_0


# %%
check_cfm_target(cfm_target)

# %% [markdown]
# **Exercise 2: another path.** The linear path is one affine path $x_t = \alpha_t x_1 + \sigma_t x_0$
# among many (lesson 04). Take $\alpha_t = t^n$, $\sigma_t = 1 - t^n$ for an exponent $n > 0$: the noise
# fades slowly at first and fast at the end. Write `polynomial_target(x_0, x_1, t, n)` returning
# `(x_t, dx_t)` for this path; `dx_t` is the time derivative of `x_t` for fixed `x_0`, `x_1`. The check
# varies `n`.

# %%
def polynomial_target(x_0, x_1, t, n):
    # TODO: x_t and its time derivative for alpha_t = t^n, sigma_t = 1 - t^n
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def polynomial_target(x_0, x_1, t, n):
    t_ = t[:, None]  # (B, 1)
    alpha, d_alpha = t_ ** n, n * t_ ** (n - 1)  # (B, 1) each; sigma_t = 1 - alpha_t, d_sigma_t = -d_alpha_t
    return alpha * x_1 + (1 - alpha) * x_0, d_alpha * (x_1 - x_0)


# %%
check_polynomial_target(polynomial_target)

# %% [markdown]
# **Exercise 3: a midpoint step.** Section 6 compared Euler with the midpoint method, which probes the
# field half a step ahead before it takes the step. Write one step of it, `midpoint_step(velocity, x, t,
# dt)`: states `x` `(B, D)` at times `t` `(B,)`, a float step `dt`, and the field called as
# `velocity(x, t)`. It costs two evaluations of the field.

# %%
def midpoint_step(velocity, x, t, dt):
    # TODO: one step of the midpoint method (two evaluations of the velocity)
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def midpoint_step(velocity, x, t, dt):
    x_mid = x + 0.5 * dt * velocity(x, t)  # (B, D): half an Euler step
    return x + dt * velocity(x_mid, t + 0.5 * dt)  # (B, D)


# %%
check_midpoint_step(midpoint_step)

# %% [markdown]
# **Exercise 4: the marginal velocity of one Gaussian.** Let the data be a single Gaussian,
# $p_1 = \mathcal N(\mu, s^2 I)$. On the linear path, $x_t \sim \mathcal N(t\mu, v_t I)$ with
# $v_t = t^2 s^2 + (1-t)^2$. Using Gaussian conditioning,
# $\mathbb E[x_1 \mid x_t] = \mu + t s^2 (x_t - t\mu)/v_t$ and $\mathbb E[x_0 \mid x_t] = (1-t)(x_t - t\mu)/v_t$.
# Write `gaussian_marginal_velocity(x, t, mu, s)` returning $u_t(x) = \mathbb E[x_1 - x_0 \mid x_t = x]$
# for `x` `(B, D)`, `t` `(B,)`, `mu` `(D,)` and a float `s`. The check compares it with
# `gmm_marginal_velocity` for a one-component mixture.

# %%
def gaussian_marginal_velocity(x, t, mu, s):
    # TODO: u_t(x) = E[x_1 | x_t = x] - E[x_0 | x_t = x]
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def gaussian_marginal_velocity(x, t, mu, s):
    t_ = t[:, None]  # (B, 1)
    v = t_ ** 2 * s ** 2 + (1 - t_) ** 2  # (B, 1) variance of p_t
    centred = (x - t_ * mu) / v  # (B, 2)
    return mu + t_ * s ** 2 * centred - (1 - t_) * centred


# %%
def _gaussian_inputs(g):
    B, D = int(torch.randint(5, 13, (1,), generator=g)), int(torch.randint(2, 4, (1,), generator=g))
    return {"x": 2 * torch.randn(B, D, generator=g, dtype=torch.float64),
            "t": 0.98 * torch.rand(B, generator=g, dtype=torch.float64),
            "mu": 3 * torch.randn(D, generator=g, dtype=torch.float64),
            "s": 0.1 + float(torch.rand((), generator=g))}


def _gaussian_reference(x, t, mu, s):
    return gmm_marginal_velocity(path, x, t, mu[None], torch.tensor([s], dtype=x.dtype), torch.ones(1, dtype=x.dtype))


def _posterior_mean(x, t, mu, s):  # a likely slip: E[x_1 | x_t] alone, without subtracting E[x_0 | x_t]
    t_ = t[:, None]
    return mu + t_ * s ** 2 * (x - t_ * mu) / (t_ ** 2 * s ** 2 + (1 - t_) ** 2)


check(gaussian_marginal_velocity, _gaussian_reference, _gaussian_inputs, name="gaussian_marginal_velocity",
      mistakes=[Mistake("E[x_1 | x_t] alone", _posterior_mean,
                        "the velocity of the linear path is x_1 - x_0: subtract E[x_0 | x_t = x] as well")],
      hints=[Hint("exception", "t has shape (B,): use t[:, None] to broadcast against x (B, D)",
                  match="must match the size")])

# %% [markdown]
# ## Summary
#
# - A **conditional path** moves noise to one data point; on the linear (conditional OT) path,
#   $x_t = (1-t)x_0 + t x_1$ with velocity $x_1 - x_0$. The **marginal** path averages them, and
#   its velocity $u_t(x) = \mathbb E[x_1 - x_0 \mid x_t = x]$ is what a generator must follow.
# - The **CFM loss** regresses $v_\theta(x_t, t)$ on $x_1 - x_0$. It equals the intractable FM
#   loss plus a constant, so both have the same gradient: we measured it on a Gaussian mixture,
#   where the trained field also matched the closed-form $u_t$ to a few percent.
# - Marginal paths are curved even though every conditional path is straight; solvers therefore
#   need several steps. At equal NFE the midpoint method beats Euler when the budget is small.
# - A flow-matching model is a continuous normalising flow: the lesson-02 machinery gives its
#   exact likelihood, close to the true one on eight Gaussians.
#
# ## References
# - *Flow Matching for Generative Modeling* (Lipman, Chen, Ben-Hamu, Nickel, Le, 2023): the
#   marginal/conditional construction, the CFM loss and the OT path.
# - *Flow Matching Guide and Code* (Lipman et al., 2024): the notation and the affine-path view.
# - *Neural Ordinary Differential Equations* (Chen, Rubanova, Bettencourt, Duvenaud, 2018): the
#   instantaneous change of variables used for the likelihood.

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
