"""Profile on Qualcomm AI Hub's hosted phones: `edgesr profile sweep|run --via aihub`.

    result = farm_profile([Path("exports/m_w0.25.tflite"), ...], [load_device("galaxy_s24")])

Exported artifacts (TFLite; ONNX where the farm device runs ONNX Runtime) are uploaded once each,
one profile job per artifact x device is submitted at once, and the jobs are waited for together.
Each job's id is written to a small state file (`.aihub-jobs.json` in the profiles folder) right
after its submission, keyed by job kind, artifact sha256, farm device and options, so a re-run
after Ctrl-C or a crash reuses the jobs instead of paying for them again. A finished profile is
saved raw (`<profiles>/<device>/aihub/<job id>.json`, for provenance), ingested through the AI Hub
importer (`edgesr.profile.ingest.import_results`) with the job id and the service and client
versions in the record's notes, and saved at once, so results already in are kept whatever
happens next. A failed job is reported with the service's reason and dropped from the state file
(a re-run submits it again); the other jobs' results are still ingested.

The client is `qai_hub` (`pip install "edgesr[aihub]"`), imported on use. Its API token comes from
qai-hub's own configuration (`qai-hub configure --api_token ...`, kept in ~/.qai_hub/client.ini or
$QAIHUB_CLIENT_INI): edgesr never reads, takes or prints it. The client's errors become one line
each: no token, a refused token, an unknown device, a rate limit (job quota), a network failure.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from edgesr.devices import Device
from edgesr.errors import ConfigError, EdgesrError, Interrupted, UnknownNameError, UsageError
from edgesr.export.manifest import artifact_sha256, checked_artifact
from edgesr.files import atomic_write_json
from edgesr.profile.ingest import import_results
from edgesr.profile.store import ProfileRoot, Record, profile_dir, save_records, user_profiles_dir
from edgesr.profile.timing import now_utc
from edgesr.sdk import MissingSDKError, import_sdk

SERVICE = "aihub"
STATE_FILE = ".aihub-jobs.json"
STATE_FORMAT = "edgesr-aihub-jobs/1"
POLL_S = 15.0  # between status polls; AI Hub jobs take minutes (device provisioning, 100 runs)
RUNTIME_OF_SUFFIX = {".tflite": "litert", ".onnx": "onnxruntime"}  # what a profile job runs it with
TOKEN_HELP = (
    "no Qualcomm AI Hub API token: run `qai-hub configure --api_token ...` with the token from your AI "
    "Hub account page (qai-hub keeps it in ~/.qai_hub/client.ini; edgesr never reads it)"
)

# Replaced by tests (a fake clock, no real sleeping); the CLI and the library use these.
poll_sleep: Callable[[float], None] = time.sleep
poll_clock: Callable[[], float] = time.monotonic

Log = Callable[[str], None]


class FarmError(EdgesrError, RuntimeError):
    """The farm refused a request or could not be reached; the message says what to do."""


def load_client(flag: str = "--via aihub") -> ModuleType:
    """`qai_hub`, or MissingSDKError naming the pip extra (and `flag`, the option that needs it)."""
    try:
        (hub,) = import_sdk(SERVICE, "Qualcomm AI Hub client", SERVICE, "qai_hub")
    except MissingSDKError as e:
        raise MissingSDKError(
            f'{flag} needs the Qualcomm AI Hub client (qai-hub): pip install "edgesr[aihub]"'
        ) from e.__cause__
    return hub


def client_version(hub: ModuleType) -> str:
    version = getattr(hub, "__version__", None)
    if version is None:
        from importlib import metadata

        with contextlib.suppress(metadata.PackageNotFoundError):
            version = metadata.version("qai-hub")
    return str(version or "unknown")


# --- the client's errors, one line each ---------------------------------------------------------


class _Never(Exception):
    """Stands in for an exception class a client version does not have."""


def _exc(hub: ModuleType, name: str) -> type[BaseException]:
    # qai-hub exports Error, UserError and InternalError; RateLimitedError lives in qai_hub.client
    # only (checked against qai-hub 0.56.0).
    for where in (hub, getattr(hub, "client", None)):
        cls = getattr(where, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            return cls
    return _Never


def _text(e: BaseException) -> str:
    """The client's message without the boxes qai-hub draws around it, on one line."""
    lines = (ln.strip(" |│┌┐└┘─\t") for ln in str(e).splitlines())
    return " ".join(ln for ln in lines if ln)[:300] or type(e).__name__


_NO_TOKEN = re.compile(r"configuration file|token is missing|client\.ini", re.I)
_BAD_TOKEN = re.compile(r"authenticat|unauthori[sz]ed|\b401\b", re.I)


@contextlib.contextmanager
def service_errors(hub: ModuleType, doing: str, then: str = "re-run the same command") -> Iterator[None]:
    """Turn the client's exceptions raised while `doing` into one-line FarmErrors; `then` says how
    to go on (what is kept, the command that resumes)."""
    try:
        yield
    except EdgesrError:
        raise
    except _exc(hub, "RateLimitedError") as e:
        raise FarmError(
            f"Qualcomm AI Hub rate-limited {doing} ({_text(e)}): your account's job quota is used up "
            f"for now; wait, then {then}"
        ) from None
    except (_exc(hub, "UserError"), FileNotFoundError) as e:
        if _NO_TOKEN.search(str(e)):
            raise FarmError(TOKEN_HELP) from None
        if _BAD_TOKEN.search(str(e)):
            raise FarmError(
                "Qualcomm AI Hub refused the API token (expired or revoked): run `qai-hub configure "
                "--api_token ...` with the token from your AI Hub account page"
            ) from None
        raise FarmError(f"Qualcomm AI Hub refused {doing}: {_text(e)}") from None
    except (PermissionError, IsADirectoryError) as e:  # a local file, not the network
        raise FarmError(f"{doing}: cannot read {e.filename or 'a local file'} ({e.strerror or e})") from None
    except (_exc(hub, "InternalError"), OSError, TimeoutError) as e:  # requests' errors are OSErrors
        raise FarmError(
            f"could not reach Qualcomm AI Hub while {doing} ({_text(e)}): check the network, then {then}"
        ) from None
    except _exc(hub, "Error") as e:  # any other error of the client's own: its message, one line
        raise FarmError(f"Qualcomm AI Hub failed while {doing}: {_text(e)}; then {then}") from None


# --- the farm's devices ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FarmDevice:
    name: str  # what a device file's `farm.name` and --farm-device take
    os: str
    chipsets: tuple[str, ...]  # e.g. qualcomm-snapdragon-8gen3, sm8650
    frameworks: tuple[str, ...]  # runtimes the farm runs there: tflite, qnn, onnx


def _attrs(attributes: Any, kind: str) -> tuple[str, ...]:
    items = [attributes] if isinstance(attributes, str) else list(attributes or ())
    return tuple(a.split(":", 1)[1] for a in items if a.startswith(f"{kind}:"))


def farm_devices(hub: ModuleType) -> list[FarmDevice]:
    """Every device the farm offers (one entry per name and OS), sorted by name."""
    with service_errors(hub, "listing its devices"):
        devices = hub.get_devices()
    out = {
        (d.name, d.os): FarmDevice(
            d.name, d.os, _attrs(d.attributes, "chipset"), _attrs(d.attributes, "framework")
        )
        for d in devices
    }
    return [out[k] for k in sorted(out)]


def check_farm_names(names: Sequence[str], catalog: Sequence[FarmDevice]) -> None:
    """UnknownNameError for a name the farm does not have, listing the closest it has."""
    known = sorted({d.name for d in catalog})
    for name in names:
        if name in known:
            continue
        close = [k for k in known if name.lower() in k.lower()][:5]
        close += [k for k in difflib.get_close_matches(name, known, n=5, cutoff=0.5) if k not in close]
        raise UnknownNameError(
            f"Qualcomm AI Hub has no device {name!r}"
            + (f"; close: {', '.join(repr(c) for c in close[:5])}" if close else "")
            + "; list them with `edgesr devices ls --farm aihub`"
        )


def farm_name(device: Device, override: str | None = None) -> str:
    """The farm's name of `device`: `override` (--farm-device), else the device file's `farm.name`."""
    if override:
        return override
    if device.farm is not None and device.farm.service == SERVICE:
        return device.farm.name
    raise UsageError(
        f"device {device.name!r} names no Qualcomm AI Hub device: add `farm: {{service: aihub, name: "
        f'"..."}}` to its file (names: `edgesr devices ls --farm aihub`), or pass --farm-device NAME'
    )


# --- what to run, and the jobs already paid for ---------------------------------------------------


@dataclass(frozen=True)
class FarmTask:
    """One job: `artifact` run by `runtime` on the farm's `farm_device` (edgesr's `device`)."""

    artifact: Path
    sha256: str
    runtime: str
    device: Device
    farm_device: str
    options: str = ""  # the service's job options, e.g. "--max_profiler_iterations 50"
    kind: str = "profile"  # profile | inference

    @property
    def key(self) -> str:
        return " | ".join((self.kind, self.sha256, self.farm_device, self.options))

    @property
    def label(self) -> str:
        return f"{self.artifact.name} on {self.farm_device} ({self.device.name})"


def plan_tasks(
    artifacts: Sequence[str | Path],
    devices: Sequence[Device],
    farm_device: str | None = None,
    options: str = "",
    kind: str = "profile",
    trust: bool = False,
) -> list[FarmTask]:
    """One task per artifact x device. Each artifact must match its manifest's sha256 (the farm runs
    the file that was exported) and have a runtime every device file lists."""
    if farm_device and len(devices) > 1:
        raise UsageError("--farm-device names one farm device: give one --device with it")
    tasks: dict[str, FarmTask] = {}
    for a in artifacts:
        path, _ = checked_artifact(a, trust)
        runtime = RUNTIME_OF_SUFFIX.get(path.suffix)
        if runtime is None:
            raise UsageError(
                f"{path}: --via aihub runs .tflite (LiteRT) and .onnx (ONNX Runtime) artifacts; export "
                "one with `edgesr export CHECKPOINT --target tflite`"
            )
        sha = artifact_sha256(path)
        for d in devices:
            d.runtime(runtime)  # DeviceError naming the device's runtimes
            t = FarmTask(path, sha, runtime, d, farm_name(d, farm_device), options, kind)
            if t.key in tasks and tasks[t.key].device.name != d.name:
                raise UsageError(
                    f"devices {tasks[t.key].device.name!r} and {d.name!r} both name the farm device "
                    f"{t.farm_device!r}: it is one phone, so profile it under one of them"
                )
            tasks.setdefault(t.key, t)
    return list(tasks.values())


def state_path(root: ProfileRoot = None) -> Path:
    """The job-id file: in `root` (--profiles), else in the user's profiles folder."""
    return Path(root if root is not None else user_profiles_dir()) / STATE_FILE


class JobStore:
    """Submitted jobs by task key, in a JSON file rewritten atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jobs: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            data = {"error": str(e)}
        if (
            not isinstance(data, dict)
            or data.get("format") != STATE_FORMAT
            or not isinstance(data.get("jobs"), dict)
        ):
            raise ConfigError(
                f"not an edgesr AI Hub job list (format {STATE_FORMAT}); delete it to start afresh (the "
                "jobs it listed would be submitted, and paid for, again)",
                source=str(self.path),
            )
        return data["jobs"]

    def _write(self) -> None:
        note = "edgesr --via aihub: jobs already submitted, reused by a re-run. Delete an entry to re-submit."
        atomic_write_json(self.path, {"format": STATE_FORMAT, "note": note, "jobs": self.jobs})

    def job_id(self, key: str) -> str | None:
        entry = self.jobs.get(key)
        return entry["job_id"] if entry else None

    def put(self, task: FarmTask, job_id: str) -> None:
        self.jobs[task.key] = {
            "job_id": job_id, "kind": task.kind, "artifact": task.artifact.name, "sha256": task.sha256,
            "device": task.device.name, "farm_device": task.farm_device, "options": task.options,
            "submitted_at": now_utc(),
        }  # fmt: skip
        self._write()

    def drop(self, key: str) -> None:
        if self.jobs.pop(key, None) is not None:
            self._write()


Submit = Callable[[ModuleType, Any, FarmTask], Any]  # (client, uploaded model, task) -> job


def submit_profile(hub: ModuleType, model: Any, task: FarmTask) -> Any:
    # retry=False: on a rate limit the client would otherwise print a box to stdout and sleep up to
    # 10 minutes before raising; edgesr says it in one line and keeps the jobs submitted so far.
    return hub.submit_profile_job(
        model=model, device=hub.Device(task.farm_device), name=f"edgesr {task.artifact.name}",
        options=task.options, retry=False,
    )  # fmt: skip


def submit_missing(
    hub: ModuleType, tasks: Sequence[FarmTask], store: JobStore, submit: Submit, log: Log | None = None
) -> dict[str, Any]:
    """Submit every task the store has no job for (uploading each artifact once); the store is
    written after each submission. Returns the new jobs by task key."""
    todo = [t for t in tasks if store.job_id(t.key) is None]
    if len(todo) < len(tasks) and log:
        log(f"reusing {len(tasks) - len(todo)} job(s) submitted earlier (ids in {store.path})")
    uploads: dict[str, Any] = {}
    jobs: dict[str, Any] = {}
    for i, t in enumerate(todo):
        then = f"re-run the same command: the {i} job(s) submitted so far are kept in {store.path} and reused"
        with service_errors(hub, f"submitting {t.label}", then):
            if t.sha256 not in uploads:
                uploads[t.sha256] = hub.upload_model(str(t.artifact))
            job = submit(hub, uploads[t.sha256], t)
        store.put(t, job.job_id)
        jobs[t.key] = job
        if log:
            log(f"submitted {t.kind} job {job.job_id}: {t.label}")
    return jobs


# --- waiting --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    task: FarmTask
    job_id: str
    code: str  # the service's state: CREATED, PROVISIONING_DEVICE, MEASURING_PERFORMANCE, SUCCESS, ...
    finished: bool
    success: bool
    message: str = ""  # the failure reason, when failed


Progress = Callable[[list[JobState], float], None]  # (every job's state, seconds waited)


def wait_jobs(
    hub: ModuleType,
    tasks: Sequence[FarmTask],
    store: JobStore,
    jobs: dict[str, Any],
    progress: Progress | None = None,
    poll_s: float = POLL_S,
    resume: str = "the same command",
) -> tuple[list[JobState], dict[str, Any]]:
    """Poll every job until all have finished; (their final states, job objects by task key).
    Ctrl-C stops waiting (the jobs run on; their ids stay in the store) and says how to resume."""
    start, states = poll_clock(), {}
    then = f"re-run {resume} (the submitted jobs are kept in {store.path})"
    try:
        while True:
            with service_errors(hub, "asking for the jobs' states", then):
                for t in tasks:
                    if t.key in states and states[t.key].finished:
                        continue
                    job = jobs.get(t.key) or hub.get_job(store.job_id(t.key))
                    jobs[t.key] = job
                    s = job.get_status()
                    states[t.key] = JobState(
                        t, job.job_id, str(s.code), bool(s.finished), bool(s.success), s.message or ""
                    )
            view = [states[t.key] for t in tasks]
            if progress:
                progress(view, poll_clock() - start)
            if all(s.finished for s in view):
                return view, jobs
            poll_sleep(poll_s)
    except KeyboardInterrupt:
        waiting = sum(1 for t in tasks if not (t.key in states and states[t.key].finished))
        raise Interrupted(
            f"stopped waiting for {waiting} Qualcomm AI Hub job(s); they keep running on the service and "
            f"their ids are kept in {store.path}; resume with: {resume}"
        ) from None


# --- the sweep ------------------------------------------------------------------------------------


@dataclass
class FarmResult:
    records: list[tuple[Device, Record]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one line per failed job, with the reason
    saved: list[Path] = field(default_factory=list)  # profile files written
    raw: list[Path] = field(default_factory=list)  # the downloaded profiles, as the service gave them


def ingest_profile(hub: ModuleType, job: Any, state: JobState, root: ProfileRoot = None) -> Record:
    """Download a finished profile, keep it raw next to the device's profiles, import it."""
    t = state.task
    with service_errors(hub, f"downloading the profile of job {state.job_id}"):
        profile = job.download_profile()
    raw = profile_dir(t.device.name, root) / "aihub" / f"{state.job_id}.json"
    atomic_write_json(raw, profile)
    (rec,) = import_results(raw, t.device, "aihub-json", t.artifact, runtime=t.runtime)
    origin = (
        f"Qualcomm AI Hub job {state.job_id} on {t.farm_device}, service {getattr(job, 'hub_version', '?')}, "
        f"qai-hub {client_version(hub)}"
    )
    return replace(rec, method="aihub:profile", notes="; ".join(s for s in (rec.notes, origin) if s))


def farm_profile(
    artifacts: Sequence[str | Path],
    devices: Sequence[Device],
    farm_device: str | None = None,
    options: str = "",
    root: ProfileRoot = None,
    trust: bool = False,
    fresh: bool = False,
    progress: Progress | None = None,
    log: Log | None = None,
    resume: str = "the same command",
    poll_s: float = POLL_S,
) -> FarmResult:
    """Profile every artifact on every device on Qualcomm AI Hub and save the records into the
    devices' profiles (`root`, default: the user's). `fresh`: submit new jobs even where the state
    file has some. `resume` is the command a Ctrl-C or a rate limit tells the user to re-run."""
    hub = load_client()
    tasks = plan_tasks(artifacts, devices, farm_device, options, "profile", trust)
    check_farm_names(sorted({t.farm_device for t in tasks}), farm_devices(hub))
    store = JobStore(state_path(root))
    if fresh:
        for t in tasks:
            store.drop(t.key)
    jobs = submit_missing(hub, tasks, store, submit_profile, log)
    states, jobs = wait_jobs(hub, tasks, store, jobs, progress, poll_s, resume)
    result = FarmResult()
    for s in states:
        t = s.task
        if not s.success:
            reason = s.message or "the service gave no reason"
            result.failures.append(f"{t.label}: AI Hub job {s.job_id} {s.code.lower()}: {reason}")
            store.drop(t.key)  # a re-run submits it again
            continue
        try:
            rec = ingest_profile(hub, jobs[t.key], s, root)
        except FarmError:
            raise  # the network or the service: a re-run downloads it again
        except EdgesrError as e:  # a profile the importer refuses: say so, keep the others
            result.failures.append(f"{t.label}: AI Hub job {s.job_id}: {e}")
            continue
        path = save_records(t.device.name, [rec], f"models_{rec.runtime}", root)  # now: partial results stay
        result.records.append((t.device, rec))
        result.raw.append(profile_dir(t.device.name, root) / "aihub" / f"{s.job_id}.json")
        if path not in result.saved:
            result.saved.append(path)
    return result


def job_summary(states: Sequence[JobState]) -> str:
    """'SUCCESS 2, MEASURING_PERFORMANCE 3, CREATED 1': how many jobs are in each state."""
    counts: dict[str, int] = {}
    for s in states:
        counts[s.code] = counts.get(s.code, 0) + 1
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
