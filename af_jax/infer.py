"""The inference API in one import: `from af_jax import infer`.

  gen = infer.Generator("runs/flare")
  result = gen.generate(images, n_variants=4, seed=0)       # images uint8 [H, W, 3] each
  det = infer.Detector("runs/blaze")
  det.calibrate(normal_images, fpr=0.01)                     # thresholds without anomalies
  loc = det.localize(test_images)                            # one size H x W per call

The code lives in `af_jax/inference/` (one module per part: the Generator, the Detector and its
post-processing, thresholds, batching); this module names what users call.
"""

from af_jax.inference.batching import batches_by_size
from af_jax.inference.detector import Detector
from af_jax.inference.detector import EvidenceChannel
from af_jax.inference.detector import LocalizationResult
from af_jax.inference.generator import GenerationResult
from af_jax.inference.generator import Generator
from af_jax.inference.thresholds import FILE_NAME as THRESHOLDS_FILE

__all__ = ["Generator", "GenerationResult", "Detector", "EvidenceChannel", "LocalizationResult",
           "batches_by_size", "THRESHOLDS_FILE"]
