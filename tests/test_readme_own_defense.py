"""README's "Bring your own defense" section runs as a user runs it: its module, its script and
its two commands, each in a fresh process, in an empty folder."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## Bring your own defense", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_the_section_has_a_module_a_script_and_two_commands():
    blocks = _section_blocks()
    assert [lang for lang, _ in blocks] == ["python", "python", "bash"]
    assert blocks[0][1].startswith("# my_defense.py\n")
    commands = [line for line in blocks[2][1].splitlines() if line.strip()]
    assert len(commands) == 2 and all(c.startswith(".venv/bin/tfdefense --import my_defense ")
                                      for c in commands)


@pytest.mark.slow  # trains two small models and runs the adaptive preset twice: ~2 minutes
def test_bring_your_own_defense_runs_end_to_end(tmp_path):
    (_, module), (_, script), (_, commands) = _section_blocks()
    (tmp_path / "my_defense.py").write_text(module)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(args):
        out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env,
                             timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    printed = run([sys.executable, "-c", script])
    assert "worst case (linf)" in printed and "detector_aware" in printed
    assert (tmp_path / "runs/my_defense/defense.json").is_file()
    for line in filter(str.strip, commands.splitlines()):
        argv = line.split()
        assert argv[0] == ".venv/bin/tfdefense"
        run([sys.executable, "-m", "tfdefense.cli", *argv[1:]])
    claims = json.loads((tmp_path / "runs/my_defense_eval/claim.json").read_text())
    assert set(claims) == {"Linf", "L2"} and claims["Linf"]["n"] == 50
    assert claims["Linf"]["name"] == "DenoiseThenClassify"
    from tfdefense.export import read_metadata

    metadata = read_metadata(str(tmp_path / "saved_models/my_defense/1"))
    assert {"serving_default", "detect", "defend"} <= set(metadata["signatures"])
