"""Every role's public @deploy function shows how a user calls it from their own deploy file,
as pyinfra's operations do, and the example names the function as it is."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROLES = Path(__file__).resolve().parents[2] / "roles"
CODE_BLOCK = ".. code:: python"


def public_deploys(source: str) -> list[ast.FunctionDef]:
    """The module's functions decorated with ``@deploy(...)`` whose names are public."""
    return [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef)
        and not node.name.startswith("_")
        and any(
            isinstance(d, ast.Call) and getattr(d.func, "id", None) == "deploy"
            for d in node.decorator_list
        )
    ]


def example_problem(role: str, function: ast.FunctionDef) -> str | None:
    """Why ``function``'s docstring lacks a working example, or None when it has one."""
    doc = ast.get_docstring(function) or ""
    if CODE_BLOCK not in doc:
        return f"{role}.{function.name}: no '{CODE_BLOCK}' example in its docstring"
    code = textwrap.dedent(doc.split(CODE_BLOCK, 1)[1])
    tree = ast.parse(code)
    imports = any(
        isinstance(n, ast.ImportFrom) and n.module == "roles" and role in [a.name for a in n.names]
        for n in tree.body
    )
    calls = any(
        isinstance(n, ast.Call) and ast.unparse(n.func) == f"{role}.{function.name}"
        for n in ast.walk(tree)
    )
    if not (imports and calls):
        return f"{role}.{function.name}: the example must import {role} and call it"
    return None


PACKAGES = sorted(p.parent for p in ROLES.glob("*/__init__.py"))


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_every_public_deploy_has_an_example(package: Path):
    deploys = public_deploys((package / "__init__.py").read_text())
    problems = [example_problem(package.name, f) for f in deploys]
    assert [p for p in problems if p] == []


def test_the_roles_have_public_deploys():
    found = {p.name for p in PACKAGES if public_deploys((p / "__init__.py").read_text())}
    assert {"base", "ollama", "tabbyapi", "vfio", "client"} <= found, found


def test_a_missing_or_stale_example_is_found():
    source = '''
@deploy("X")
def install():
    """Does it.

    .. code:: python

        from roles import x

        x.configure()
    """

@deploy("X")
def remove():
    """No example."""
'''
    install, remove = public_deploys(source)
    assert "must import x and call it" in (example_problem("x", install) or "")
    assert "no '.. code:: python' example" in (example_problem("x", remove) or "")
