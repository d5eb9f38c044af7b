"""edgesr.quant: quantizers per backend, PTQ, fake-quant QAT graphs, conversion parity, SDK errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytest.importorskip("torchao.quantization.pt2e")

from pt2e_graphs import float_islands, io_quantized  # noqa: E402

from edgesr import quant  # noqa: E402
from edgesr.models import build_model, materialize  # noqa: E402
from edgesr.sdk import MissingSDKError  # noqa: E402

_SDK_MODULE = {
    "xnnpack": "executorch.backends.xnnpack.quantizer.xnnpack_quantizer",
    "litert": "litert_torch.quantize.pt2e_quantizer",
    "coreml": "coremltools",
    "onnxruntime": "onnxruntime",
}
_EXTRA = {"xnnpack": "executorch", "litert": "tflite", "coreml": "coreml", "onnxruntime": "onnx"}


def _installed(backend: str) -> bool:
    try:
        quant.get_quantizer(backend)
    except MissingSDKError:
        return False
    return True


def _backends() -> list:
    return [pytest.param(b, marks=pytest.mark.skipif(not _installed(b), reason=f"{b} SDK missing"))
            for b in quant.BACKENDS]  # fmt: skip


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """dB between two tensors in [0, 1]."""
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


def _student(name: str = "edsr", clamp: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "plain":
        return materialize(build_model("plain", scale=2, n_convs=3, n_feats=16, clamp=clamp), 0.5)
    return materialize(build_model("edsr", scale=2, n_resblocks=1, n_feats=16), 0.5)


def test_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="xnnpack") as e:
        quant.get_quantizer("xnnpak")
    assert "litert" in str(e.value) and "coreml" in str(e.value) and "Did you mean 'xnnpack'" in str(e.value)


@pytest.mark.parametrize("backend", quant.BACKENDS)
def test_missing_sdk_names_the_pip_extra(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, _SDK_MODULE[backend], None)  # makes `import` raise ImportError
    with pytest.raises(MissingSDKError, match=rf'pip install "edgesr\[{_EXTRA[backend]}\]"'):
        quant.get_quantizer(backend, qat=True)


def test_import_needs_no_sdk_and_no_torchao() -> None:
    """`import edgesr.quant` and the trainer work where no export SDK (nor torchao) is installed."""
    code = (
        "import sys\n"
        "BLOCKED = ('executorch', 'litert_torch', 'coremltools', 'torchao', 'ai_edge_litert')\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import edgesr.quant, edgesr.train.trainer, edgesr.cli\n"
        "from edgesr.sdk import MissingSDKError\n"
        "try:\n"
        "    edgesr.quant.prepare(None, 'xnnpack', None)\n"
        "except MissingSDKError as e:\n"
        "    print('OK', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK" in out.stdout and "pip install" in out.stdout


@pytest.mark.parametrize("backend", _backends())
def test_fake_quant_forward_backward_reaches_every_trainable_weight(backend: str) -> None:
    fq = quant.prepare(_student(), backend, torch.rand(2, 3, 16, 16), qat=True)
    fq(torch.rand(3, 3, 12, 20)).mean().backward()  # batch, H and W differ from the example
    trainable = {n: p for n, p in fq.named_parameters() if p.requires_grad}
    assert trainable
    for name, p in trainable.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("backend", _backends())
def test_converted_int8_matches_fake_quant_in_eval(backend: str) -> None:
    """The eval-mode fake-quant graph evaluates the deployed int8 model: after QAT steps, the converted
    q/dq graph matches it to float rounding (tolerance 1e-5, far below one int8 step of the output)."""
    fq = quant.prepare(_student(), backend, torch.rand(2, 3, 16, 16), qat=True)
    opt = torch.optim.Adam([p for p in fq.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        fq(torch.rand(4, 3, 16, 16)).abs().mean().backward()
        opt.step()
        opt.zero_grad()
    fq.eval()
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        fake = fq(x)
        again = fq(x)
    assert torch.equal(fake, again), "eval must not move the fake-quant ranges"
    last_fq = [n.target for n in fq.graph.nodes if n.op == "call_module" and "post_process" in n.target][-1]
    assert float(fq.get_submodule(last_fq).scale.max()) > 1e-3  # one int8 step is far above the tolerance
    int8 = quant.convert(fq, backend)
    with torch.no_grad():
        assert (int8(x) - fake).abs().max() < 1e-5


@pytest.mark.parametrize("backend", _backends())
def test_ptq_stays_close_to_float(backend: str) -> None:
    model = _student().eval()
    x = torch.rand(1, 3, 24, 24)
    int8 = quant.ptq(model, backend, x, quant.calibration_images(2, n=2, size=24))
    with torch.no_grad():
        assert psnr(int8(x).clamp(0, 1), model(x).clamp(0, 1)) > 30.0


def _act_qparams(graph: torch.fx.GraphModule) -> list[tuple[float, int]]:
    """(scale, zero point) of every per-tensor activation quantize op of a converted graph, in order."""
    out = []
    for n in graph.graph.nodes:
        target = str(n.target)
        if n.op == "call_function" and "quantize_per_tensor" in target and "dequant" not in target:
            scale, zp = (getattr(graph, a.target) if isinstance(a, torch.fx.Node) else a for a in n.args[1:3])
            out.append((float(scale), int(zp)))
    return out


@pytest.mark.parametrize("backend", _backends())
def test_qat_calibrated_ranges_start_where_ptq_is_and_stay(backend: str) -> None:
    """`calibrate_ranges` gives a QAT graph PTQ's histogram activation ranges (the same scales and zero
    points, to float rounding), turns their observers off so training cannot move them, and leaves the
    weights' fake quants observing."""
    model = _student().eval()
    images = quant.calibration_images(2, n=3, size=24)
    x = images[0]
    ptq_q = _act_qparams(quant.ptq(model, backend, x, images))
    fq = quant.prepare(model, backend, torch.rand(2, 3, 16, 16), qat=True)
    acts = quant.activation_fake_quants(fq)
    weights = [m for m in fq._edgesr_fake_quants if all(m is not a for a in acts)]
    assert acts and weights
    assert quant.calibrate_ranges(fq, images) == len(acts)
    assert all(not m.observer_enabled[0] and m.fake_quant_enabled[0] for m in acts)
    assert all(m.observer_enabled[0] for m in weights)
    started = [m.scale.clone() for m in acts]
    opt = torch.optim.Adam([p for p in fq.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        (fq(torch.rand(4, 3, 16, 16)) * 3).abs().mean().backward()  # inputs unlike the calibration crops
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(m.scale, s) for m, s in zip(acts, started, strict=True))
    fq.train()  # eval -> train keeps the ranges' observers off
    fq.eval()
    fq.train()
    assert all(not m.observer_enabled[0] for m in acts) and all(m.observer_enabled[0] for m in weights)
    # before training (fresh graph): the converted QAT graph quantizes activations exactly like PTQ
    fresh = quant.prepare(model, backend, torch.rand(2, 3, 16, 16), qat=True)
    quant.calibrate_ranges(fresh, images)
    qat_q = _act_qparams(quant.convert(fresh, backend))
    assert len(qat_q) == len(ptq_q) > 0
    for (s1, z1), (s2, z2) in zip(ptq_q, qat_q, strict=True):
        assert s2 == pytest.approx(s1, rel=1e-5) and z1 == z2
    with pytest.raises(ValueError, match="train mode"):
        quant.calibrate_ranges(fresh.eval(), images)


@pytest.mark.skipif(not _installed("xnnpack"), reason="xnnpack SDK missing")
def test_qat_graph_with_float_ends_and_minmax_ranges_starts_where_that_ptq_is() -> None:
    """A QAT graph prepared with float ends, calibrated with min/max ranges, converts to the graph PTQ
    makes with the same policy and estimator (same activation scales), and leaves the ends float."""
    model = _student().eval()
    images = quant.calibration_images(2, n=3, size=24)
    ptq_graph = quant.ptq(model, "xnnpack", images[0], images, activations="float-ends", estimator="minmax")
    fq = quant.prepare(model, "xnnpack", torch.rand(2, 3, 16, 16), qat=True, activations="float-ends")
    quant.calibrate_ranges(fq, images, "minmax")
    qat_q, ptq_q = _act_qparams(quant.convert(fq, "xnnpack")), _act_qparams(ptq_graph)
    assert len(qat_q) == len(ptq_q) > 0
    for (s1, z1), (s2, z2) in zip(ptq_q, qat_q, strict=True):
        assert s2 == pytest.approx(s1, rel=1e-5) and z1 == z2
    int8 = quant.ptq(model, "xnnpack", images[0], images)
    assert len(ptq_q) < len(_act_qparams(int8))  # the ends' activations are not quantized
    hist = quant.prepare(model, "xnnpack", torch.rand(2, 3, 16, 16), qat=True, activations="float-ends")
    quant.calibrate_ranges(hist, images, "histogram")
    assert _act_qparams(quant.convert(hist, "xnnpack")) != qat_q  # the estimator is the one asked for


def test_calibration_images_are_train_crops() -> None:
    imgs = quant.calibration_images(2, n=3, size=20)
    assert [tuple(t.shape) for t in imgs] == [(1, 3, 20, 20)] * 3
    assert all(float(t.min()) >= 0 and float(t.max()) <= 1 for t in imgs)
    assert torch.equal(imgs[0], quant.calibration_images(2, n=1, size=20)[0])  # seeded


@pytest.mark.skipif(not _installed("litert"), reason="litert-torch missing")
def test_litert_qat_shim_is_needed_and_works() -> None:
    """litert-torch's own quantizer fails in prepare_qat_pt2e; edgesr's shim prepares the same graph."""
    from litert_torch.quantize import pt2e_quantizer as lq
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    graph = quant.export_graph(_student(), torch.rand(2, 3, 16, 16), dynamic=True)
    raw = lq.PT2EQuantizer().set_global(
        lq.get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    )
    with pytest.raises(ValueError, match="instance of `torch.nn.Module`"):
        prepare_qat_pt2e(graph, raw)
    shimmed = quant.get_quantizer("litert", qat=True)
    assert isinstance(shimmed, lq.PT2EQuantizer)  # what litert_torch's QuantConfig accepts
    graph = quant.export_graph(_student(), torch.rand(2, 3, 16, 16), dynamic=True)
    fq = prepare_qat_pt2e(graph, shimmed)
    n_fq = sum(hasattr(m, "observer_enabled") for m in fq.modules())
    assert n_fq >= 5  # input, weights and outputs of the convs are fake-quantized


@pytest.mark.parametrize("backend", _backends())
def test_fully_integer_leaves_no_float_island(backend: str) -> None:
    """The plain NPU net with its clamp: without the option, clamp / depth-to-space stay float on
    some backends; with it, every op is in a q/dq sandwich and input and output are int8."""
    model = _student("plain", clamp=True).eval()
    images = quant.calibration_images(2, n=2, size=16)
    x = images[1]  # in the calibrated range: the clamp shares the (calibrated) range of the add
    plain = quant.ptq(model, backend, x, images)
    full = quant.ptq(model, backend, x, images, fully_integer=True)
    assert float_islands(plain), "the default graph was expected to keep a float op"
    assert not float_islands(full), dict(float_islands(full))
    assert io_quantized(full) == (True, True)
    with torch.no_grad():
        assert psnr(full(x).clamp(0, 1), model(x)) > 30.0
