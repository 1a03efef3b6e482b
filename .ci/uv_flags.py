"""Print, one a line, the flags that give `uv pip install` pip's configuration on this machine (`pip config list`):
its find-links, indexes and constraints. uv does not read pip's files or PIP_* variables."""

import shlex
import subprocess
import sys

FLAGS = {"find-links": "--find-links", "index-url": "--index-url", "extra-index-url": "--extra-index-url",
         "constraint": "--constraint"}
# pip's precedence: the environment's PIP_* over a file's [install] section over its [global] one
RANK = {":env:": 0, "install": 1, "global": 2}

listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
chosen: dict[str, tuple[int, list[str]]] = {}
for line in listing.stdout.splitlines():
    key, _, value = line.partition("=")
    section, _, name = key.rpartition(".")
    rank = RANK.get(section, len(RANK))
    if name in FLAGS and rank < chosen.get(name, (len(RANK) + 1, []))[0]:
        chosen[name] = (rank, shlex.split(value)[0].split())
for name, (_, values) in chosen.items():
    for value in values:
        print(FLAGS[name], value, sep="\n")
