"""MVTec LOCO AD (Bergmann et al., IJCV 2022): logical and structural anomalies, 5 categories."""

import pathlib

from af_jax.data_builders import common

CATEGORIES = ("breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors")


class MvtecLoco(common.MvtecLayoutBuilder):
  """MVTec LOCO AD: train, validation (normal only) and test splits.

  Each anomalous test image has one or more masks (`ground_truth/<kind>/NNN/000.png, ...`)
  whose pixel values encode the defect type; they are merged into one binary mask. `defect`
  keeps the folder name, 'logical_anomalies' or 'structural_anomalies'. Sources are
  non-square (about 800-1700 px) and are stretched to the square size. 1,772 train /
  304 validation / 1,568 test images. License CC BY-NC-SA 4.0 (non-commercial).
  """
  name = "mvtec_loco"
  CATEGORIES = CATEGORIES
  BUILDER_CONFIGS = common.category_configs(CATEGORIES)
  NORMAL_SPLITS = ("train", "validation")
  HOMEPAGE = "https://www.mvtec.com/company/research/datasets/mvtec-loco"
  CITATION = """@article{bergmann2022beyond,
  title={Beyond Dents and Scratches: Logical Constraints in Unsupervised Anomaly Detection
         and Localization},
  author={Bergmann, Paul and Batzner, Kilian and Fauser, Michael and Sattlegger, David and
          Steger, Carsten},
  journal={IJCV}, volume={130}, pages={947--969}, year={2022}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download MVTec LOCO AD from https://www.mvtec.com/company/research/datasets/mvtec-loco,
extract it and pass the extracted folder as the manual folder (`--manual_dir`):

  <manual_dir>/<category>/train/good/000.png ...
  <manual_dir>/<category>/validation/good/000.png ...
  <manual_dir>/<category>/test/{good,logical_anomalies,structural_anomalies}/000.png ...
  <manual_dir>/<category>/ground_truth/{logical_anomalies,structural_anomalies}/000/000.png
      (one folder per anomalous image, one or more masks in it)
  <manual_dir>/<category>/defects_config.json   (not used)

Categories: """ + ", ".join(CATEGORIES)

  def _masks_in(self, folder: pathlib.Path) -> dict[str, tuple[pathlib.Path, ...]]:
    return {d.name: tuple(common.image_files(d))
            for d in sorted(folder.iterdir()) if d.is_dir()}
