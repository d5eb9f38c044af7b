"""A recipe's `export:` section: how its student ships, as `edgesr select-width --search --write`
chose it (or a person wrote it); `edgesr export RUN_DIR` reads it where the command line is silent.

    export: {target: tflite, precision: int8, upsampler: depth_to_space, activations: int8}

Every key is optional; the names are checked against edgesr.targets here, and the combination by
`edgesr export`'s plan (a target refuses what it cannot make) when the artifact is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgesr.schema import _check
from edgesr.targets import ACTIVATIONS, PRECISIONS, TARGETS


@dataclass(frozen=True)
class ExportCfg:
    target: str | None = None  # a registered export target (edgesr.targets)
    precision: str | None = None  # fp32 | fp16 | int8
    upsampler: str | None = None  # one of the target's upsampler forms
    activations: str | None = None  # int8 PTQ activations policy
    delegate: str | None = None  # the backend inside the artifact, where the target has a choice
    # runtime settings to run it with, e.g. {spinning: disabled} (ONNX Runtime); recorded in the manifest
    runtime_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = TARGETS.names()
        _check(self.target is None or self.target in names, "target",
               f"must be one of {', '.join(names)}, got {self.target!r}")  # fmt: skip
        _check(self.precision is None or self.precision in PRECISIONS, "precision",
               f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")  # fmt: skip
        _check(self.activations is None or self.activations in ACTIVATIONS, "activations",
               f"must be one of {', '.join(ACTIVATIONS)}, got {self.activations!r}")  # fmt: skip
        _check(self.activations is None or self.precision == "int8", "activations",
               f"applies to precision int8 only, got precision {self.precision!r}")  # fmt: skip
        if self.delegate is not None:
            delegates = TARGETS.get(self.target).delegates if self.target else ()
            _check(self.delegate in delegates, "delegate",
                   f"needs a target with a choice of delegate ({', '.join(delegates) or 'none'}), "
                   f"got {self.delegate!r}")  # fmt: skip
        if self.upsampler is not None:
            ups = TARGETS.get(self.target).upsamplers if self.target else ()
            _check(self.target is not None and self.upsampler in ups, "upsampler",
                   f"needs a target and one of its forms ({', '.join(ups) or 'set target first'}), "
                   f"got {self.upsampler!r}")  # fmt: skip

        if self.runtime_options:
            _check(
                self.target is not None, "runtime_options", "needs a target (the options are its runtime's)"
            )
            try:
                TARGETS.get(self.target).check_runtime_options(self.runtime_options)
            except ValueError as e:
                yaml_bool = any(isinstance(v, bool) for v in self.runtime_options.values())
                hint = " (YAML reads on/off/yes/no as booleans: write the value's name)" if yaml_bool else ""
                _check(False, "runtime_options", f"{e}{hint}")

    @property
    def empty(self) -> bool:
        return self == ExportCfg()
