"""`make test`'s runner: both runs side by side, each one's result summed up, failing if either fails."""

from __future__ import annotations

import sys

import pytest

from scripts import run_tests


def fake_runs(monkeypatch, tmp_path, lab_code: int, free_code: int):
    """Each "pytest" is a tiny Python program printing a pytest-like last line and exiting."""
    monkeypatch.setattr(run_tests, "PROJECT", tmp_path)
    monkeypatch.setattr(run_tests, "PYTEST", [sys.executable, "-c"])
    program = "import sys; print('collected'); print({line!r}); sys.exit({code})"
    monkeypatch.setattr(run_tests, "RUNS", {
        "lab": [program.format(line="== 3 passed in 1s ==", code=lab_code)],
        "lab-free": [program.format(line="== 7 passed, 1 failed in 2s ==", code=free_code)],
    })


@pytest.mark.parametrize("lab_code, free_code, status", [(0, 0, 0), (1, 0, 1), (0, 1, 1), (5, 0, 1)])
def test_fails_when_either_run_fails(monkeypatch, tmp_path, capsys, lab_code, free_code, status):
    fake_runs(monkeypatch, tmp_path, lab_code, free_code)
    assert run_tests.main([]) == status
    out = capsys.readouterr().out
    assert "== 3 passed in 1s ==" in out  # the lab run streamed
    assert "lab-free run (its log)" in out and "collected" in out
    summary = out.split("summary,")[1]
    assert ("FAILED (pytest exit 1)" in summary) == (1 in (lab_code, free_code))
    assert "lab-free: " in summary and "7 passed, 1 failed" in summary


def test_arguments_make_one_ordinary_run(monkeypatch, tmp_path):
    monkeypatch.setattr(run_tests, "PYTEST", [sys.executable, "-c", "import sys; sys.exit(len(sys.argv))"])
    assert run_tests.main(["a", "b"]) == 3
