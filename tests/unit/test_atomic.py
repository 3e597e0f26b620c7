"""`zprime_grad.atomic.set_aside`: every named entry goes, in one hidden folder that is then deleted; a
name given twice (e.g. a stage's fixed outputs plus the ones it finds on disk) is set aside once."""

from __future__ import annotations

from zprime_grad import atomic


def test_set_aside_removes_each_named_entry_once_and_leaves_the_rest(tmp_path):
    (tmp_path / "validation.json").write_text("{}")
    (tmp_path / "workspace_baseline.json").write_text("{}")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"png")
    (tmp_path / "params.json").write_text("{}")
    gone = atomic.set_aside(tmp_path, ["validation.json", "workspace_baseline.json", "plots", "absent.json",
                                       "workspace_baseline.json"])
    assert gone == ["validation.json", "workspace_baseline.json", "plots"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.json"]
