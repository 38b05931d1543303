"""Every fenced ``python`` and ``bash`` block of README.md and docs/**/*.md runs, offline, as written.

One test per page: its blocks run in order, Python blocks in one namespace per page (a later block may use what an
earlier one defined, as a reader would), bash blocks command by command in the same process (``icreward ...`` via
:func:`icreward.cli.main`, ``python -m MODULE ...`` and ``python path.py ...`` via :mod:`runpy`). Each page runs in
its own empty working folder holding the files its snippets name generically (``ref.png``, ``reference.png``,
``a.png``, ``b.png``, ``face.png``, ``video.mp4``, ``a.mp4``, ``b.mp4``; see :func:`_workdir`) and a link to ``examples/``.

Where a snippet names a real model, a long job or data we cannot have offline, the page declares it NEXT TO THE
SNIPPET, in HTML comments (invisible in the rendered docs) directly above the opening fence:

``<!-- doctest: skip REASON -->``
    the block is not run; the reason is required.
``<!-- doctest: skip-command PREFIX REASON -->``
    in a bash block, commands starting with ``PREFIX`` (in backticks) are not run.
``<!-- doctest: replace `OLD` => `NEW` -->``
    a textual substitution before running (``OLD`` must occur). ``NEW`` may name the tiny stand-ins:
    ``{TINY_ICREWARD}`` / ``{TINY_MLP}`` (saved tiny reward models), ``{TINY_BACKBONE}`` (a saved tiny CLIP vision
    checkpoint), ``{TINY_CANDIDATES}`` (best-of-N candidate folders: 2 images x 3 videos), ``{TINY_SUITE}`` (a 3-photograph stress suite with 4-frame 32 px videos).
``<!-- doctest: slow REASON -->``
    the block runs only in the page's ``slow``-marked test (``pytest -m slow``), which runs the whole page.
``<!-- doctest: setup `CODE` -->``
    Python run before the block, for names the page leaves to the reader (``my_dataset``, ...).

A block without a way to run (``make``, ``pip``, ``git``, ``accelerate``) and without a declared skip fails the
inventory test. ``python tests/test_docs.py`` prints the counts of blocks run, substituted and skipped.
"""

from __future__ import annotations

import contextlib
import re
import runpy
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = {"python", "bash", "sh", "shell"}
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
_DIRECTIVE = re.compile(r"<!--\s*doctest:\s*(.*?)\s*-->", re.S)
_TICKED = re.compile(r"`([^`]*)`")


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    skip: str | None = None
    slow: str | None = None
    skip_commands: list[tuple[str, str]] = field(default_factory=list)
    replacements: list[tuple[str, str]] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _directives_above(text: str, start: int) -> list[str]:
    """The ``doctest:`` comments between the previous non-comment text and the fence at ``start``."""
    before = text[:start].rstrip()
    found = []
    while before.endswith("-->"):
        opening = before.rfind("<!--")
        if opening < 0:
            break
        match = _DIRECTIVE.fullmatch(before[opening:])
        if match:
            found.insert(0, " ".join(match.group(1).split()))
        before = before[:opening].rstrip()
    return found


def parse_page(page: Path, text: str | None = None) -> list[Block]:
    text = page.read_text(encoding="utf-8") if text is None else text
    blocks = []
    for match in _FENCE.finditer(text):
        language = match.group(1).lower()
        if language not in RUNNABLE:
            continue
        block = Block(page, text[: match.start()].count("\n") + 1, language, match.group(2))
        for directive in _directives_above(text, match.start()):
            kind, _, rest = directive.partition(" ")
            ticked = _TICKED.findall(rest)
            if kind == "skip":
                if not rest.strip():
                    raise ValueError(f"{block.where}: `doctest: skip` needs a reason")
                block.skip = rest.strip()
            elif kind == "slow":
                block.slow = rest.strip() or "slow"
            elif kind == "skip-command" and len(ticked) == 1 and _TICKED.sub("", rest).strip():
                block.skip_commands.append((ticked[0], _TICKED.sub("", rest).strip()))
            elif kind == "replace" and len(ticked) == 2 and "=>" in rest:
                block.replacements.append((ticked[0], ticked[1]))
            elif kind == "setup" and len(ticked) == 1:
                block.setup.append(ticked[0])
            else:
                raise ValueError(f"{block.where}: cannot read the directive `doctest: {directive}`")
        blocks.append(block)
    return blocks


# --- bash ----------------------------------------------------------------------------------------------------------


def bash_commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, ``&&`` chains split."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word == "&&":
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return commands


def _runner(argv: list[str]):
    """How the harness runs one command in-process, or None when it cannot."""
    program = Path(argv[0]).name
    if program == "icreward":
        return "icreward"
    if program in ("python", "python3") and len(argv) > 2 and argv[1] == "-m" and argv[2].startswith("icreward"):
        return "module"
    if program in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        return "script"
    return None


def _unrunnable(block: Block) -> list[str]:
    bad = []
    for argv in bash_commands(block.code):
        line = " ".join(argv)
        if _runner(argv) is None and not any(line.startswith(prefix) for prefix, _ in block.skip_commands):
            bad.append(line)
    return bad


@contextlib.contextmanager
def _argv(argv: list[str]):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def _exit_code(call) -> int:
    try:
        result = call()
    except SystemExit as stop:
        return 0 if stop.code in (None, 0) else (stop.code if isinstance(stop.code, int) else 1)
    return result if isinstance(result, int) else 0


def run_bash(block: Block, code: str) -> None:
    from icreward import cli

    for argv in bash_commands(code):
        line = " ".join(argv)
        if any(line.startswith(prefix) for prefix, _ in block.skip_commands):
            continue
        kind = _runner(argv)
        if kind == "icreward":
            status = _exit_code(lambda argv=argv: cli.main(argv[1:]))
        elif kind == "module":
            with _argv([argv[2], *argv[3:]]):
                status = _exit_code(lambda argv=argv: runpy.run_module(argv[2], run_name="__main__", alter_sys=True))
        elif kind == "script":
            with _argv(argv[1:]):
                status = _exit_code(lambda argv=argv: runpy.run_path(argv[1], run_name="__main__"))
        else:
            raise AssertionError(f"{block.where}: cannot run `{line}` here; declare `doctest: skip-command`")
        assert status == 0, f"{block.where}: `{line}` exited with status {status}"


# --- stand-ins -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, str]:
    """Tiny offline stand-ins the pages' `replace` directives may name."""
    import numpy as np
    import torch
    from PIL import Image

    from icreward.data.stress_suite import build_stress_suite
    from icreward.models import ICRewardModel, MLPRewardModel
    from icreward.testing.tiny_backbones import (
        save_tiny_vision_checkpoint,
        tiny_icreward_config,
        tiny_mlp_reward_config,
    )
    from icreward.video import write_video

    root = tmp_path_factory.mktemp("doc_stand_ins")
    torch.manual_seed(0)
    ICRewardModel(tiny_icreward_config()).save_pretrained(root / "tiny-icreward")
    MLPRewardModel(tiny_mlp_reward_config()).save_pretrained(root / "tiny-mlp")
    save_tiny_vision_checkpoint(root / "tiny-backbone")
    build_stress_suite(
        root / "tiny-suite",
        sources=["chelsea", "coffee", "rocket"],
        perturbations=["blur_noise", "color_drift"],
        severities=(1.0,),
        consistent_per_source=2,
        image_size=32,
        num_frames=4,
        fps=4.0,
    )
    rng = np.random.default_rng(0)
    for sample in ("cat", "dog"):
        folder = root / "tiny-candidates" / sample
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "reference.png")
        for k in range(3):
            frames = torch.from_numpy(rng.integers(0, 255, (4, 3, 32, 32), dtype=np.uint8))
            write_video(folder / f"candidate_{k}.mp4", frames, fps=4)
    return {
        "TINY_CANDIDATES": str(root / "tiny-candidates"),
        "TINY_ICREWARD": str(root / "tiny-icreward"),
        "TINY_MLP": str(root / "tiny-mlp"),
        "TINY_BACKBONE": str(root / "tiny-backbone"),
        "TINY_SUITE": str(root / "tiny-suite"),
    }


def _workdir(path: Path) -> Path:
    """An empty folder with the generically named inputs the snippets use, and a link to the repo's examples."""
    import numpy as np
    import torch
    from PIL import Image

    from icreward.video import write_video

    rng = np.random.default_rng(0)
    for name in ("ref.png", "reference.png", "a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path / name)
    for name in ("video.mp4", "a.mp4", "b.mp4"):
        write_video(path / name, torch.from_numpy(rng.integers(0, 255, (9, 3, 32, 32), dtype=np.uint8)), fps=4)
    from skimage import data

    Image.fromarray(data.astronaut()).resize((128, 128)).save(path / "face.png")  # a real photograph with a face
    (path / "examples").symlink_to(ROOT / "examples")
    return path


def _fill(text: str, stand_ins: dict[str, str]) -> str:
    for key, value in stand_ins.items():
        text = text.replace("{" + key + "}", value)
    return text


def prepared(block: Block, stand_ins: dict[str, str]) -> str:
    code = block.code
    for old, new in block.replacements:
        assert old in code, f"{block.where}: `doctest: replace` text {old!r} is not in the block"
        code = code.replace(old, _fill(new, stand_ins))
    return code


def _page_params():
    for page in PAGES:
        name = str(page.relative_to(ROOT))
        yield pytest.param(page, False, id=name)
        if any(b.slow and not b.skip for b in parse_page(page)):
            yield pytest.param(page, True, id=f"{name}-with-slow-blocks", marks=pytest.mark.slow)


@pytest.mark.parametrize(("page", "with_slow"), _page_params())
def test_page_snippets_run(page, with_slow, stand_ins, tmp_path, monkeypatch):
    blocks = [b for b in parse_page(page) if b.skip is None and (with_slow or not b.slow)]
    if not blocks:
        pytest.skip("no runnable block on this page (all declared skipped, or none)")
    monkeypatch.chdir(_workdir(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__doc_snippet__"}
    for block in blocks:
        code = prepared(block, stand_ins)
        if block.language == "python":
            for setup in block.setup:
                exec(compile(_fill(setup, stand_ins), f"{block.where} (setup)", "exec"), namespace)  # noqa: S102
            exec(compile(code, block.where, "exec"), namespace)  # noqa: S102 - our own documentation
        else:
            run_bash(block, code)


def inventory() -> dict[str, int]:
    counts = {"blocks": 0, "run": 0, "run_with_substitutions": 0, "slow": 0, "skipped": 0, "commands_skipped": 0}
    for page in PAGES:
        for block in parse_page(page):
            counts["blocks"] += 1
            if block.skip is not None:
                counts["skipped"] += 1
                continue
            counts["run"] += 1
            counts["slow"] += bool(block.slow)
            counts["run_with_substitutions"] += bool(block.replacements or block.setup)
            if block.language != "python":
                counts["commands_skipped"] += sum(
                    any(" ".join(a).startswith(p) for p, _ in block.skip_commands) for a in bash_commands(block.code)
                )
    return counts


def test_every_block_runs_or_declares_why_not():
    problems = []
    for page in PAGES:
        for block in parse_page(page):
            if block.skip is None and block.language != "python":
                problems += [f"{block.where}: `{line}`" for line in _unrunnable(block)]
    assert not problems, "commands the harness cannot run and no skip declared:\n" + "\n".join(problems)


def test_directives_are_read():
    text = (
        "<!-- doctest: skip needs a GPU -->\n```python\nx\n```\n"
        "<!-- doctest: replace `a` => `{TINY_SUITE}` -->\n<!-- doctest: skip-command `make demo` long -->\n"
        "```bash\nicreward a && make demo   # comment\n```\n"
    )
    first, second = parse_page(ROOT / "docs" / "example.md", text)
    assert first.skip == "needs a GPU" and second.skip is None
    assert second.replacements == [("a", "{TINY_SUITE}")] and second.skip_commands == [("make demo", "long")]
    assert bash_commands(second.code) == [["icreward", "a"], ["make", "demo"]]
    assert _unrunnable(second) == []


if __name__ == "__main__":
    print(inventory())
