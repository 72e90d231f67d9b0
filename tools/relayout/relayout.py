"""One-off: move kdep_cache modules into one package per concern and rewrite every import.

usage: python layout_tool.py REPO [--dry]
Reads every .py under kdep_cache/, tests/, pipelines/, benchmarks/ at its OLD path, rewrites
imports (relative inside kdep_cache, absolute elsewhere) and dotted strings, then git-mvs.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

MOVES = {  # old module (under kdep_cache) -> new module
    "cli": "cli",  # cli.py -> cli/__init__.py
    "cli_base": "cli.base",
    "cli_commands": "cli.commands",
    "cli_diagnose": "cli.diagnose",
    "cli_inspect": "cli.audit",
    "cli_transfer": "cli.transfer",
    "images": "views.images",
    "svg": "views.svg",
    "augment": "views.augment",
    "data": "views.datasets",
    "photometric": "views.photometric",
    "gpu_decode": "views.nvjpeg",
    "extract": "extract.run",
    "fitsvd": "fit.run",
    "align": "fit.align",
    "pca": "fit.moments",
    "projection_io": "fit.projection",
    "transfer.data": "transfer.classification.data",
    "transfer.linear": "transfer.classification.linear",
    "transfer.finetune": "transfer.classification.finetune",
    "transfer.metrics": "transfer.classification.metrics",
    "transfer.seeds": "transfer.classification.seeds",
    "transfer.dense": "transfer.dense.run",
    "transfer.dense_metrics": "transfer.dense.metrics",
    "transfer.det": "transfer.dense.det",
    "transfer.seg": "transfer.dense.seg",
    "transfer.layouts": "transfer.dense.layouts",
    "transfer.schedules": "transfer.dense.schedules",
    "inspect": "audit.info",
    "verify": "audit.verify",
    "lineage": "audit.lineage",
    "diagnose": "diagnose.report",
    "diagnose_plots": "diagnose.plots",
    "identity": "cache.identity",
    "runtime": "runtime.device",
    "dist": "runtime.dist",
    "progress": "runtime.progress",
    "fsio": "storage.fsio",
    "digest": "storage.digest",
    "locks": "storage.locks",
    "image_files": "views.files",
    "coverage": "diagnose.coverage",
    "cpu_share": "runtime.cpu_share",
    "fitcheck": "fit.checks",
    "integrity": "cache.sidecar",
    "shapes": "cache.shapes",
    "verify_store": "audit.verify_store",
    "checks": "checks",  # checks.py -> checks/__init__.py (torch-free option checks)
    "limits": "checks.limits",
    "stages": "checks.stages",
    "oschecks": "checks.environment",
}
PKG_DOCS = {
    "cli": None,  # cli.py becomes the package's __init__
    "views": "How a view is made: image discovery and decoding (+ SVG), replayable augmentation\n"
             "parameters, the CPU render, the device (photometric) part and nvJPEG.",
    "extract": "Stage 1: run the teacher once over K replayable views per image; write a raw cache.",
    "fit": "Stage 1b: streaming moments, aligners and transforms, the fit, the projection file.",
    "transfer.classification": "Classification transfer: datasets, linear probe, fine-tune, scores, seeds.",
    "transfer.dense": "Dense transfer: segmentation and detection datasets, models, schedules, scores.",
    "audit": "Read-only checks of artifacts: ``info`` (what it is, lineage) and ``verify`` (intact?).",
    "diagnose": "Teacher diagnostics of a raw cache: the report and its plots.",
    "runtime": "Where and how code runs: device and precision, torch.distributed, progress.",
    "storage": "Bytes on disk: atomic files, locks, content digests (torch-free).",
}
PREFIX = "kdep_cache"


def modname(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_pkg(path: Path) -> bool:
    return path.name == "__init__.py"


def new_of(old: str) -> str:
    """Full old dotted name (kdep_cache.x.y) -> full new dotted name."""
    if not old.startswith(PREFIX):
        return old
    rest = old[len(PREFIX) + 1:] if old != PREFIX else ""
    # longest old-module prefix
    parts = rest.split(".") if rest else []
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in MOVES:
            return ".".join([PREFIX, MOVES[key], *parts[k:]])
    return old


def resolve(cur_pkg: str, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = cur_pkg.split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def rel(from_pkg: str, target: str, inside: bool) -> str:
    if not inside:
        return target
    a, b = from_pkg.split("."), target.split(".")
    c = 0
    while c < min(len(a), len(b)) and a[c] == b[c]:
        c += 1
    dots = "." * (len(a) - c + 1)
    return dots + ".".join(b[c:])


def fmt_from(mod: str, names: list[str], indent: str, tail: str) -> str:
    one = f"{indent}from {mod} import {', '.join(names)}"
    if len(one) <= 100:
        return one + tail
    body = "".join(f"{indent}    {n},\n" for n in names)
    return f"{indent}from {mod} import ({tail}\n{body}{indent})"


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    dry = "--dry" in sys.argv
    files = [p for d in ("kdep_cache", "tests", "pipelines", "benchmarks")
             for p in sorted((root / d).rglob("*.py"))]
    old_modules = {modname(root, p) for p in (root / "kdep_cache").rglob("*.py")}
    pkgs = {modname(root, p) for p in (root / "kdep_cache").rglob("__init__.py")}
    out: dict[Path, str] = {}
    for path in files:
        src = path.read_text()
        inside = path.is_relative_to(root / "kdep_cache")
        old_self = modname(root, path) if inside else ""
        old_pkg = old_self if (inside and is_pkg(path)) else old_self.rpartition(".")[0]
        new_self = new_of(old_self) if inside else ""
        # a moved plain module becomes ... its package is new_self minus last part, unless
        # the module turned into a package __init__ (cli)
        new_is_pkg = inside and (is_pkg(path) or old_self in (f"{PREFIX}.cli", f"{PREFIX}.checks"))
        new_pkg = new_self if new_is_pkg else new_self.rpartition(".")[0]
        tree = ast.parse(src)
        lines = src.splitlines(keepends=True)
        offs = [0]
        for ln in lines:
            offs.append(offs[-1] + len(ln))
        spans: list[tuple[int, int, str]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = resolve(old_pkg, node.level, node.module) if node.level else (node.module or "")
                if not base.startswith(PREFIX):
                    continue
                line0 = lines[node.lineno - 1]
                indent = line0[: len(line0) - len(line0.lstrip())]
                last = lines[node.end_lineno - 1]
                endcol = node.end_col_offset
                tail = last[endcol:].rstrip("\n")
                groups: dict[str, list[str]] = {}
                for a in node.names:
                    full = f"{base}.{a.name}"
                    if base in pkgs and full in old_modules:
                        nf = new_of(full)
                        parent, _, leaf = nf.rpartition(".")
                        alias = a.asname or (a.name if leaf != a.name else None)
                        groups.setdefault(parent, []).append(leaf + (f" as {alias}" if alias else ""))
                    else:
                        nb = new_of(base)
                        groups.setdefault(nb, []).append(a.name + (f" as {a.asname}" if a.asname else ""))
                unchanged = (len(groups) == 1 and new_of(base) == base
                             and all(new_of(f"{base}.{a.name}") == f"{base}.{a.name}" for a in node.names))
                if unchanged and inside and new_pkg == old_pkg:
                    continue
                if not inside and unchanged:
                    continue
                # comments inside the statement: the first line's one is kept, others refused
                first_comment = ""
                for k in range(node.lineno - 1, node.end_lineno):
                    ln = lines[k] if k != node.end_lineno - 1 else lines[k][:endcol]
                    if "#" in ln:
                        if k == node.lineno - 1:
                            first_comment = ln[ln.index("#"):].rstrip("\n")
                        else:
                            raise SystemExit(f"{path}:{k+1}: comment inside a multi-line import")
                if first_comment:
                    tail = (tail + "  " + first_comment) if tail.strip() == "" else tail
                stmts = []
                for i, (tgt, names) in enumerate(groups.items()):
                    m = rel(new_pkg, tgt, inside)
                    stmts.append(fmt_from(m, names, indent, tail if i == len(groups) - 1 else ""))
                text = "\n".join(stmts)
                start = offs[node.lineno - 1]
                end = offs[node.end_lineno - 1] + len(last.rstrip("\n"))
                first_line = lines[node.lineno - 1]
                if first_line[: node.col_offset].strip():  # e.g. "try: from x import y" one-liner
                    raise SystemExit(f"{path}:{node.lineno}: import not at line start")
                spans.append((start, end, text.lstrip() if False else text))
        spans.sort()
        pieces, pos = [], 0
        pat = re.compile(r"\bkdep_cache(?:\.[A-Za-z_]\w*)+")
        def subst(seg: str) -> str:
            return pat.sub(lambda m: new_of(m.group(0)), seg)
        for s, e, t in spans:
            pieces.append(subst(src[pos:s]))
            pieces.append(t)
            pos = e
        pieces.append(subst(src[pos:]))
        new_src = "".join(pieces)
        out[path] = new_src
    if dry:
        for p, s in out.items():
            if s != p.read_text():
                print("changed", p.relative_to(root))
        return
    for p, s in out.items():
        p.write_text(s)
    # moves
    kd = root / PREFIX
    for old, new in MOVES.items():
        src = kd / (old.replace(".", "/") + ".py")
        if old in ("cli", "checks"):
            dst = kd / old / "__init__.py"
        else:
            dst = kd / (new.replace(".", "/") + ".py")
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "mv", str(src), str(dst)], cwd=root, check=True)
    for pkg, doc in PKG_DOCS.items():
        init = kd / pkg.replace(".", "/") / "__init__.py"
        if doc and not init.exists():
            init.write_text(f'"""{doc}"""\n')
            subprocess.run(["git", "add", str(init)], cwd=root, check=True)


if __name__ == "__main__":
    main()
