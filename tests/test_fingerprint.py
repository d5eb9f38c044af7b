"""Machine fingerprints: parsed from cpuinfo, stored with every host/adb record, and selection uses only
measurements made on a machine like the one it selects for."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_selection import ARCH, RES, _model_rec

from edgesr.cli import main
from edgesr.devices import DEVICES_DIR, load_device, parse_resolution
from edgesr.errors import ConfigError, DeviceError
from edgesr.fingerprint import Machine, detect_machine, kernel_features, parse_cpuinfo
from edgesr.models import build_model
from edgesr.profile.host import profile_module
from edgesr.profile.store import device_records, load_profile, save_records
from edgesr.selection import select_width

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx f16c avx2 fma bmi2 sha_ni

processor\t: 1
model name\t: ignored, the first block counts
"""
ZEN5 = (
    ZEN3.replace("cpu family\t: 25", "cpu family\t: 26")
    .replace("model\t\t: 1", "model\t\t: 2")
    .replace("sha_ni", "sha_ni avx512f avx512bw avx512_vnni avx_vnni avx512_bf16")
)
ARM = """processor\t: 0
BogoMIPS\t: 26.00
Features\t: fp asimd evtstrm aes pmull crc32 atomics fphp asimdhp cpuid asimdrdm asimddp i8mm bf16 sve
CPU implementer\t: 0x41
CPU part\t: 0xd4d
"""


def machine(text: str = ZEN3) -> Machine:
    model, isa = parse_cpuinfo(text)
    return Machine(cpu=model, arch="x86_64" if "flags" in text else "aarch64", isa=isa, os="Linux")


def test_cpuinfo_gives_model_family_and_the_kernel_features_only():
    assert parse_cpuinfo(ZEN3) == ("AMD EPYC (family 25, model 1)", ("avx2", "f16c", "fma"))
    # the VM shows the same "AMD EPYC" name for a Zen 5: family/model and VNNI tell it apart
    model, isa = parse_cpuinfo(ZEN5)
    assert model == "AMD EPYC (family 26, model 2)" and {"avx512f", "avx512_vnni", "avx_vnni"} <= set(isa)
    assert parse_cpuinfo(ARM) == (
        "Arm implementer 0x41 part 0xd4d",
        ("asimd", "asimddp", "asimdhp", "bf16", "i8mm", "sve"),
    )
    arm_linux = (
        "model name\t: AArch64 Processor rev 4\nHardware\t: Qualcomm SM8650\nFeatures\t: asimd asimddp\n"
    )
    assert parse_cpuinfo(arm_linux)[0] == "Qualcomm SM8650"  # the SoC, not the generic core name
    assert kernel_features("sse2 avx2 made_up") == ("avx2",)


def test_machines_match_on_cpu_arch_and_isa_and_say_how_they_differ():
    a, b = machine(ZEN3), machine(ZEN5)
    assert a.matches(replace(a, os="Linux 6.8")) and not a.matches(b) and not a.matches(None)
    diff = a.differences(b)
    assert "family 26" in diff and "+avx512_vnni" in diff and "-" not in diff.split("isa")[1]
    with pytest.raises(ConfigError, match="isa: must be sorted"):
        Machine(cpu="x", arch="x86_64", isa=("fma", "avx2"))


def test_detect_reads_cpuinfo_and_the_host_device_is_detected_not_written_down(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(ZEN5)
    m = detect_machine(path)
    assert m.cpu == "AMD EPYC (family 26, model 2)" and "avx512_vnni" in m.isa and m.os
    here = detect_machine()
    host = load_device("host")
    assert host.soc == here.cpu and all(f in host.cpu for f in here.isa)
    assert "soc: detect" in (DEVICES_DIR / "host.yaml").read_text()
    # only the host is the machine edgesr runs on
    phone = tmp_path / "phone.yaml"
    phone.write_text((DEVICES_DIR / "pixel8.yaml").read_text().replace("name: pixel8", "name: phone")
                     .replace("\nsoc: ", "\nsoc: detect\n# was: "))  # fmt: skip
    with pytest.raises(DeviceError, match="only a `transport: host` device is"):
        load_device(phone)


def test_host_records_carry_the_machine_and_it_round_trips(tmp_path):
    net = build_model("plain", scale=2, n_convs=2, n_feats=4)
    rec = profile_module(net, "pytorch", (1, 3, 8, 8), "tiny", threads=1, warmup=1, runs=2)
    assert rec.machine == detect_machine()
    path = save_records("host", [rec], "m", tmp_path)
    assert "machine:" in path.read_text() and load_profile(path).records[0].machine == rec.machine
    # the same artifact measured on two machines is two records, not one replacing the other
    two = [replace(rec, machine=machine(ZEN3)), replace(rec, machine=machine(ZEN5))]
    save_records("host", two, "m", tmp_path / "two")
    assert {r.machine for r in device_records("host", tmp_path / "two")} == {machine(ZEN3), machine(ZEN5)}


def _at(width: float, ms: float, m: Machine | None):
    return replace(_model_rec(width, ms), machine=m)


def test_selection_uses_only_this_machines_measurements_and_names_the_re_measure_command(tmp_path):
    here, other = machine(ZEN3), machine(ZEN5)
    # the other machine (VNNI) is faster: used silently, it would choose a width this one cannot run
    records = [_at(0.25, 3.0, here), _at(0.5, 12.0, here), _at(0.5, 6.0, other), _at(1.0, 7.5, other)]
    save_records("host", records, "m", tmp_path)
    dev, res = load_device("host"), parse_resolution(RES)
    sel = select_width(dev, 8.0, ARCH, "onnxruntime", res, root=tmp_path, machine=here)
    assert sel.chosen.width == 0.25 and sel.chosen.measured_ms == 3.0
    assert next(c for c in sel.candidates if c.width == 1.0).latency_ms is None  # only measured elsewhere
    (note,) = [n for n in sel.notes if "another machine" in n]
    assert "2 whole-model measurement(s)" in note and "+avx512_vnni" in note
    assert "edgesr profile sweep CHECKPOINT --device host --target onnx" in note
    # on the other machine the other records count
    assert select_width(dev, 8.0, ARCH, "onnxruntime", res, root=tmp_path, machine=other).chosen.width == 1.0


def test_records_without_a_fingerprint_are_used_with_a_note_and_lose_to_fingerprinted_ones(tmp_path):
    here = machine(ZEN3)
    old = replace(_at(0.5, 5.0, None), measured_at="2026-12-01T00:00:00Z")  # newer, but no fingerprint
    save_records("host", [old, _at(0.5, 9.0, here), _at(0.25, 4.0, None)], "m", tmp_path)
    sel = select_width(load_device("host"), 8.0, ARCH, "onnxruntime", parse_resolution(RES), root=tmp_path,
                       machine=here)  # fmt: skip
    assert {c.width: c.measured_ms for c in sel.candidates if c.measured_ms} == {0.25: 4.0, 0.5: 9.0}
    assert any("record no machine fingerprint" in n for n in sel.notes)


def test_cli_select_width_on_a_machine_of_another_kind_does_not_use_its_profiles(tmp_path, capsys):
    # every record was made on a machine unlike this one: nothing is chosen, and the output says why
    # and what to run (the README's `select-width --device host` on a fresh machine of another kind)
    here = detect_machine()
    other = next(m for m in (machine(ZEN3), machine(ZEN5)) if not m.matches(here))
    save_records("host", [_at(0.25, 3.0, other), _at(0.5, 6.0, other)], "m", tmp_path)
    argv = ["select-width", "--device", "host", "--budget-ms", "8", "--resolution", RES, "--profiles",
            str(tmp_path), "--runtime", "onnxruntime", "--plot", str(tmp_path / "p.png")]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "2 whole-model measurement(s) on host were made on another machine" in out
    assert "edgesr profile sweep CHECKPOINT --device host --target onnx" in out
    assert "no width chosen" in out
