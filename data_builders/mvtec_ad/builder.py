"""MVTec AD (Bergmann et al., CVPR 2019): 15 categories of industrial objects and textures."""

from af_jax.data_builders import common

CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
              "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood",
              "zipper")


class MvtecAd(common.MvtecLayoutBuilder):
  """MVTec AD: normal train images; normal and defective test images with binary masks.

  3,629 train / 1,725 test images, 700-1024 px squares; grid, screw and zipper are grayscale
  (stored as RGB). License CC BY-NC-SA 4.0 (non-commercial).
  """
  name = "mvtec_ad"
  CATEGORIES = CATEGORIES
  BUILDER_CONFIGS = common.category_configs(CATEGORIES)
  HOMEPAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
  CITATION = """@inproceedings{bergmann2019mvtec,
  title={{MVTec AD} -- A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection},
  author={Bergmann, Paul and Fauser, Michael and Sattlegger, David and Steger, Carsten},
  booktitle={CVPR}, year={2019}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download MVTec AD from https://www.mvtec.com/company/research/datasets/mvtec-ad, extract it
and pass the extracted folder as the manual folder (`--manual_dir`). It must hold one folder
per category, as shipped:

  <manual_dir>/<category>/train/good/000.png ...
  <manual_dir>/<category>/test/good/000.png ...
  <manual_dir>/<category>/test/<defect>/000.png ...
  <manual_dir>/<category>/ground_truth/<defect>/000_mask.png ...

Categories: """ + ", ".join(CATEGORIES)
