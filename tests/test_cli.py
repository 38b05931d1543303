"""The `icreward` command line: lazy --help/--version, the command registry, fast and clear hub failures."""

import os
import subprocess
import sys

import pytest

from icreward import cli

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_help_lists_every_command_without_importing_torch():
    code = (
        "import sys\nfrom icreward.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
        "    assert e.code == 0\nprint('HEAVY', sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    for name in cli.COMMANDS:
        assert name in result.stdout
    assert "pipeline" in result.stdout.split("COMMAND", 2)[2]  # listed as a command, not only in prose


def test_version(capsys):
    import icreward

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"icreward {icreward.__version__}"


def test_unknown_command_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bogus"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def _echo(argv):
    print("ECHO", argv)
    return 3


def _offline_refusal(argv):
    from huggingface_hub.errors import OfflineModeIsEnabled

    raise OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.")


def test_registered_command_runs_with_its_arguments(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "echo-test", (f"{__name__}:_echo", "Echo."))
    assert cli.main(["echo-test", "--flag", "x"]) == 3
    assert "ECHO ['--flag', 'x']" in capsys.readouterr().out


def test_hub_failure_inside_a_command_is_explained(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(cli.COMMANDS, "push-test", (f"{__name__}:_offline_refusal", "Push."))
    assert cli.main(["push-test"]) == 1
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1 is set" in err and "push_to_hub" in err and "OfflineModeIsEnabled" in err


def test_offline_hub_id_fails_at_once_with_the_reason(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SystemExit, match="HF_HUB_OFFLINE=1 is set, and it is not in the local Hugging Face cache"):
        cli.main(["score", "--model", "someorg/somemodel", "--reference", "r.png", "--video", "v.mp4"])
    cli.check_hub_reference(str(tmp_path), "--model")  # a local folder is accepted offline


def test_unreachable_hub_fails_after_one_probe(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(SystemExit, match=r"the Hub \(http://127.0.0.1:9\) cannot be reached"):
        cli.check_hub_reference("someorg/somedataset", "--dataset", repo_type="dataset", timeout=2.0)


def test_no_feature_cache_switch_anywhere_on_the_line(monkeypatch, capsys):
    monkeypatch.setenv("ICREWARD_FEATURE_CACHE", "1")
    monkeypatch.setitem(cli.COMMANDS, "echo-test", (f"{__name__}:_echo", "Echo."))
    assert cli.main(["echo-test", "--no_feature_cache", "x"]) == 3
    assert "ECHO ['x']" in capsys.readouterr().out
    assert os.environ["ICREWARD_FEATURE_CACHE"] == "0"
