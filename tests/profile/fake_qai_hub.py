"""A fake `qai_hub` (not a test module): the calls edgesr makes, shaped like qai-hub's documented API.

Built from the qai-hub client's own code (qai_hub/client.py, public_api_utils.py): `get_devices()`
returns `Device(name, os, attributes)` with `chipset:` and `framework:` attributes; `upload_model`
returns a Model; `submit_profile_job(model=, device=, name=, options=)` and
`submit_inference_job(..., inputs={name: [array]})` return jobs with `job_id` and `hub_version`;
`get_job(id)` returns a new job object for a stored id; `job.get_status()` returns a JobStatus whose
`code` is a `JobStatus.State` name (CREATED, PROVISIONING_DEVICE, MEASURING_PERFORMANCE,
RUNNING_INFERENCE, SUCCESS, FAILED), with `success`, `failure`, `finished`, `running`, `pending`
and `message` (the failure reason); `download_profile()` returns the dict of
`_profile_pb_to_python_dict` (the sample in data/aihub_profile.json, times rescaled);
`download_output_data()` returns `{output name: [array]}`. The exception classes are qai-hub's:
`Error`, `UserError` (also a missing ~/.qai_hub/client.ini or token), `RateLimitedError`,
`InternalError` (network, 5xx).

Each `get_status()` poll moves a job one state on, so a wait sees the states advance. The API
token lives in `config_token` (what `qai-hub configure` wrote); `None` is "not configured".
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE = Path(__file__).parent / "data" / "aihub_profile.json"
_PHONE = ["framework:tflite", "framework:qnn", "os:android", "format:phone"]
DEVICES = [
    ("Samsung Galaxy S24 (Family)", "14", ["chipset:qualcomm-snapdragon-8gen3", "framework:onnx", *_PHONE]),
    ("Samsung Galaxy S23 (Family)", "13", ["chipset:qualcomm-snapdragon-8gen2", *_PHONE]),
    ("Snapdragon X Elite CRD", "11", ["chipset:qualcomm-snapdragon-x-elite", "framework:onnx", "os:windows"]),
]
PROFILE_STATES = ["CREATED", "PROVISIONING_DEVICE", "MEASURING_PERFORMANCE", "SUCCESS"]
INFERENCE_STATES = ["CREATED", "PROVISIONING_DEVICE", "RUNNING_INFERENCE", "SUCCESS"]


class Error(Exception):
    pass


class UserError(Error):
    pass


class RateLimitedError(Error):
    pass


class InternalError(Error):
    pass


@dataclass
class Device:
    name: str = ""
    os: str = ""
    attributes: Any = field(default_factory=list)


@dataclass
class JobStatus:
    code: str
    message: str | None = None

    @property
    def success(self) -> bool:
        return self.code == "SUCCESS"

    @property
    def failure(self) -> bool:
        return self.code == "FAILED"

    @property
    def finished(self) -> bool:
        return self.code in ("SUCCESS", "FAILED")

    @property
    def running(self) -> bool:
        return not self.finished and self.code != "CREATED"

    @property
    def pending(self) -> bool:
        return self.code == "CREATED"


@dataclass
class Model:
    model_id: str
    path: Path


class Job:
    def __init__(self, hub: FakeHub, job_id: str) -> None:
        self._hub, self.job_id, self.hub_version = hub, job_id, "aihub-2026.11"

    def __repr__(self) -> str:  # a careless caller printing a job would leak the token: tests catch it
        return f"Job({self.job_id!r}, owner_token={self._hub.config_token!r})"

    def get_status(self) -> JobStatus:
        return self._hub._poll(self.job_id)

    def download_profile(self) -> dict:
        return self._hub._profile(self.job_id)

    def download_output_data(self) -> dict:
        return self._hub._output(self.job_id)


class FakeHub(types.ModuleType):
    """`monkeypatch.setitem(sys.modules, "qai_hub", FakeHub())`."""

    # as qai-hub 0.56.0: RateLimitedError is not exported at the top level, only from qai_hub.client
    Error, UserError, InternalError = Error, UserError, InternalError
    client = types.SimpleNamespace(Error=Error, UserError=UserError, RateLimitedError=RateLimitedError,
                                   InternalError=InternalError)  # fmt: skip
    Device, JobStatus = Device, JobStatus
    __version__ = "0.39.1"

    def __init__(
        self, token: str | None = "aihub-TOKEN-0f9e8d7c6b5a", ms: Callable[[float, str], float] | None = None
    ):
        super().__init__("qai_hub")
        self.config_token = token
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.jobs: dict[str, dict[str, Any]] = {}  # job id -> {kind, model, device, polls, fail, inputs}
        self.fail: dict[tuple[str, str], str] = {}  # (artifact name, device) -> the service's reason
        self.rate_limit_after: int | None = None  # submissions accepted before RateLimitedError
        self.network_down = False
        self.ms = ms or (lambda width, device: 40.0 * width)  # a width's median latency on a device
        self.output: Callable[[np.ndarray], np.ndarray] | None = None  # inference: input -> output

    def _call(self, method: str, **kw: Any) -> None:
        self.calls.append((method, kw))
        if self.network_down:
            raise InternalError(
                "Internal API failure.\n┌────┐\n| Could not connect to Qualcomm AI Hub. |\n└────┘"
            )
        if self.config_token is None:
            raise UserError(
                "Failed to load client configuration file.\n┌────┐\n| ~/.qai_hub/client.ini not found. "
                "Please request access at https://aihub.qualcomm.com/. |\n└────┘"
            )

    def submitted(self) -> int:
        return sum(1 for name, _ in self.calls if name.startswith("submit_"))

    # --- the API ---------------------------------------------------------------------------------
    def get_devices(self, name: str = "", os: str = "", attributes: Any = ()) -> list[Device]:
        self._call("get_devices", name=name)
        return [Device(n, o, list(a)) for n, o, a in DEVICES if not name or n == name]

    def upload_model(self, model: str, name: str | None = None) -> Model:
        self._call("upload_model", model=model)
        return Model(f"m{len(self.calls):04d}", Path(model))

    def _submit(self, kind: str, model: Model, device: Device, **kw: Any) -> Job:
        self._call(f"submit_{kind}_job", model=model.path.name, device=device.name, **kw)
        if self.rate_limit_after is not None and self.submitted() > self.rate_limit_after:
            self.calls.pop()
            raise RateLimitedError("Too many jobs submitted. You have reached your job limit.")
        job_id = f"j{kind[0]}{len(self.jobs):06d}"
        reason = self.fail.get((model.path.name, device.name))
        self.jobs[job_id] = {
            "kind": kind,
            "model": model,
            "device": device.name,
            "polls": 0,
            "fail": reason,
            **kw,
        }
        return Job(self, job_id)

    # The real client's submit functions take retry=True by default: on a rate limit they print a box
    # to stdout and sleep up to 10 minutes before raising. The fake records what it was asked for.
    def submit_profile_job(
        self, model: Model, device: Device, name: str | None = None, options: str = "", retry: bool = True
    ) -> Job:
        return self._submit("profile", model, device, options=options, retry=retry)

    def submit_inference_job(
        self, model: Model, device: Device, inputs: dict, name: str | None = None, options: str = "",
        retry: bool = True,
    ) -> Job:  # fmt: skip
        return self._submit("inference", model, device, inputs=inputs, options=options, retry=retry)

    def get_job(self, job_id: str) -> Job:
        self._call("get_job", job_id=job_id)
        if job_id not in self.jobs:
            raise UserError(f"Job ID '{job_id}' could not be found.")
        return Job(self, job_id)

    # --- what the jobs do ------------------------------------------------------------------------
    def _poll(self, job_id: str) -> JobStatus:
        self._call("get_status", job_id=job_id)
        j = self.jobs[job_id]
        states = PROFILE_STATES if j["kind"] == "profile" else INFERENCE_STATES
        j["polls"] += 1
        code = states[min(j["polls"], len(states)) - 1]
        if code == "SUCCESS" and j["fail"]:
            return JobStatus("FAILED", j["fail"])
        return JobStatus(code)

    def _width(self, job_id: str) -> float:
        artifact = self.jobs[job_id]["model"].path
        return json.loads(artifact.with_name(artifact.name + ".json").read_text())["model"]["width"]

    def _profile(self, job_id: str) -> dict:
        self._call("download_profile", job_id=job_id)
        profile = json.loads(SAMPLE.read_text())
        s = profile["execution_summary"]
        target_us = 1000 * self.ms(self._width(job_id), self.jobs[job_id]["device"])
        k = target_us / float(np.median(s["all_inference_times"][1:]))
        s["all_inference_times"] = [round(t * k) for t in s["all_inference_times"]]
        s["estimated_inference_time"] = min(s["all_inference_times"])
        return profile

    def _output(self, job_id: str) -> dict:
        self._call("download_output_data", job_id=job_id)
        (x,) = next(iter(self.jobs[job_id]["inputs"].values()))
        assert self.output is not None, "set FakeHub.output for inference jobs"
        return {"output_0": [self.output(x)]}
