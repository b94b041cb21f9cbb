"""Fact units (glmops.modules._facts): each parser against recorded output, one case per fixture file
in tests/fixtures/facts/<unit>/<case>.json ({"source", "output": [lines], "facts": {...}}).
The real gathering over sshd is test_modules_commands.py::test_setup_facts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from glmops.modules._facts import BY_NAME, END, UNITS, gather_script, parse_output, sections

FIXTURES = Path(__file__).parent / "fixtures" / "facts"
CASES = sorted(FIXTURES.glob("*/*.json"))


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_unit_parses_recorded_output(path: Path) -> None:
    case = json.loads(path.read_text())
    assert BY_NAME[path.parent.name].parse(case["output"]) == case["facts"]


def test_every_unit_has_recorded_output() -> None:
    assert sorted(BY_NAME) == sorted({p.parent.name for p in CASES}) and len(BY_NAME) == len(UNITS)


def test_sections_give_each_unit_its_own_lines() -> None:
    text = "noise\n@@uname\nLinux\n6.1\nx86_64\n@@gpus\n@@user\nroot\n0\n/root\n/bin\n" + END + "\n"
    assert sections(text) == {"uname": ["Linux", "6.1", "x86_64"], "gpus": [], "user": ["root", "0", "/root", "/bin"], "end": []}


def test_missing_sections_still_give_every_fact() -> None:
    facts = parse_output("@@gpus\n0, NVIDIA GeForce RTX 3090, 24576, 1024, 535.54.03\n@@end\n")
    assert facts["gpus"][0]["memory_total_mb"] == 24576
    assert (facts["processor_vcpus"], facts["mounts"], facts["python"], facts["user_uid"]) == (0, [], {}, -1)


def test_one_script_gathers_every_unit_here() -> None:
    out = subprocess.run(["/bin/sh", "-c", gather_script()], capture_output=True, text=True, check=True).stdout
    assert list(sections(out)) == [unit.name for unit in UNITS] + ["end"]
    facts = parse_output(out)
    assert facts["system"] == "Linux" and facts["processor_vcpus"] >= 1 and facts["memtotal_mb"] > 0
