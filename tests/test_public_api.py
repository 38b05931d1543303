"""`import icreward` is fast and registers the reward models with transformers' Auto classes (issue 18 item 5)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    from icreward.models import ICRewardModel, MLPRewardModel
    from icreward.testing.tiny_backbones import tiny_icreward_config, tiny_mlp_reward_config

    root = tmp_path_factory.mktemp("saved")
    ICRewardModel(tiny_icreward_config()).save_pretrained(root / "icreward")
    MLPRewardModel(tiny_mlp_reward_config()).save_pretrained(root / "mlp")
    return root


@pytest.mark.parametrize(
    "imports",
    [
        # icreward first (and lazy: no heavy module imported); the hook registers when transformers' auto loads
        "import sys, icreward\nassert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)",
        # transformers' Auto classes already imported, then our models, then icreward itself
        "from transformers import AutoModel\nfrom icreward.models import ICRewardModel",
    ],
)
def test_plain_import_registers_auto_classes(saved_models, imports):
    load = textwrap.dedent(
        f"""
        import json
        from transformers import AutoConfig, AutoModel
        names = []
        for sub in ("icreward", "mlp"):
            config = AutoConfig.from_pretrained("{saved_models}/" + sub)
            model = AutoModel.from_pretrained("{saved_models}/" + sub)
            names.append([type(config).__name__, type(model).__name__])
        print(json.dumps(names))
        """
    )
    out = _run(imports + "\n" + load)
    assert json.loads(out.strip().splitlines()[-1]) == [
        ["ICRewardConfig", "ICRewardModel"],
        ["MLPRewardConfig", "MLPRewardModel"],
    ]


def test_lazy_names_resolve():
    import icreward
    import icreward.models

    assert icreward.ICRewardModel is icreward.models.ICRewardModel
    assert "ICRewardModel" in dir(icreward.models)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        icreward.models.Nope  # noqa: B018


LAZY_PACKAGES = [
    "icreward",
    "icreward.data",
    "icreward.evaluation",
    "icreward.memory",
    "icreward.metrics",
    "icreward.models",
    "icreward.rewards",
    "icreward.testing",
    "icreward.trainers",
]


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_lazy_name_resolves(package):
    """Each subpackage lists its public names once, as TYPE_CHECKING imports: every one of them must import, from
    the module the import names (a stale import there fails here, not in a user's session)."""
    import importlib

    from icreward._lazy import type_checking_exports

    module = importlib.import_module(package)
    names, submodules = type_checking_exports(package)
    assert sorted(module.__all__) == module.__all__ and set(module.__all__) >= set(names) | set(submodules)
    assert module.__dir__() == module.__all__
    for name, (source, attribute) in names.items():
        assert getattr(module, name) is getattr(importlib.import_module(source), attribute), name
    for name in submodules:
        assert getattr(module, name) is importlib.import_module(f"{package}.{name}")
