"""Where the benchmarks find the shared data: ../shared/data beside the checkout, or
$TVNET_SHARED_DATA (e.g. a copy carried to a GPU machine, where ../shared does not travel)."""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path(os.environ.get("TVNET_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
VIDEO = DATA / "videos" / "test.mp4"  # 300 frames, 340x256 H.264 (mmaction2's test clip)
