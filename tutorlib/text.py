"""Character-level text for discrete flows (lesson 10): a corpus, its split, tokens, baselines, bits per character.

Every Python installation carries an English corpus: the documentation text of ``help()``, the dict
``pydoc_data.topics.topics`` (about 80 topics, close to half a million characters). Lesson 10 models it
one character per token::

    corpus = load_corpus()                               # normalised text, train / held-out split
    train = encode(corpus.train)                         # int64 (N,) in [0, K), K = len(VOCAB) = 96
    held = heldout_windows(corpus, length=64)            # (M, 64) held-out windows, none crossing a gap
    bigram = fit_bigram(train, VOCAB_SIZE)
    print(bits_per_char(bigram.nll(held).sum(), held.numel()))

* **The text.** :func:`normalise` maps the few typographic characters (curly quotes, dashes, the ellipsis)
  to ASCII and anything else outside :data:`VOCAB` (newline and printable ASCII) to ``?``. The topics are
  joined in sorted order of their names, so the text is a function of the Python version alone;
  :attr:`Corpus.sha256` identifies it (a checkpoint trained on another version's text is retrained).
* **The split.** The text is cut into blocks of ``block_chars`` characters and every ``heldout_every``-th
  block (the last of each group) is held out: 10 % of the text, spread over all topics, decided by position
  alone (deterministic, no random seed).
* **Evaluation windows.** Every model is scored on the same non-overlapping windows of ``length``
  characters cut inside held-out blocks (:func:`heldout_windows`), each window on its own, with no context
  before it: a bigram's first character is scored by the unigram law, an autoregressive model's by its
  prediction after a start token, and a discrete flow's bound covers the whole window.
* **Bits per character** (:func:`bits_per_char`): total negative log-likelihood in nats over the number of
  characters, divided by ``ln 2``. For a discrete flow it is an upper bound (the ELBO,
  :func:`tutorlib.discrete.mixture_elbo`).

Models: :class:`CharTransformer` is a small pre-norm transformer over a window of tokens, bidirectional and
time-conditioned as a posterior model ``model(x_t, t) -> logits (B, L, K)`` for a discrete flow, or causal
as the autoregressive baseline (:func:`autoregressive_nll`, :func:`autoregressive_sample`).
"""

from __future__ import annotations

import hashlib
import math
import sys
import unicodedata
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tutorlib.device import Profile
from tutorlib.discrete import MixturePath, discrete_loss, mixture_elbo
from tutorlib.models import TimeEmbedding
from tutorlib.schedulers import CondOTScheduler
from tutorlib.train import TrainConfig, TrainHistory, train
from tutorlib.utils import batch_times

__all__ = [
    "VOCAB",
    "VOCAB_SIZE",
    "Bigram",
    "CharTransformer",
    "Corpus",
    "TextRecipe",
    "autoregressive_nll",
    "autoregressive_sample",
    "bits_per_char",
    "decode",
    "encode",
    "fit_bigram",
    "heldout_elbo",
    "heldout_windows",
    "load_corpus",
    "normalise",
    "random_windows",
    "rotary",
    "train_text_model",
]

VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))  # newline and the 95 printable ASCII characters
VOCAB_SIZE = len(VOCAB)  # K = 96
_INDEX = {ch: i for i, ch in enumerate(VOCAB)}
_ASCII = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
          "\u2026": "...", "\u00a0": " ", "\t": "    "}


def normalise(text: str) -> str:
    """``text`` over :data:`VOCAB`: typographic quotes, dashes and the ellipsis as ASCII, accents dropped
    (``NFKD``), anything else outside the vocabulary replaced by ``?``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    out = []
    for ch in text:
        if ch in _INDEX:
            out.append(ch)
        elif ch in _ASCII:
            out.append(_ASCII[ch])
        else:
            plain = "".join(c for c in unicodedata.normalize("NFKD", ch) if c in _INDEX)
            out.append(plain or "?")
    return "".join(out)


def encode(text: str) -> Tensor:
    """Characters of ``text`` (already over :data:`VOCAB`, see :func:`normalise`) as int64 tokens ``(N,)``."""
    try:
        return torch.tensor([_INDEX[ch] for ch in text], dtype=torch.int64)
    except KeyError as err:
        raise ValueError(f"character {err.args[0]!r} is not in the vocabulary: pass the text through "
                         f"normalise() first") from None


def decode(tokens: Tensor, *, mask: str = "_") -> str:
    """Tokens ``(N,)`` back to text; the mask state ``K`` (and anything above) is shown as ``mask``."""
    if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.dim() != 1:
        raise ValueError(f"tokens must be a 1-d integer tensor, got "
                         f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}")
    return "".join(VOCAB[i] if 0 <= i < VOCAB_SIZE else mask for i in tokens.tolist())


# --------------------------------------------------------------------------------------
# The corpus and its split
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """The normalised ``pydoc_data`` text, split by position into training and held-out blocks."""

    train: str  # the training blocks, concatenated
    heldout_blocks: tuple[str, ...]  # the held-out blocks, in order (windows never cross from one to the next)
    sha256: str  # of the whole normalised text: identifies the corpus (it changes with the Python version)
    python: str  # the Python version whose pydoc_data it is
    topics: int  # number of help topics joined
    block_chars: int  # length of the blocks the split cuts
    heldout_every: int  # every heldout_every-th block is held out

    @property
    def heldout(self) -> str:
        """The held-out blocks, concatenated."""
        return "".join(self.heldout_blocks)

    def config(self) -> dict:
        """What identifies the corpus and its split (for checkpoints' configurations)."""
        return {"sha256": self.sha256, "block_chars": self.block_chars, "heldout_every": self.heldout_every}

    def describe(self) -> str:
        """One line: sizes and the split."""
        n_train, n_held = len(self.train), sum(map(len, self.heldout_blocks))
        return (f"pydoc_data.topics of Python {self.python}: {self.topics} topics, {n_train + n_held:,} characters; "
                f"train {n_train:,}, held out {n_held:,} ({n_held / (n_train + n_held):.1%}: every "
                f"{self.heldout_every}th block of {self.block_chars}); sha256 {self.sha256[:12]}")


def load_corpus(*, block_chars: int = 4096, heldout_every: int = 10) -> Corpus:
    """The help topics of this Python's ``pydoc_data``, normalised and split (lesson 10).

    The text is ``"\\n\\n".join`` of the topics in sorted order of their names, :func:`normalise` d; block
    ``i`` (``block_chars`` characters each, the last one shorter) is held out when
    ``i % heldout_every == heldout_every - 1``.

    Args:
        block_chars: length of the blocks of the split.
        heldout_every: one block in this many is held out (``>= 2``).

    Returns:
        A :class:`Corpus`.
    """
    if isinstance(block_chars, bool) or not isinstance(block_chars, int) or block_chars < 1:
        raise ValueError(f"block_chars must be a positive int, got {block_chars!r}")
    if isinstance(heldout_every, bool) or not isinstance(heldout_every, int) or heldout_every < 2:
        raise ValueError(f"heldout_every must be an int >= 2 (one block in that many is held out), got {heldout_every!r}")
    from pydoc_data.topics import topics

    text = normalise("\n\n".join(topics[k] for k in sorted(topics)))
    blocks = [text[i:i + block_chars] for i in range(0, len(text), block_chars)]
    held = tuple(b for i, b in enumerate(blocks) if i % heldout_every == heldout_every - 1)
    train = "".join(b for i, b in enumerate(blocks) if i % heldout_every != heldout_every - 1)
    return Corpus(train=train, heldout_blocks=held, sha256=hashlib.sha256(text.encode()).hexdigest(),
                  python=".".join(map(str, sys.version_info[:3])), topics=len(topics), block_chars=block_chars,
                  heldout_every=heldout_every)


def heldout_windows(corpus: Corpus, length: int) -> Tensor:
    """Non-overlapping windows of ``length`` tokens inside each held-out block (remainders dropped).

    Returns:
        int64 ``(M, length)``, in the order of the text.
    """
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= corpus.block_chars:
        raise ValueError(f"length must be an int in [1, block_chars = {corpus.block_chars}], got {length!r}")
    rows = []
    for block in corpus.heldout_blocks:
        tok = encode(block)
        n = tok.numel() // length
        if n:
            rows.append(tok[: n * length].view(n, length))
    return torch.cat(rows)  # (M, L)


def random_windows(tokens: Tensor, length: int, batch: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``batch`` windows of ``length`` consecutive tokens at uniformly random offsets of ``tokens`` ``(N,)``.

    Returns:
        int64 ``(batch, length)`` on ``tokens``' device (offsets drawn on the CPU from ``generator``).
    """
    if tokens.dim() != 1 or tokens.numel() < length:
        raise ValueError(f"tokens must be 1-d with at least length = {length} entries, got {tuple(tokens.shape)}")
    start = torch.randint(tokens.numel() - length + 1, (batch, 1), generator=generator)  # (B, 1)
    idx = start + torch.arange(length)  # (B, L)
    return tokens[idx.to(tokens.device)]


def bits_per_char(nats: Tensor | float, chars: int) -> float:
    """``nats / (chars ln 2)``: a total negative log-likelihood (or a bound on it) in bits per character."""
    if isinstance(chars, bool) or not isinstance(chars, int) or chars < 1:
        raise ValueError(f"chars must be a positive int, got {chars!r}")
    return float(nats) / (chars * math.log(2.0))


# --------------------------------------------------------------------------------------
# The bigram baseline
# --------------------------------------------------------------------------------------


@dataclass
class Bigram:
    """A character bigram model: ``p(x_1) p(x_2 | x_1) ... p(x_L | x_{L-1})`` over a window."""

    log_first: Tensor  # (K,) log-probabilities of a window's first character (the smoothed unigram law)
    log_next: Tensor  # (K, K) log p(next | previous), rows normalised
    alpha: float  # the add-alpha smoothing of the counts

    def nll(self, windows: Tensor) -> Tensor:
        """Negative log-likelihood in nats of each window ``(M, L)`` -> ``(M,)``."""
        if windows.dim() != 2:
            raise ValueError(f"windows must have shape (M, L), got {tuple(windows.shape)}")
        first = self.log_first[windows[:, 0]]  # (M,)
        rest = self.log_next[windows[:, :-1], windows[:, 1:]].sum(1)  # (M,)
        return -(first + rest)

    def sample(self, n: int, length: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` windows of ``length`` characters drawn from the model: int64 ``(n, length)``."""
        out = [torch.multinomial(self.log_first.exp().expand(n, -1), 1, generator=generator)]  # [(n, 1)]
        for _ in range(length - 1):
            out.append(torch.multinomial(self.log_next[out[-1][:, 0]].exp(), 1, generator=generator))
        return torch.cat(out, 1)


def fit_bigram(tokens: Tensor, vocab_size: int = VOCAB_SIZE, *, alpha: float = 0.1) -> Bigram:
    """Maximum-likelihood bigram (and unigram) counts of ``tokens`` ``(N,)``, with add-``alpha`` smoothing.

    ``p(b | a) = (n_ab + alpha) / (n_a + alpha K)``; the first character of a window uses the unigram law
    ``(n_a + alpha) / (N + alpha K)``.
    """
    if tokens.dim() != 1 or tokens.numel() < 2 or tokens.is_floating_point():
        raise ValueError(f"tokens must be a 1-d integer tensor of at least 2 tokens, got {tuple(tokens.shape)}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive (an unseen pair would get probability 0), got {alpha!r}")
    K = vocab_size
    t = tokens.long().cpu()
    if int(t.min()) < 0 or int(t.max()) >= K:
        raise ValueError(f"tokens must lie in [0, {K - 1}], got [{int(t.min())}, {int(t.max())}]")
    pairs = torch.bincount(t[:-1] * K + t[1:], minlength=K * K).view(K, K).to(torch.float64) + alpha  # (K, K)
    uni = torch.bincount(t, minlength=K).to(torch.float64) + alpha  # (K,)
    return Bigram(log_first=(uni / uni.sum()).log(), log_next=(pairs / pairs.sum(1, keepdim=True)).log(),
                  alpha=float(alpha))


# --------------------------------------------------------------------------------------
# A small transformer over a window of characters
# --------------------------------------------------------------------------------------


def rotary(x: Tensor) -> Tensor:
    """Rotary position embedding (RoFormer) of queries or keys ``x`` ``(B, H, L, dh)``, ``dh`` even.

    Rotates each pair of features ``(x_{2j}, x_{2j+1})`` at position ``p`` by the angle ``p * 10000^(-2j/dh)``, so
    that the dot product of a rotated query at ``p`` and a rotated key at ``p'`` depends on the positions through
    ``p - p'`` only. It has no weights. Without it, a *bidirectional* model must learn from its position
    embeddings where its neighbours are, and the masked flow of lesson 10 stalls at the unigram for thousands of
    steps; a causal model can read position from its mask, which is why the autoregressive baseline did not.
    """
    L, dh = x.shape[-2], x.shape[-1]
    inv = 10000.0 ** (-torch.arange(0, dh, 2, device=x.device, dtype=torch.float32) / dh)  # (dh/2,)
    angle = torch.arange(L, device=x.device, dtype=torch.float32)[:, None] * inv  # (L, dh/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]  # (B, H, L, dh/2) each
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2)  # (B, H, L, dh)


class _Block(nn.Module):
    """Pre-norm transformer block; with a conditioning vector, each norm is scaled and shifted by it."""

    def __init__(self, d: int, heads: int, cond: bool, rope: bool = True):
        super().__init__()
        self.heads, self.rope = heads, rope
        self.norm1 = nn.LayerNorm(d, elementwise_affine=not cond)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=not cond)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.mod = nn.Linear(d, 4 * d) if cond else None
        if self.mod is not None:
            nn.init.zeros_(self.mod.weight)
            nn.init.zeros_(self.mod.bias)

    def forward(self, h: Tensor, c: Tensor | None, causal: bool) -> Tensor:
        B, L, d = h.shape
        if self.mod is not None:
            s1, b1, s2, b2 = self.mod(c)[:, None].chunk(4, dim=-1)  # (B, 1, d) each
            a = self.norm1(h) * (1 + s1) + b1
        else:
            a = self.norm1(h)
        q, k, v = self.qkv(a).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, d/H) each
        if self.rope:
            q, k = rotary(q), rotary(k)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, L, d/H)
        h = h + self.proj(att.transpose(1, 2).reshape(B, L, d))  # (B, L, d)
        m = self.norm2(h) * (1 + s2) + b2 if self.mod is not None else self.norm2(h)
        return h + self.mlp(m)  # (B, L, d)


class CharTransformer(nn.Module):
    """A small transformer over windows of ``L`` tokens: a discrete flow's posterior, or an autoregressive model.

    Token embedding (``num_states`` rows: the ``K`` characters, plus the mask or a start token) plus a
    learned position embedding, ``n_layers`` pre-norm blocks (multi-head self-attention with rotary
    position embeddings, :func:`rotary`, a 4x MLP with GELU), a final norm and a linear head to ``K``
    logits per position.

    * ``causal=False, time_conditioned=True``: a **posterior model** for :mod:`tutorlib.discrete`,
      ``model(x_t, t) -> logits (B, L, K)``; the time enters through a
      :class:`~tutorlib.models.TimeEmbedding` that scales and shifts every norm (initialised to zero, so
      an untrained model ignores it).
    * ``causal=True, time_conditioned=False``: an **autoregressive model**; position ``i`` sees positions
      ``<= i`` only, so the logits at ``i`` predict token ``i + 1`` (:func:`autoregressive_nll` feeds a
      start token, state ``K``, in front).

    Args:
        vocab_size: ``K``, the categories predicted.
        num_states: token values the input can take (``K + 1``: the mask or the start token).
        length: ``L``, the window length (positions embedded).
        d_model: width.
        n_layers: transformer blocks.
        n_heads: attention heads (``d_model`` must be a multiple).
        causal: attend to earlier positions only.
        time_conditioned: take a time ``t`` ``(B,)`` in ``[0, 1]`` as second argument.
        rope: rotate queries and keys by their positions (:func:`rotary`); ``False`` leaves the learned
            position embedding as the only source of position (the variant that stalls, kept to show it).
    """

    def __init__(self, vocab_size: int = VOCAB_SIZE, num_states: int | None = None, length: int = 64,
                 d_model: int = 64, n_layers: int = 3, n_heads: int = 4, *, causal: bool = False,
                 time_conditioned: bool = True, rope: bool = True):
        super().__init__()
        num_states = vocab_size + 1 if num_states is None else num_states
        if num_states < vocab_size:
            raise ValueError(f"num_states ({num_states}) must be at least vocab_size ({vocab_size})")
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads}) with an even quotient "
                             "(the rotary embedding rotates pairs of features)")
        self.vocab_size, self.num_states, self.length = vocab_size, num_states, length
        self.causal, self.time_conditioned, self.rope = causal, time_conditioned, rope
        self.tok = nn.Embedding(num_states, d_model)
        self.pos = nn.Parameter(torch.randn(length, d_model) * 0.02)
        self.embed = TimeEmbedding(d_model) if time_conditioned else None
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, time_conditioned, rope) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        """Tokens ``x`` int64 ``(B, L')`` with ``L' <= L`` (and times ``t`` ``(B,)``) -> logits ``(B, L', K)``."""
        if x.dim() != 2 or x.shape[1] > self.length or x.is_floating_point():
            raise ValueError(f"x must be integer tokens of shape (B, L) with L <= {self.length}, got "
                             f"{tuple(x.shape)} {x.dtype}")
        if (t is None) == self.time_conditioned:
            raise ValueError("this model takes a time t" if self.time_conditioned else "this model takes no time t")
        h = self.tok(x) + self.pos[: x.shape[1]]  # (B, L, d)
        c = self.embed(batch_times(t, h)) if self.embed is not None else None  # (B, d)
        for block in self.blocks:
            h = block(h, c, self.causal)
        return self.head(self.norm(h))  # (B, L, K)


def _start(windows: Tensor, model: CharTransformer) -> Tensor:
    """``[start, x_1, ..., x_{L-1}]``: the input that makes position ``i`` predict ``x_{i+1}``."""
    start = torch.full_like(windows[:, :1], model.vocab_size)  # (B, 1) the start token K
    return torch.cat([start, windows[:, :-1]], 1)  # (B, L)


def autoregressive_nll(model: CharTransformer, windows: Tensor, *, batch: int = 256) -> Tensor:
    """Negative log-likelihood in nats of each window ``(M, L)`` under a causal :class:`CharTransformer`.

    ``-sum_i log p(x_i | start, x_1, ..., x_{i-1})``: the first character is predicted after the start
    token alone (no context before the window, as for the other models of lesson 10). Differentiable when
    called with gradients enabled (the training loss is its mean over a batch, divided by ``L``).

    Returns:
        ``(M,)``.
    """
    if not model.causal or model.time_conditioned or model.num_states <= model.vocab_size:
        raise ValueError("autoregressive_nll needs CharTransformer(..., causal=True, time_conditioned=False) with "
                         "num_states = vocab_size + 1 (the start token)")
    out = []
    for i in range(0, windows.shape[0], batch):
        w = windows[i:i + batch]  # (b, L)
        logits = model(_start(w, model))  # (b, L, K)
        out.append(F.cross_entropy(logits.transpose(1, 2), w, reduction="none").sum(1))  # (b,)
    return torch.cat(out)


@torch.no_grad()
def autoregressive_sample(model: CharTransformer, n: int, length: int, *, generator: torch.Generator | None = None,
                          prefix: Tensor | None = None) -> Tensor:
    """``n`` windows drawn one character at a time from a causal :class:`CharTransformer`.

    Args:
        model: causal, with a start token.
        n: windows.
        length: characters per window (at most ``model.length``).
        generator: generator of the draws.
        prefix: optional int64 ``(n, P)`` first characters to continue.

    Returns:
        int64 ``(n, length)``.
    """
    device = next(model.parameters()).device
    x = torch.full((n, 1), model.vocab_size, dtype=torch.int64, device=device)  # (n, 1) the start token
    if prefix is not None:
        x = torch.cat([x, prefix.to(device)], 1)
    while x.shape[1] <= length:
        probs = torch.softmax(model(x)[:, -1].double(), -1)  # (n, K)
        draw = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)  # (n, 1)
        x = torch.cat([x, draw], 1)
    return x[:, 1:length + 1]


# --------------------------------------------------------------------------------------
# The text recipe: one set of sizes for the discrete flows and the autoregressive baseline
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextRecipe:
    """Sizes and optimiser settings shared by lesson 10's text models (and the ``text`` bench case).

    Every model is a :class:`CharTransformer` of the same size trained for the same steps on the same
    windows: a discrete flow on a :class:`~tutorlib.discrete.MixturePath` with ``kappa_t = t`` (masked or
    uniform source; the loss :func:`~tutorlib.discrete.discrete_loss`), or, with ``path=None``, the
    autoregressive baseline (:func:`autoregressive_nll`). Build one with :meth:`from_profile`.
    """

    length: int = 64  # characters per window, in training and in evaluation
    d_model: int = 64  # transformer width
    n_layers: int = 3  # transformer blocks
    n_heads: int = 4  # attention heads
    batch: int = 64  # windows per optimiser step
    steps: int = 3000  # optimiser steps
    lr: float = 3e-3  # AdamW peak learning rate
    warmup_steps: int = 100  # linear warm-up, in steps
    min_lr_ratio: float = 0.05  # the cosine decay ends at lr * min_lr_ratio
    ema_decay: float = 0.999  # EMA of the weights (evaluated and sampled)
    grad_clip: float = 1.0  # global gradient-norm clipping
    rope: bool = True  # rotary position embeddings in attention (CharTransformer(rope=...))

    def replace(self, **changes) -> "TextRecipe":
        """A copy with some fields changed."""
        import dataclasses

        return dataclasses.replace(self, **changes)

    @classmethod
    def from_profile(cls, P: Profile) -> "TextRecipe":
        """The recipe at profile ``P``'s sizes: ``P.steps_2d`` steps, width ``P.hidden_2d // 2``, ``P.depth_2d``
        blocks, ``P.batch_mnist // 2`` windows of ``P.hidden_2d // 2`` characters (standard: 3000 steps of 64
        windows of 64 characters, width 64, 3 blocks)."""
        width = max(16, P.hidden_2d // 2)
        return cls(length=width, d_model=width, n_layers=P.depth_2d, n_heads=4, batch=max(8, P.batch_mnist // 2),
                   steps=P.steps_2d, warmup_steps=min(100, max(1, P.steps_2d // 10)))

    def path(self, source: str) -> MixturePath:
        """The mixture path of a text flow: ``kappa_t = t`` over the :data:`VOCAB_SIZE` characters."""
        return MixturePath(CondOTScheduler(), source, VOCAB_SIZE)

    def build_model(self, path: MixturePath | None) -> CharTransformer:
        """A fresh :class:`CharTransformer`: a posterior model for ``path``, or the autoregressive one (``None``)."""
        if path is None:
            return CharTransformer(VOCAB_SIZE, VOCAB_SIZE + 1, self.length, self.d_model, self.n_layers, self.n_heads,
                                   causal=True, time_conditioned=False, rope=self.rope)
        if path.vocab_size != VOCAB_SIZE:
            raise ValueError(f"the path must have vocab_size {VOCAB_SIZE} (the characters), got {path.vocab_size}")
        return CharTransformer(VOCAB_SIZE, path.num_states, self.length, self.d_model, self.n_layers, self.n_heads,
                               rope=self.rope)

    def train_config(self, *, progress: bool = True, desc: str = "text") -> TrainConfig:
        """The :class:`~tutorlib.train.TrainConfig` of this recipe."""
        return TrainConfig(steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps, cosine_decay=True,
                           min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip, ema_decay=self.ema_decay,
                           progress=progress, desc=desc)


def train_text_model(recipe: TextRecipe, tokens: Tensor, path: MixturePath | None, *, seed: int = 0,
                     model: CharTransformer | None = None, progress: bool = True) -> tuple[CharTransformer, TrainHistory]:
    """Train one text model of ``recipe`` on random windows of ``tokens`` ``(N,)``; keep its EMA weights.

    The weights are initialised from ``seed`` (the global generator is left as it was) unless ``model`` is
    given, and every draw (windows, source, times, the path's coin flips) comes from a generator seeded by
    ``seed + 1``, so one seed gives one model. The loss: ``discrete_loss`` on ``path`` (nats per character),
    or, for ``path=None``, the autoregressive negative log-likelihood per character.

    Returns:
        ``(model, history)``: the model holds the EMA weights, in eval mode, on ``tokens``' device.
    """
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = recipe.build_model(path)
    model = model.to(tokens.device)
    g = torch.Generator().manual_seed(seed + 1)
    L = recipe.length

    def sampler(step: int) -> Tensor:
        return random_windows(tokens, L, recipe.batch, generator=g)  # (B, L)

    if path is None:
        def loss_fn(m, x_1):
            return autoregressive_nll(m, x_1).mean() / L
    else:
        def loss_fn(m, x_1):
            x_0 = path.sample_source(x_1.shape, generator=g, device=x_1.device)  # (B, L)
            t = torch.rand(x_1.shape[0], generator=g).to(x_1.device)  # (B,)
            return discrete_loss(m, path, x_0, x_1, t, generator=g)

    desc = "text AR" if path is None else f"text DFM ({path.source})"
    hist = train(model, loss_fn, sampler, recipe.train_config(progress=progress, desc=desc))
    hist.ema.copy_to(model)
    return model.eval(), hist


@torch.no_grad()
def heldout_elbo(model: CharTransformer, path: MixturePath, windows: Tensor, *, draws: int = 4,
                 generator: torch.Generator | None = None, batch: int = 256) -> Tensor:
    """The discrete flow's bound on ``-log p(window)`` for each window ``(M, L)``, averaged over ``draws``, in nats.

    Each draw gives every window one time, stratified over ``[0, 1)`` (``(i + u_i) / M`` in a random
    order: unbiased, with less variance than independent draws), and one draw of ``x_t``
    (:func:`tutorlib.discrete.mixture_elbo`). ``bits_per_char(result.sum(), windows.numel())`` is then an
    unbiased estimate of an upper bound on the model's bits per character.

    Returns:
        ``(M,)`` float64.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    M = windows.shape[0]
    total = torch.zeros(M, dtype=torch.float64, device=windows.device)
    for _ in range(draws):
        u = torch.rand(M, generator=generator, dtype=torch.float64)
        t = ((torch.arange(M, dtype=torch.float64) + u) / M)[torch.randperm(M, generator=generator)]  # (M,)
        x_0 = path.sample_source(windows.shape, generator=generator, device=windows.device)  # (M, L)
        parts = [mixture_elbo(model, path, x_0[i:i + batch], windows[i:i + batch], t[i:i + batch].to(windows.device),
                              generator=generator) for i in range(0, M, batch)]
        total += torch.cat(parts)
    return total / draws
