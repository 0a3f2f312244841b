#!/usr/bin/env python3
"""Checks that every import between weft's top-level modules points down a layer.

The layers (docs/DESIGN.md, "Layers") are listed below, lowest first. A module may use
modules of lower layers only: never a sibling of its own layer, never one above. So
there are no import circles. Run from the repository root; exits 1 naming each
offending `crate::` path with its file and line.

Usage: python3 scripts/check_layers.py
"""
import pathlib
import re
import sys

LAYERS = [
    ["sys", "alloc", "log"],
    ["schema"],
    ["event"],
    ["codec", "evolve"],
    ["config"],
    ["router", "watermark", "metrics"],
    ["state"],
    ["join", "source", "sink", "exchange"],
    ["checkpoint"],
    ["shard"],
    ["engine"],
    ["oracle", "loadgen"],
]
LAYER_OF = {m: i for i, names in enumerate(LAYERS) for m in names}
USE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to("src")
    return rel.parts[0].removesuffix(".rs")


def main() -> int:
    errors = []
    for path in sorted(pathlib.Path("src").rglob("*.rs")):
        own = module_of(path)
        if own in ("lib", "main"):
            continue
        if own not in LAYER_OF:
            errors.append(f"{path}: module `{own}` is in no layer; add it to scripts/check_layers.py and docs/DESIGN.md")
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            for m in USE.finditer(code):
                dep = m.group(1)
                if dep == own:
                    continue
                if dep not in LAYER_OF:
                    errors.append(f"{path}:{lineno}: `crate::{dep}` is in no layer")
                elif LAYER_OF[dep] >= LAYER_OF[own]:
                    how = "a sibling in its layer" if LAYER_OF[dep] == LAYER_OF[own] else "a higher layer"
                    errors.append(f"{path}:{lineno}: `{own}` uses `crate::{dep}`, {how}")
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} import(s) against the layers")
        return 1
    print(f"layers: every import between top-level modules points down ({len(LAYER_OF)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
