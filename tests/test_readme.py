"""README's two commands are the product's contract with a new user and with CI: keep them true."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    i = lines.index("<!-- test-command -->")
    assert lines[i + 1].startswith("```"), "the test command must be the first line of a code block"
    return lines[i + 2]


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    command = _readme_test_command()
    assert command in ci_lines, "the README's test command must appear as a line of .ci/run"
    assert "pytest" in command and "torch==2.13.0" in command


def test_readme_opens_with_the_demo_command():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)\n```", text, re.S).group(1)
    assert "torch==2.13.0" in first_block and first_block.rstrip().endswith("stapes demo")
