"""grammars/resdsl.tmLanguage.json, run by VS Code's own TextMate engine (vscode-textmate + vscode-oniguruma, via
node), on every shipped spec: each token of the lark grammar gets the scope of its class."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from resdsl.format import Item, tokens
from resdsl.ir.ops import OPS

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "tests" / "textmate"
GRAMMAR = ROOT / "grammars" / "resdsl.tmLanguage.json"
SHIPPED = [*sorted((ROOT / "specs").rglob("*.res")), ROOT / "grammars" / "prelude.res"]
KEYWORDS = {"network", "extends", "param", "block", "shortcut", "override", "input", "stem", "stages", "head",
            "train", "same", "changed", "from", "for", "in"}

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (TextMate engine)")


@cache
def _tokenised() -> dict[str, list[list[dict]]]:
    """Every shipped file tokenised by vscode-textmate: per line, tokens with their scope stacks."""
    if not (HERE / "node_modules" / "vscode-textmate").is_dir():  # no download at test time
        pytest.fail("the TextMate engine is not installed: run `npm ci` in tests/textmate (.ci/run does)")
    result = subprocess.run(["node", "tokenize.js", str(GRAMMAR), *map(str, SHIPPED)], cwd=HERE, check=True,
                            capture_output=True, text=True, timeout=120)
    return json.loads(result.stdout)


def _scope(path: Path, item: Item) -> str:
    """The innermost TextMate scope at the start of a lark token."""
    line = _tokenised()[str(path)][item.token.line - 1]
    column = item.token.column - 1
    return next(token["scopes"][-1] for token in line if token["start"] <= column < token["end"])


def _expected(item: Item) -> str | None:
    """The scope (a prefix) that a token of this class must get; None for a plain name in an expression."""
    kind, value, rule = item.type, str(item.token), item.rule
    if kind == "COMMENT":
        return "comment.line.number-sign"
    if kind == "STRING":
        return "string.quoted.double"
    if rule == "path":  # the whole dotted path, `layer1.0`
        return "entity.name.label"
    if kind == "COLON" and rule == "label":
        return "punctuation.separator.label"
    if value in ("block", "shortcut", "network", "param") and kind != "NAME":
        return "storage.type"
    if kind == "NAME" and rule in ("block_def", "block_alias", "shortcut_def", "network"):
        return "entity.name.type"
    if kind == "NAME" and rule == "param_decl":
        return "variable.other.param"
    if kind in ("STAGES_CALL", "OVERRIDE") or (value in KEYWORDS and kind != "NAME"):
        return "storage.modifier.override" if kind == "OVERRIDE" else "keyword.other"
    if value in ("and", "or", "not") and kind != "NAME":
        return "keyword.operator.logical"
    if value in ("if", "else"):
        return "keyword.control.conditional"
    if value in ("true", "false"):
        return "constant.language.boolean"
    if kind == "SHAPE":
        return "constant.numeric.shape"
    if kind in ("INT", "FLOAT"):
        return "constant.numeric"
    if kind == "X":
        return "keyword.operator.repeat"
    if kind in ("COMPARE", "ADD_OP", "MUL_OP", "MINUS", "EQUAL"):
        return "keyword.operator"
    if kind == "CALL":
        return "entity.name.function.call"
    if kind in ("LBRACE", "RBRACE", "LPAR", "RPAR", "COMMA", "SEMICOLON", "COLON", "DOT"):
        return "punctuation"
    if kind == "NAME" and rule == "kwarg":
        return "variable"
    if kind == "NAME" and value in OPS:
        return "support.function.op"
    return "variable" if kind == "NAME" else None


@pytest.mark.parametrize("path", SHIPPED, ids=[str(path.relative_to(ROOT)) for path in SHIPPED])
def test_every_token_of_a_shipped_spec_gets_its_class_scope(path: Path) -> None:
    wrong = []
    for item in tokens(path.read_text()):
        if item.type in ("_NEWLINE", "LINE_CONTINUATION"):
            continue
        expected = _expected(item)
        assert expected is not None, f"no scope class for token {item.type} {item.token!r}"
        scope = _scope(path, item)
        if not scope.startswith(expected):
            wrong.append(f"{item.token.line}:{item.token.column} {item.type} {str(item.token)!r}: {scope}, "
                         f"not {expected}")
    assert not wrong, "\n".join(wrong[:20])


def test_the_scopes_asked_for_occur_in_the_shipped_specs() -> None:
    seen = {token["scopes"][-1].rsplit(".resdsl", 1)[0] for lines in _tokenised().values() for line in lines
            for token in line}
    for scope in ("comment.line.number-sign", "string.quoted.double", "keyword.other", "storage.type.block",
                  "entity.name.label", "constant.numeric.integer", "constant.numeric.float",
                  "constant.numeric.shape", "keyword.operator.repeat", "support.function.op"):
        assert scope in seen, scope
