"""MADSim (MAD-Sim of the PAD benchmark, Zhou et al., NeurIPS 2023): 20 LEGO toys, many poses."""

from af_jax.data_builders import common

CATEGORIES = ("01Gorilla", "02Unicorn", "03Mallard", "04Turtle", "05Whale", "06Bird", "07Owl",
              "08Sabertooth", "09Swan", "10Sheep", "11Pig", "12Zalika", "13Pheonix",
              "14Elephant", "15Parrot", "16Cat", "17Scorpion", "18Obesobeso", "19Bear",
              "20Puppy")


class Madsim(common.MvtecLayoutBuilder):
  """MADSim: rendered LEGO toys in MVTec layout; defects Burrs, Missing and Stains.

  The camera poses (`transforms.json`) are not used.
  """
  name = "madsim"
  CATEGORIES = CATEGORIES
  BUILDER_CONFIGS = common.category_configs(CATEGORIES)
  HOMEPAGE = "https://github.com/EricLee0224/PAD"
  CITATION = """@inproceedings{zhou2023pad,
  title={{PAD}: A Dataset and Benchmark for Pose-agnostic Anomaly Detection},
  author={Zhou, Qiang and Li, Weize and Jiang, Lihan and Wang, Guoyang and Zhou, Guyue and
          Zhang, Shanghang and Zhao, Hao},
  booktitle={NeurIPS Datasets and Benchmarks}, year={2023}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download MAD-Sim from https://github.com/EricLee0224/PAD, extract it and pass the folder
holding the 20 class folders as the manual folder (`--manual_dir`):

  <manual_dir>/<NNClass>/train/good/*.png
  <manual_dir>/<NNClass>/test/good/*.png
  <manual_dir>/<NNClass>/test/{Burrs,Missing,Stains}/*.png
  <manual_dir>/<NNClass>/ground_truth/{Burrs,Missing,Stains}/*_mask.png
  <manual_dir>/<NNClass>/transforms.json   (camera poses, not used)

Classes: """ + ", ".join(CATEGORIES)
