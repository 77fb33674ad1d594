"""Inference settings' defaults, read by the Python API, the commands' flags and the demo."""

# Images per device call (short batches are padded, so one compile serves every call).
BATCH_SIZE = 16
# Gaussian blur of detector heatmaps, in model pixels (the usual post-processing of anomaly
# maps, as PatchCore and PaDiM report it); 0 keeps the raw heatmaps.
SMOOTHING_SIGMA = 4.0
# False-positive rate on normal images at which thresholds are calibrated.
CALIBRATION_FPR = 0.01
# Heatmap level of the binary masks of generated anomalies (inside the edited region).
MASK_THRESHOLD = 0.5
# Fewest normal images a calibration takes: a quantile of fewer says little of unseen images.
MIN_CALIBRATION_IMAGES = 10
