"""A small action dataset in the UCF101 layout whose classes differ only in motion.

Every video is a window moving over a real image texture; the class is the motion
(translation direction, rotation, zoom), never the appearance: all classes draw their
textures from the same images, each group (`gXX`) uses one image, and the split is by
group, as in UCF101. Written as `<out>/<Class>/v_<Class>_gXX_cYY.avi` with
`<out>/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TVNetError
from .io.datasets import IMAGE_SUFFIXES
from .io.video import write_video

# name -> (dx, dy, degrees per frame, zoom per frame); dx/dy in units of `speed` px/frame
MOTIONS = {
    "MoveRight": (1, 0, 0.0, 1.0),
    "MoveLeft": (-1, 0, 0.0, 1.0),
    "MoveDown": (0, 1, 0.0, 1.0),
    "MoveUp": (0, -1, 0.0, 1.0),
    "RotateCW": (0, 0, 3.0, 1.0),
    "RotateCCW": (0, 0, -3.0, 1.0),
    "ZoomIn": (0, 0, 0.0, 1.04),
    "ZoomOut": (0, 0, 0.0, 1 / 1.04),
}


@dataclass(frozen=True)
class ToyConfig:
    classes: tuple[str, ...] = ("MoveRight", "MoveLeft", "MoveDown", "MoveUp")
    groups: int = 6  # gXX; the first `test_groups` groups are the test split
    clips: int = 2  # cYY per group
    test_groups: int = 2
    frames: int = 10
    size: tuple[int, int] = (64, 64)  # (H, W)
    speed: float = 2.0  # pixels per frame (jittered +-25 % per video)
    seed: int = 0
    codec: str = "ffv1"  # lossless, so the motion survives


def load_textures(folder: Path | None, min_side: int) -> list[np.ndarray]:
    """Grey-or-RGB images under `folder` as RGB uint8 arrays; procedural noise if None."""
    from PIL import Image

    if folder is None:
        rng = np.random.default_rng(1234)
        out = []
        for _ in range(4):
            base = rng.random((min_side // 4 + 2, min_side // 4 + 2, 3))
            img = Image.fromarray((base * 255).astype(np.uint8)).resize((min_side * 2, min_side * 2), Image.BICUBIC)
            out.append(np.asarray(img))
        return out
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    out = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    out = [a for a in out if min(a.shape[:2]) >= min_side]
    if not out:
        raise TVNetError(f"{folder}: no images of at least {min_side}x{min_side} pixels for textures")
    return out


def render_video(texture: np.ndarray, motion: str, cfg: ToyConfig, rng: np.random.Generator) -> np.ndarray:
    """`(T, H, W, 3)` uint8: a window moving over `texture` with the class's motion."""
    from PIL import Image

    dx, dy, deg, zoom = MOTIONS[motion]
    h, w = cfg.size
    th, tw = texture.shape[:2]
    speed = cfg.speed * rng.uniform(0.75, 1.25)
    travel = speed * cfg.frames
    margin = int(math.ceil(travel + 0.75 * math.hypot(h, w) * max(zoom, 1 / zoom) ** cfg.frames)) + 2
    if min(th, tw) < 2 * margin:
        raise TVNetError(f"texture of {tw}x{th} is too small for {cfg.frames} frames of {w}x{h}")
    cx = rng.uniform(margin, tw - margin)
    cy = rng.uniform(margin, th - margin)
    img = Image.fromarray(texture)
    frames = []
    for t in range(cfg.frames):
        # content moves by +v per frame: output(x) = texture(centre + A_t (x - c) - v t)
        a = math.radians(-deg * t)
        s = zoom ** (-t)
        m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * s
        ox = cx - dx * speed * t - (m[0, 0] * w / 2 + m[0, 1] * h / 2)
        oy = cy - dy * speed * t - (m[1, 0] * w / 2 + m[1, 1] * h / 2)
        data = (m[0, 0], m[0, 1], ox, m[1, 0], m[1, 1], oy)
        frames.append(np.asarray(img.transform((w, h), Image.AFFINE, data, resample=Image.BILINEAR)))
    return np.stack(frames)


def make_toy_actions(out: Path, config: ToyConfig = ToyConfig(), textures: Path | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the toy dataset under `out`; returns counts {"classes", "train", "test"}."""
    out = Path(out)
    unknown = [c for c in config.classes if c not in MOTIONS]
    if unknown:
        raise TVNetError(f"unknown toy classes {unknown}; known: {', '.join(MOTIONS)}")
    if not 0 < config.test_groups < config.groups:
        raise TVNetError(f"test_groups must be in 1..{config.groups - 1}")
    need = 4 * max(config.size) + int(4 * config.speed * config.frames)
    texs = load_textures(textures, need)
    rng = np.random.default_rng(config.seed)
    ann = out / "ucfTrainTestlist"
    ann.mkdir(parents=True, exist_ok=True)
    train, test = [], []
    total = len(config.classes) * config.groups * config.clips
    done = 0
    for ci, cls in enumerate(config.classes):
        for g in range(1, config.groups + 1):
            tex = texs[(g - 1) % len(texs)]  # one image per group, shared by all classes
            for c in range(1, config.clips + 1):
                rel = f"{cls}/v_{cls}_g{g:02d}_c{c:02d}.avi"
                write_video(out / rel, render_video(tex, cls, config, rng), config.codec,
                            options={"qscale": "1"} if config.codec == "mpeg4" else None)
                (test if g <= config.test_groups else train).append((rel, ci + 1))
                done += 1
                if progress:
                    progress(done, total)
    (ann / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(config.classes)))
    (ann / "trainlist01.txt").write_text("".join(f"{r} {lab}\n" for r, lab in train))
    (ann / "testlist01.txt").write_text("".join(f"{r}\n" for r, _ in test))
    return {"classes": len(config.classes), "train": len(train), "test": len(test)}
