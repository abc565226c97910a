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
# # 00 · Setup, toy data and notation
#
# **Learning goals**
# - check that your machine runs the course: the device (GPU or CPU) and the run-size profile;
# - meet the nine 2D toy distributions and MNIST, the data of every later lesson;
# - learn the notation used all course long: `x_0` is noise, `x_1` is data, `t` runs from 0 to 1;
# - meet the sample-quality metrics used all course long: energy distance and MMD against held-out
#   data, read against their *noise floor*; for MNIST, a judge classifier's accuracy and the
#   Fréchet distance in its features.
#
# **Prerequisites:** Python and a little PyTorch.
#
# **Run time** (measured by `make verify` on 2026-12-02, 2-core CPU): CPU standard ≈ 16 s · GPU standard: not measured yet · smoke ≈ 6 s. The last cell prints this run's time.
#
# **Loads:** MNIST (about 11 MB, downloaded once and checked) and the course's MNIST judge
# classifier (`data/checkpoints/judge_mnist.pt`). **Trains:** nothing.

# %% [markdown]
# ## Setup
#
# Every lesson starts with the same three calls. `get_device()` picks a CUDA GPU, then Apple's
# MPS, then the CPU (set `TUTORLIB_DEVICE=cpu` to force one). `seed_everything` seeds every
# random generator once and hands back a `torch.Generator` for the library's samplers.
# `profile()` reads `TUTORLIB_PROFILE` (`smoke`, `standard` or `full`) and holds every size the
# lesson uses, so the same code runs in seconds for the tests and in minutes for you.

# %%
import time

import torch

from tutorlib import data, metrics, plotting
from tutorlib.claims import claim
from tutorlib.device import get_device, profile, seed_everything, set_threads
from tutorlib.exercises.lesson00 import check_energy_distance, check_mmd
from tutorlib.judge import frechet_distance, judge_accuracy

lesson_start = time.perf_counter()
device = get_device()
threads = set_threads()
gen = seed_everything(0)
P = profile()
print(f"torch {torch.__version__} on {device} ({threads} CPU threads); profile {P.name!r}")
print(P)

# %% [markdown]
# ## 1. Notation
#
# | symbol | meaning |
# |---|---|
# | `x_0 ~ p_0` | a **source** sample: standard Gaussian noise, `N(0, I)` |
# | `x_1 ~ p_1` | a **data** sample |
# | `t ∈ [0, 1]` | time, from noise (`t = 0`) to data (`t = 1`) |
# | `x_t`, `p_t` | a point on a path between `x_0` and `x_1`, and the distribution of such points |
# | `dx_t` | the velocity `d x_t / dt` of a path |
# | `alpha_t`, `sigma_t` | affine paths: `x_t = alpha_t x_1 + sigma_t x_0` |
#
# Diffusion papers (DDPM, lesson 01) run their time index the other way, with step `k = T`
# as pure noise; where they appear we convert explicitly, `t = 1 - k / T`.

# %% [markdown]
# ## 2. The 2D toy distributions
#
# Each sampler has the same signature, `sampler(n, generator=None, device=None)`, returns a
# float32 tensor of shape `(n, 2)`, and is repeatable under a generator. All of them are scaled
# to roughly `[-4, 4]²`, so one Gaussian source and one small network suit them all.

# %%
clouds = {name: getattr(data, name)(P.n_eval_2d, generator=gen) for name in data.TOY_DATASETS}
for name, x in clouds.items():
    m, s = x.mean(0).tolist(), x.std(0).tolist()
    print(f"{name:22s} shape {tuple(x.shape)}  mean ({m[0]:+.2f}, {m[1]:+.2f})  std ({s[0]:.2f}, {s[1]:.2f})")
plotting.scatter_grid(clouds)

# %% [markdown]
# Every dataset also comes with class labels (mixture component, arm, ring, square...). Lesson 08
# uses them to guide generation towards one class.

# %%
x, y = data.sample_labelled("eight_gaussians", 8, generator=gen)
print("points", x.shape, "labels", y.tolist(), "classes", data.TOY_DATASETS["eight_gaussians"].num_classes)

# %% [markdown]
# The source is a standard Gaussian with the same shape as the data:

# %%
x_0 = data.gaussian(P.n_eval_2d, generator=gen)
plotting.scatter_2d({"source x_0": x_0, "data x_1 (checkerboard)": clouds["checkerboard"]})

# %% [markdown]
# ## 3. MNIST
#
# `load_mnist` reads the four standard files (downloading and verifying them the first time;
# set `TUTORLIB_MNIST_MIRROR` to a URL or folder for a classroom or offline copy) and returns
# images of shape `(N, 1, 28, 28)` scaled to `[-1, 1]`, and int64 labels.

# %%
images, labels = data.load_mnist("train", limit=P.mnist_limit)
print(f"{images.shape[0]} training images, shape {tuple(images.shape[1:])}, "
      f"range [{images.min():.0f}, {images.max():.0f}], dtype {images.dtype}")
print("images per class:", torch.bincount(labels, minlength=10).tolist())
plotting.image_grid(images[:32], nrow=8, labels=labels[:32], title="The first 32 training digits")

# %% [markdown]
# ## 4. Measuring sample quality
#
# How do we know a generative model is good? On 2D data we compare its samples $X$ with
# held-out data $Y$. The **energy distance** is
#
# $$D^2(X, Y) = 2\,\mathbb{E}\|X - Y\| - \mathbb{E}\|X - X'\| - \mathbb{E}\|Y - Y'\|,$$
#
# which is zero exactly when the two distributions agree. With finite samples we average over all
# pairs (the "V-statistic"), which is never negative and is biased upwards by about $1/n$. Here it
# is in three lines of plain PyTorch, checked against `tutorlib.metrics.energy_distance`:

# %%
def energy_distance_from_scratch(x, y):
    return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()


a, b = clouds["checkerboard"], data.checkerboard(P.n_eval_2d, generator=gen)
ours, lib = energy_distance_from_scratch(a.double(), b.double()), metrics.energy_distance(a, b)
torch.testing.assert_close(ours, lib)
print(f"energy distance between two independent checkerboard draws: {lib:.5f} (from scratch: {ours:.5f})")

# %% [markdown]
# That number is not zero even though both sets come from the same distribution: it is the
# **noise floor**, what a *perfect* model would score against $n$ held-out points. Every lesson
# reports a model's score as a multiple of this floor ("within 2x the floor"), measured at the same
# sample size. The floor shrinks like $1/n$:

# %%
sizes = [P.n_eval_2d // 4, P.n_eval_2d // 2, P.n_eval_2d]
floors = {n: metrics.noise_floor(data.checkerboard, n, generator=gen) for n in sizes}
for n, fl in floors.items():
    print(f"n = {n:5d}: floor {fl.mean:.5f} ± {fl.std:.5f}   n x floor = {n * fl.mean:.2f}")
claim("the floor at n/4 points over the floor at n points (1/n scaling: about 4)",
      floors[sizes[0]].mean / floors[sizes[-1]].mean, at_least=2.0, at_most=8.0)

# %% [markdown]
# Now three stand-in "models" of decreasing quality: perfect samples, samples blurred by Gaussian
# noise, and the source distribution itself. The **MMD** with Gaussian kernels at several
# bandwidths is a second, kernel-based distance that tells the same story.

# %%
n = P.n_eval_2d
floor = floors[n]
mmd_floor = metrics.noise_floor(data.checkerboard, n, metric=metrics.mmd_rbf, generator=gen)
held_out = data.checkerboard(n, generator=gen)
candidates = {
    "perfect sampler": data.checkerboard(n, generator=gen),
    "blurred (noise 0.3)": data.checkerboard(n, generator=gen) + 0.3 * data.gaussian(n, generator=gen),
    "blurred (noise 0.6)": data.checkerboard(n, generator=gen) + 0.6 * data.gaussian(n, generator=gen),
    "source N(0, I)": data.gaussian(n, generator=gen),
}
ratios = {}
print(f"{'':22s} {'energy':>9s} {'x floor':>8s} {'MMD':>9s} {'x floor':>8s}")
for name, x in candidates.items():
    ed, mmd = metrics.energy_distance(x, held_out), metrics.mmd_rbf(x, held_out)
    ratios[name] = floor.ratio(ed)
    print(f"{name:22s} {ed:9.5f} {ratios[name]:8.1f} {mmd:9.5f} {mmd_floor.ratio(mmd):8.1f}")
claim("perfect sampler: energy distance / floor", ratios["perfect sampler"], at_most={"standard": 2.0, "smoke": 4.0})
claim("the source N(0, I): energy distance / floor", ratios["source N(0, I)"], at_least={"standard": 100, "smoke": 30})
# at smoke size (n = 500) the floor's own spread can reorder the blurs: that claim is for standard only
claim("blur 0.6 over the worse of blur 0.3 and the perfect sampler",
      ratios["blurred (noise 0.6)"] / max(ratios["perfect sampler"], ratios["blurred (noise 0.3)"]),
      at_least={"standard": 1.0})
plotting.scatter_2d({"held-out data": held_out, "blurred (noise 0.3)": candidates["blurred (noise 0.3)"]},
                    title="A blurred model: how many times the floor?")

# %% [markdown]
# The perfect sampler scores about 1x the floor (give or take the floor's own spread, printed
# above), the source two orders of magnitude more. Look closely at the blurred samplers: a blur
# you can see in the plot may still score under 2x the floor at this sample size. "Within 2x the
# floor", the bar later lessons use, is a sanity check, not a certificate: always look at the
# samples too, and compare models at the *same* sample size.
#
# ### MNIST: a judge classifier
#
# For images, distances between raw pixels say little. The course ships a small CNN **judge**
# trained once on MNIST (see `data/checkpoints/README.md`). Two numbers use it: the **accuracy**
# of generated digits against the labels they were generated for, and the **Fréchet distance**
# between Gaussian fits of the judge's 128-dimensional features of two image sets (the idea behind
# FID). The Fréchet distance has a floor too: real training images against real test images.

# %%
test_images, test_labels = data.load_mnist("test", limit=P.n_eval_mnist)
train_images = images[: P.n_eval_mnist]
acc = judge_accuracy(test_images, test_labels)
fd_floor = frechet_distance(train_images, test_images)
noisy = (test_images + 0.5 * torch.randn(test_images.shape, generator=gen)).clamp(-1, 1)
fd_noisy = frechet_distance(train_images, noisy)
print(f"judge accuracy on {len(test_images)} real test digits: {acc:.2%}")
print(f"Fréchet distance, train vs test (the floor): {fd_floor:.2f}")
print(f"Fréchet distance, train vs noisy test digits: {fd_noisy:.2f}  ({fd_noisy / fd_floor:.0f} x floor)")
print(f"judge accuracy on the noisy digits: {judge_accuracy(noisy, test_labels):.2%}")
claim("judge accuracy on real test digits", acc, at_least={"standard": 0.98, "smoke": 0.9})
claim("Frechet distance of noisy digits / train-vs-test floor", fd_noisy / fd_floor, at_least={"standard": 5, "smoke": 2})
plotting.image_grid(noisy[:16], nrow=8, title="Noisy test digits: the judge's features notice at once")

# %% [markdown]
# ## Exercises
#
# **Exercise 1 — energy distance.** Write `energy_distance(x, y)` for samples `x` of shape
# `(N, D)` and `y` of shape `(M, D)`, returning the V-statistic above as a 0-d tensor
# (`torch.cdist` computes all pairwise distances).

# %%
def energy_distance(x, y):
    # TODO: 2 E|X - Y| - E|X - X'| - E|Y - Y'|, averaging over all pairs
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def energy_distance(x, y):
    return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()


# %%
check_energy_distance(energy_distance)

# %% [markdown]
# **Exercise 2 — MMD with one Gaussian kernel.** Write `mmd(x, y, h)`, the squared maximum mean
# discrepancy $\mathbb{E}k(X, X') + \mathbb{E}k(Y, Y') - 2\,\mathbb{E}k(X, Y)$ with
# $k(a, b) = \exp(-\|a - b\|^2 / 2h^2)$, averaging over all pairs.

# %%
def mmd(x, y, h):
    # TODO: kernel means over all pairs of x with x, y with y, and x with y
    raise NotImplementedError


# %% tags=["solution", "hide-input"]
def mmd(x, y, h):
    k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h))
    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


# %%
check_mmd(mmd)

# %% [markdown]
# **Going further.** Use your `energy_distance` to measure how the floor of the *two spirals* at
# `n = 500` compares with the checkerboard's. Which dataset is harder to match, by this measure?

# %% [markdown]
# ## Summary
#
# - `get_device`, `seed_everything` and `profile` set up every lesson;
# - toy samplers share one signature and one scale; `sample_labelled` adds class ids;
# - MNIST arrives as `(N, 1, 28, 28)` tensors in `[-1, 1]`;
# - sample quality is measured against held-out data and always read against a noise floor: energy
#   distance and MMD in 2D, judge accuracy and Fréchet distance on MNIST.
#
# ## References
# - *Flow Matching Guide and Code* (Lipman et al.) — the notation this course follows.
# - *Step-by-Step Diffusion: An Elementary Tutorial* (Nakkiran et al.).
# - Energy distance: Székely and Rizzo, *Energy statistics: A class of statistics based on distances*.
# - MMD: Gretton et al., *A Kernel Two-Sample Test*.

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
