"""examples/small_batch_normalization.py: six normalizations at batch sizes 2 to 32 on real digits."""

import math
import re

import pytest

BATCH_SIZES = (2, 4, 8, 32)
NORMALIZATIONS = ("BatchNorm", "ghost BN", "GroupNorm", "GroupNorm + WS", "LayerNorm",
                  "InstanceNorm")
RECOMPUTED = "BatchNorm, recomputed"


def parse_table(text):
    """``{row name: [accuracy in % per batch size]}`` from the markdown table."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header, rows = lines[0], lines[1:]
    assert header == "| normalization | " + " | ".join(f"batch {b}" for b in BATCH_SIZES) + " |"
    table = {}
    for line in rows:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        values = []
        for cell in cells[1:]:
            match = re.fullmatch(r"(\S+)%( ± (\S+))?", cell)
            assert match, line
            values.append(float(match.group(1)))  # float() also parses nan and inf
        table[cells[0]] = values
    return table


@pytest.mark.slow
def test_small_batch_normalization_quick(run_example):
    result, out = run_example("small_batch_normalization")
    written = (out / "results.md").read_text()
    assert written.strip() in result.stdout  # the printed table is the written one
    # The ghost batch sizes are stated: a quarter of the batch, at least one example.
    assert "ghost batches of 1 at batch 2, 1 at batch 4, 2 at batch 8, 8 at batch 32" in written

    table = parse_table(written)
    assert list(table) == list(NORMALIZATIONS) + [RECOMPUTED]
    for name, values in table.items():
        assert len(values) == len(BATCH_SIZES), name
        for value in values:
            assert math.isfinite(value) and 0.0 <= value <= 100.0, (name, values)
    # Quick mode has one seed: no spread is claimed.
    assert "±" not in written and "over 1 seed" in written

    # Every network learns the digits (chance is 10%). BatchNorm with moving averages gets a
    # looser bound: at batch 32 quick mode takes only 32 steps, and its averages still lag.
    for name, values in table.items():
        assert min(values) > 25.0, (name, values)
    for name in ("GroupNorm", "GroupNorm + WS", "LayerNorm", "InstanceNorm", RECOMPUTED):
        assert min(table[name]) > 60.0, (name, table[name])
    for name in NORMALIZATIONS:  # batch 2: the most steps
        assert table[name][0] > 60.0, (name, table[name])

    png = out / "small_batch_normalization.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
