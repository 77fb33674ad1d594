"""The one example schema every af_jax dataset builder writes.

All image-like features are stored as PNG bytes so that building and reading
need no TensorFlow. Everything is resized to `size x size` at build time.

  image     uint8 [S, S, 3]  RGB (grayscale sources are converted).
  edges     uint8 [S, S, 1]  PiDiNet (or Canny) edge probability x 255, not thresholded.
  regions   uint8 [S, S, 1]  candidate semantic regions: 0 = background, 1..K regions.
  mask      uint8 [S, S, 1]  ground truth, 0 or 255; all zero for normal images.
  label     int   0 = normal, 1 = anomalous.
  defect    str   defect folder name as the dataset spells it ('good' for normal images;
                  MVTec LOCO keeps 'logical_anomalies' / 'structural_anomalies').
  category  str   category as the dataset spells it.
  dataset   str   builder name ('mvtec_ad', ...).
  file_name str   source path relative to the dataset root.
  view      str   camera view ('C1'..'C5' for Real-IAD, '' elsewhere).
  sample_id str   sample id ('S0001' for Real-IAD, '' elsewhere).
"""

import tensorflow_datasets as tfds

LABEL_NAMES = ("normal", "anomaly")
DEFAULT_SIZE = 256


def example_features(size: int = DEFAULT_SIZE) -> tfds.features.FeaturesDict:
  """The FeaturesDict shared by all builders, for images of `size` x `size`."""
  png = dict(encoding_format="png")
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(size, size, 3), **png),
      "edges": tfds.features.Image(shape=(size, size, 1), **png),
      "regions": tfds.features.Image(shape=(size, size, 1), **png),
      "mask": tfds.features.Image(shape=(size, size, 1), **png),
      "label": tfds.features.ClassLabel(names=LABEL_NAMES),
      "defect": tfds.features.Text(),
      "category": tfds.features.Text(),
      "dataset": tfds.features.Text(),
      "file_name": tfds.features.Text(),
      "view": tfds.features.Text(),
      "sample_id": tfds.features.Text(),
  })
