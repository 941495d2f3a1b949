"""`make bench`'s per-stage split runs the daemon's own classes: when one of them changes shape (the publisher's
key moved into its key rotation once), the benchmark must fail here, not first in the next `make bench`."""

from __future__ import annotations

import json

from bench import bench_stages

STAGES = {"poll_decode", "point_write", "scan", "store_append", "batch_read", "batch_encode", "compress", "sign",
          "publish", "acknowledge", "history"}


def test_the_stage_split_runs_every_stage_over_every_value(capsys):
    bench_stages.main(["--ticks", "1", "--report", "exception"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["values"] == 10_000
    assert set(figures["cpu_s_per_million_values"]) == STAGES
