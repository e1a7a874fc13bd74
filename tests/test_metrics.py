"""Flow metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tvnet_cli.errors import TVNetError
from tvnet_cli.metrics import flow_errors, mean_errors


def test_known_values() -> None:
    gt = np.zeros((2, 2, 2))
    gt[..., 0] = 10.0  # 10 px to the right everywhere
    flow = gt.copy()
    flow[0, 0] = (13.0, 4.0)  # error 5 px  -> outlier (> 3 px and > 5 % of 10)
    flow[0, 1] = (10.0, 0.4)  # error 0.4 px
    m = flow_errors(flow, gt)
    assert m["epe"] == pytest.approx((5.0 + 0.4) / 4)
    assert m["out3"] == pytest.approx(0.25) and m["fl"] == pytest.approx(0.25)
    assert m["valid"] == 4 and m["pixels"] == 4
    # AAE of the exact pixels is 0; of (13, 4, 1) vs (10, 0, 1) it is the 3-D angle.
    a = np.array([13.0, 4.0, 1.0])
    b = np.array([10.0, 0.0, 1.0])
    ang1 = math.degrees(math.acos(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    a2 = np.array([10.0, 0.4, 1.0])
    ang2 = math.degrees(math.acos(a2 @ b / np.linalg.norm(a2) / np.linalg.norm(b)))
    assert m["aae"] == pytest.approx((ang1 + ang2) / 4)


def test_fl_needs_five_percent() -> None:
    gt = np.full((1, 1, 2), 100.0)
    flow = gt + 3.0  # error 4.24 px > 3 but < 5 % of 141 px
    m = flow_errors(flow, gt)
    assert m["out3"] == 1.0 and m["fl"] == 0.0


def test_mask_and_nan() -> None:
    gt = np.zeros((2, 3, 2))
    flow = np.ones((2, 3, 2))
    valid = np.array([[1, 0, 0], [0, 0, 1]], bool)
    flow[0, 1] = 1e6  # masked pixels do not count
    m = flow_errors(flow, gt, valid)
    assert m["valid"] == 2 and m["epe"] == pytest.approx(math.sqrt(2))
    empty = flow_errors(flow, gt, np.zeros((2, 3), bool))
    assert empty["valid"] == 0 and math.isnan(empty["epe"])
    mean = mean_errors([m, empty])
    assert mean["epe"] == pytest.approx(math.sqrt(2)) and mean["valid"] == 2


def test_shape_mismatch() -> None:
    with pytest.raises(TVNetError, match="differ"):
        flow_errors(np.zeros((2, 2, 2)), np.zeros((2, 3, 2)))
