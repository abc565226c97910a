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
# # 01 · Denoising diffusion (DDPM)
#
# **Learning goals**
# - write DDPM's forward noising $q(x_k \mid x_\text{data})$ and watch the checkerboard dissolve into noise;
# - compare the linear and cosine $\beta$ schedules, and convert DDPM's step index $k$ to the course's time $t$;
# - train a network to predict the added noise $\varepsilon$ (the "simple" DDPM loss) on 2D data;
# - sample with the ancestral sampler and with DDIM, and measure how quality falls as the number of steps shrinks;
# - run the same recipe, very briefly, on MNIST.
#
# **Prerequisites:** lesson 00 (notation, toy data, energy distance and its noise floor).
#
# **Run time** (measured by `make verify` on 2026-12-02, 2-core CPU): CPU standard ≈ 2.0 min · GPU standard: not measured yet · smoke ≈ 12 s. The last cell prints this run's time.
#
# **Loads:** MNIST, and the small MNIST DDPM checkpoint if an earlier run saved it.
# **Trains:** a DDPM on the 2D checkerboard (`P.steps_2d` steps); a tiny DDPM on MNIST (saved for next time).

# %% [markdown]
# ## Setup

# %%
import math
import time

import torch

from tutorlib import data, metrics, plotting
from tutorlib.ddpm import DDPMSchedule, ancestral_sample, cosine_betas, ddim_sample, linear_betas
from tutorlib.claims import claim
from tutorlib.device import get_device, profile, seed_everything, set_threads
from tutorlib.exercises.lesson01 import check_ddim_step, check_forward_noising
from tutorlib.losses import ddpm_loss
from tutorlib.judge import frechet_distance, judge_accuracy, load_judge
from tutorlib.models import TimeMLP, count_parameters
from tutorlib.recipes import MNISTRecipe, load_or_train_mnist_ddpm
from tutorlib.train import TrainConfig, train

lesson_start = time.perf_counter()
device = get_device()
threads = set_threads()
gen = seed_everything(0)
P = profile()
print(f"torch {torch.__version__} on {device} ({threads} CPU threads); profile {P.name!r}")

# %% [markdown]
# ## 1. Forward noising: how does data turn into noise?
#
# DDPM destroys data in $T$ small steps. Step $k$ shrinks the current point a little and adds a
# little Gaussian noise of variance $\beta_k$:
# $x_k = \sqrt{1 - \beta_k}\, x_{k-1} + \sqrt{\beta_k}\, \varepsilon_k$. Gaussians compose, so we can
# jump from clean data straight to any step $k$:
#
# $$q(x_k \mid x_\text{data}) = \mathcal N\big(\sqrt{\bar\alpha_k}\, x_\text{data},\ (1 - \bar\alpha_k) I\big),
# \qquad \bar\alpha_k = \prod_{j \le k} (1 - \beta_j),$$
#
# that is, $x_k = \sqrt{\bar\alpha_k}\, x_\text{data} + \sqrt{1 - \bar\alpha_k}\, \varepsilon$ with
# $\varepsilon \sim \mathcal N(0, I)$. As long as $\bar\alpha_T \approx 0$, step $T$ is (almost) pure noise.
#
# Here it is in plain PyTorch, with DDPM's linear schedule ($\beta_k$ from $10^{-4}$ to $0.02$, $T = 1000$).
# We pad $\bar\alpha$ with $\bar\alpha_0 = 1$ so that `alpha_bar[k]` is $\bar\alpha_k$ for $k = 0, \dots, T$.

# %%
T = 1000
betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)  # (T,): betas[k - 1] is beta_k
alphas = 1 - betas  # (T,)
alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(alphas, 0)])  # (T+1,): alpha_bar[k]


def forward_noise(x_data, k, noise):
    """x_k = sqrt(alpha_bar_k) x_data + sqrt(1 - alpha_bar_k) noise; x_data, noise (B, 2), k (B,) ints."""
    ab = alpha_bar[k.cpu()].to(x_data)[:, None]  # (B, 1)
    return ab.sqrt() * x_data + (1 - ab).sqrt() * noise  # (B, 2)


# the same with tutorlib
schedule = DDPMSchedule(linear_betas(T))
x_data = data.checkerboard(P.n_eval_2d, generator=gen, device=device)  # (N, 2)
noise = torch.randn(x_data.shape, generator=gen).to(device)  # (N, 2)
k = torch.randint(0, T + 1, (P.n_eval_2d,), generator=gen).to(device)  # (N,) random steps
torch.testing.assert_close(betas, schedule.betas)
torch.testing.assert_close(forward_noise(x_data, k, noise), schedule.q_sample(x_data, k, noise).x_noisy)
print("from-scratch forward noising matches DDPMSchedule.q_sample on", len(k), "points")

# %% [markdown]
# Drag the slider (or press play) to move through the forward process. The same data points and the same
# noise $\varepsilon$ are used at every step; only $k$ changes. The slider shows the course time
# $t = 1 - k / T$ (section 2 explains it): $t = 1$ is the data, $t = 0$ is step $k = T$, pure noise.

# %%
frames = {}
for k_frame in torch.linspace(T, 0, 21).round().long().tolist():
    ks = torch.full((P.n_eval_2d,), k_frame, device=device)  # (N,)
    frames[1 - k_frame / T] = forward_noise(x_data, ks, noise)
plotting.time_slider(frames, title="q(x_k | x_data) on the checkerboard, shown at t = 1 - k/T")

# %% [markdown]
# Starting from the data at $t = 1$ and moving left, the squares blur quickly, and long before $t = 0$ the
# cloud is indistinguishable from a Gaussian: a good part of the chain is spent on almost pure noise.
# That is the schedule's doing; section 2 prints where the signal goes.

# %% [markdown]
# ## 2. Two schedules and two clocks
#
# **Read this before any DDPM paper.** DDPM writes $x_0$ for the **data** and $x_T$ for the noise, and its
# index $k$ counts from data ($k = 0$) to noise ($k = T$). This course writes $x_0$ for the **noise** and
# $x_1$ for the data, with time $t$ running from noise ($t = 0$) to data ($t = 1$). So DDPM's $x_0$ is our
# $x_1$. `tutorlib.ddpm` never uses the name `x_0`: it says `x_data`, `x_noisy` (DDPM's $x_k$) and `x_T`.
#
# | | DDPM paper | this course |
# |---|---|---|
# | data | $x_0$ | $x_1$ |
# | noise | $x_T$, $\varepsilon$ | $x_0$ |
# | clock | integer $k = 0, \dots, T$ (0 is data) | $t \in [0, 1]$ (0 is noise) |
#
# The conversion is $t = 1 - k / T$. With it, the forward process is an affine path of the course,
# $x_t = \alpha_t x_1 + \sigma_t x_0$, with $\alpha_t = \sqrt{\bar\alpha_k}$ and $\sigma_t = \sqrt{1 - \bar\alpha_k}$:
# a *variance-preserving* path ($\alpha_t^2 + \sigma_t^2 = 1$) that lesson 04 studies in continuous time.
# Every network in the course is called as `model(x, t)`, so a DDPM network receives $t = 1 - k/T$, not $k$.

# %%
k_check = torch.tensor([T, 3 * T // 4, T // 2, T // 4, 0])
s = schedule.q_sample(torch.zeros(len(k_check), 2), k_check, torch.zeros(len(k_check), 2))
torch.testing.assert_close(s.t, 1 - k_check / T)
for kk, tt in zip(k_check.tolist(), s.t.tolist()):
    ab = alpha_bar[kk].item()
    print(f"k = {kk:4d}  ->  t = {tt:.2f}   alpha_t = {math.sqrt(ab):.4f}   sigma_t = {math.sqrt(1 - ab):.4f}")

# %% [markdown]
# DDPM's linear schedule spends many steps at very low signal. The **cosine** schedule of *Improved DDPM*
# defines $\bar\alpha_k$ directly, $\bar\alpha_k \propto \cos^2\!\big(\tfrac{\pi}{2} \tfrac{k/T + s}{1 + s}\big)$,
# so the signal fades evenly across the steps. Here is $\bar\alpha_k$ for both:

# %%
schedules = {"linear": schedule, "cosine": DDPMSchedule(cosine_betas(T))}
steps_k = torch.arange(T + 1)
curves = {name: (steps_k, sch.alpha_bar(steps_k)) for name, sch in schedules.items()}
for name, sch in schedules.items():
    ab = sch.alpha_bar(steps_k)
    half = int((ab < 0.5).nonzero()[0])
    print(f"{name:6s}: alpha_bar falls below 0.5 at k = {half} (t = {1 - half / T:.2f}); "
          f"alpha_bar_T = {float(ab[-1]):.2e}, so 1/sqrt(alpha_bar_T) = {float(ab[-1]) ** -0.5:.3g}")
plotting.metric_curves(curves, "DDPM step k (t = 1 - k/T)", "alpha_bar_k", log_x=False,
                       title="Signal kept after k steps: linear vs cosine betas")

# %% [markdown]
# The linear curve drops early and then flattens near zero for hundreds of steps; the cosine curve falls
# smoothly all the way. The last printed number matters later: to guess the data from pure noise a sampler
# divides by $\sqrt{\bar\alpha_T}$. The cosine schedule ends at $\bar\alpha_T \approx 0$, which makes that
# division blow up any error in the first few-step DDIM update, so in this lesson we train with the
# linear schedule (a cosine-schedule model needs tricks such as starting at $k < T$ or clipping).

# %% [markdown]
# ## 3. Training: predict the noise
#
# How do we learn to undo the noise? DDPM's answer: train a network $\varepsilon_\theta(x_k, t_k)$ to
# guess which noise was added,
#
# $$\mathcal L = \mathbb E_{x_\text{data},\, k \sim \mathcal U\{1..T\},\, \varepsilon}
# \big\| \varepsilon_\theta\big(\sqrt{\bar\alpha_k} x_\text{data} + \sqrt{1-\bar\alpha_k}\,\varepsilon,\ t_k\big) - \varepsilon \big\|^2 .$$
#
# Knowing the noise is knowing the denoised point: $\hat x_\text{data} = (x_k - \sqrt{1 - \bar\alpha_k}\,\varepsilon_\theta) / \sqrt{\bar\alpha_k}$.
# `tutorlib.losses.ddpm_loss` computes this loss; our batch sampler draws the data, the steps and the noise
# from the lesson's generator, and `tutorlib.train.train` runs the loop (AdamW, learning-rate warm-up and
# cosine decay, gradient clipping, and an EMA of the weights). The network is the course's 2D `TimeMLP`.
# `TrainConfig.from_profile(P)` is the course's measured 2D recipe (peak learning rate 3e-3); with a smaller
# one (try `lr=1e-3`) the model has not yet learned the squares' sharp edges within the profile's
# `P.steps_2d` steps: compare the share of samples inside the squares printed in section 6.

# %%
def batch_2d(step):
    x_data = data.checkerboard(P.batch_2d, generator=gen, device=device)  # (B, 2)
    k = torch.randint(1, T + 1, (P.batch_2d,), generator=gen).to(device)  # (B,) in 1..T
    noise = torch.randn(x_data.shape, generator=gen).to(device)  # (B, 2)
    return x_data, k, noise


def loss_2d(model, batch):
    return ddpm_loss(model, schedule, *batch)


eps_net = TimeMLP.from_profile(P).to(device)
cfg_2d = TrainConfig.from_profile(P)  # AdamW 3e-3, warm-up, cosine decay, EMA 0.999
print(f"TimeMLP with {count_parameters(eps_net):,} parameters; {cfg_2d}")
hist_2d = train(eps_net, loss_2d, batch_2d, cfg_2d)
print(f"trained: {hist_2d.describe()}")
tenth = max(1, len(hist_2d.losses) // 10)
claim("DDPM loss over the last tenth of training / over the first tenth",
      (sum(hist_2d.losses[-tenth:]) / tenth) / (sum(hist_2d.losses[:tenth]) / tenth), at_most=0.95)
plotting.loss_curve(hist_2d.steps, hist_2d.losses, window=100, title="DDPM epsilon loss on the checkerboard")

# %% [markdown]
# The loss stays far above zero, and that is expected: at large $k$ the noisy point says almost nothing
# about which $\varepsilon$ was drawn, so even a perfect network is wrong by nearly the whole noise there.

# %% [markdown]
# ## 4. Ancestral sampling: run the chain backwards
#
# DDPM's sampler (Algorithm 2 of the paper) starts from $x_T \sim \mathcal N(0, I)$ and takes $T$ small
# steps back towards the data. Each step removes the predicted noise and adds a little fresh noise:
#
# $$x_{k-1} = \frac{1}{\sqrt{1 - \beta_k}}\Big(x_k - \frac{\beta_k}{\sqrt{1 - \bar\alpha_k}}\,
# \varepsilon_\theta(x_k, t_k)\Big) + \sqrt{\beta_k}\, z, \qquad z \sim \mathcal N(0, I),$$
#
# with no noise on the last step ($k = 1$). One step, in plain PyTorch, with the tensors of section 1:

# %%
def ancestral_step(eps_model, x, k, z):
    """One DDPM step from x_k to x_{k-1}; x (B, 2), k an int in 1..T, z (B, 2) fresh noise (unused at k = 1)."""
    beta, ab = betas[k - 1].item(), alpha_bar[k].item()
    t = torch.full((x.shape[0],), 1 - k / T, device=x.device)  # (B,) course time of step k
    mean = (x - beta / math.sqrt(1 - ab) * eps_model(x, t)) / math.sqrt(1 - beta)  # (B, 2)
    return mean if k == 1 else mean + math.sqrt(beta) * z


@torch.no_grad()
def my_ancestral_sample(eps_model, x_T, generator):
    x = x_T
    for k in range(T, 0, -1):
        z = torch.randn(x.shape, generator=generator).to(x.device) if k > 1 else None  # (B, 2)
        x = ancestral_step(eps_model, x, k, z)
    return x


model_2d = hist_2d.ema_model  # the EMA weights (compared with the raw weights below)
x_T = torch.randn(P.n_eval_2d // 8, 2, generator=gen).to(device)  # (n, 2)
mine = my_ancestral_sample(model_2d, x_T, torch.Generator().manual_seed(1))
lib = ancestral_sample(model_2d, x_T, schedule, generator=torch.Generator().manual_seed(1))
torch.testing.assert_close(mine, lib.x, atol=1e-4, rtol=1e-4)
print(f"from-scratch ancestral sampling matches tutorlib.ddpm.ancestral_sample ({lib.nfe} model calls, "
      f"{len(x_T)} points)")

# %% [markdown]
# Is the model any good? Lesson 00's yardstick: the energy distance between model samples and held-out
# data, next to its **noise floor**, the distance between two independent data draws of the same size
# (`n = P.n_eval_2d`). A perfect sampler scores about the floor. We also compare the EMA weights with the raw
# weights at the end of training: with a short run the average can lag behind.

# %%
floor = metrics.noise_floor(data.checkerboard, P.n_eval_2d, generator=gen, repeats=10)
x_test = data.checkerboard(P.n_eval_2d, generator=gen, device=device)  # (N, 2) held-out data
x_T = torch.randn(P.n_eval_2d, 2, generator=gen).to(device)  # (N, 2) one start for every sampler below
print(f"noise floor (n = {floor.n}): {floor.mean:.4f} ± {floor.std:.4f}")
for name, net in {"raw": hist_2d.model, "EMA": hist_2d.ema_model}.items():
    x_gen = ancestral_sample(net, x_T, schedule, generator=torch.Generator().manual_seed(2)).x
    ed = float(metrics.energy_distance(x_gen, x_test))
    print(f"{name:3s} weights, ancestral, {T} steps: energy distance {ed:.4f} = {floor.ratio(ed):.2f} x floor")

# %% [markdown]
# The cell above prints both. We keep the EMA weights (`model_2d`), the course's default, and section 6
# checks that they are within twice the noise floor.

# %% [markdown]
# ## 5. DDIM: a deterministic shortcut
#
# The ancestral sampler needs all $T$ steps; can we take fewer, bigger ones? *Denoising Diffusion Implicit
# Models* notices that the loss only constrains the marginals $q(x_k \mid x_\text{data})$, so many samplers
# fit the same network. The deterministic one (DDIM with $\eta = 0$) jumps from step $k$ to any earlier
# step $k' < k$:
#
# $$\hat x_\text{data} = \frac{x_k - \sqrt{1 - \bar\alpha_k}\,\varepsilon_\theta(x_k, t_k)}{\sqrt{\bar\alpha_k}},
# \qquad x_{k'} = \sqrt{\bar\alpha_{k'}}\, \hat x_\text{data} + \sqrt{1 - \bar\alpha_{k'}}\, \varepsilon_\theta(x_k, t_k).$$
#
# In words: guess the data, then re-noise the guess to level $k'$ with the *same* predicted noise instead of
# fresh noise. (Lesson 04 shows that this is Euler's method on the probability-flow ODE.) You write this step
# in the second exercise. With `steps = S`, both `ddim_sample` and `ancestral_sample` visit $S$ evenly spaced
# indices from $T$ down to 1 and then 0 (the ancestral sampler is "respaced" as in *Improved DDPM*):

# %%
print("10 steps visit k =", schedule.step_indices(10))

# %% [markdown]
# ## 6. How many steps? Quality against steps, measured
#
# We sample the same starting noise $x_T$ with both samplers at several step counts, from 5 to the full $T$,
# and score each against the held-out data.

# %%
step_counts = [s for s in (5, 10, 20, 50, 100, 250) if s < T] + [T]
ed = {"ancestral": [], "DDIM": []}
samples = {}
start = time.perf_counter()
for steps in step_counts:
    samples["ancestral", steps] = ancestral_sample(model_2d, x_T, schedule, steps=steps,
                                                   generator=torch.Generator().manual_seed(2)).x
    samples["DDIM", steps] = ddim_sample(model_2d, x_T, schedule, steps=steps).x
    for name in ed:
        ed[name].append(float(metrics.energy_distance(samples[name, steps], x_test)))
print(f"sampling sweep took {time.perf_counter() - start:.1f} s")
print(f"{'steps':>6s} {'ancestral':>18s} {'DDIM':>18s}   (energy distance, x floor)")
for i, steps in enumerate(step_counts):
    a, d = ed["ancestral"][i], ed["DDIM"][i]
    print(f"{steps:6d} {a:9.4f} ({floor.ratio(a):5.2f}x) {d:9.4f} ({floor.ratio(d):5.2f}x)")
plotting.metric_curves({name: (step_counts, v) for name, v in ed.items()}, "sampling steps (= NFE)",
                       "energy distance to held-out data", floor=floor, log_y=True,
                       title="DDPM on the checkerboard: quality vs number of steps")

# %% [markdown]
# Both curves fall towards the grey band of the noise floor as the number of steps grows. With only a few
# steps each jump is large: the ancestral sampler adds noise it has too few steps to remove again, and
# DDIM's straight-line guesses of $\hat x_\text{data}$ miss the curved path. The numbers to remember are
# these (lesson 03 compares flow matching with them at 10 steps):

# %%
i_full, i_10 = step_counts.index(T), step_counts.index(10)
ed_full = ed["ancestral"][i_full]
print(f"noise floor (n = {P.n_eval_2d}):          {floor.mean:.4f}")
print(f"ancestral, {T} steps:            {ed_full:.4f}  = {floor.ratio(ed_full):.2f} x floor")
print(f"ancestral, 10 steps:              {ed['ancestral'][i_10]:.4f}  = {floor.ratio(ed['ancestral'][i_10]):.2f} x floor")
print(f"DDIM,      10 steps:              {ed['DDIM'][i_10]:.4f}  = {floor.ratio(ed['DDIM'][i_10]):.2f} x floor")
claim(f"ancestral sampler, all {T} steps: energy distance / noise floor", floor.ratio(ed_full),
      at_most={"standard": 2.0, "smoke": 60.0})
claim("10 steps (the better of ancestral and DDIM) / the full chain", min(ed["ancestral"][i_10], ed["DDIM"][i_10]) / ed_full,
      at_least={"standard": 1.0})

# %% [markdown]
# What do these numbers look like? Besides the picture, two plain statistics: the share of points that land
# inside a filled square of the board (the data: all of them) and the spread of the cloud (its standard
# deviation per axis, averaged).

# %%
def inside_squares(x):
    """Share of points (N, 2) inside a filled square of lesson 00's 4 x 4 checkerboard."""
    return float(data.in_checkerboard(x).float().mean())


shown = {"held-out data": x_test, f"ancestral, {T} steps": samples["ancestral", T],
         "ancestral, 10 steps": samples["ancestral", 10], "DDIM, 10 steps": samples["DDIM", 10]}
for name, x in shown.items():
    print(f"{name:20s} inside a square: {inside_squares(x):6.1%}   spread: {float(x.std(0).mean()):.2f}")
# what the next paragraph says
spread_data = float(x_test.std(0).mean())
claim("ancestral, 10 steps: spread / the data's spread", float(shown["ancestral, 10 steps"].std(0).mean()) / spread_data,
      at_most={"standard": 1.0})
claim("DDIM, 10 steps: spread / the data's spread", float(shown["DDIM, 10 steps"].std(0).mean()) / spread_data,
      at_most={"standard": 1.0})
claim("share inside a square: DDIM 10 steps minus ancestral 10 steps",
      inside_squares(shown["DDIM, 10 steps"]) - inside_squares(shown["ancestral, 10 steps"]), at_least={"standard": 0.0})
claim("share of the full-chain samples inside a square", inside_squares(shown[f"ancestral, {T} steps"]),
      at_least={"standard": 0.9})
plotting.scatter_grid(shown, cols=4)

# %% [markdown]
# With the full chain the squares are filled evenly and few points stray. At 10 steps (compare the printed
# spreads) the cloud is pulled towards the centre, so the outer squares thin out; the ancestral samples also
# spill into the empty squares, while DDIM's mostly stay inside a square. Few-step generation is where the
# rest of the course (flow matching, straight paths, better solvers) makes its gains.

# %% [markdown]
# ## 7. DDPM on MNIST
#
# Nothing in the recipe is specific to 2D: swap the MLP for the course's MNIST network and the checkerboard
# for MNIST digits (shape `(1, 28, 28)`, values in $[-1, 1]$). The network is a `PatchUNet` (a small U-Net
# that works on 2x2 patches; lesson 09 explains it). It also receives each digit's label, as a second
# input next to $t$: a model of all ten digits at once needs far more training before its samples read as
# digits, while a label-conditional one learns ten simpler distributions, and the judge can then check
# each sample against the digit it was asked for. Training uses the course's MNIST recipe at its large-batch
# settings (`MNISTRecipe.large_batch(P)`: AdamW with warm-up and cosine decay, an EMA of the weights,
# `P.steps_mnist` steps of `P.batch_mnist` digits; lesson 09's flow matching now trains on smaller batches). That is
# several minutes of CPU time, so the standard profile's weights ship with the course:
# `tutorlib.recipes.load_or_train_mnist_ddpm` (the epsilon loss of section 3, written there with the label as a
# second input) finds `ddpm_mnist_standard.pt`, checks its sha256 and its configuration (the recipe, $T$, the
# seed, the number of training digits) and loads it; with any other configuration it trains (and saves the
# result for next time). The run draws from its own seeded generator, so its weights do not depend on the
# cells above.

# %%
images, labels = data.load_mnist("train", limit=P.mnist_limit)
recipe = MNISTRecipe.large_batch(P)  # sizes from the profile: steps, batch, width
# the loss of section 3 with the label as a second input: model(x_k, t_k, y) regresses the noise
run = load_or_train_mnist_ddpm(recipe, images, labels, schedule, name=f"ddpm_mnist_{P.name}", seed=0, device=device)
unet = run.model
print(f"PatchUNet with {count_parameters(unet):,} parameters; "
      + (f"loaded {run.path.name} ({run.metadata['history']['steps_done']} steps, trained earlier)" if run.loaded
         else f"trained: {run.result.describe()}"))

# %% [markdown]
# We sample ten digits of each class with 50 DDIM steps (the full ancestral chain would cost 1000 network
# calls per digit) and ask lesson 00's judge what it sees: how often it reads a sample as the digit it was
# generated for, and the Fréchet distance in its features against held-out test digits, next to the floor of
# real training digits against the same test digits.

# %%
judge = load_judge()
n_judge = P.n_eval_mnist // 2
test_images, _ = data.load_mnist("test", limit=n_judge, device=device)
y_gen = torch.arange(10, device=device).repeat_interleave(n_judge // 10)  # (n,) 0, 0, ..., 9, 9
x_T_mnist = torch.randn(len(y_gen), 1, 28, 28, generator=gen).to(device)  # (n, 1, 28, 28)
start = time.perf_counter()
digits = ddim_sample(lambda x, t: unet(x, t, y_gen), x_T_mnist, schedule, steps=50).x.clamp(-1, 1)
accuracy = judge_accuracy(digits, y_gen, judge)
fd = frechet_distance(digits, test_images, judge)
fd_floor = frechet_distance(images[:n_judge], test_images, judge)
print(f"{len(y_gen)} digits in {time.perf_counter() - start:.0f} s (DDIM, 50 steps)")
print(f"the judge reads {accuracy:.1%} of them as the digit they were generated for")
print(f"Frechet distance to test digits {fd:.2f} (real training digits: {fd_floor:.2f}, {fd / fd_floor:.1f} x that floor)")
claim("DDPM on MNIST (DDIM, 50 steps): judge accuracy on its labels", accuracy, at_least={"standard": 0.6})
claim("DDPM on MNIST: Frechet distance / the train-vs-test floor", fd / fd_floor, at_most={"standard": 10.0})
show = torch.cat([digits[y_gen == d][:4] for d in range(10)])  # (40, ...) four of each digit, by class
plotting.image_grid(show, nrow=4, title=f"DDPM on MNIST, {recipe.steps} training steps: four samples of each digit")

# %% [markdown]
# Each row holds four samples of one digit, 0 to 9 from the top. The cell above prints how often the judge
# agrees with the label and how far the samples' feature statistics are from real digits'. At this size
# (3000 training steps, no guidance) the judge reads most of the samples, not all, as the digit asked for
# (the claim asks for at least 60 %), and their features stay several times further from real test digits
# than real training digits are (the claim: at most 10 times the floor). Lesson 09 trains
# the same network with flow matching instead of the epsilon loss and adds classifier-free guidance;
# appendix A compares DDPM and flow matching at scale.

# %% [markdown]
# ## Exercises
#
# **1. Forward noising.** Write `forward_noising(x_data, noise, alpha_bar)` returning
# $x_k = \sqrt{\bar\alpha_k}\, x_\text{data} + \sqrt{1 - \bar\alpha_k}\, \varepsilon$, where `x_data` and `noise`
# have shape `(B, 2)` and `alpha_bar` holds one $\bar\alpha_k$ per sample, shape `(B,)`.

# %%
def forward_noising(x_data, noise, alpha_bar):
    # TODO: scale the data and the noise; mind the shape of alpha_bar
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def forward_noising(x_data, noise, alpha_bar):
    ab = alpha_bar[:, None]  # (B, 1)
    return ab.sqrt() * x_data + (1 - ab).sqrt() * noise  # (B, 2)


# %%
check_forward_noising(forward_noising)

# %% [markdown]
# **2. One DDIM step.** Write `ddim_step(x_noisy, eps, alpha_bar, alpha_bar_prev)`: from $x_k$ and the
# predicted noise $\varepsilon$, compute $\hat x_\text{data}$ and return $x_{k'}$ (section 5, $\eta = 0$).
# `x_noisy` and `eps` have shape `(B, 2)`; `alpha_bar` ($\bar\alpha_k$) and `alpha_bar_prev`
# ($\bar\alpha_{k'}$, $k' < k$) have shape `(B,)`.

# %%
def ddim_step(x_noisy, eps, alpha_bar, alpha_bar_prev):
    # TODO: estimate the data from x_noisy and eps, then re-noise it to level alpha_bar_prev with the same eps
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def ddim_step(x_noisy, eps, alpha_bar, alpha_bar_prev):
    ab, ab_prev = alpha_bar[:, None], alpha_bar_prev[:, None]  # (B, 1)
    x_data_hat = (x_noisy - (1 - ab).sqrt() * eps) / ab.sqrt()  # (B, 2)
    return ab_prev.sqrt() * x_data_hat + (1 - ab_prev).sqrt() * eps  # (B, 2)


# %%
check_ddim_step(ddim_step)

# %% [markdown]
# **Going further (no self-check).** Retrain section 3 with `DDPMSchedule(cosine_betas(T))` and redo the
# step sweep of section 6: what happens to DDIM at 5 and 10 steps, and why (look at $1/\sqrt{\bar\alpha_T}$
# in section 2)? Then try starting the samplers from $k = T - 1$ instead.

# %% [markdown]
# ## Summary
#
# - The forward process jumps straight to any step: $x_k = \sqrt{\bar\alpha_k}\, x_\text{data} + \sqrt{1-\bar\alpha_k}\,\varepsilon$;
#   the $\beta$ schedule (linear or cosine) decides how fast $\bar\alpha_k$ falls.
# - DDPM's $x_0$ is data; the course's $x_0$ is noise. Convert with $t = 1 - k/T$; the forward process is the
#   variance-preserving path $\alpha_t = \sqrt{\bar\alpha_k}$, $\sigma_t = \sqrt{1 - \bar\alpha_k}$.
# - Training is regression of the added noise (`ddpm_loss` through `train`); no simulation is needed.
# - The ancestral sampler reaches the noise floor with all $T$ steps; with 10 steps both it and DDIM degrade
#   markedly (section 6 prints by how much): the motivation for the rest of the course.
#
# ## References
# - *Denoising Diffusion Probabilistic Models* (Ho, Jain, Abbeel, 2020): the forward process, the epsilon
#   loss and the ancestral sampler (Algorithms 1 and 2).
# - *Step-by-Step Diffusion: An Elementary Tutorial* (Nakkiran, Bradley, Zhou, Advani, 2024).
# - *Denoising Diffusion Implicit Models* (Song, Meng, Ermon, 2021): the DDIM sampler.
# - *Improved Denoising Diffusion Probabilistic Models* (Nichol, Dhariwal, 2021): the cosine schedule and
#   respaced sampling.

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
