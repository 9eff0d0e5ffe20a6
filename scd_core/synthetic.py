"""Synthetic MOSEI-, FIv2-, BAH- and MELD-like corpora, written through the feature store.

Good enough to exercise the science, not just the shapes:

* one latent psychological state per sample, ``s`` in R^12 (six emotions, five traits,
  ambivalence), drawn from a Gaussian whose correlations follow the paper's Fig. 8
  (ambivalence up with sadness, fear and disgust and down with happiness; happiness with
  extraversion, conscientiousness and non-neuroticism; anger with disgust; ...);
* each corpus labels only its own task, with marginals like the real corpora (MOSEI
  happiness-dominant, multi-label, Neutral when no emotion; FIv2 traits mostly in
  0.4-0.7; BAH balanced, slightly towards presence; MELD single-label, Neutral-dominant,
  Fear and Disgust rare);
* every modality is a noisy nonlinear view of ``s`` (``mean || std`` halves, like the
  statistical functionals of real encoders) through a fixed random "encoder", with a
  corpus-specific shift and scale and a corpus-specific informativeness; a few samples
  miss a modality.

Deterministic for a seed. ``python -m scd_core.synthetic --out ROOT --preset demo|paper --seed N``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtri, softmax

from scd_core.features import FeatureStoreWriter, ModalityInfo
from scd_core.tasks import CORPORA, EMO_CLASSES, PAPER_FEATURE_DIMS, PT_TRAITS, TASKS

EMOTIONS = EMO_CLASSES[1:]  # the six emotions; Neutral means "none of them"
LATENT_NAMES = (*EMOTIONS, *PT_TRAITS, "ambivalence")
_L = {name: i for i, name in enumerate(LATENT_NAMES)}

# Signed correlations between latent dimensions, after the paper's Fig. 8.
_CORRELATIONS = {
    ("ambivalence", "sadness"): 0.40, ("ambivalence", "fear"): 0.35, ("ambivalence", "disgust"): 0.30,
    ("ambivalence", "happiness"): -0.40, ("ambivalence", "anger"): 0.15,
    ("happiness", "extraversion"): 0.35, ("happiness", "conscientiousness"): 0.25,
    ("happiness", "non_neuroticism"): 0.30,
    ("anger", "disgust"): 0.60, ("disgust", "fear"): 0.30, ("disgust", "sadness"): 0.30,
    ("fear", "sadness"): 0.35,
    ("happiness", "anger"): -0.30, ("happiness", "disgust"): -0.30, ("happiness", "fear"): -0.25,
    ("happiness", "sadness"): -0.35,
    ("openness", "agreeableness"): 0.40, ("conscientiousness", "extraversion"): -0.15,
    ("openness", "conscientiousness"): -0.10, ("extraversion", "agreeableness"): -0.10,
    ("sadness", "non_neuroticism"): -0.20, ("fear", "non_neuroticism"): -0.15,
}

# Label marginals of the real corpora (paper appendix A.4 and the corpora's papers).
MOSEI_PRESENCE = {"anger": 0.21, "disgust": 0.17, "fear": 0.08, "happiness": 0.53, "sadness": 0.25, "surprise": 0.10}
MELD_PRIOR = {"neutral": 0.48, "anger": 0.11, "disgust": 0.03, "fear": 0.03, "happiness": 0.16,
              "sadness": 0.07, "surprise": 0.12}
BAH_PRESENCE = 0.55
LABEL_NOISE = 0.5  # s.d. of the noise between latent state and annotation

# Corpus-specific shift of the latent state (who is recorded where).
_LATENT_SHIFT = {
    "mosei": {},
    "fiv2": {"happiness": 0.3, "extraversion": 0.2},
    "bah": {"ambivalence": 0.1, "sadness": 0.2},
    "meld": {"surprise": 0.3, "anger": 0.2},
}
# How much each modality's features carry the state, per corpus (the paper's motivation:
# "the informativeness of modalities varies significantly across these corpora").
INFORMATIVENESS = {
    "mosei": {"video": 0.30, "audio": 0.20, "text": 0.50, "behavior": 0.35},
    "fiv2": {"video": 0.50, "audio": 0.35, "text": 0.20, "behavior": 0.30},
    "bah": {"video": 0.20, "audio": 0.20, "text": 0.45, "behavior": 0.40},
    "meld": {"video": 0.25, "audio": 0.15, "text": 0.40, "behavior": 0.30},
}
# Which latent dimensions each modality sees most (gain per dimension group).
_MODALITY_GAINS = {
    "video": {"emotions": 1.0, "traits": 1.0, "ambivalence": 0.6},
    "audio": {"emotions": 1.0, "traits": 0.6, "ambivalence": 0.8},
    "text": {"emotions": 1.2, "traits": 0.5, "ambivalence": 1.0},
    "behavior": {"emotions": 0.8, "traits": 0.8, "ambivalence": 1.2},
}
MISSING_RATE = 0.02


@dataclass(frozen=True)
class Preset:
    sizes: dict[str, dict[str, int]]


PRESETS = {
    "paper": Preset({
        "mosei": {"train": 16327, "dev": 1871, "test": 4662},
        "fiv2": {"train": 6000, "dev": 2000, "test": 2000},
        "bah": {"train": 616, "dev": 110, "test": 392},
        "meld": {"dev": 1109, "test": 2610},  # dev: per-epoch zero-shot monitoring, never selection
    }),
    "demo": Preset({
        "mosei": {"train": 480, "dev": 160, "test": 160},
        "fiv2": {"train": 320, "dev": 120, "test": 120},
        "bah": {"train": 200, "dev": 80, "test": 80},
        "meld": {"dev": 100, "test": 200},
    }),
}


def latent_correlation() -> np.ndarray:
    """The 12x12 latent correlation matrix (made positive definite)."""
    r = np.eye(len(LATENT_NAMES))
    for (a, b), value in _CORRELATIONS.items():
        r[_L[a], _L[b]] = r[_L[b], _L[a]] = value
    eigval, eigvec = np.linalg.eigh(r)
    r = eigvec @ np.diag(np.clip(eigval, 0.05, None)) @ eigvec.T
    d = np.sqrt(np.diag(r))
    return r / np.outer(d, d)


def sample_latent(n: int, corpus: str, rng: np.random.Generator) -> np.ndarray:
    """Latent states [n, 12] for ``corpus`` (correlated Gaussian plus the corpus shift)."""
    chol = np.linalg.cholesky(latent_correlation())
    s = rng.standard_normal((n, len(LATENT_NAMES))) @ chol.T
    for name, shift in _LATENT_SHIFT[corpus].items():
        s[:, _L[name]] += shift
    return s


def _emotion_block(s: np.ndarray) -> np.ndarray:
    return s[:, [_L[e] for e in EMOTIONS]]


MELD_SIGNAL = 1.5


@functools.cache
def _meld_bias() -> np.ndarray:
    """Class biases that give MELD_PRIOR as the label marginals, fitted on a fixed sample."""
    s = _emotion_block(sample_latent(20000, "meld", np.random.default_rng(12345)))
    logits = np.column_stack([np.zeros(len(s)), MELD_SIGNAL * s])
    target = np.array([MELD_PRIOR[c] for c in EMO_CLASSES])
    bias = np.log(target)
    for _ in range(50):
        bias += np.log(target / softmax(logits + bias, axis=1).mean(axis=0))
    return bias


def make_labels(corpus: str, s: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The corpus's own labels (feature-store columns); other tasks' columns stay absent (null)."""
    n = len(s)
    task = CORPORA[corpus].task
    if corpus == "meld":
        logits = np.column_stack([np.zeros(n), MELD_SIGNAL * _emotion_block(s)]) + _meld_bias()
        u = rng.random((n, 1))
        label = (softmax(logits, axis=1).cumsum(axis=1) < u).sum(axis=1).clip(max=len(EMO_CLASSES) - 1)
        onehot = np.eye(len(EMO_CLASSES))[label]
        return {c: onehot[:, i] for i, c in enumerate(TASKS["emo"].label_columns)}
    if task == "emo":
        sd = np.sqrt(1 + LABEL_NOISE**2)
        noisy = _emotion_block(s) + LABEL_NOISE * rng.standard_normal((n, len(EMOTIONS)))
        threshold = np.array([ndtri(1 - MOSEI_PRESENCE[e]) * sd for e in EMOTIONS])
        # MOSEI intensities come in thirds on a 0-3 scale; the store holds the normalised
        # distribution, as the authors' published tables do.
        intensity = np.clip(np.round(3 * (noisy - threshold) + 1), 0, 9) / 3
        intensity[noisy <= threshold] = 0
        neutral = (intensity.sum(axis=1) == 0).astype(float)
        dist = np.column_stack([neutral, intensity])
        dist /= dist.sum(axis=1, keepdims=True)
        return {c: dist[:, i] for i, c in enumerate(TASKS["emo"].label_columns)}
    if task == "pt":
        traits = s[:, [_L[t] for t in PT_TRAITS]] + 0.4 * rng.standard_normal((n, len(PT_TRAITS)))
        scores = np.clip(0.55 + 0.11 * traits / np.sqrt(1 + 0.4**2), 0.0, 1.0)
        return {c: scores[:, i] for i, c in enumerate(TASKS["pt"].label_columns)}
    noisy = s[:, _L["ambivalence"]] + 0.6 * rng.standard_normal(n)
    threshold = ndtri(1 - BAH_PRESENCE) * np.sqrt(1 + 0.6**2)
    return {"ah": (noisy > threshold).astype(float)}


@dataclass(frozen=True)
class _Encoder:
    """A fixed random two-layer "encoder" per modality: s -> (mean half, std half)."""

    gains: np.ndarray
    w1: np.ndarray
    w2: np.ndarray
    v1: np.ndarray
    v2: np.ndarray

    @classmethod
    def create(cls, modality: str, dim: int, rng: np.random.Generator) -> "_Encoder":
        g = _MODALITY_GAINS[modality]
        gains = np.array([g["emotions"]] * 6 + [g["traits"]] * 5 + [g["ambivalence"]])
        k, half = len(LATENT_NAMES), dim // 2
        return cls(
            gains,
            rng.standard_normal((k, 64)) / np.sqrt(k) * 1.5,
            (rng.standard_normal((64, half)) / np.sqrt(64)).astype(np.float32),
            rng.standard_normal((k, 32)) / np.sqrt(k),
            (rng.standard_normal((32, dim - half)) / np.sqrt(32)).astype(np.float32),
        )

    def __call__(self, s: np.ndarray, signal: float, shift: np.ndarray, scale: float,
                 rng: np.random.Generator) -> np.ndarray:
        z = s * self.gains
        h = np.tanh(z @ self.w1).astype(np.float32)
        mean = h @ self.w2
        mean *= signal
        mean += shift[: mean.shape[1]]
        mean += rng.standard_normal(mean.shape, dtype=np.float32)
        mean *= scale
        std = (np.tanh(z @ self.v1).astype(np.float32) @ self.v2) * (0.5 * signal) + 0.5
        std += 0.3 * rng.standard_normal(std.shape, dtype=np.float32)
        np.logaddexp(std, 0, out=std)  # softplus: a standard deviation is positive
        return np.concatenate([mean, std], axis=1)


def generate(out: str | Path, preset: str = "demo", seed: int = 0,
             dims: dict[str, int] | None = None, progress=None) -> Path:
    """Write every corpus of ``preset`` into the feature store at ``out``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    dims = dims or PAPER_FEATURE_DIMS
    enc_rng = np.random.default_rng([seed, 0])
    encoders = {m: _Encoder.create(m, d, enc_rng) for m, d in dims.items()}
    modalities = {
        m: ModalityInfo(encoder=f"synthetic/{m}", dim=d, fingerprint=f"synthetic-v1-seed{seed}",
                        settings={"preset": preset, "seed": seed})
        for m, d in dims.items()
    }
    writer = FeatureStoreWriter(out, modalities, source=f"scd_core.synthetic --preset {preset} --seed {seed}")
    corpus_names = list(PRESETS[preset].sizes)
    for ci, corpus in enumerate(corpus_names):
        domain_rng = np.random.default_rng([seed, 1, ci])
        shifts = {m: domain_rng.normal(0, 0.5, d).astype(np.float32) for m, d in dims.items()}
        scales = {m: float(domain_rng.uniform(0.8, 1.2)) for m in dims}
        for si, (split, n) in enumerate(PRESETS[preset].sizes[corpus].items()):
            rng = np.random.default_rng([seed, 2, ci, si])
            s = sample_latent(n, corpus, rng)
            labels = make_labels(corpus, s, rng)
            features = {
                m: encoders[m](s, INFORMATIVENESS[corpus][m], shifts[m], scales[m], rng) for m in dims
            }
            present = {m: rng.random(n) >= MISSING_RATE for m in dims}
            stacked = np.stack(list(present.values()), axis=1)
            nothing = ~stacked.any(axis=1)  # keep one modality: a sample with none is not a sample
            stacked[nothing, rng.integers(0, len(dims), nothing.sum())] = True
            present = {m: stacked[:, i] for i, m in enumerate(dims)}
            ids = [f"{corpus}_{split}_{i:05d}" for i in range(n)]
            writer.write_split(corpus, split, ids, features, labels, present)
            if progress:
                progress(f"{corpus}/{split}: {n} rows")
    return Path(out)


def ensure_store(root: str | Path, preset: str = "demo", seed: int = 0) -> Path:
    """The synthetic store at ``root``, generated on first use and reused afterwards."""
    root = Path(root)
    if not (root / "manifest.json").exists():
        print(f"generating the synthetic {preset} corpora (seed {seed}) into {root} ...", flush=True)
        generate(root, preset, seed)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scd_core.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="feature-store root to write")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--seed", type=int, default=0)
    from scd_core.cli import USER_ERRORS, add_debug_flag, explained  # torch, which generating never needs

    add_debug_flag(parser)
    args = parser.parse_args(argv)

    def run() -> int:
        start = time.perf_counter()
        generate(args.out, args.preset, args.seed, progress=lambda msg: print(msg, flush=True))
        print(f"wrote {args.out} ({args.preset}, seed {args.seed}) in {time.perf_counter() - start:.1f} s")
        return 0

    # A store of other features at --out is refused by its writer, naming the manifest.
    return explained(run, args.debug, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
