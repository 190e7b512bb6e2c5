"""README's Python example runs as written and prints what README says it prints (the CPU executor; the same text
on every CPU target)."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def readme_python_example():
    """(code, printed): the block opened by "```python example" and the block after the "prints" line below it."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^```python example\n(.*?)^```\n\s*prints.*?:\n\s*^```\n(.*?)^```", text, re.S | re.M)
    assert m, "README: no ```python example block followed by its printed output"
    return m.group(1), m.group(2)


def test_readme_python_example_prints_what_readme_shows(tmp_path):
    code, printed = readme_python_example()
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout == printed
