"""RWKV → SpikeGPT: copy the weights, insert LIF neurons, calibrate them, optionally fine-tune.

Calibration has two passes over the calibration ids, both in network order (so each LIF sees
the currents its calibrated predecessors produce):

1. Per channel: the threshold ``θ`` and amplitude ``A`` whose spike train ``A·S`` best matches
   the LIF's own input current ``X`` in the least-squares sense. For each candidate ``θ`` on a
   geometric grid below the channel's largest input, ``A = Σ S·X / Σ S`` is optimal and the
   squared error drops by ``(Σ S·X)² / Σ S``; the candidate with the largest drop wins.
2. Per layer: one gain on all of a layer's amplitudes, the one of ``LAYER_GAINS`` that gives
   the lowest next-token loss. The channel fit alone leaves the spikes too weak (a LIF with one
   step per token drops the negative part and much of the positive part of its input); the
   loss picks gains of about 1.5-3.

Measured on prose (d_model 128, 2 layers, RWKV at 2.16 BPC on 10k held-out chars, 2048
calibration bytes): threshold 1 gives 5.31 BPC; the channel fit 3.30; with layer gains 2.92.
Matching means instead (``A·rate = mean |X|``: 4.50; ``= mean X⁺``: 3.06), matching energies
(3.25), or fitting RWKV's own activations instead of the LIF's input (3.36) did worse.
The optional fine-tune then trains every weight (not the neurons) with the surrogate gradient.
Starting it from the calibrated model pays: after 100 steps (lr 1e-3) 2.35 BPC vs 2.47 from
threshold 1; also training thresholds and amplitudes changed nothing (2.344 vs 2.346); lr 3e-3
reached 2.28. On the whole held-out split (``benchmarks/spikegpt_quality.py``): RWKV 1.78,
threshold 1 4.85, calibrated 2.47, fine-tuned 1.92.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ganglion.models.errors import ConversionError
from ganglion.models.recipes.lm_training import heldout_bpc, lm_loss, train_lm
from ganglion.models.recipes.text import Corpus
from ganglion.models.sequence.base import check_ids
from ganglion.models.sequence.rwkv import RWKV
from ganglion.models.sequence.spikegpt import LIF, SpikeGPT, SpikeGPTConfig

THRESHOLD_CANDIDATES = 48  # thresholds tried per channel
THRESHOLD_RANGE = 2.0**-10  # the smallest candidate, as a fraction of the largest input
THRESHOLD_FLOOR = 1e-6  # no threshold below this (a channel whose input is never positive)
LAYER_GAINS = (0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0)  # layer-wide amplitude gains tried


@dataclass
class LIFCalibration:
    """One LIF layer after calibration (means over its channels)."""

    threshold_mean: float
    amplitude_mean: float
    firing_rate: float  # on the calibration ids
    residual_error: float  # ‖A·S − X‖² / ‖X‖² after the channel fit (1.0: no better than 0)
    layer_gain: float = 1.0  # the layer-wide amplitude gain chosen after the channel fit


@dataclass
class SpikeGPTConversionReport:
    """What ``convert_spikegpt`` did and the held-out bits per character at each stage."""

    corpus: str | None
    eval_chars: int | None  # held-out characters scored (None: all)
    rwkv_bpc: float | None  # the source RWKV
    uncalibrated_bpc: float | None  # SpikeGPT with θ = A = 1 (SpikeGPT's own neurons)
    calibrated_bpc: float | None  # after calibration
    finetuned_bpc: float | None  # after the surrogate-gradient fine-tune (None: none done)
    calibration_tokens: int
    finetune_tokens: int
    finetune_steps: int
    calibration_seconds: float  # wall time of the calibration
    calibration_cpu_seconds: float  # its CPU time
    finetune_seconds: float  # wall time of the fine-tune
    finetune_cpu_seconds: float  # its CPU time
    layers: dict[str, LIFCalibration] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The report as a JSON-able dict."""
        return asdict(self)


def spikegpt_from_rwkv(rwkv: RWKV) -> SpikeGPT:
    """A SpikeGPT with ``rwkv``'s weights (float embedding) and SpikeGPT's LIFs (θ = A = 1)."""
    if not isinstance(rwkv, RWKV) or isinstance(rwkv, SpikeGPT):
        raise ConversionError(f"expected an RWKV model to convert, got {type(rwkv).__name__}")
    config = SpikeGPTConfig(**asdict(rwkv.config), binary_embedding=False)
    snn = SpikeGPT(config).to(rwkv.emb.weight.device)
    missing, unexpected = snn.load_state_dict(rwkv.state_dict(), strict=False)
    lifs = {name for name, module in snn.named_modules() if isinstance(module, LIF)}
    stray = [k for k in missing if k.rsplit(".", 1)[0] not in lifs]
    if stray or unexpected:
        raise ConversionError(
            f"weights do not map onto SpikeGPT: missing {stray}, extra {unexpected}"
        )
    return snn


def fit_lif(lif: LIF, x: torch.Tensor, v0: torch.Tensor) -> LIFCalibration:
    """Set ``lif``'s per-channel threshold and amplitude so ``A·S`` best fits ``x`` (module doc).

    ``x`` ``[B, T, C]`` is the LIF's input current on the calibration ids, ``v0`` ``[B, C]``
    its initial membrane.
    """
    x, v0 = x.float(), v0.float()
    peak = x.amax(dim=(0, 1)).clamp(min=THRESHOLD_FLOOR)  # [C]
    fractions = torch.logspace(0, 1, THRESHOLD_CANDIDATES, base=THRESHOLD_RANGE, device=x.device)
    thresholds = (fractions[:, None] * peak).clamp(min=THRESHOLD_FLOOR)  # [K, C], largest first
    v = v0.expand(THRESHOLD_CANDIDATES, *v0.shape).clone()  # [K, B, C]
    hits = torch.zeros_like(thresholds)  # Σ S
    overlap = torch.zeros_like(thresholds)  # Σ S·X
    for t in range(x.shape[1]):
        x_t = x[:, t]  # [B, C]
        v = v * lif.decay + x_t * lif.gain
        fired = v > thresholds[:, None]  # [K, B, C]
        v = torch.where(fired, torch.zeros_like(v), v)
        hits += fired.sum(dim=1)
        overlap += (fired * x_t).sum(dim=1)
    gain = torch.where(overlap > 0, overlap.square() / hits.clamp(min=1), torch.zeros_like(hits))
    best = gain.argmax(dim=0)  # [C]
    channels = torch.arange(x.shape[2], device=x.device)
    chosen_hits, chosen_overlap = hits[best, channels], overlap[best, channels]
    useful = chosen_overlap > 0
    # A channel no spike can help (its input never positive) gets a threshold above anything
    # seen and spikes worth that threshold, like a classic rate-coded neuron.
    silent = x.abs().amax(dim=(0, 1)).clamp(min=THRESHOLD_FLOOR)
    threshold = torch.where(useful, thresholds[best, channels], silent)
    amplitude = torch.where(useful, chosen_overlap / chosen_hits.clamp(min=1), silent)
    with torch.no_grad():
        lif.threshold.copy_(threshold)
        lif.amplitude.copy_(amplitude)
    energy = float(x.square().sum())
    return LIFCalibration(
        threshold_mean=float(lif.threshold.mean()),
        amplitude_mean=float(lif.amplitude.mean()),
        firing_rate=float(chosen_hits.sum()) / (x.shape[0] * x.shape[1] * x.shape[2]),
        residual_error=1.0 - float(gain[best, channels].sum()) / max(energy, 1e-30),
    )


@torch.no_grad()
def fit_channels(snn: SpikeGPT, calib_ids: torch.Tensor) -> dict[str, LIFCalibration]:
    """Fit every LIF's channels in network order on one forward pass over ``calib_ids``."""
    names = {id(m): n for n, m in snn.spiking_modules().items()}
    fits: dict[str, LIFCalibration] = {}

    def before_lif(module: LIF, args: tuple[torch.Tensor, torch.Tensor]) -> None:
        fits[names[id(module)]] = fit_lif(module, *args)

    hooks = [lif.register_forward_pre_hook(before_lif) for lif in lifs_of(snn).values()]
    try:
        snn(calib_ids)
    finally:
        for hook in hooks:
            hook.remove()
    return fits


@torch.no_grad()
def tune_layer_gains(snn: SpikeGPT, calib_ids: torch.Tensor) -> dict[str, float]:
    """Scale each LIF layer's amplitudes, in network order, by the ``LAYER_GAINS`` entry that
    gives the lowest next-token loss on ``calib_ids``; returns the gain chosen per layer."""
    chosen: dict[str, float] = {}
    for name, lif in lifs_of(snn).items():
        fitted = lif.amplitude.clone()
        losses = []
        for gain in LAYER_GAINS:
            lif.amplitude.copy_(fitted * gain)
            losses.append(float(lm_loss(snn, calib_ids)))
        chosen[name] = LAYER_GAINS[losses.index(min(losses))]
        lif.amplitude.copy_(fitted * chosen[name])
    return chosen


def lifs_of(snn: SpikeGPT) -> dict[str, LIF]:
    """The LIF layers of ``snn`` by name, in network order."""
    return {n: m for n, m in snn.spiking_modules().items() if isinstance(m, LIF)}


def calibrate(snn: SpikeGPT, calib_ids: torch.Tensor) -> dict[str, LIFCalibration]:
    """Per-channel fit, then per-layer gains (module doc); returns what each LIF got."""
    was_training = snn.training
    snn.eval()
    try:
        fits = fit_channels(snn, calib_ids)
        for name, gain in tune_layer_gains(snn, calib_ids).items():
            fits[name].layer_gain = gain
            fits[name].amplitude_mean = float(lifs_of(snn)[name].amplitude.mean())
    finally:
        snn.train(was_training)
    return fits


def convert_spikegpt(
    rwkv_model: RWKV,
    calib_ids: torch.Tensor,
    finetune_steps: int = 0,
    corpus: Corpus | None = None,
    *,
    eval_chars: int | None = None,
    finetune_batch: int = 16,
    finetune_length: int = 128,
    finetune_lr: float = 3e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[SpikeGPT, SpikeGPTConversionReport]:
    """Convert a trained RWKV LM into SpikeGPT form.

    Args:
        rwkv_model: the source model (left unchanged).
        calib_ids: calibration token ids ``[B, T]`` int64 (e.g. windows of the training split).
        finetune_steps: surrogate-gradient training steps after calibration (needs ``corpus``).
        corpus: training split for the fine-tune and held-out split for the BPC figures
            (``None``: no figures, no fine-tune).
        eval_chars: held-out characters scored at each stage (``None``: all).
        finetune_batch, finetune_length, finetune_lr, seed, progress: as ``train_lm``'s.

    Returns:
        The spiking model and a ``SpikeGPTConversionReport``. Raises ConversionError for a
        source that is not an RWKV, bad calibration ids, or a fine-tune without a corpus.
    """
    try:
        check_ids(calib_ids, rwkv_model.vocab_size, 2)
    except ValueError as err:
        raise ConversionError(f"calibration ids: {err}") from None
    if calib_ids.shape[1] < 2:
        raise ConversionError(f"calibration ids need >= 2 tokens each, got {calib_ids.shape[1]}")
    if finetune_steps and corpus is None:
        raise ConversionError("a fine-tune needs a corpus (its training split)")
    snn = spikegpt_from_rwkv(rwkv_model)
    calib_ids = calib_ids.to(rwkv_model.emb.weight.device)

    def score(model: RWKV) -> float | None:
        return None if corpus is None else heldout_bpc(model, corpus, eval_chars)

    rwkv_bpc, uncalibrated_bpc = score(rwkv_model), score(snn)
    start, cpu_start = time.perf_counter(), time.process_time()
    layers = calibrate(snn, calib_ids)
    calibration_seconds = time.perf_counter() - start
    calibration_cpu_seconds = time.process_time() - cpu_start
    calibrated_bpc = score(snn)
    finetuned_bpc, finetune_seconds, finetune_cpu_seconds = None, 0.0, 0.0
    if finetune_steps:
        run = train_lm(
            snn,
            corpus,
            finetune_steps,
            batch=finetune_batch,
            length=finetune_length,
            lr=finetune_lr,
            seed=seed,
            progress=progress,
            eval_chars=0,
        )
        finetune_seconds, finetune_cpu_seconds = run.seconds, run.cpu_seconds
        finetuned_bpc = score(snn)
    report = SpikeGPTConversionReport(
        corpus=None if corpus is None else corpus.name,
        eval_chars=eval_chars,
        rwkv_bpc=rwkv_bpc,
        uncalibrated_bpc=uncalibrated_bpc,
        calibrated_bpc=calibrated_bpc,
        finetuned_bpc=finetuned_bpc,
        calibration_tokens=calib_ids.numel(),
        finetune_tokens=finetune_steps * finetune_batch * finetune_length,
        finetune_steps=finetune_steps,
        calibration_seconds=calibration_seconds,
        calibration_cpu_seconds=calibration_cpu_seconds,
        finetune_seconds=finetune_seconds,
        finetune_cpu_seconds=finetune_cpu_seconds,
        layers=layers,
    )
    return snn, report
