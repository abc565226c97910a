"""Case ``text``: character-level models of the ``pydoc_data`` help texts, in held-out bits per character (lesson 10).

The corpus is :func:`tutorlib.text.load_corpus` (every tenth block of 4,096 characters held out). Every
model is scored on the same held-out windows of ``L`` characters, each on its own:

* ``bigram``: add-0.1 smoothed character bigram of the training text (:func:`tutorlib.text.fit_bigram`);
* ``autoregressive``: a causal :class:`~tutorlib.text.CharTransformer`, exact negative log-likelihood;
* ``dfm-mask`` / ``dfm-unif``: a bidirectional, time-conditioned :class:`~tutorlib.text.CharTransformer`
  trained as a discrete flow on the mixture path with ``kappa_t = t`` from a masked / a uniform source; the
  number is an **upper bound** (the CTMC evidence bound, :func:`tutorlib.text.heldout_elbo`, ``DRAWS``
  stratified draws of ``t`` per window), with the standard error of its Monte Carlo estimate.

All three transformers share one :class:`~tutorlib.text.TextRecipe` (``TextRecipe.from_profile(bp.P)``):
same width, depth, steps, batch, learning-rate schedule and seed. The flows are also sampled with
``SAMPLE_NFE`` Euler steps and the AR model character by character; the decoded samples are stored in the
JSON (``metrics[DATASET]["samples"]``), and the tokens in ``samples.npz`` as ``METHOD@NFE`` int64
``(n, L)`` arrays (``data``: the first held-out windows).

The document differs from the 2D cases: ``metrics[DATASET]["entries"][METHOD]`` holds ``bpc``, ``bound``
(whether it is an upper bound), ``stderr`` and ``nats``; there are no energy distances or noise floors.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from bench.common import BenchProfile, Run, _Dataset, generator, log, timed
from tutorlib.discrete import discrete_euler
from tutorlib.text import (TextRecipe, autoregressive_nll, autoregressive_sample, bits_per_char, decode, encode,
                           fit_bigram, heldout_elbo, heldout_windows, load_corpus, train_text_model)

DATASET = "pydoc_topics"
DRAWS = 4  # stratified draws of t per held-out window for the flows' bound
SAMPLE_NFE = 64  # Euler steps of the flows' samples
N_SAMPLES = 4  # samples per model
EVAL_WINDOWS = {"smoke": 64, "standard": None, "full": None}  # held-out windows scored (None: all)
FLOWS = {"dfm-mask": "mask", "dfm-unif": "uniform"}  # method -> source of the mixture path


class TextRun(Run):
    """A :class:`bench.common.Run` whose one "dataset" is the corpus: no 2D reference, no noise floor."""

    def __init__(self, bp: BenchProfile, seed: int, device: torch.device):
        super().__init__("text", bp, seed, device, (DATASET,))
        self.datasets[DATASET] = _Dataset(sampler=None, data=torch.zeros(0, 2), floors={})
        self.chars = 0

    def add_score(self, method: str, nats: torch.Tensor, chars: int, *, bound: bool, seconds: float) -> dict[str, Any]:
        """Record per-window nats ``(M,)`` of a method as bits per character (with the estimate's standard error)."""
        M = nats.numel()
        record = {"bpc": bits_per_char(nats.sum(), chars), "bound": bound, "nats": float(nats.sum()),
                  "stderr": float(nats.std()) * math.sqrt(M) / (chars * math.log(2)) if bound else 0.0}
        self.datasets[DATASET].entries[method] = record
        self.datasets[DATASET].sample_s[method] = seconds
        log(f"[text] {method}: {record['bpc']:.3f} bits per character{' (bound)' if bound else ''}")
        return record

    def result(self) -> dict[str, Any]:
        doc = super().result()
        doc["metrics"][DATASET]["n"] = self.chars
        doc["metrics"][DATASET].pop("noise_floor", None)
        return doc


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train the three transformers of the recipe, fit the bigram, score all four on held-out windows, sample."""
    run = TextRun(bp, seed, device)
    corpus = load_corpus()
    recipe = TextRecipe.from_profile(bp.P)
    L = recipe.length
    tokens = encode(corpus.train).to(device)
    windows = heldout_windows(corpus, L)
    limit = EVAL_WINDOWS[bp.name]
    windows = (windows if limit is None else windows[:limit]).to(device)  # (M, L)
    run.chars = chars = windows.numel()
    ds = run.datasets[DATASET]
    ds.extra.update(windows=int(windows.shape[0]), length=L, samples={}, corpus={
        **corpus.config(), "python": corpus.python, "topics": corpus.topics, "train_chars": len(corpus.train),
        "heldout_chars": sum(map(len, corpus.heldout_blocks))})
    run.arrays["data"] = windows[:N_SAMPLES].cpu().numpy()

    bigram, s = timed(lambda: fit_bigram(tokens.cpu()), device)
    run.add_score("bigram", bigram.nll(windows.cpu()), chars, bound=False, seconds=s)
    g = generator(seed, "bigram", "sample")
    x = bigram.sample(N_SAMPLES, L, generator=g)
    run.arrays["bigram@1"] = x.numpy()
    ds.extra["samples"]["bigram"] = [decode(r) for r in x]

    methods = {"autoregressive": None, **{m: recipe.path(src) for m, src in FLOWS.items()}}
    for method, path in methods.items():
        model, hist = train_text_model(recipe, tokens, path, seed=seed, progress=False)
        run.add_training(DATASET, method, hist)
        g = generator(seed, method, "eval")
        with torch.no_grad():
            if path is None:
                nats, s = timed(lambda: autoregressive_nll(model, windows), device)
            else:
                nats, s = timed(lambda: heldout_elbo(model, path, windows, draws=DRAWS, generator=g), device)
        run.add_score(method, nats, chars, bound=path is not None, seconds=s)
        g = generator(seed, method, "sample")
        if path is None:
            x = autoregressive_sample(model, N_SAMPLES, L, generator=g)
            name = f"{method}@{L}"
        else:
            x_0 = path.sample_source((N_SAMPLES, L), generator=g, device=device)
            x = discrete_euler(model, path, x_0, steps=SAMPLE_NFE, generator=g).x
            name = f"{method}@{SAMPLE_NFE}"
        run.arrays[name] = x.cpu().numpy()
        ds.extra["samples"][method] = [decode(r) for r in x.cpu()]
    run.config = {
        "recipe": dataclasses.asdict(recipe), "draws": DRAWS, "sample_nfe": SAMPLE_NFE,
        "eval_windows": int(windows.shape[0]), "bigram_alpha": bigram.alpha,
        "methods": {"bigram": "add-alpha character bigram, first character by the unigram law",
                    "autoregressive": "causal CharTransformer after a start token: exact NLL",
                    "dfm-mask": "discrete flow, masked source, kappa_t = t: CTMC evidence bound",
                    "dfm-unif": "discrete flow, uniform source, kappa_t = t: CTMC evidence bound"},
    }
    return run
