"""Atomic file writes and folder swaps: a reader sees the old or the whole new, never half."""

import json

import numpy as np
import pytest

from af_jax import files


def test_atomic_writes_replace_whole_files_and_leave_no_temporary(tmp_path):
  path = files.write_json(tmp_path / "a.json", {"x": 1})
  assert json.loads(path.read_text()) == {"x": 1}
  files.write_npy(tmp_path / "a.npy", np.arange(3))
  np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(3))
  files.write_npz(tmp_path / "a.npz", m=np.ones(2))
  np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["m"], np.ones(2))

  def fail(tmp):
    tmp.write_text("half")
    raise OSError("disk full")
  with pytest.raises(OSError, match="disk full"):
    files.atomic_write(tmp_path / "a.json", fail)
  assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}  # The old file, whole.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npy", "a.npz"]


def test_write_all_removes_what_it_wrote_when_one_write_fails(tmp_path):
  def broken(path, data):
    raise OSError(f"cannot write {path}")
  with pytest.raises(OSError, match="cannot write"):
    files.write_all([(files.write_text, tmp_path / "a.txt", "a"),
                     (broken, tmp_path / "b.txt", "b")])
  assert not list(tmp_path.iterdir())


def test_a_staged_folder_replaces_its_target_only_when_complete(tmp_path):
  target = tmp_path / "out" / "cat"
  with files.staged_folder(target, "t") as staging:
    staging.mkdir()
    (staging / "1.png").write_text("new")
  assert (target / "1.png").read_text() == "new"
  with pytest.raises(RuntimeError):
    with files.staged_folder(target, "t") as staging:
      staging.mkdir()
      (staging / "2.png").write_text("never")
      raise RuntimeError("interrupted")
  assert sorted(p.name for p in target.iterdir()) == ["1.png"]
  assert sorted(p.name for p in target.parent.iterdir()) == ["cat"]  # No staging left over.


@pytest.mark.parametrize("name", ["widget", "metal_plate", "a-b.c", "bottle-64px"])
def test_plain_names_pass(name):
  assert files.check_plain_name(name, "x") == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", ".hidden", "-flag",
                                  "a\\b", "x\n"])
def test_paths_are_not_plain_names(name):
  with pytest.raises(ValueError, match="x must be a plain name"):
    files.check_plain_name(name, "x")
