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
# # 04 · Paths, parametrisations and interpolants
#
# **Learning goals**
# - draw the probability paths $p_t$ of three affine paths $x_t = \alpha_t x_1 + \sigma_t x_0$ (linear, cosine,
#   variance-preserving) and see that they differ only by a clock and a scale: what matters is the
#   signal-to-noise ratio $\alpha_t / \sigma_t$;
# - convert between the four things a network can predict (the data $x_1$, the noise $x_0$, the velocity,
#   the score), check every conversion exactly on a Gaussian mixture, and see where each one divides by zero;
# - turn lesson 01's DDPM epsilon-model into a velocity field, sample it with ODE solvers on two different
#   paths, and compare with its own ancestral and DDIM samplers at equal NFE;
# - prove numerically that DDIM *is* Euler's method on the linear path, and use it to take apart lesson 03's
#   observation that DDPM's samplers beat flow matching + Euler at 10 steps;
# - sample with SDEs that have the same marginals as the probability-flow ODE, and measure what their noise
#   level does at 10 and 100 steps;
# - add a latent noise term to a path (a *stochastic interpolant*), and measure what it changes.
#
# **Prerequisites:** lesson 01 (DDPM, its index $k$ and samplers), lesson 03 (flow matching, the CFM loss,
# Euler and midpoint, `gmm_marginal_velocity`).
#
# **Run time** (measured by `make verify` on 2026-12-02, 2-core CPU busy with other work, load average 3.2): CPU standard ≈ 1.5 min · GPU standard: not measured yet · smoke ≈ 28 s. The last cell prints this run's time.
#
# **Loads:** nothing. **Trains:** three flow-matching velocity fields on the checkerboard (linear, cosine and
# VP paths), lesson 01's DDPM epsilon-model, and a stochastic-interpolant model from eight Gaussians to
# the checkerboard; a third of `P.steps_2d` steps each, at least 60 (five models share the time budget of two).

# %% [markdown]
# ## Setup

# %%
import math
import time

import torch

from tutorlib import data, metrics, plotting
from tutorlib.claims import claim
from tutorlib.ddpm import DDPMSchedule, DDPMScheduler, ancestral_sample, ddim_sample, ddpm_to_velocity, linear_betas
from tutorlib.device import get_device, profile, seed_everything, set_threads
from tutorlib.exercises.lesson04 import check_equivalent_sigma, check_linear_path_time, check_x1_to_velocity
from tutorlib.interpolants import InterpolantModel, QuadraticNoise, StochasticInterpolant, interpolant_loss
from tutorlib.losses import cfm_loss, ddpm_loss
from tutorlib.models import TimeMLP
from tutorlib.paths import AffinePath, CondOTPath, PathTransfer, gmm_marginal_log_prob, gmm_marginal_velocity, snr_match
from tutorlib.schedulers import CosineScheduler, LinearVPScheduler
from tutorlib.solvers import affine_sde_drift, ode_solve, reverse_diffusion, sde_solve, steps_for_nfe
from tutorlib.train import TrainConfig, train
from tutorlib.widgets import choice_explorer

lesson_start = time.perf_counter()
device = get_device()
threads = set_threads()
gen = seed_everything(0)
P = profile()
print(f"torch {torch.__version__} on {device} ({threads} CPU threads); profile {P.name!r}")

# %% [markdown]
# ## 1. Three affine paths: what do they draw?
#
# *Flow matching (lesson 03) moved noise to data along $x_t = t\,x_1 + (1-t)\,x_0$; DDPM (lesson 01) along
# $x_k = \sqrt{\bar\alpha_k}\,x_1 + \sqrt{1-\bar\alpha_k}\,x_0$. What other choices are there, and what changes?*
#
# Both are **affine paths** $x_t = \alpha_t x_1 + \sigma_t x_0$, with $\alpha_0 = 0, \sigma_0 = 1$ (noise) and
# $\alpha_1 = 1, \sigma_1 = 0$ (data). Three common ones:
#
# | path | $\alpha_t$ | $\sigma_t$ |
# |---|---|---|
# | linear ("OT", lesson 03) | $t$ | $1 - t$ |
# | cosine | $\sin(\pi t / 2)$ | $\cos(\pi t / 2)$ |
# | VP (variance preserving, DDPM's in continuous time) | $e^{-B(1-t)/2}$ | $\sqrt{1 - \alpha_t^2}$ |
#
# with $B(s) = \int_0^s \beta(u)\,du$ for DDPM's linear noise rate $\beta(u) = 0.1 + 19.9\,u$ (the limit of
# $T \beta_k$ for $\beta_k$ from $10^{-4}$ to $0.02$, $T = 1000$; the VP path counts its own time $s = 1 - t$ from
# the data, like DDPM). In plain PyTorch, checked against `tutorlib.schedulers`:

# %%
def vp_scratch(t):
    s = 1 - t  # diffusion time: 0 at the data
    B = 0.1 * s + 0.5 * (20.0 - 0.1) * s**2  # int_0^s beta(u) du
    alpha = torch.exp(-B / 2)
    return alpha, torch.sqrt(1 - alpha**2)


scratch = {"linear": lambda t: (t, 1 - t),
           "cosine": lambda t: (torch.sin(math.pi * t / 2), torch.cos(math.pi * t / 2)),
           "VP": vp_scratch}
paths = {"linear": CondOTPath(), "cosine": AffinePath(CosineScheduler()), "VP": AffinePath(LinearVPScheduler())}

t_check = torch.linspace(0.0, 0.99, 12, dtype=torch.float64)  # (12,)
for name, path in paths.items():
    alpha, sigma = scratch[name](t_check)
    out = path.scheduler(t_check)
    torch.testing.assert_close(alpha, out.alpha_t)
    torch.testing.assert_close(sigma, out.sigma_t)
    print(f"{name:7s} alpha_0 = {out.alpha_t[0]:.4f}   t where alpha_t = sigma_t: "
          f"{float(path.scheduler.time_at_snr(1.0)):.3f}")
print("from-scratch coefficients match tutorlib.schedulers")

# %% [markdown]
# The VP path keeps a little signal at $t = 0$ ($\alpha_0 \approx 0.0066$, like DDPM's $\sqrt{\bar\alpha_T}$), and
# it stays noisy for much longer: signal and noise are equal only at $t \approx 0.74$ (the cell prints it).
# Here is $p_t$, the law of $x_t$ for checkerboard data, on each path at the same four times (the same noise and
# data points in every panel):

# %%
n_show = min(P.n_eval_2d, 1000)
x0_show = data.gaussian(n_show, generator=gen, device=device)  # (n, 2)
x1_show = data.checkerboard(n_show, generator=gen, device=device)  # (n, 2)
times_show = (0.25, 0.5, 0.75, 0.9)
panels = {}
for name, path in paths.items():
    for tv in times_show:
        panels[f"{name}, t = {tv}"] = path.sample(x0_show, x1_show, torch.full((n_show,), tv, device=device)).x_t
plotting.scatter_grid(panels, cols=4)

# %% [markdown]
# Read the rows: the linear path shrinks the noise and grows the data at a constant rate, the cosine path
# keeps the total variance near one, and the VP path shows the board only in the last panel. The panels of
# one column are *not* comparable images of "time $t$": what a point $x_t$ tells about $x_1$ depends only on
# the **signal-to-noise ratio** $\lambda_t = \alpha_t / \sigma_t$. If two paths reach the same $\lambda$ at
# times $t$ and $t'$, then $x'_{t'} = c\, x_t$ with $c = (\alpha' + \sigma') / (\alpha + \sigma)$ for the same
# pair $(x_0, x_1)$: the two points carry the same information, one is a rescaled copy of the other.
# `tutorlib.paths.snr_match` finds $t'$ and $c$; the cell checks the identity on the points above.

# %%
t_lin = torch.full((n_show,), 0.5, dtype=torch.float64)
for name in ("cosine", "VP"):
    m = snr_match(t_lin, paths["linear"], paths[name])  # linear t = 0.5 -> the same SNR on the other path
    on_other = paths[name].sample(x0_show.double(), x1_show.double(), m.t).x_t
    torch.testing.assert_close(on_other, m.scale[:, None] * paths["linear"].sample(x0_show.double(), x1_show.double(),
                                                                                   t_lin).x_t)
    print(f"linear t = 0.5 has the SNR of {name} t = {float(m.t[0]):.3f}; there x' = {float(m.scale[0]):.3f} x")
t_snr = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
plotting.metric_curves({name: (t_snr, path.scheduler.snr(t_snr)) for name, path in paths.items()}, "t",
                       "signal-to-noise ratio alpha_t / sigma_t", log_x=False, log_y=True,
                       title="the three paths' clocks: SNR against t")

# %% [markdown]
# Every affine path is every other one, up to a change of clock (the curves above) and a rescaling of space.
# So the choice of path cannot change *what* a perfect model generates; it changes (1) which noise levels the
# training loss sees how often, and (2) how a solver with a few big steps cuts the journey. Sections 3 to 5
# measure both.

# %% [markdown]
# ## 2. Four things a network can predict
#
# *A network sees $x_t$ and $t$. Should it output the data, the noise, the velocity or the score?*
#
# Given $x_t$, the best guesses of the data and of the noise are the conditional means
# $\hat x_1 = \mathbb E[x_1 \mid x_t]$ ("x-prediction", the denoiser) and $\hat x_0 = \mathbb E[x_0 \mid x_t]$
# ("epsilon-prediction", DDPM's). Taking the conditional mean of $x_t = \alpha_t x_1 + \sigma_t x_0$ and of
# its velocity gives
#
# $$x_t = \alpha_t \hat x_1 + \sigma_t \hat x_0, \qquad u_t(x_t) = \dot\alpha_t \hat x_1 + \dot\sigma_t \hat x_0,
# \qquad \nabla \log p_t(x_t) = -\hat x_0 / \sigma_t,$$
#
# the last one (the **score**) because $x_0$ is standard normal (Tweedie's formula). Two linear equations in
# two unknowns: any one of the four determines the other three, given $x_t$. From noise to velocity in plain
# PyTorch:

# %%
def epsilon_to_velocity_scratch(eps, x_t, alpha, sigma, d_alpha, d_sigma):
    """u = d_alpha x1_hat + d_sigma eps, with x1_hat from x_t = alpha x1_hat + sigma eps; coefficients (B, 1)."""
    x1_hat = (x_t - sigma * eps) / alpha  # (B, 2) the denoised guess
    return d_alpha * x1_hat + d_sigma * eps  # (B, 2)


g_conv = torch.Generator().manual_seed(3)
x_c, eps_c = torch.randn(8, 2, generator=g_conv), torch.randn(8, 2, generator=g_conv)  # (8, 2) each
t_c = 0.05 + 0.9 * torch.rand(8, generator=g_conv)  # (8,)
for name, path in paths.items():
    out = path.scheduler(t_c)
    coeffs = [c[:, None] for c in (out.alpha_t, out.sigma_t, out.d_alpha_t, out.d_sigma_t)]  # (8, 1) each
    torch.testing.assert_close(epsilon_to_velocity_scratch(eps_c, x_c, *coeffs), path.epsilon_to_velocity(eps_c, x_c, t_c))
print("from-scratch epsilon -> velocity matches AffinePath.epsilon_to_velocity on all three paths")

# %% [markdown]
# `AffinePath` has all twelve conversions (`velocity_to_score`, `x1_to_epsilon`, ...). Are they right? On a
# Gaussian mixture everything is known in closed form: `gmm_marginal_velocity` gives the true velocity $u_t$
# and `gmm_marginal_log_prob` the true $\log p_t$, whose gradient autograd computes. Convert the true velocity
# into a score and compare it with that gradient, on eight Gaussians (lesson 03's mixture), in float64:

# %%
angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8  # (8,)
means8 = 2.5 * torch.stack([angles.cos(), angles.sin()], 1)  # (8, 2)
stds8, weights8 = torch.full((8,), 0.2, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
conversion_errors = {}
for name, path in paths.items():
    t8 = 0.05 + 0.9 * torch.rand(500, generator=g_conv, dtype=torch.float64)  # (500,)
    x8 = path.sample(torch.randn(500, 2, generator=g_conv, dtype=torch.float64),
                     data.eight_gaussians(500, generator=g_conv).double(), t8).x_t  # (500, 2) ~ p_t
    u = gmm_marginal_velocity(path, x8, t8, means8, stds8, weights8)  # (500, 2) the true velocity
    x_req = x8.clone().requires_grad_(True)
    (true_score,) = torch.autograd.grad(gmm_marginal_log_prob(path, x_req, t8, means8, stds8, weights8).sum(), x_req)
    err = (path.velocity_to_score(u, x8, t8) - true_score).norm(dim=1) / true_score.norm(dim=1).clamp_min(1e-12)
    conversion_errors[name] = float(err.max())
    print(f"{name:7s} velocity -> score vs autograd of log p_t: largest relative error {conversion_errors[name]:.1e}")
claim("velocity -> score conversion vs the exact score on eight Gaussians: largest relative error (float64)",
      max(conversion_errors.values()), at_most=1e-8)

# %% [markdown]
# The conversions are exact, but they are not equally safe. Each divides by something: $\hat x_1$ from the
# noise divides by $\alpha_t$, $\hat x_0$ from the data by $\sigma_t$. So a network's error $\delta$ in its
# own output reaches the velocity multiplied by the coefficient of that output in $u_t$:
# $\dot\sigma_t - \dot\alpha_t \sigma_t / \alpha_t$ for an epsilon-model and $\dot\alpha_t - \dot\sigma_t
# \alpha_t / \sigma_t$ for an x-model. The cell prints both near each end:

# %%
t_ends = torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64)
print(f"{'path':8s} {'t':>5s}  {'epsilon-model error x':>22s}  {'x-model error x':>16s}")
for name, path in paths.items():
    o = path.scheduler(t_ends)
    c_eps = (o.d_sigma_t - o.d_alpha_t * o.sigma_t / o.alpha_t).abs()  # (3,)
    c_x1 = (o.d_alpha_t - o.d_sigma_t * o.alpha_t / o.sigma_t).abs()  # (3,)
    for i, tv in enumerate(t_ends.tolist()):
        print(f"{name:8s} {tv:5.2f}  {float(c_eps[i]):22.1f}  {float(c_x1[i]):16.1f}")

# %% [markdown]
# An epsilon-model's velocity is a hundred times as wrong as the model near the noise end of the linear path,
# an x-model's near the data end; a velocity model has no such factor. That is one reason DDPM keeps
# $\alpha_0 > 0$ (its $k = T$ is not pure noise) and stops at $k = 1$ (section 4 integrates to $t = 1 - 1/T$ and
# finishes with a denoising step).

# %% [markdown]
# ## 3. Three paths trained side by side
#
# *Does the path a model is trained on matter, or the path it is sampled on?*
#
# We train three `TimeMLP` velocity fields with the CFM loss of lesson 03, one per path, with the same
# initial weights and the same stream of data, noise and times (one generator seeded alike for each): only
# the path differs. The recipe is lesson 03's `TrainConfig.from_profile(P)`, run for a third of its steps: this
# lesson trains five models in about the time lesson 03 trains two, so every model here is a little less converged.

# %%
cfg = TrainConfig.from_profile(P).replace(steps=max(60, P.steps_2d // 3))  # five models: a third of the steps each


def train_velocity(path, name, seed=10):
    """A TimeMLP trained by CFM on `path` (checkerboard); every path gets the same init and draws."""
    g = torch.Generator().manual_seed(seed)  # data, noise and times: identical for every path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TimeMLP.from_profile(P).to(device)  # identical initial weights

    def loss_fn(m, x_1):
        x_0 = data.gaussian(x_1.shape[0], generator=g, device=device)  # (B, 2)
        t = torch.rand(x_1.shape[0], generator=g).to(device)  # (B,)
        return cfm_loss(m, path, x_0, x_1, t)

    hist = train(model, loss_fn, lambda step: data.checkerboard(P.batch_2d, generator=g, device=device),
                 cfg.replace(desc=f"FM, {name} path"))
    print(f"{name:7s} path: {hist.describe()}")
    return hist.ema_model


fm = {name: train_velocity(path, name) for name, path in paths.items()}

# %% [markdown]
# To compare samplers we score every sample set the same way: `REPEATS` draws, and in draw $r$ every sampler
# starts from the same noise and is compared with the same held-out data (and an SDE gets the same Brownian
# noise), so that differences between samplers are not differences between draws. The noise floor is lesson
# 00's: the energy distance between two independent data draws of the same size.

# %%
n = P.n_eval_2d
REPEATS = max(1, min(2, n // 1000))  # paired draws per score: 2 in the standard profile, 1 in smoke
floor = metrics.noise_floor(data.checkerboard, n, generator=gen, repeats=10)


def score(sample, source=data.gaussian, repeats=REPEATS):
    """Energy distance of `sample(x_0, generator) -> (n, 2)` to held-out checkerboard data, over paired draws."""
    values = []
    for r in range(repeats):
        x_0 = source(n, generator=torch.Generator().manual_seed(1000 + r), device=device)  # (n, 2)
        held = data.checkerboard(n, generator=torch.Generator().manual_seed(2000 + r), device=device)  # (n, 2)
        values.append(float(metrics.energy_distance(sample(x_0, torch.Generator().manual_seed(3000 + r)), held)))
    return metrics.RepeatedMetric.from_values(values, n)


def euler_on(path_name, model_path, nfe):
    """A sampler: the field trained on `model_path`, seen on `path_name` (PathTransfer), `nfe` Euler steps."""
    field = fm[model_path] if path_name == model_path else PathTransfer(fm[model_path], paths[model_path],
                                                                         paths[path_name])
    return lambda x, g: ode_solve(field, x, method="euler", steps=nfe).x


print(f"noise floor (n = {n}): {floor}")
nfes = [5, 10, 20, 100]
own = {name: [floor.ratio(score(euler_on(name, name, k))) for k in nfes] for name in paths}
for name, ratios in own.items():
    print(f"{name:7s} model, Euler on its own path: " + "  ".join(f"{k} NFE {r:5.2f}x" for k, r in zip(nfes, ratios)))
claim("checkerboard, 100 Euler steps on its own path: worst of the three models / noise floor",
      max(r[-1] for r in own.values()), at_most={"standard": 3.0, "smoke": 10.0})
plotting.metric_curves({f"{name} path": (nfes, r) for name, r in own.items()}, "NFE (Euler steps)",
                       "energy distance / noise floor", floor=1.0, floor_label="noise floor", log_y=True,
                       title="three paths, each sampled with Euler on its own path")

# %% [markdown]
# With 100 steps all three reach about the same quality (the claim: within three times the floor); with few
# steps they differ. But is that the training or the sampling? `tutorlib.paths.PathTransfer` turns a field
# learned on one path into the field of another (through the SNR match of section 1 and the conversions of
# section 2), so every model can be sampled by Euler on every path. At 10 NFE:

# %%
table = {(model_path, path_name): floor.ratio(score(euler_on(path_name, model_path, 10)))
         for model_path in paths for path_name in paths}
print(f"10 Euler steps, energy distance / floor.  rows: trained on;  columns: Euler on the path")
print(" " * 12 + "".join(f"{name:>10s}" for name in paths))
for model_path in paths:
    print(f"{model_path:>10s}  " + "".join(f"{table[model_path, p]:10.2f}" for p in paths))
cos_over_lin = max(table[m, "cosine"] / table[m, "linear"] for m in paths)
claim("10 Euler steps: (Euler on the cosine path) / (Euler on the linear path), worst of the three models",
      cos_over_lin, at_most={"standard": 1.0})

# %% [markdown]
# The columns differ more than the rows: at 10 NFE, the path a field is *integrated* on matters more than the
# path it was *trained* on (the claim: for every model, Euler on the cosine path beats Euler on the linear
# path). Euler's method assumes the velocity constant over a step, and "constant" means something different in
# each path's coordinates, so Euler on the cosine path is another method on the linear path, with another
# error. Which path integrates best is a property of the data and the step count, not a law; with 100 steps the
# differences vanish (the curves above).

# %% [markdown]
# ## 4. Lesson 01's DDPM model as a velocity field
#
# *A DDPM network predicts noise at integer steps $k$. Can an ODE solver sample it?*
#
# We train lesson 01's model again (checkerboard, linear $\beta$, $T = 1000$, `TimeMLP.from_profile(P)`, the
# same recipe): it takes as long as one of the fields above. DDPM's forward process is an affine path with
# $\alpha_t = \sqrt{\bar\alpha_k}$, $\sigma_t = \sqrt{1 - \bar\alpha_k}$ at $t = 1 - k/T$;
# `tutorlib.ddpm.DDPMScheduler` interpolates $\log \bar\alpha$ between the integers, so the path has
# derivatives at every $t$, and section 2's conversion gives the probability-flow velocity.

# %%
T = 1000
schedule = DDPMSchedule(linear_betas(T))
g_ddpm = torch.Generator().manual_seed(20)


def ddpm_batch(step):
    x_data = data.checkerboard(P.batch_2d, generator=g_ddpm, device=device)  # (B, 2): DDPM's x_0, our x_1
    k = torch.randint(1, T + 1, (P.batch_2d,), generator=g_ddpm).to(device)  # (B,) in 1..T
    noise = torch.randn(x_data.shape, generator=g_ddpm).to(device)  # (B, 2)
    return x_data, k, noise


with torch.random.fork_rng(devices=[]):
    torch.manual_seed(20)
    eps_net = TimeMLP.from_profile(P).to(device)
hist_ddpm = train(eps_net, lambda m, b: ddpm_loss(m, schedule, *b), ddpm_batch, cfg.replace(desc="DDPM"))
print(f"DDPM epsilon-model: {hist_ddpm.describe()}")
eps_model = hist_ddpm.ema_model

ddpm_sch = DDPMScheduler(schedule)


def ddpm_velocity_scratch(x, t):
    """The probability-flow velocity of the epsilon-model: section 2's conversion on DDPM's path."""
    o = ddpm_sch(t)
    coeffs = [c[:, None] for c in (o.alpha_t, o.sigma_t, o.d_alpha_t, o.d_sigma_t)]  # (B, 1) each
    return epsilon_to_velocity_scratch(eps_model(x, t), x, *coeffs)


v_ddpm = ddpm_to_velocity(eps_model, schedule)
x_probe = data.gaussian(64, generator=gen, device=device)  # (64, 2)
t_probe = torch.rand(64, generator=gen).to(device) * v_ddpm.t_max  # (64,)
with torch.no_grad():
    torch.testing.assert_close(ddpm_velocity_scratch(x_probe, t_probe), v_ddpm(x_probe, t_probe))
print("from-scratch DDPM velocity matches tutorlib.ddpm.ddpm_to_velocity")

# %% [markdown]
# Now five samplers of the *same network*, at equal NFE (network evaluations):
#
# - **ancestral** and **DDIM**: lesson 01's, on DDPM's own respaced steps $k$;
# - **PF-ODE, Euler on DDPM's path**: the probability-flow ODE $dx = u_t(x)\,dt$ with NFE $- 1$ Euler steps
#   uniform in $t$ up to $t = 1 - 1/T$ ($k = 1$), then DDPM's final denoising step (one more call);
# - **PF-ODE on the linear path, Euler / midpoint**: the same field seen on the linear path (`PathTransfer`),
#   started where DDPM starts: $k = T$ has the SNR of the linear path's $t \approx 0.0063$, so $x_T$ is rescaled
#   and integrated from there to $t = 1$ with uniform steps.

# %%
ddpm_path, linear = v_ddpm.path, paths["linear"]
start = snr_match(0.0, ddpm_path, linear)  # DDPM's k = T on the linear path
v_lin = PathTransfer(v_ddpm, ddpm_path, linear)
print(f"k = T sits at t = {float(start.t):.4f} of the linear path, where x = {float(start.scale):.4f} x_T")


def on_linear(field, method, nfe, grid=None):
    """Sample `field` (a velocity on the linear path) from DDPM's start with `nfe` evaluations."""
    grid = torch.linspace(float(start.t), 1.0, steps_for_nfe(method, nfe) + 1, dtype=torch.float64) if grid is None else grid
    return lambda x, g: ode_solve(field, float(start.scale) * x, method=method, time_grid=grid).x


ddpm_samplers = {
    "ancestral": lambda nfe: lambda x, g: ancestral_sample(eps_model, x, schedule, steps=nfe, generator=g).x,
    "DDIM": lambda nfe: lambda x, g: ddim_sample(eps_model, x, schedule, steps=nfe).x,
    "PF-ODE, Euler on DDPM's path": lambda nfe: lambda x, g: v_ddpm.denoise(
        ode_solve(v_ddpm, x, steps=nfe - 1, t1=v_ddpm.t_max).x, v_ddpm.t_max),
    "PF-ODE, Euler on the linear path": lambda nfe: on_linear(v_lin, "euler", nfe),
    "PF-ODE, midpoint on the linear path": lambda nfe: on_linear(v_lin, "midpoint", nfe),
}
ddpm_nfes = [10, 100]
ddpm_scores = {name: [floor.ratio(score(make(k))) for k in ddpm_nfes] for name, make in ddpm_samplers.items()}
print(f"{'sampler':38s}" + "".join(f"{k:>8d}" for k in ddpm_nfes) + "   (NFE; energy distance / floor)")
for name, ratios in ddpm_scores.items():
    print(f"{name:38s}" + "".join(f"{r:8.2f}" for r in ratios))
claim("DDPM model at 100 NFE: worst of the five samplers / floor", max(r[-1] for r in ddpm_scores.values()),
      at_most={"standard": 3.0, "smoke": 25.0})
spread_10 = max(r[0] for r in ddpm_scores.values()) / min(r[0] for r in ddpm_scores.values())
claim("DDPM model at 10 NFE: best / worst of the five samplers (energy distance)", 1 / spread_10,
      at_most={"standard": 0.5})
plotting.metric_curves({name: (ddpm_nfes, r) for name, r in ddpm_scores.items()}, "NFE", "energy distance / noise floor",
                       floor=1.0, log_y=True, title="one DDPM network, five samplers")

# %% [markdown]
# At 100 NFE every sampler of the one network is within three times the floor (the claim); at 10 NFE the best and the
# worst differ by more than a factor of two (the cell prints the table): with few steps, *how* a field is
# integrated decides the quality as much as the network does. The ODE on DDPM's path and on the linear path are
# the same ODE (the same marginals, the same map from noise to data up to the solver's error); they differ only in
# the coordinates Euler works in.

# %% [markdown]
# ## 5. DDIM is Euler on the linear path, and what that explains
#
# *Lesson 03 found DDPM's samplers ahead of flow matching + Euler at 10 steps. Is DDIM a better sampler?*
#
# Write the linear path in the variables $y = x / \sigma_t$ and $\lambda = \alpha_t / \sigma_t$: with
# $\hat x_1 = \mathbb E[x_1 \mid x_t]$, the ODE becomes $dy / d\lambda = \hat x_1$, and a short calculation shows
# that one Euler step of $dx/dt = u_t$ from $t$ to $t'$ is exactly $y' = y + (\lambda' - \lambda)\,\hat x_1$. DDIM's
# update (lesson 01) is the same formula in DDPM's variables: guess $\hat x_1$, then re-noise it to the next level.
# So **DDIM is Euler's method on the linear path**, on the grid of times $t_k$ whose SNR equals DDPM's at its
# steps $k$. The cell checks it on both trained networks: DDIM of the DDPM model against Euler of its
# linear-path field, and DDIM of the *flow-matching* model (converted into an epsilon-model on DDPM's path)
# against lesson 03's Euler sampler on DDPM's grid.

# %%
ks = schedule.step_indices(10)  # [1000, 889, ..., 1, 0]
grid_ddpm = snr_match(schedule.time(torch.tensor(ks)).double(), ddpm_path, linear).t  # (11,) linear-path times
print("DDPM's 10 steps k =", ks)
print("on the linear path t =", [round(v, 3) for v in grid_ddpm.tolist()])
x_T = data.gaussian(n, generator=gen, device=device)  # (n, 2)
fm_lin = fm["linear"]
fm_on_ddpm = PathTransfer(fm_lin, linear, ddpm_path)  # the flow-matching field seen on DDPM's path


def fm_eps(x, t):
    """The flow-matching model as a DDPM epsilon-model (section 2's conversion on DDPM's path)."""
    return ddpm_path.velocity_to_epsilon(fm_on_ddpm(x, t), x, t)


gaps = {
    "DDPM network": (ddim_sample(eps_model, x_T, schedule, steps=10).x, on_linear(v_lin, "euler", 10, grid_ddpm)(x_T, None)),
    "flow-matching network": (ddim_sample(fm_eps, x_T, schedule, steps=10).x, on_linear(fm_lin, "euler", 10, grid_ddpm)(x_T, None)),
}
for name, (a, b) in gaps.items():
    print(f"{name}: DDIM vs Euler on the linear path on DDPM's grid, largest difference {float((a - b).abs().max()):.1e}")
claim("DDIM = Euler on the linear path on DDPM's grid: largest difference over both networks",
      max(float((a - b).abs().max()) for a, b in gaps.values()), at_most=1e-3)

# %% [markdown]
# The same update, then. What differs between "DDIM on the DDPM network" and "lesson 03's Euler on the
# flow-matching network" is the **grid** (the printed times: DDPM's steps crowd the noise end and leave one
# long jump from $t \approx 0.72$ to $0.99$) and the **network**. Swap one at a time, at 10 NFE:

# %%
fm_10 = table["linear", "linear"]  # lesson 03's sampler: flow matching, 10 Euler steps, uniform
parts = {
    "FM network, Euler, uniform grid (lesson 03)": fm_10,
    "FM network, Euler, DDPM's grid": floor.ratio(score(on_linear(fm_lin, "euler", 10, grid_ddpm))),
    "DDPM network, Euler, DDPM's grid (= DDIM)": ddpm_scores["DDIM"][0],
    "DDPM network, Euler, uniform grid": ddpm_scores["PF-ODE, Euler on the linear path"][0],
    "DDPM network, ancestral": ddpm_scores["ancestral"][0],
    "FM network, midpoint (5 steps), uniform grid": floor.ratio(score(lambda x, g: ode_solve(fm_lin, x, method="midpoint",
                                                                                            steps=5).x)),
}
for name, r in parts.items():
    print(f"{name:48s} {r:6.2f} x floor")
claim("10 NFE: DDIM / flow matching + Euler (energy distance)", parts["DDPM network, Euler, DDPM's grid (= DDIM)"] / fm_10,
      at_most={"standard": 1.25})
claim("10 NFE, DDPM network: uniform grid / DDPM's grid", parts["DDPM network, Euler, uniform grid"]
      / parts["DDPM network, Euler, DDPM's grid (= DDIM)"], at_most={"standard": 1.0})
claim("10 NFE, uniform grid, same update: DDPM network / FM network", parts["DDPM network, Euler, uniform grid"] / fm_10,
      at_most={"standard": 1.0})
claim("10 NFE: FM + midpoint / the better of DDIM and ancestral", parts["FM network, midpoint (5 steps), uniform grid"]
      / min(parts["DDPM network, Euler, DDPM's grid (= DDIM)"], parts["DDPM network, ancestral"]), at_most={"standard": 1.0})
plotting.scatter_grid({"held-out data": data.checkerboard(n, generator=gen, device=device),
                       "FM, 10 Euler steps": ode_solve(fm_lin, x_T, steps=10).x,
                       "DDIM, 10 steps": gaps["DDPM network"][0],
                       "DDPM network, 10 Euler steps, uniform": on_linear(v_lin, "euler", 10)(x_T, None)}, cols=4)

# %% [markdown]
# **Why DDPM's samplers beat flow matching + Euler at 10 steps:** not because DDIM is a better sampler. It is the
# very same Euler step, on a grid that is worse here (the same DDPM network does better on the uniform grid: the
# second claim), and with both networks trained alike DDIM is only about level with lesson 03's sampler (the first
# claim allows it 25 % more energy distance; the cell prints both). What DDPM brings is the network it queries:
# with the same update and the same uniform grid, the epsilon-network trained by DDPM's loss is integrated with a
# much smaller 10-step error than the velocity network (the third claim; the cell prints the ancestral sampler
# beside them). A second-order solver with the same 10 evaluations, midpoint on the flow-matching network, beats
# both DDPM samplers (the last claim). So "DDPM vs flow matching at 10 steps" compares (network, grid, solver)
# triples; change any one and the ranking moves.

# %% [markdown]
# ## 6. Probability-flow ODE vs SDE: the same marginals, different samples
#
# *Lesson 01's ancestral sampler adds noise at every step, the ODE none. Can one dial between them?*
#
# For any diffusion coefficient $g_t \ge 0$, the SDE
#
# $$dx = \Big[u_t(x) + \tfrac{g_t^2}{2} \nabla \log p_t(x)\Big]\,dt + g_t\, dW_t$$
#
# has the same marginals $p_t$ as the ODE $dx = u_t(x)\,dt$: its Fokker-Planck equation reduces to the ODE's
# continuity equation, for every $g$. We use the family $g_t = \eta\, \bar g_t$ with
# $\bar g_t^2 = 2\sigma_t^2 \tfrac{d}{dt}\log(\alpha_t/\sigma_t)$ (`tutorlib.solvers.reverse_diffusion`): $\eta = 0$
# is the ODE, $\eta = 1$ the time reversal of DDPM's forward noising, the SDE whose small steps the ancestral
# sampler takes. The score comes from the same network call (section 2; `affine_sde_drift`), so an
# Euler-Maruyama step costs one evaluation, like an Euler step. First the claim itself, on the mixture of
# section 2 where the field and the score are exact: ODE and SDEs from the same noise must reach the same
# distribution, halfway and at the end, while moving the points differently.

# %%
def exact_u(x, t):
    return gmm_marginal_velocity(ddpm_path, x, t, means8.to(x), stds8.to(x), weights8.to(x))


def mixture(k, generator=None):
    return data.eight_gaussians(k, generator=generator, device=device).double()


x0_mix = torch.randn(n, 2, generator=gen, dtype=torch.float64).to(device)  # (n, 2)
steps_mix, ends, halves = 200, {}, {}
for eta in (0.0, 1.0, 1.5):
    diff = reverse_diffusion(ddpm_path, eta)
    sol = sde_solve(affine_sde_drift(exact_u, ddpm_path, diff), diff, x0_mix, steps=steps_mix, t1=v_ddpm.t_max,
                    generator=torch.Generator().manual_seed(4), return_trajectory=True)
    ends[eta], halves[eta] = sol.x, sol.trajectory[steps_mix // 2]  # at t = 1 and t = t_max / 2
t_half = 0.5 * v_ddpm.t_max
floor_mix = metrics.noise_floor(mixture, n, generator=gen, repeats=5)


def p_half(k, generator=None):  # samples of the exact p_t at t = t_max / 2, drawn from the path itself
    return ddpm_path.sample(torch.randn(k, 2, generator=generator, dtype=torch.float64).to(device), mixture(k, generator),
                            torch.full((k,), t_half, dtype=torch.float64, device=device)).x_t


floor_half = metrics.noise_floor(p_half, n, generator=gen, repeats=5)
marginal_ratios = []
for eta in ends:
    at_end = floor_mix.ratio(float(metrics.energy_distance(ends[eta], mixture(n, gen))))
    at_half = floor_half.ratio(float(metrics.energy_distance(halves[eta], p_half(n, gen))))
    marginal_ratios += [at_end, at_half]
    moved = float((ends[eta] - ends[0.0]).norm(dim=1).mean())
    print(f"eta = {eta}: energy distance / floor at t = 1: {at_end:5.2f}, at t = {t_half:.2f}: {at_half:5.2f};"
          f"   mean distance from the ODE's endpoint: {moved:.2f}")
claim("exact field: ODE and SDEs (eta 0, 1, 1.5) at t = 1/2 and t = 1: worst energy distance / floor",
      max(marginal_ratios), at_most={"standard": 3.0, "smoke": 6.0})

# %% [markdown]
# All three land on the same distribution at both times (the claim: within three times the floor), though each
# SDE sends a given noise point somewhere else (the printed mean distance): the noise level changes the
# *coupling* between noise and data, not the marginals. With a trained network it changes the errors too. Here
# is the DDPM network with Euler-Maruyama on DDPM's path ($\eta = 0$ is section 4's PF-ODE sampler), at 10 and
# 100 steps:

# %%
etas = [0.0, 0.5, 1.0, 1.5]


def sde_sampler(eta, nfe):
    diff = reverse_diffusion(ddpm_path, eta)
    drift = affine_sde_drift(v_ddpm, ddpm_path, diff)
    return lambda x, g: v_ddpm.denoise(sde_solve(drift, diff, x, steps=nfe - 1, t1=v_ddpm.t_max, generator=g).x,
                                       v_ddpm.t_max)


pf_ode = dict(zip(ddpm_nfes, ddpm_scores["PF-ODE, Euler on DDPM's path"]))  # eta = 0: section 4's scores, same draws
sde_scores = {nfe: [pf_ode[nfe] if eta == 0 else floor.ratio(score(sde_sampler(eta, nfe))) for eta in etas]
              for nfe in (10, 100)}
for nfe, ratios in sde_scores.items():
    print(f"{nfe:3d} NFE: " + "  ".join(f"eta {eta}: {r:5.2f}" for eta, r in zip(etas, ratios)))
claim("DDPM network, 10 NFE: SDE with eta = 1 / the ODE (eta = 0)", sde_scores[10][etas.index(1.0)] / sde_scores[10][0],
      at_most={"standard": 1.0})
claim("DDPM network, 10 NFE: eta = 1.5 / the best eta", sde_scores[10][-1] / min(sde_scores[10]), at_least={"standard": 1.2})
claim("DDPM network, 100 NFE: worst eta in [0, 1.5] / floor", max(sde_scores[100]), at_most={"standard": 3.0, "smoke": 20.0})
plotting.metric_curves({f"{nfe} NFE": (etas, r) for nfe, r in sde_scores.items()}, "noise level eta (0 = ODE)",
                       "energy distance / noise floor", floor=1.0, log_x=False, log_y=True,
                       title="DDPM network: SDE noise level at 10 and 100 steps")

# %% [markdown]
# The cell prints the whole table ($\eta = 0$ repeats section 4's PF-ODE scores: the same sampler on the same
# draws); its claims: at 10 steps the SDE with $\eta = 1$ beats the ODE, and at 100 steps every noise level up to
# 1.5 is within three times the floor. Fresh noise blurs the errors of the big early steps instead of carrying them
# along, until it is too much: at 10 steps, $\eta = 1.5$ is at least 20 % worse than the best level (the middle
# claim). Move the noise level yourself (in the static book the slider steps through the same sample sets):

# %%
x_show = data.gaussian(n_show, generator=gen, device=device)  # (n, 2) one start for every setting
settings = [(nfe, eta) for nfe in (10, 100) for eta in etas]
choice_explorer({f"{nfe} steps, eta {eta}": sde_sampler(eta, nfe)(x_show, torch.Generator().manual_seed(5))
                 for nfe, eta in settings}, "steps, noise level",
                data=data.checkerboard(n_show, generator=gen, device=device))

# %% [markdown]
# ## 7. Stochastic interpolants: a latent noise term
#
# *What if the path itself carries extra noise, $x_t = \alpha_t x_1 + \sigma_t x_0 + \gamma_t z$?*
#
# *Stochastic Interpolants* add a Gaussian $z \sim \mathcal N(0, I)$, independent of $(x_0, x_1)$, scaled by a
# $\gamma_t$ that vanishes at both ends; here $\gamma_t = a\,t(1-t)$ (`QuadraticNoise(a)`). The velocity target
# gains a term, $dx_t = \dot\alpha_t x_1 + \dot\sigma_t x_0 + \dot\gamma_t z$, and a second regression target
# appears: the **denoiser** $\eta(x, t) = \mathbb E[z \mid x_t = x]$. Since $x_t$ is "something independent of $z$"
# plus $\gamma_t z$, $p_t$ is a Gaussian blur and its score is $-\eta / \gamma_t$, whatever $x_0$ is. In plain
# PyTorch, checked against `tutorlib.interpolants`:

# %%
def interpolant_scratch(x_0, x_1, z, t, a):
    t_ = t[:, None]  # (B, 1)
    x_t = t_ * x_1 + (1 - t_) * x_0 + a * t_ * (1 - t_) * z  # (B, 2)
    dx_t = x_1 - x_0 + a * (1 - 2 * t_) * z  # (B, 2)
    return x_t, dx_t


a_noise = 2.0  # gamma_t = 2 t (1 - t): at most 0.5, at t = 1/2
interp = StochasticInterpolant(noise=QuadraticNoise(a_noise))  # linear alpha, sigma by default
x0_c, x1_c, z_c = (torch.randn(16, 2, generator=g_conv) for _ in range(3))
t_c16 = torch.rand(16, generator=g_conv)
s_c = interp.sample(x0_c, x1_c, z_c, t_c16)
x_t_mine, dx_t_mine = interpolant_scratch(x0_c, x1_c, z_c, t_c16, a_noise)
torch.testing.assert_close(x_t_mine, s_c.x_t)
torch.testing.assert_close(dx_t_mine, s_c.dx_t)
print("from-scratch interpolant matches StochasticInterpolant.sample")

# %% [markdown]
# **With a Gaussian source nothing new happens to the marginals:** $\sigma_t x_0 + \gamma_t z$ is then one Gaussian
# of standard deviation $\sqrt{\sigma_t^2 + \gamma_t^2}$, so $p_t$ and its velocity are those of an ordinary affine
# path with that $\sigma$ (`interp.gaussian_equivalent()`; exercise 2 derives it). Samples of both at $t = 1/2$
# agree to the noise floor:

# %%
equiv = AffinePath(interp.gaussian_equivalent())
t_mid = torch.full((n,), 0.5, device=device)


def interp_half(k, generator=None):
    x_1 = data.checkerboard(k, generator=generator, device=device)
    return interp.sample(data.gaussian(k, generator=generator, device=device), x_1,
                         torch.randn(x_1.shape, generator=generator).to(device), t_mid[:k]).x_t


def equiv_half(k, generator=None):
    return equiv.sample(data.gaussian(k, generator=generator, device=device),
                        data.checkerboard(k, generator=generator, device=device), t_mid[:k]).x_t


floor_interp = metrics.noise_floor(interp_half, n, generator=gen, repeats=5)
equiv_ratio = floor_interp.ratio(metrics.model_score(equiv_half, interp_half, n, generator=gen, repeats=5))
print(f"t = 1/2: interpolant vs its equivalent affine path: energy distance = {equiv_ratio:.2f} x floor "
      f"(sigma = {float(equiv.scheduler(0.5).sigma_t):.3f} instead of 0.5)")
claim("Gaussian source: interpolant vs its equivalent affine path at t = 1/2, energy distance / floor", equiv_ratio,
      at_most={"standard": 2.0, "smoke": 4.0})

# %% [markdown]
# What the latent term does change shows between two *data* sets, where no Gaussian is around: the source is
# now eight Gaussians, the target the checkerboard (a two-sided interpolant). We train a `TimeMLP` with four
# outputs (velocity and denoiser, `interpolant_loss`) with $a = 2$. (With $a = 0$ there is no latent noise: the
# denoiser half would learn nothing, no score would exist, and the velocity half would be plain flow matching
# between the two sets; the cell draws both interpolants' $p_t$.)

# %%
def train_interpolant(interpolant, name, seed=30):
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TimeMLP.from_profile(P, out_dim=4).to(device)  # (velocity, denoiser)

    def loss_fn(m, x_1):
        x_0 = data.eight_gaussians(x_1.shape[0], generator=g, device=device)  # (B, 2) the source: data too
        z = torch.randn(x_1.shape, generator=g).to(device)  # (B, 2)
        t = torch.rand(x_1.shape[0], generator=g).to(device)  # (B,)
        return interpolant_loss(m, interpolant, x_0, x_1, z, t)

    hist = train(model, loss_fn, lambda step: data.checkerboard(P.batch_2d, generator=g, device=device),
                 cfg.replace(desc=name))
    print(f"{name}: {hist.describe()}")
    return InterpolantModel(hist.ema_model, interpolant)


interpolants = {"a = 0": StochasticInterpolant(noise=QuadraticNoise(0.0)), f"a = {a_noise:g}": interp}
si_model = train_interpolant(interp, f"interpolant, a = {a_noise:g}")
x8_show = data.eight_gaussians(n_show, generator=gen, device=device)  # (n, 2)
z_show = torch.randn(n_show, 2, generator=gen).to(device)  # (n, 2)
plotting.scatter_grid({f"{name}, t = {tv}": it.sample(x8_show, x1_show, z_show, torch.full((n_show,), tv, device=device)).x_t
                       for name, it in interpolants.items() for tv in (0.25, 0.5, 0.75)}, cols=3)

# %% [markdown]
# Without latent noise $p_{1/2}$ is a sharp lattice (every cluster of the source meets every square of the
# target); with it the same cloud is blurred. The network generates by the ODE $dx = b\,dt$; since it also has
# a score, it generates by SDEs with the same marginals too (`InterpolantModel.sde(noise)`: diffusion
# $g_t = \text{noise} \cdot \gamma_t$, zero at both ends). From eight Gaussians to the checkerboard, at 10 and
# 100 steps:

# %%
si_noises = [1.0, 3.0]
si_scores = {}
for nfe in (10, 100):
    si_scores[f"a = {a_noise:g}", "ODE", nfe] = floor.ratio(score(lambda x, g: ode_solve(si_model.velocity, x, steps=nfe).x,
                                                                  source=data.eight_gaussians))
    for noise in si_noises:
        drift, diff = si_model.sde(noise)
        si_scores[f"a = {a_noise:g}", f"SDE {noise:g}", nfe] = floor.ratio(score(
            lambda x, g: sde_solve(drift, diff, x, steps=nfe, generator=g).x, source=data.eight_gaussians))
for (name, how, nfe), r in si_scores.items():
    print(f"{name}, {how:8s} {nfe:3d} steps: {r:6.2f} x floor")
best_sde = {nfe: min(si_scores[f"a = {a_noise:g}", f"SDE {v:g}", nfe] for v in si_noises) for nfe in (10, 100)}
claim("interpolant a = 2, 10 steps: best SDE / its ODE", best_sde[10] / si_scores[f"a = {a_noise:g}", "ODE", 10],
      at_most={"standard": 0.8})
claim("interpolant a = 2, 100 steps: best SDE / floor", best_sde[100], at_most={"standard": 2.5, "smoke": 15.0})
claim("interpolant a = 2, 100 steps: ODE / floor", si_scores[f"a = {a_noise:g}", "ODE", 100],
      at_most={"standard": 2.5, "smoke": 15.0})

# %% [markdown]
# The cell prints every number. What the latent term changes, then: between two data sets it makes $p_t$ a
# blurred, positive density with a score that a regression learns, which opens the whole family of SDE samplers
# between the two distributions. As with the DDPM network, the noise pays off with few steps (the first claim: at
# 10 steps the better SDE has at most 0.8 times the ODE's energy distance); at 100 steps both the SDE and the ODE
# are within 2.5 times the floor (the last two claims). With a Gaussian source the latent term only reshapes
# $\sigma_t$.

# %% [markdown]
# ## Exercises
#
# **Exercise 1: from an x-prediction to the velocity.** Section 2 converted a noise prediction into a velocity.
# Many modern models predict the clean data instead. Write `x1_to_velocity(x1_hat, x_t, alpha, sigma, d_alpha,
# d_sigma)`: the velocity implied by a data estimate `x1_hat` at the point `x_t`, for any affine path whose
# coefficients at each sample's time are given (`x1_hat`, `x_t` of shape `(B, D)`; the four coefficients `(B,)`).
# The check draws the coefficients at random, so no single path's shortcut passes.

# %%
def x1_to_velocity(x1_hat, x_t, alpha, sigma, d_alpha, d_sigma):
    # TODO: the velocity that x1_hat and x_t imply on this path
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def x1_to_velocity(x1_hat, x_t, alpha, sigma, d_alpha, d_sigma):
    a, s, da, ds = (c[:, None] for c in (alpha, sigma, d_alpha, d_sigma))  # (B, 1) each
    eps_hat = (x_t - a * x1_hat) / s  # (B, D): the noise that x_t leaves once the data estimate is removed
    return da * x1_hat + ds * eps_hat  # (B, D)


# %%
check_x1_to_velocity(x1_to_velocity)

# %% [markdown]
# **Exercise 2: the affine path hiding in a stochastic interpolant.** With a standard normal source, section 7
# claimed that $x_t = \alpha_t x_1 + \sigma_t x_0 + \gamma_t z$ has the marginals of an affine path
# $\alpha_t x_1 + \sigma'_t x_0$. Write `equivalent_sigma(sigma, d_sigma, gamma, d_gamma)` returning the pair
# `(sigma_eq, d_sigma_eq)`: that path's noise coefficient $\sigma'_t$ and its time derivative, from the
# interpolant's $\sigma_t, \dot\sigma_t, \gamma_t, \dot\gamma_t$ (each `(B,)`). Why are the marginal velocities
# then equal too, and not only the densities?

# %%
def equivalent_sigma(sigma, d_sigma, gamma, d_gamma):
    # TODO: the noise coefficient of the equivalent affine path, and its time derivative
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def equivalent_sigma(sigma, d_sigma, gamma, d_gamma):
    sigma_eq = torch.sqrt(sigma**2 + gamma**2)  # independent Gaussians add their variances
    return sigma_eq, (sigma * d_sigma + gamma * d_gamma) / sigma_eq  # chain rule


# %%
check_equivalent_sigma(equivalent_sigma)

# %% [markdown]
# (Given $x_t$, the pair $(x_0, z)$ enters only through $w = \sigma_t x_0 + \gamma_t z$, and
# $\mathbb E[\dot\sigma_t x_0 + \dot\gamma_t z \mid w] = (\dot\sigma'_t / \sigma'_t)\, w$: the same conditional mean
# as for $\dot\sigma'_t x_0$ with $x_0 = w / \sigma'_t$.)
#
# **Exercise 3: DDPM's steps on the linear path.** Section 5 placed DDPM's 10 steps on the linear path with
# `snr_match`. Do it by hand: write `linear_path_time(alpha_bar)` returning `(t, scale)`, where `t` is the time
# of the linear path with the same signal-to-noise ratio as DDPM's noise level $\bar\alpha_k$ and `scale` the
# factor with $x^{\text{linear}}_t = \text{scale} \cdot x_k$ for the same $(x_0, x_1)$ (`alpha_bar` of shape
# `(B,)`). Then use it on `schedule.alpha_bar(torch.tensor(ks))` and compare with the times section 5 printed.

# %%
def linear_path_time(alpha_bar):
    # TODO: the linear path's time with DDPM's signal-to-noise ratio, and the scale between the two points
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def linear_path_time(alpha_bar):
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()  # DDPM's alpha and sigma
    return a / (a + s), 1 / (a + s)  # t / (1 - t) = a / s, and t x_1 + (1 - t) x_0 = (a x_1 + s x_0) / (a + s)


# %%
check_linear_path_time(linear_path_time)

# %% [markdown]
# **Going further (no self-check).** Retrain section 3's three models with the times drawn uniformly in the
# *log-SNR* instead of in $t$ (map a uniform $\lambda$ through `scheduler.time_at_snr`): which path's table row
# changes most, and does the 10-step ranking of the columns survive?

# %% [markdown]
# ## Summary
#
# - Linear, cosine and VP paths are one path under three clocks and scales: points at equal
#   signal-to-noise ratio $\alpha_t / \sigma_t$ are rescaled copies (`snr_match`), so a field learned on one
#   path is a field on any other (`PathTransfer`).
# - Data, noise, velocity and score predictions determine each other given $x_t$; the conversions are exact
#   (checked against the closed-form score), but an epsilon-model's errors are amplified near the noise end and
#   an x-model's near the data end.
# - With 100 steps every path and every sampler of one network lands within three times the noise floor; with 10
#   steps the integrator's coordinates and grid decide by factors of several.
# - DDIM is Euler's method on the linear path, on DDPM's grid. DDPM's lead over flow matching + Euler at 10
#   steps came from the network, not the sampler; a midpoint step beats both.
# - SDEs $dx = [u + \tfrac{g^2}{2}\nabla\log p_t]dt + g\,dW$ keep the marginals of the ODE for any noise level;
#   some noise helps at 10 steps, too much costs again.
# - A latent noise term $\gamma_t z$ changes nothing but $\sigma_t$ for a Gaussian source; between two data sets
#   it supplies a score, hence SDE samplers between them, which help at 10 steps.
#
# ## References
# - *Stochastic Interpolants: A Unifying Framework for Flows and Diffusions* (Albergo, Boffi, Vanden-Eijnden,
#   2023): the latent noise term, the denoiser and score, SDEs with the marginals of the flow.
# - *Step-by-Step Diffusion: An Elementary Tutorial* (Nakkiran, Bradley, Zhou, Advani, 2024): DDIM as a
#   deterministic sampler of the flow, in elementary terms.
# - *Score-Based Generative Modeling through Stochastic Differential Equations* (Song, Sohl-Dickstein, Kingma,
#   Kumar, Ermon, Poole, 2021): the VP SDE, its time reversal and the probability-flow ODE.
# - *Denoising Diffusion Implicit Models* (Song, Meng, Ermon, 2021): the DDIM sampler.
# - *Flow Matching Guide and Code* (Lipman et al., 2024): affine paths, schedulers and their conversions.
# - *Neural Diffusion Models* (Bartosh, Vetrov, Naesseth, 2023): learned (non-affine) forward processes, the
#   next step beyond this lesson's fixed paths.

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
