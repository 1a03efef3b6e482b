"""`resdsl lsp` end to end: a real LSP client (pytest-lsp) drives the server over stdio, as an editor does;
raw byte sessions send it what no client would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_resdsl

pytest_lsp = pytest.importorskip("pytest_lsp", reason="pytest-lsp is in the dev extra")
from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PRELUDE = ROOT / "grammars" / "prelude.res"

# The 16x32x32 map from the first conv reaches `linear` unflattened: line 5, column 5 (1-based) is `fc:`.
DIMENSION_ERROR = """\
network bad {
  input 3x32x32
  stem {
    conv 3x3, 16
    fc: linear 10
  }
}
"""

GOOD = """\
network small {
  input 3x32x32
  stem {
    conv1: conv 3x3, 16, stride 2
    relu
  }
  stages (block: bottleneck, shortcut: B) {
    layer1: 2 x 16
  }
  head {
    avgpool
    fc: linear 10
  }
}
"""


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "resdsl", "lsp"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities()))
    yield
    await lsp_client.shutdown_session()


async def _open(client: LanguageClient, path: Path, text: str) -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="resdsl", version=1, text=text)))
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return uri


def _position(text: str, line_text: str, word: str) -> types.Position:
    """The 0-based position of `word` in the line that starts with `line_text` (stripped)."""
    number = next(i for i, line in enumerate(text.split("\n")) if line.strip().startswith(line_text))
    return types.Position(line=number, character=text.split("\n")[number].index(word))


@pytest.mark.asyncio
async def test_dimension_error_is_a_diagnostic_at_its_line_and_column(client: LanguageClient, tmp_path: Path):
    uri = await _open(client, tmp_path / "bad.res", DIMENSION_ERROR)
    [diagnostic] = client.diagnostics[uri]
    assert diagnostic.range.start == types.Position(line=4, character=4)
    assert "linear needs flat features but gets a 16x32x32 feature map" in diagnostic.message


@pytest.mark.asyncio
async def test_hover_on_a_conv_shows_its_output_shape_and_cost(client: LanguageClient, tmp_path: Path):
    uri = await _open(client, tmp_path / "good.res", GOOD)
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=_position(GOOD, "conv1:", "conv 3x3")))
    assert hover is not None
    # a 3x3 conv with stride 2 and padding 1: 32 -> 16 pixels; 3*3*3*16 = 432 weights; 432 * 16*16 = 110,592 MACs
    assert "16x16x16" in hover.contents.value
    assert "432 params" in hover.contents.value and "110,592 MACs" in hover.contents.value


@pytest.mark.asyncio
async def test_definition_of_bottleneck_is_its_prelude_line(client: LanguageClient, tmp_path: Path):
    uri = await _open(client, tmp_path / "good.res", GOOD)
    location = await client.text_document_definition_async(types.DefinitionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=_position(GOOD, "stages", "bottleneck")))
    assert isinstance(location, types.Location)
    line = next(i for i, text in enumerate(PRELUDE.read_text().split("\n")) if text.startswith("block bottleneck("))
    assert (Path(location.uri.removeprefix("file://")).resolve(), location.range.start.line) == (PRELUDE, line)


@pytest.mark.asyncio
async def test_completion_after_block_colon_lists_the_blocks(client: LanguageClient, tmp_path: Path):
    text = "network n {\n  input 3x32x32\n  stages (block: \n}\n"
    uri = await _open(client, tmp_path / "typing.res", text)
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=2, character=17)))
    labels = {item.label for item in (result.items if isinstance(result, types.CompletionList) else result)}
    assert {"basic", "bottleneck", "preact_basic"} <= labels
    assert "conv" not in labels  # an op is not a block


@pytest.mark.asyncio
async def test_outline_survives_an_edit_that_breaks_the_parse(client: LanguageClient, tmp_path: Path):
    uri = await _open(client, tmp_path / "good.res", GOOD)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=GOOD.replace("head {", "head {{"))]))
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert client.diagnostics[uri]  # the syntax error
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(
        text_document=types.TextDocumentIdentifier(uri=uri)))
    [network] = symbols
    assert network.name == "small"
    assert [child.name for child in network.children] == ["input", "stem", "stages", "head"]
    assert [stage.name for stage in network.children[2].children] == ["layer1"]


def test_resnet152_is_analysed_in_under_100_ms_of_cpu_after_warm_up():
    # CPU time, not wall time: the per-keystroke work, whatever else the machine is running
    from resdsl.lsp.analysis import analyse

    path = ROOT / "specs" / "resnet152.res"
    text = path.read_text()
    analyse(str(path), text)  # warm-up: the parser tables and the prelude
    timings = []
    for _ in range(5):
        start = time.process_time()
        result = analyse(str(path), text)
        timings.append(time.process_time() - start)
    assert result.network is not None and not result.diagnostics
    assert min(timings) < 0.1, timings


@pytest.mark.asyncio
async def test_hover_on_a_stage_line_shows_its_blocks_totals(client: LanguageClient):
    path = ROOT / "specs" / "torchvision" / "resnet50.res"
    text = path.read_text()
    uri = await _open(client, path, text)
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=_position(text, "layer1:", "layer1")))
    assert hover is not None
    # torchvision resnet50().layer1: sum(p.numel() for p in layer1.parameters()) == 215,808; output 256x56x56
    assert "3 blocks → 256x56x56, 215,808 params" in hover.contents.value


@pytest.mark.asyncio
async def test_definition_of_an_extends_path_is_the_parent_file(client: LanguageClient):
    path = ROOT / "specs" / "timm" / "resnet101d.res"
    text = path.read_text()
    uri = await _open(client, path, text)
    location = await client.text_document_definition_async(types.DefinitionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=_position(text, "network", "resnet50d.res")))
    assert isinstance(location, types.Location)
    assert Path(location.uri.removeprefix("file://")) == ROOT / "specs" / "timm" / "resnet50d.res"


@pytest.mark.asyncio
async def test_completion_inside_extends_lists_zoo_names(client: LanguageClient, tmp_path: Path):
    text = 'network n extends "tor'
    uri = await _open(client, tmp_path / "child.res", text)
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=len(text))))
    labels = {item.label for item in (result.items if isinstance(result, types.CompletionList) else result)}
    assert {"torchvision/resnet50", "resnet50"} <= labels


HIDE_PYGLS = """\
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pygls":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
sys.argv = ["resdsl", "lsp"]
from resdsl.cli.app import main
main()
"""


def test_lsp_without_its_extra_says_which_in_one_line():
    result = subprocess.run([sys.executable, "-c", HIDE_PYGLS], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stderr) == (1, "error: resdsl lsp needs pygls: pip install 'resdsl[lsp]'\n")


@pytest.mark.asyncio
async def test_a_note_is_related_information_at_the_prelude_line(client: LanguageClient, tmp_path: Path):
    text = GOOD.replace("layer1: 2 x 16", "layer1: 2 x 16, groups 0")
    uri = await _open(client, tmp_path / "groups.res", text)
    first = client.diagnostics[uri][0]
    assert first.range.start == _position(text, "layer1:", "layer1")
    assert "expected a positive integer, got 0" in first.message
    [note] = first.related_information
    conv1 = next(i for i, line in enumerate(PRELUDE.read_text().split("\n")) if "conv1: conv 1x1, mid" in line)
    assert (note.message, Path(note.location.uri.removeprefix("file://")), note.location.range.start.line) == (
        "in this built-in definition", PRELUDE, conv1)


@pytest.mark.asyncio
async def test_hover_on_a_block_name_shows_its_signature_and_doc(client: LanguageClient, tmp_path: Path):
    uri = await _open(client, tmp_path / "good.res", GOOD)
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=_position(GOOD, "stages", "bottleneck")))
    assert hover is not None
    assert "block bottleneck(width, stride = 1, groups = 1, base_width = 64" in hover.contents.value
    assert "1x1 reduce, 3x3, 1x1 expand" in hover.contents.value  # the comment above it in the prelude


@pytest.mark.asyncio
async def test_a_burst_of_edits_ends_with_the_last_ones_diagnostics(client: LanguageClient, tmp_path: Path):
    uri = await _open(client, tmp_path / "good.res", GOOD)
    for version, text in enumerate([DIMENSION_ERROR, GOOD + "}", GOOD], start=2):
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert not client.diagnostics[uri]


# Raw sessions, byte for byte, for what a real client never sends: malformed frames and requests.
def _frames(*messages: dict | bytes) -> bytes:
    """Each message framed with its Content-Length; a bytes message is a body sent as it is."""
    bodies = [message if isinstance(message, bytes) else json.dumps(message).encode() for message in messages]
    return b"".join(b"Content-Length: %d\r\n\r\n%s" % (len(body), body) for body in bodies)


def _session(*requests: dict | bytes) -> bytes:
    """An editor's whole session around `requests`: initialize first, shutdown and exit last."""
    return _frames({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}},
                   {"jsonrpc": "2.0", "method": "initialized", "params": {}}, *requests,
                   {"jsonrpc": "2.0", "id": 99, "method": "shutdown"}, {"jsonrpc": "2.0", "method": "exit"})


def _hover(uri: str) -> dict:
    return {"jsonrpc": "2.0", "id": 2, "method": "textDocument/hover",
            "params": {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 0}}}


def test_request_about_an_unopened_named_pipe_neither_hangs_nor_reads_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.res")
    result = run_resdsl("lsp", cwd=tmp_path, stdin=_session(_hover((tmp_path / "pipe.res").as_uri())), timeout=20)
    assert result.returncode == 0
    assert '"id": 99' in result.stdout  # it answered the shutdown


def test_request_about_an_unopened_missing_file_is_answered_without_a_traceback(tmp_path: Path) -> None:
    result = run_resdsl("lsp", cwd=tmp_path, stdin=_session(_hover((tmp_path / "absent.res").as_uri())))
    assert result.returncode == 0
    assert '"id": 2, "jsonrpc": "2.0", "result": null' in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_header_claiming_a_huge_message_does_not_exhaust_memory(tmp_path: Path) -> None:
    result = run_resdsl("lsp", cwd=tmp_path, stdin=b"Content-Length: 99999999999999\r\n\r\n{}")
    assert result.returncode == 0 and "out of memory" not in result.stderr


def test_message_that_is_not_json_is_logged_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    result = run_resdsl("lsp", cwd=tmp_path, stdin=_session(b'{"a":'))
    assert result.returncode == 0
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 1


def test_request_with_params_of_the_wrong_shape_is_logged_without_a_traceback(tmp_path: Path) -> None:
    hover = {"jsonrpc": "2.0", "id": 2, "method": "textDocument/hover", "params": None}
    result = run_resdsl("lsp", cwd=tmp_path, stdin=_session(hover))
    assert result.returncode == 0 and '"id": 99' in result.stdout
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 2


def test_diagnostic_after_an_emoji_is_placed_in_the_utf16_units_the_server_announces(tmp_path: Path) -> None:
    """The server announces positionEncoding utf-16, in which an emoji is two units: the range must count so."""
    line = '  stem { relu; x = "😀😀"; bogus 3 }'
    text = f"network a {{\n  input 3x32x32\n{line}\n}}\n"
    uri = (tmp_path / "emoji.res").as_uri()
    opened = {"jsonrpc": "2.0", "method": "textDocument/didOpen",
              "params": {"textDocument": {"uri": uri, "languageId": "resdsl", "version": 1, "text": text}}}
    result = run_resdsl("lsp", cwd=tmp_path, stdin=_session(opened))
    bodies = re.split(r"Content-Length: \d+\r\n(?:.+\r\n)*\r\n", result.stdout)  # the headers between them
    published = [json.loads(body) for body in bodies if body]
    diagnostics = next(message["params"]["diagnostics"] for message in published
                       if message.get("method") == "textDocument/publishDiagnostics")
    start = len(line[:line.index("bogus")].encode("utf-16-le")) // 2  # 27: two emoji of two units each
    assert diagnostics[0]["range"]["start"] == {"line": 2, "character": start}


def _published(stdout: str) -> list[dict]:
    """The diagnostics of each publishDiagnostics notification in a raw session's output, in order."""
    bodies = re.split(r"Content-Length: \d+\r\n(?:.+\r\n)*\r\n", stdout)
    return [message["params"]["diagnostics"] for message in map(json.loads, filter(None, bodies))
            if message.get("method") == "textDocument/publishDiagnostics"]


def _opened(uri: str, text: str) -> dict:
    return {"jsonrpc": "2.0", "method": "textDocument/didOpen",
            "params": {"textDocument": {"uri": uri, "languageId": "resdsl", "version": 1, "text": text}}}


def test_open_document_with_a_space_in_its_path_is_analysed_as_the_editor_holds_it(tmp_path: Path) -> None:
    """Editors percent-encode a space in a URI (`my%20net.res`); the editor's unsaved text is what counts, not the
    file on disk (here a good spec)."""
    spec = tmp_path / "my net.res"
    spec.write_text(GOOD)
    edited = "network a {\n  input 3x32x32\n  stem { relu; bogus 3 }\n}\n"
    result = run_resdsl("lsp", cwd=tmp_path, stdin=_session(_opened(spec.as_uri(), edited)))
    assert "%20" in spec.as_uri()
    assert [d["range"]["start"] for d in _published(result.stdout)[0]] == [{"line": 2, "character": 15}]


def test_positions_count_in_the_encoding_negotiated_with_the_client(tmp_path: Path) -> None:
    """A client that prefers UTF-8 (Neovim offers utf-8 first) is answered positionEncoding utf-8: a range then
    counts bytes, three for each CJK character."""
    line = '  stem { relu; x = "日本"; bogus 3 }'
    text = f"network a {{\n  input 3x32x32\n{line}\n}}\n"
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"capabilities": {"general": {"positionEncodings": ["utf-8", "utf-16"]}}}}
    stdin = _frames(initialize, {"jsonrpc": "2.0", "method": "initialized", "params": {}},
                    _opened((tmp_path / "cjk.res").as_uri(), text),
                    {"jsonrpc": "2.0", "id": 99, "method": "shutdown"}, {"jsonrpc": "2.0", "method": "exit"})
    result = run_resdsl("lsp", cwd=tmp_path, stdin=stdin)
    assert '"positionEncoding": "utf-8"' in result.stdout
    start = len(line[:line.index("bogus")].encode("utf-8"))  # 29: two CJK characters of three bytes each
    assert _published(result.stdout)[0][0]["range"]["start"] == {"line": 2, "character": start}
