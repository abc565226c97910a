# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
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
# - learn the notation used all course long: `x_0` is noise, `x_1` is data, `t` runs from 0 to 1.
#
# **Prerequisites:** Python and a little PyTorch.
#
# **Run time** (measured, top to bottom): CPU standard ≈ 5 s · GPU standard ≈ 5 s · smoke ≈ 5 s.
# The last cell prints this run's time.
#
# **Loads:** MNIST (about 11 MB, downloaded once and checked). **Trains:** nothing.

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

from tutorlib import data, plotting
from tutorlib.device import get_device, profile, seed_everything

lesson_start = time.perf_counter()
device = get_device()
gen = seed_everything(0)
P = profile()
print(f"torch {torch.__version__} on {device}; profile {P.name!r}")
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
# ## Summary
#
# - `get_device`, `seed_everything` and `profile` set up every lesson;
# - toy samplers share one signature and one scale; `sample_labelled` adds class ids;
# - MNIST arrives as `(N, 1, 28, 28)` tensors in `[-1, 1]`.
#
# ## References
# - *Flow Matching Guide and Code* (Lipman et al.) — the notation this course follows.
# - *Step-by-Step Diffusion: An Elementary Tutorial* (Nakkiran et al.).

# %%
print(f"lesson ran in {time.perf_counter() - lesson_start:.1f} s (profile {P.name}, device {device})")
