"""CPU weight packing: a packed model computes what the float one does, to the format's precision."""
import pytest

torch = pytest.importorskip("torch")

from culturepark.engine.backends.local.packed import PackedLinear, convert_for_cpu_inference  # noqa: E402


class _Tiny(torch.nn.Module):
    """Two layers and an output head, the head found the way a transformers model exposes it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16, bias=False))
        self.head = torch.nn.Linear(16, 1000, bias=False)
        self.device = torch.device("cpu")

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.mark.parametrize("weights,head_kind,tolerance", [
    ("fp16", "fp16", 1e-3),           # fp16 weights, fp32 arithmetic: near exact
    ("fp16-int8-head", "int8", 0.1),  # the head's activations are quantised per call
])
def test_packed_layers_compute_what_the_float_layers_did(weights, head_kind, tolerance):
    model = _Tiny()
    x = torch.randn(3, 5, 16)  # a batch of sequences: packing works on any leading shape
    expected = model(x)
    convert_for_cpu_inference(model, weights)
    layers = [m for m in model.modules() if isinstance(m, PackedLinear)]
    assert len(layers) == 3 and not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert model.head.kind == head_kind and len(model.head.blocks) > 1  # the head in row blocks
    got = model(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=tolerance, rtol=0)
    assert torch.equal(got.argmax(-1), expected.argmax(-1)) or weights != "fp16"


def test_fp32_keeps_the_model_as_it_was():
    model = _Tiny()
    assert convert_for_cpu_inference(model, "fp32") is model
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 3
