"""bench/write_cost.py and bench/fresh_memory.py on tiny sizes: every step they time is reported, with a time."""

from __future__ import annotations

import re

from bench import fresh_memory, write_cost


def table(text: str) -> dict[str, list[float]]:
    """The rows of a printed markdown table: first cell → the numbers in the others."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 2 and re.fullmatch(r"[0-9.]+", cells[1]):
            rows[cells[0]] = [float(x) for x in re.findall(r"[0-9]+\.[0-9]+", " ".join(cells[1:]))]
    return rows


def test_write_cost_times_each_step_of_a_block(tmp_path, capsys):
    assert write_cost.main(["--block", "256", "--blocks", "3", "--dir", str(tmp_path)]) == 0
    rows = table(capsys.readouterr().out)
    assert set(rows) == {"write_block (all of it)", "mirror transpose", "CRC-32",
                         "Σ K² (float64, `block_sum_squares`)", "(Σ K² by np.einsum, the rule before it)",
                         "two direct writes"}
    assert all(len(values) == 2 and values[0] >= 0 for values in rows.values())
    assert not list(tmp_path.iterdir())  # its store is removed


def test_fresh_memory_times_each_kind_of_memory(capsys):
    assert fresh_memory.main(["--mib", "8", "--repeat", "2"]) == 0
    rows = table(capsys.readouterr().out)
    assert set(rows) == {"fresh, 4 KiB pages", "fresh, huge pages advised", "already mapped"}
    assert all(len(values) == 3 for values in rows.values())  # the median and both runs
