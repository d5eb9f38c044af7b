"""Device files: every shipped one validates; corrupt or unknown ones fail naming the file and key."""

from __future__ import annotations

import shutil

import pytest

from edgesr.devices import DEVICES_DIR, list_devices, load_device, parse_resolution
from edgesr.errors import DeviceError

SHIPPED = [name for name, _ in list_devices()]


def test_the_issue_s_devices_ship():
    assert {"host", "pixel8", "galaxy_s24", "iphone15pro", "rpi5"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_device_validates(name):
    d = load_device(name)
    assert d.name == name and d.budget_ms > 0 and d.runtimes
    assert d.resolution.width > 0 and d.resolution.height > 0


def test_no_shipped_profile_holds_a_latency_for_a_phone_nobody_measured():
    # Specs only: profiles exist only for devices actually measured (this project: the host).
    measured = {p.name for p in (DEVICES_DIR / "profiles").iterdir() if p.is_dir()}
    assert measured <= {"host"}


def _copy(tmp_path, name="pixel8"):
    dst = tmp_path / f"{name}.yaml"
    shutil.copy(DEVICES_DIR / f"{name}.yaml", dst)
    return dst


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    f = _copy(tmp_path)
    f.write_text(f.read_text().replace("budget_ms:", "budget_msec:"))
    with pytest.raises(DeviceError) as e:
        load_device(f)
    msg = str(e.value)
    assert str(f) in msg and "budget_msec" in msg and "budget_ms" in msg


def test_wrong_type_and_bad_value_name_the_key(tmp_path):
    f = _copy(tmp_path)
    f.write_text(f.read_text().replace("width: 320", "width: wide"))
    with pytest.raises(DeviceError, match=r"resolution\.width: expected int, got str 'wide'"):
        load_device(f)
    f = _copy(tmp_path)
    f.write_text(f.read_text().replace("name: litert", "name: tensorflow"))
    with pytest.raises(DeviceError, match=r"runtimes\[0\]\.name: expected one of .*'litert'"):
        load_device(f)
    f = _copy(tmp_path)
    f.write_text(f.read_text().replace("budget_ms: 33.3", "budget_ms: 0"))
    with pytest.raises(DeviceError, match="budget_ms: must be > 0"):
        load_device(f)


def test_corrupt_yaml_names_the_file_and_line(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("name: broken\nsoc: [unclosed\n")
    with pytest.raises(DeviceError, match=r"broken\.yaml: invalid YAML.*line"):
        load_device(f)
    f.write_text("- just\n- a list\n")
    with pytest.raises(DeviceError, match=r"broken\.yaml: expected a mapping"):
        load_device(f)


def test_file_name_must_match_the_device_name(tmp_path):
    f = _copy(tmp_path)
    renamed = f.rename(tmp_path / "pixel9.yaml")
    with pytest.raises(DeviceError, match=r"pixel9\.yaml: name: 'pixel8' does not match"):
        load_device(renamed)


def test_unknown_device_name_lists_the_shipped_ones():
    with pytest.raises(KeyError, match=r"unknown device 'pixel88'.*Did you mean 'pixel8'.*host"):
        load_device("pixel88")


def test_runtime_lookup_and_resolution_parsing():
    d = load_device("pixel8")
    assert d.runtime("litert").delegates[0] == "xnnpack"
    with pytest.raises(ValueError, match="has no runtime 'coreml'.*litert, executorch"):
        d.runtime("coreml")
    assert parse_resolution("640x360").hw == (360, 640)
    with pytest.raises(ValueError, match="WxH"):
        parse_resolution("640*360")
