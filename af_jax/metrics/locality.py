"""Is a generated anomaly local, and on the object? Figures that need no pretrained network.

The generator fuses `I_out = I_in * (1 - H) + T * H` precisely so that everything outside the
defect stays untouched; these figures say whether a trained FlareGenerator does that:

* `change_inside`: the share of an anomaly's image change sum |I_out - I_in| that falls inside
  its binary mask (1.0: nothing outside the mask moved).
* `heatmap_iou`: the mean over anomalies of the IoU between the heatmap's own mask
  (heatmap >= `threshold`, before `infer.Generator` falls back to the edited region) and the
  edited region (1.0: the generator says exactly where it edited).
* `change_outside`: the mean absolute change of the pixels outside the mask, as a fraction of
  the value range (0.0: untouched).
* `on_object`: the share of the anomaly's mask that lies on the object of its source image
  (`af_jax.ops.foreground`: found without labels; 1.0 for textures and parts filling the
  frame). Anomalies on the empty backdrop teach a detector nothing about the part.

Each figure is computed per anomaly and averaged over anomalies; changes are measured in [0, 1]
per channel and averaged over channels.
"""

import numpy as np

from af_jax.ops import foreground

FIGURES = ("change_inside", "heatmap_iou", "change_outside", "on_object")


def per_anomaly(sources, outputs, masks, heatmaps, region_masks,
                threshold: float = 0.5) -> dict[str, np.ndarray]:
  """The figures (module docstring) of each anomaly: {figure: float64 [N]}.

  Args:
    sources: uint8 [N, H, W, 3] normal images the anomalies were made from.
    outputs: uint8 [N, H, W, 3] anomaly images.
    masks: bool [N, H, W] binary masks of the anomalies.
    heatmaps: float [N, H, W] in [0, 1], the generator's heatmaps.
    region_masks: bool [N, H, W], the edited regions.
    threshold: heatmap level of the heatmap's own mask.
  """
  sources, outputs = np.asarray(sources), np.asarray(outputs)
  masks, region_masks = np.asarray(masks, bool), np.asarray(region_masks, bool)
  if not (sources.shape == outputs.shape and sources.shape[:3] == masks.shape
          == region_masks.shape == np.shape(heatmaps)):
    raise ValueError(f"shapes differ: sources {sources.shape}, outputs {outputs.shape}, masks "
                     f"{masks.shape}, heatmaps {np.shape(heatmaps)}, regions {region_masks.shape}")
  change = np.abs(outputs.astype(np.float64) - sources.astype(np.float64)).mean(-1) / 255.0
  own = np.asarray(heatmaps) >= threshold
  union = (own | region_masks).sum((1, 2))
  total = change.sum((1, 2))
  outside = ~masks
  on_object = np.stack([foreground.foreground(s) for s in sources])
  area = masks.sum((1, 2))
  return dict(
      # An empty mask paints nothing on the backdrop.
      on_object=np.where(area > 0, (masks & on_object).sum((1, 2)) / np.maximum(area, 1), 1.0),
      # An anomaly that changed nothing changed nothing outside its mask either.
      change_inside=np.where(total > 0, (change * masks).sum((1, 2)) / np.maximum(total, 1e-12),
                             1.0),
      heatmap_iou=(own & region_masks).sum((1, 2)) / np.maximum(union, 1),
      change_outside=(change * outside).sum((1, 2)) / np.maximum(outside.sum((1, 2)), 1))


def summarize(figures: dict[str, np.ndarray]) -> dict[str, float]:
  """Means over anomalies of `per_anomaly` figures (concatenate several calls' first)."""
  if not len(figures["heatmap_iou"]):
    raise ValueError("no anomalies to summarize")
  return {name: float(np.mean(figures[name])) for name in FIGURES}


def locality(sources, outputs, masks, heatmaps, region_masks, threshold: float = 0.5) -> dict:
  """`summarize(per_anomaly(...))`: the figures over a set of anomalies."""
  return summarize(per_anomaly(sources, outputs, masks, heatmaps, region_masks, threshold))
