"""Lazy attribute loading for package ``__init__`` modules (PEP 562), so importing one part of icreward does not
import the others' heavy dependencies (diffusers, datasets, ...), and the registration of the reward models with
transformers' Auto classes, deferred until transformers' auto modules are imported.

Why deferred: ``AutoModel.from_pretrained(saved_dir)`` after a plain ``import icreward`` must find
``ICRewardModel``, but importing transformers' Auto classes and the models eagerly costs seconds (torch,
``transformers.modeling_utils``) and would make ``import icreward`` and ``icreward --help`` slow. So
``import icreward`` installs a post-import hook: the configs are registered with ``AutoConfig`` as soon as
``transformers.models.auto.configuration_auto`` has been imported (by anyone), the models with ``AutoModel`` as
soon as ``transformers.models.auto.modeling_auto`` has; if those modules are already imported, registration happens
at once. Registration is idempotent (``exist_ok=True``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.util
import sys
import threading
from collections.abc import Callable, Sequence


def type_checking_exports(package: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """What the ``if TYPE_CHECKING:`` block of ``package``'s ``__init__`` imports, read from its source: exported
    name -> ``(module, attribute)`` for ``from .x import A`` / ``from .x import A as B``, and the submodules named by
    ``from . import x``. That block is the one list of a lazy package's public names (what type checkers and IDEs
    read; see :func:`lazy_package`)."""
    spec = sys.modules[package].__spec__
    source = spec.loader.get_source(package) if spec is not None and spec.loader is not None else None
    if source is None:
        raise ImportError(f"{package}: its lazy exports are read from its source, which is not available")
    names: dict[str, tuple[str, str]] = {}
    submodules: list[str] = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.ImportFrom) or statement.level == 0:
                raise ImportError(f"{package}: only relative `from . import` statements may stand under TYPE_CHECKING")
            module = importlib.util.resolve_name("." * statement.level + (statement.module or ""), package)
            for alias in statement.names:
                if statement.module is None and module == package:
                    submodules.append(alias.name)
                else:
                    names[alias.asname or alias.name] = (module, alias.name)
    return names, submodules


def lazy_package(
    package: str, *, extra: Sequence[str] = ()
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for a lazy package (PEP 562) whose ``__init__`` imports its public names
    and submodules under ``if TYPE_CHECKING:`` (:func:`type_checking_exports`), so that they are written once:
    type checkers and IDEs read the imports, and at run time each name is imported from there on first access and
    cached in the package. ``extra``: names defined in the ``__init__`` itself that ``__all__`` lists too.

    Use, at the end of the package's ``__init__`` (after its ``if TYPE_CHECKING:`` block)::

        __getattr__, __dir__, __all__ = lazy_package(__name__)
    """
    names, submodules = type_checking_exports(package)
    exported = sorted([*names, *submodules, *extra])

    def __getattr__(name: str):
        if name in names:
            module, attribute = names[name]
            value = getattr(importlib.import_module(module), attribute)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return list(exported)

    return __getattr__, __dir__, exported


# --- Auto-class registration -------------------------------------------------------------------------------------

_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODEL_AUTO = "transformers.models.auto.modeling_auto"
_OUR_CONFIGS = "icreward.models.configuration"
_OUR_MODELS = "icreward.models.modeling"
# transformers' base modules: never import our models while one of them is half-way through its own import.
_TRANSFORMERS_BASES = ("transformers.configuration_utils", "transformers.modeling_utils")
_WATCHED = frozenset({_CONFIG_AUTO, _MODEL_AUTO, _OUR_CONFIGS, _OUR_MODELS, *_TRANSFORMERS_BASES})

_registered = {"configs": False, "models": False}
_lock = threading.RLock()


def _loaded(name: str) -> bool:
    """True when module ``name`` is imported and has finished executing (not half-way through its own import)."""
    module = sys.modules.get(name)
    if module is None:
        return False
    spec = getattr(module, "__spec__", None)
    return not getattr(spec, "_initializing", False)


def _importing(name: str) -> bool:
    return name in sys.modules and not _loaded(name)


def register_auto_classes() -> None:
    """Register ``ICRewardConfig``/``MLPRewardConfig`` with ``AutoConfig`` and ``ICRewardModel``/``MLPRewardModel``
    with ``AutoModel``, as far as transformers' auto modules are imported already. Safe to call any number of times;
    called by the import hook that ``import icreward`` installs."""
    with _lock:
        if any(_importing(name) for name in _TRANSFORMERS_BASES):
            return  # retried when that module has finished
        if not _registered["configs"] and _loaded(_CONFIG_AUTO) and not _importing(_OUR_CONFIGS):
            from transformers.models.auto.configuration_auto import AutoConfig

            from .models.configuration import ICRewardConfig, MLPRewardConfig

            for config in (ICRewardConfig, MLPRewardConfig):
                AutoConfig.register(config.model_type, config, exist_ok=True)
            _registered["configs"] = True
        if (
            _registered["configs"]
            and not _registered["models"]
            and _loaded(_MODEL_AUTO)
            and not _importing(_OUR_MODELS)
            and not _importing(_OUR_CONFIGS)
        ):
            from transformers.models.auto.modeling_auto import AutoModel

            from .models.configuration import ICRewardConfig, MLPRewardConfig
            from .models.modeling import ICRewardModel, MLPRewardModel

            AutoModel.register(ICRewardConfig, ICRewardModel, exist_ok=True)
            AutoModel.register(MLPRewardConfig, MLPRewardModel, exist_ok=True)
            _registered["models"] = True
        if all(_registered.values()):
            _uninstall_hook()


class _NotifyingLoader(importlib.abc.Loader):
    """Wraps a module's real loader; after the module has executed, retries the Auto-class registration."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        # The module's spec is still marked as initialising here; clear that for our own readiness check.
        spec = getattr(module, "__spec__", None)
        initializing = getattr(spec, "_initializing", False)
        if spec is not None:
            spec._initializing = False
        try:
            register_auto_classes()
        finally:
            if spec is not None:
                spec._initializing = initializing

    def __getattr__(self, name: str):  # get_code, get_source, is_package, ... of the real loader
        return getattr(self._loader, name)


class _AutoRegistrationFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for the watched modules it asks the other finders and wraps the loader they return."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _NotifyingLoader):
                    spec.loader = _NotifyingLoader(spec.loader)
                return spec
        return None


_finder = _AutoRegistrationFinder()


def _uninstall_hook() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def install_auto_registration_hook() -> None:
    """Register the Auto classes now if transformers' auto modules are imported, else when they are."""
    with _lock:
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
    register_auto_classes()
