"""The pre-commit hooks are the lint steps of scripts/test.sh, with the tools of .venv."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def lint_steps() -> list[str]:
    """scripts/test.sh's lint commands (the tool and its subcommand), in order."""
    steps = []
    for line in (ROOT / "scripts" / "test.sh").read_text().splitlines():
        words = line.split("#")[0].split()
        if words and words[0] in ("ruff", "yamllint", "mypy"):
            steps.append(" ".join(w for w in words[:2] if not w.startswith(("-", "."))))
    return steps


def test_every_lint_step_of_the_test_script_is_a_local_hook():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (repo,) = config["repos"]
    assert repo["repo"] == "local"  # nothing to download: works offline
    entries = [hook["entry"] for hook in repo["hooks"]]
    assert all(e.startswith(".venv/bin/") and hook["language"] == "system"
               for e, hook in zip(entries, repo["hooks"], strict=True)), entries  # fmt: skip
    hooks = [" ".join(e.removeprefix(".venv/bin/").split()[:2]) for e in entries]
    steps = lint_steps()
    assert steps == ["ruff check", "ruff format", "yamllint", "mypy"], steps
    assert [s for s in steps if not any(h.startswith(s) for h in hooks)] == [], hooks
