"""The one ZeroGPU entry point: every runner and the attack loop call through `gpu._call` (the
function `spaces.GPU` decorates on a ZeroGPU Space); elsewhere it changes nothing."""

import pytest

from apps.adversarial import task as adversarial
from apps.classification import task as classification
from shared.data.examples import PHOTOS
from shared.errors import UserError
from shared.inference import backends, bf16, gpu


@pytest.fixture
def calls(monkeypatch):
    seen = []
    call = gpu._call

    def counted(fn, *args, **kwargs):
        seen.append(getattr(fn, "__name__", type(fn).__name__))
        return call(fn, *args, **kwargs)

    monkeypatch.setattr(gpu, "_call", counted)
    return seen


@pytest.mark.parametrize("backend", ["torch", "onnx", "int8", "bf16"])
def test_model_forwards_go_through_the_entry_point(calls, backend):
    if backend == "bf16" and not bf16.available():
        pytest.skip("needs OpenVINO and a CPU with bf16 instructions")
    result = classification.classify(PHOTOS["cat"], backend=backend)
    assert result.backend == backend and len(calls) == 1


def test_the_attack_loop_goes_through_the_entry_point(calls):
    adversarial.attack(PHOTOS["cat"], attack="pgd", eps=0.03, steps=2)
    assert {"predicted", "run_attack"} <= set(calls)


def test_zerogpu_refuses_onnx_with_a_sentence(monkeypatch):
    assert gpu.ZERO_GPU is False  # here: `spaces` is installed, but this is no ZeroGPU Space
    monkeypatch.setattr(gpu, "ZERO_GPU", True)
    with pytest.raises(UserError, match="only the torch backend runs"):
        backends.check_backend("onnx")
    assert backends.check_backend("torch") == "torch"
