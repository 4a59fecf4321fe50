"""The scripts of benchmarks/, run small: that each measures and prints, not what it measures.

    .venv/bin/pytest tests/test_benchmarks.py -q

benchmarks/camera_loop.py here (on the smoke run's int8 model, so marked slow);
other benchmarks are tested beside what they measure (tests/test_lite.py, test_demo.py).
"""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_the_loop_benchmark_measures_with_and_without_serve(tiny_model, capsys, load_benchmark):
    # Only that it measures and prints both; the figures themselves depend on the machine.
    benchmark = load_benchmark("camera_loop")
    frames = 12
    result = benchmark.run(
        benchmark.LoopBenchmarkConfig(model=str(tiny_model), frames=frames, rounds=1, width=160, height=120)
    )
    assert result["loop_fps"] > 0 and result["serve_loop_fps"] > 0
    assert 1 <= result["serve_stream_parts"] <= frames
    assert result["serve_encoded_frames"] <= frames
    text = benchmark.render(result)
    assert "camera loop with --serve, one client reading /stream.mjpg" in text
    without = benchmark.run(
        benchmark.LoopBenchmarkConfig(
            model=str(tiny_model), frames=frames, rounds=1, width=160, height=120, serve=False
        )
    )
    assert without["serve_loop_fps"] is None and "--serve" not in benchmark.render(without)
