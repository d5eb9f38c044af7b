"""How tiny_xnnpack.etdump and tiny_xnnpack_etdump.csv were made (a real ETDump, not a mock-up).

    python tests/profile/data/make_etdump.py

Exports a 2-conv + PixelShuffle net to a .pte with the XNNPACK partitioner, runs it 5 times in the
ExecuTorch Python runtime with ETDump enabled (executorch 1.5.1), writes the ETDump, and the
Inspector's dataframe as CSV (without the stack-trace / module-hierarchy / debug-data columns).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).parent


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 12, 3, padding=1)
        self.ps = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ps(self.b(torch.relu(self.a(x))))


def main() -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools import Inspector
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16)
    ep = torch.export.export(Tiny().eval(), (x,))
    prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    with tempfile.TemporaryDirectory() as tmp:
        pte = Path(tmp) / "tiny.pte"
        pte.write_bytes(prog.buffer)
        program = Runtime.get().load_program(str(pte), enable_etdump=True, debug_buffer_size=0)
        method = program.load_method("forward")
        for _ in range(5):
            method.execute([x])
        program.write_etdump_result_to_file(str(HERE / "tiny_xnnpack.etdump"), str(Path(tmp) / "debug.bin"))
    df = Inspector(etdump_path=str(HERE / "tiny_xnnpack.etdump")).to_dataframe()
    df.drop(columns=["stack_traces", "module_hierarchy", "debug_data"]).to_csv(
        HERE / "tiny_xnnpack_etdump.csv", index=False
    )


if __name__ == "__main__":
    main()
