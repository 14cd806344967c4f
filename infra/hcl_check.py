"""Parse every Terraform file under a directory with python-hcl2 and check
that references resolve.

terraform itself (and its providers) cannot be installed from this project's
package registries, so `terraform validate` is the deployer's job; this is
the static part of it that needs no provider: every file parses, and every
var.X, local.X, data.T.N and resource T.N used is declared once.

Usage: python hcl_check.py DIR   (exit 1 on any problem)
"""

import re
import sys
from pathlib import Path

import hcl2

REF = re.compile(
    r"(?<![\w.\-])(var|local|data\.[a-z0-9_]+|google(?:_[a-z0-9]+)+)\.([A-Za-z_][A-Za-z0-9_\-]*)"
)


def strings(node):
    """Every string in a parsed HCL tree (expressions come back as strings)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def unquote(name):
    return name.strip('"')


def names(block):
    """Keys of a parsed block, without python-hcl2's metadata (__is_block__...)."""
    return [k for k in block if not k.startswith("__")]


def main(root):
    root = Path(root)
    files = sorted(root.glob("*.tf")) + sorted(root.glob("*.tfvars.example"))
    if not files:
        print(f"no .tf files under {root}")
        return 1
    failed = False
    parsed = {}
    for f in files:
        try:
            with f.open() as fh:
                parsed[f] = hcl2.load(fh)
            print(f"OK    {f}")
        except Exception as e:  # any parse error is reported, not raised
            failed = True
            msg = " ".join(str(e).split())
            print(f"FAIL  {f}: {msg}")
    if failed:
        return 1

    declared = {"var": set(), "local": set()}
    resources = set()
    data = set()
    dupes = []

    def declare(kind, name, where):
        bucket = declared.setdefault(kind, set()) if kind in ("var", "local") else None
        target = bucket if bucket is not None else (resources if kind == "resource" else data)
        if name in target:
            dupes.append(f"{where}: {kind} {name} declared twice")
        target.add(name)

    for f, tree in parsed.items():
        if f.suffix != ".tf":
            continue
        for block in tree.get("variable", []):
            for name in names(block):
                declare("var", unquote(name), f)
        for block in tree.get("locals", []):
            for name in names(block):
                declare("local", name, f)
        for block in tree.get("resource", []):
            for rtype in names(block):
                for name in names(block[rtype]):
                    declare("resource", f"{unquote(rtype)}.{unquote(name)}", f)
        for block in tree.get("data", []):
            for dtype in names(block):
                for name in names(block[dtype]):
                    declare("data", f"data.{unquote(dtype)}.{unquote(name)}", f)

    problems = list(dupes)
    for f, tree in parsed.items():
        if f.suffix != ".tf":
            continue
        for s in strings(tree):
            for kind, name in REF.findall(s):
                if kind == "var" and name not in declared["var"]:
                    problems.append(f"{f}: undeclared variable var.{name}")
                elif kind == "local" and name not in declared["local"]:
                    problems.append(f"{f}: undeclared local.{name}")
                elif kind.startswith("data.") and f"{kind}.{name}" not in data:
                    problems.append(f"{f}: undeclared {kind}.{name}")
                elif kind.startswith("google") and f"{kind}.{name}" not in resources:
                    problems.append(f"{f}: undeclared resource {kind}.{name}")

    # tfvars example: only declared variables.
    for f, tree in parsed.items():
        if f.suffix == ".example":
            for name in names(tree):
                if name not in declared["var"]:
                    problems.append(f"{f}: sets undeclared variable {name}")

    for p in sorted(set(problems)):
        print(f"FAIL  {p}")
    if problems:
        return 1
    print(
        f"references: {len(declared['var'])} variables, {len(declared['local'])} locals, "
        f"{len(resources)} resources, {len(data)} data sources, all resolved"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
