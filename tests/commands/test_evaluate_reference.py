"""`evaluate` on a category the run never saw: refused without its own `--reference`, scored
against it with one.

The run is the session's `pidinet_runs` `blaze_reference` (synthetic categories); the new
category is real MVTec AD bottle images built as a `folder` category at the run's 32 px.
"""

import json
import shutil

import pytest

from af_jax import cli
from conftest import file_hashes, run_cli


@pytest.fixture(scope="module")
def bottle_build(bottle_dir, tmp_path_factory):
  """(manual folder, data_dir): 8 normal train images, 3 good and 3 broken test images (with
  their masks) of the real bottle, as `folder/bottle` at 32 px."""
  root = tmp_path_factory.mktemp("bottle_folder")
  for folder, count in (("train/good", 8), ("test/good", 3), ("test/broken_large", 3),
                        ("ground_truth/broken_large", 3)):
    (root / "bottle" / folder).mkdir(parents=True)
    for source in sorted((bottle_dir / folder).glob("*.png"))[:count]:
      shutil.copy(source, root / "bottle" / folder)
  data_dir = root.parent / f"{root.name}_tfds"
  assert cli.main(["prepare", "--dataset", "folder", "--manual_dir", str(root), "--data_dir",
                   str(data_dir), "--size", "32"]) == 0
  return root, data_dir


def test_evaluate_refuses_a_category_the_run_never_saw_without_its_reference(
    pidinet_runs, bottle_build, tmp_path, capsys):
  root, names = pidinet_runs
  manual, data_dir = bottle_build
  capsys.readouterr()
  run = root / "blaze_reference"
  args = ["evaluate", "--workdir", run, "--dataset", "folder", "--categories", "bottle",
          "--data_dir", data_dir, "--out", tmp_path / "eval"]
  before = file_hashes(root), file_hashes(manual), file_hashes(data_dir)
  code, line = run_cli(*args, capsys=capsys)
  assert code == 1 and line.startswith("af-jax evaluate: error: ")
  assert "folder/bottle" in line and f"synthetic/{names[0]}" in line and "--reference" in line
  assert not (tmp_path / "eval").exists()
  # A --reference of another category is refused, naming it.
  other = tmp_path / "gear"
  shutil.copytree(manual / "bottle" / "test" / "good", other)
  code, line = run_cli(*args, "--reference", other, capsys=capsys)
  assert code == 1 and "category gear" in line and "matches none of --categories" in line, line
  # Its own normal images: scored against them, the figures recorded.
  code, line = run_cli(*args, "--reference", manual / "bottle" / "train" / "good", capsys=capsys)
  assert code == 0, line
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert metrics["per_category"]["bottle"]["num_images"] == 6
  assert (file_hashes(root), file_hashes(manual), file_hashes(data_dir)) == before
