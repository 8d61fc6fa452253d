"""The neighborhood-attention dispatcher: who asks for a backend, what auto picks, clear refusals."""
import types

import pytest
import torch

from mask2former_dinat.layers import na2d, na_backend, na_flex, na_natten, na_torch, neighborhood_attention
from mask2former_dinat.layers.backend_dispatch import BackendDispatcher
from mask2former_dinat.layers.neighborhood_attention import (
    ENV_VAR,
    describe_backends,
    select_backend,
)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def calls(monkeypatch):
    """Records which backend module's na2d ran."""
    seen = []
    for name, module in (("torch", na_torch), ("flex", na_flex), ("natten", na_natten)):
        original = module.na2d

        def spy(*args, _name=name, _original=original, **kwargs):
            seen.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "na2d", spy)
    return seen


def _qkv(requires_grad=False):
    q = torch.randn(1, 2, 6, 7, 8, requires_grad=requires_grad)
    return q, torch.randn(1, 2, 6, 7, 8), torch.randn(1, 2, 6, 7, 8)


def test_auto_picks_torch_on_cpu_and_says_why(calls):
    q, k, v = _qkv()
    name, reason = select_backend(q, torch.zeros(2, 5, 5))
    assert name == "torch" and "cpu" in reason
    assert select_backend(q, None)[0] == "torch"
    na2d(q, k, v, 3)
    assert calls == ["torch"]


def test_env_var_forces_backend(monkeypatch, calls):
    monkeypatch.setenv(ENV_VAR, "flex")
    q, k, v = _qkv()
    name, reason = select_backend(q, None)
    assert name == "flex" and ENV_VAR in reason
    na2d(q, k, v, 3)
    assert calls == ["flex"]


def test_env_var_auto_or_empty_means_automatic(monkeypatch):
    q, _, _ = _qkv()
    for value in ("auto", "AUTO", ""):
        monkeypatch.setenv(ENV_VAR, value)
        assert select_backend(q, None)[0] == "torch"


def test_unknown_env_value_raises_naming_the_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cutlass")
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=f"'cutlass' from \\${ENV_VAR}"):
        na2d(q, k, v, 3)


def test_explicit_argument_forces_backend_and_beats_env(monkeypatch, calls):
    monkeypatch.setenv(ENV_VAR, "torch")
    q, k, v = _qkv()
    assert select_backend(q, None, backend="flex") == ("flex", "forced by backend argument")
    na2d(q, k, v, 3, backend="flex")
    assert calls == ["flex"]


def test_context_manager_beats_argument_and_restores_on_exit(calls):
    q, k, v = _qkv()
    with na_backend("flex"):
        assert select_backend(q, None, backend="torch") == ("flex", "forced by na_backend() context")
        na2d(q, k, v, 3, backend="torch")
        with na_backend("auto"):
            na2d(q, k, v, 3)
        na2d(q, k, v, 3)
    with pytest.raises(RuntimeError), na_backend("natten"):
        raise RuntimeError
    na2d(q, k, v, 3)
    assert calls == ["flex", "torch", "flex", "torch"]


def test_forcing_natten_with_rpb_is_refused_clearly():
    q, k, v = _qkv()
    with na_backend("natten"), pytest.raises(ValueError, match="'natten'.*relative positional bias.*'torch'"):
        na2d(q, k, v, 3, rpb=torch.zeros(2, 5, 5))


def test_forcing_flex_with_attention_dropout_is_refused_and_auto_uses_torch(calls):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="'flex'.*dropout"):
        na2d(q, k, v, 3, backend="flex", attn_drop=0.1, training=True)
    na2d(q, k, v, 3, attn_drop=0.1, training=True)
    assert calls == ["torch"]
    assert "dropout" in select_backend(q, None, attn_drop=0.1)[1]


def test_forcing_flex_for_cpu_backward_is_refused():
    q, k, v = _qkv(requires_grad=True)
    with pytest.raises(ValueError, match="no backward on cpu"):
        na2d(q, k, v, 3, backend="flex")
    with torch.no_grad():
        assert na2d(q, k, v, 3, backend="flex").shape == q.shape


def test_describe_backends_lists_availability_and_auto_choice():
    text = describe_backends()
    for name in ("torch", "flex", "natten"):
        assert f"\n  {name}" in text
    assert "auto on cpu: torch" in text
    assert "requested: auto" in text


def _use_backends(monkeypatch, backends):
    """The dispatcher neighborhood_attention would build with this BACKENDS tuple."""
    dispatcher = BackendDispatcher("neighborhood-attention", ENV_VAR, backends, context="na_backend()")
    monkeypatch.setattr(neighborhood_attention, "DISPATCHER", dispatcher)


def _fake_backend(name, log, refuses_dropout=False):
    """A backend module following the protocol, recording when it is asked and when it runs."""
    def unsupported(query, rpb, attn_drop, needs_backward, automatic=False):
        log.append(f"{name} asked")
        return "no attention dropout here" if refuses_dropout and attn_drop else None

    def na2d(query, key, value, kernel_size, dilation, rpb, scale, attn_drop):
        log.append(f"{name} ran")
        return torch.zeros_like(query)

    return types.SimpleNamespace(NAME=name, availability=lambda: (True, "a test double"),
                                 unsupported=unsupported, na2d=na2d)


def test_a_backend_added_by_one_line_is_asked_in_its_place(monkeypatch):
    log = []
    for module in (na_natten, na_flex):
        original = module.unsupported
        monkeypatch.setattr(module, "unsupported",
                            lambda *a, _m=module, _o=original, **k: log.append(f"{_m.NAME} asked") or _o(*a, **k))
    fake = _fake_backend("fake", log)
    q, k, v = _qkv()
    _use_backends(monkeypatch, (na_natten, na_flex, fake, na_torch))
    name, why = select_backend(q, torch.zeros(2, 5, 5))
    assert name == "fake" and "natten: " in why and "flex: " in why
    log.clear()
    na2d(q, k, v, 3)
    assert log == ["natten asked", "flex asked", "fake asked", "fake ran"]

    _use_backends(monkeypatch, (na_natten, na_flex, na_torch, fake))
    log.clear()
    na2d(q, k, v, 3)
    assert log == ["natten asked", "flex asked"]  # torch served; nothing after it is asked
    log.clear()
    with na_backend("fake"):
        na2d(q, k, v, 3)
    monkeypatch.setenv(ENV_VAR, "fake")
    na2d(q, k, v, 3)
    assert log == ["fake asked", "fake ran"] * 2


def test_a_backend_refusing_dropout_is_skipped_by_auto_and_refused_when_forced(monkeypatch, calls):
    log = []
    _use_backends(monkeypatch, (_fake_backend("nodrop", log, refuses_dropout=True), na_torch))
    q, k, v = _qkv()
    na2d(q, k, v, 3, attn_drop=0.1, training=True)
    assert log == ["nodrop asked"] and calls == ["torch"]
    na2d(q, k, v, 3, attn_drop=0.1, training=False)  # no dropout outside training
    assert log == ["nodrop asked", "nodrop asked", "nodrop ran"] and calls == ["torch"]
    message = r"'nodrop' \(forced by na_backend\(\) context\) cannot serve this call: no attention dropout here.*'torch'"
    with na_backend("nodrop"), pytest.raises(ValueError, match=message):
        na2d(q, k, v, 3, attn_drop=0.1, training=True)
