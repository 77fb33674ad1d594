"""`af-jax prepare --beam_pipeline_options`: Beam builds equal single-process ones; failures.

Needs the optional apache-beam (`pip install -e '.[beam]'`); skipped without it.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from af_jax.commands import prepare
from mix_root import real_mix_root  # pylint: disable=unused-import

pytest.importorskip("apache_beam", reason="Beam builds need the optional apache-beam "
                                          "(pip install -e '.[beam]')")

# Beam's DirectRunner with two worker processes, as on a machine without a cluster.
TWO_WORKERS = "direct_num_workers=2,direct_running_mode=multi_processing"


def _mix(root, mix, out, *extra) -> int:
  return prepare.main(["--mix", str(mix), "--manual_root", str(root), "--data_dir", str(out),
                       "--size", "64", *extra])


def _examples(name: str, data_dir) -> dict[str, list[dict]]:
  splits = tfds.data_source(name, data_dir=str(data_dir), download=False)
  return {split: list(source) for split, source in splits.items()}


def _metadata(name: str, data_dir) -> dict:
  return dict(tfds.builder(name, data_dir=str(data_dir)).info.metadata)


def test_a_beam_build_of_two_datasets_equals_the_single_process_build(real_mix_root, tmp_path):
  root, mix = real_mix_root
  single, beam = tmp_path / "single", tmp_path / "beam"
  assert _mix(root, mix, single, "--train_per_category", "mix") == 0
  assert _mix(root, mix, beam, "--train_per_category", "mix",
              "--beam_pipeline_options", TWO_WORKERS) == 0
  for name in ("mvtec_ad/bottle-64px", "visa/pcb1-64px-sample3"):  # PiDiNet edges.
    expected, built = _examples(name, single), _examples(name, beam)
    assert built.keys() == expected.keys() == {"train", "test"}
    for split, examples in expected.items():
      assert len(built[split]) == len(examples)
      for want, got in zip(examples, built[split]):  # Same keys, so the same order.
        assert got.keys() == want.keys()
        for feature, value in want.items():
          assert np.array_equal(got[feature], value), (name, split, want["file_name"], feature)
    assert _metadata(name, beam) == _metadata(name, single)  # Data facts and the draw.


def test_a_failing_beam_pipeline_says_why_in_one_line_and_keeps_nothing(real_mix_root,
                                                                        tmp_path, capsys):
  root, mix = real_mix_root
  bad = root / "mvtec_ad" / "bottle" / "train" / "good" / "004.png"
  bad.unlink()
  bad.write_bytes(b"not a png")
  out = tmp_path / "out"
  assert _mix(root, mix, out, "--edges", "canny", "--beam_pipeline_options", TWO_WORKERS) == 1
  line = capsys.readouterr().err.strip().splitlines()[-1]
  assert line.startswith("af-jax prepare: error: the Beam pipeline building "
                         "mvtec_ad/bottle-64px-canny failed (")
  assert str(bad) in line and "nothing of it was kept" in line
  assert not list(out.rglob("dataset_info.json")) and not list(out.rglob("incomplete*"))


def test_an_option_beam_does_not_know_is_a_usage_error(real_mix_root, tmp_path, capsys):
  root, mix = real_mix_root
  with pytest.raises(SystemExit) as exit_:
    _mix(root, mix, tmp_path / "out", "--beam_pipeline_options", "direct_num_workerz=2")
  assert exit_.value.code == 2
  assert "--beam_pipeline_options: Beam knows no option direct_num_workerz" in \
      capsys.readouterr().err
