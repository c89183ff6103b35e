"""Built-in synthetic multi-scale scenes: a segmentation task that needs context and detail.

Classes (defined by shape only; every object gets a random colour and texture):

====  ==========  ==================================================================
id    name        shape (in the object's rotated frame, radius r)
====  ==========  ==================================================================
0     background  textured, nearly grey background; clutter (thin scribbles) included
1     disk        filled circle
2     ring        annulus, inner radius 0.55 r: what lies behind shows through
3     square      square of half-side 0.8 r
4     triangle    equilateral triangle inscribed in the circle of radius r
5     cross       plus sign of two bars 2 r long and 0.5 r wide
6     bar         a single bar 2 r long and 0.36 r wide
====  ==========  ==================================================================

A task may keep a subset of the shapes (``dataset.synthetic.shapes: [disk, ring, cross, bar]``):
its classes are then background and those shapes, labelled 1..k in the order given. Two subsets of
the same size give the same scenes with the shapes swapped (e.g. ``[disk]`` and ``[ring]``).

Why it exercises both context and detail: a disk and a ring, or a bar and one arm of a cross,
look the same locally and differ only at the scale of the whole object, which for large objects
needs a large receptive field (dilation, ASPP, coarse levels); a disk, a square and a triangle
differ in fine detail (corners), and small objects (a few pixels across at proxy resolution)
need fine levels to be found at all. Every image has one large object (r = 35-45 % of the image) and one small object
(r = 3-3.5 %), so sizes span at least 10x; the rest are log-uniform in between (r = 10-35 %).
Objects are painted in random order and occlude each other. Colour says "object" (objects are
saturated, of random hue and brightness; the background is nearly grey), never which class;
textures and clutter carry no label information.

The scenes are meant to be learnable by a width x0.25 network within a couple of hundred steps
(version 6): two to four objects (set in the task), objects no smaller than r = 3 %, at most
three scribbles of clutter, and a nearly grey background against saturated objects, so that
finding objects is easy and telling their shapes apart is what separates architectures.
Version 5 (objects from r = 2 %, up to seven of them, any colour on a background of any colour,
two to five scribbles) left every architecture at the background-only floor of the proxy.

Generation: each scene is drawn from ``numpy.random.default_rng((seed, index))`` in
resolution-independent units and rasterised with vectorised numpy (all objects at once), so a
scene is the same at every resolution and does not depend on how many scenes are made. Arrays
are cached as ``.npy`` files under ``$NAS_CACHE_DIR`` (default ``~/.cache/spinenet-seg-nas``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nas.common.atomic import atomic_path

SHAPES = ("disk", "ring", "square", "triangle", "cross", "bar")  # the shape vocabulary
CLASSES = ("background", *SHAPES)  # the default class list: every shape
GENERATOR_VERSION = 6
SQRT3 = float(np.sqrt(3.0))


def cache_dir() -> Path:
    return Path(os.environ.get("NAS_CACHE_DIR", Path.home() / ".cache" / "spinenet-seg-nas"))


def _grating(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, count: int) -> np.ndarray:
    """Sum of ``count`` random sinusoidal gratings over coordinates u, v, scaled to [0, 1]."""
    t = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=np.float32)
    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(2.0, 18.0)
        phase = rng.uniform(0, 2 * np.pi)
        t += np.sin(freq * (np.cos(angle) * u + np.sin(angle) * v) + phase, dtype=np.float32)
    return (t / (2 * count) + 0.5).clip(0, 1)


def _unit(rng: np.random.Generator) -> np.ndarray:
    """A random direction in RGB space."""
    d = rng.normal(0, 1, 3)
    return d / (np.linalg.norm(d) + 1e-9)


def _chroma(rng: np.random.Generator) -> np.ndarray:
    """A random unit direction in RGB space orthogonal to grey (a hue)."""
    d = rng.normal(0, 1, 3)
    d -= d.mean()
    return d / (np.linalg.norm(d) + 1e-9)


def check_shapes(shapes: tuple[str, ...]) -> None:
    """Raise ValueError unless ``shapes`` is a non-empty list of distinct known shape names."""
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes or len(set(shapes)) != len(shapes):
        raise ValueError(f"shapes: must be distinct names from {', '.join(SHAPES)}; got {list(shapes)}")


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-mask of ``shape`` in the object's frame (unit radius)."""
    au, av = np.abs(u), np.abs(v)
    if shape in ("disk", "ring"):
        radius2 = u * u + v * v
        return (radius2 <= 1.0) & (radius2 >= 0.55**2) if shape == "ring" else radius2 <= 1.0
    if shape == "square":
        return (au <= 0.8) & (av <= 0.8)
    if shape == "triangle":
        return (v >= -0.5) & (v <= 1.0 - SQRT3 * u) & (v <= 1.0 + SQRT3 * u)
    if shape == "cross":
        return ((au <= 0.25) & (av <= 1.0)) | ((av <= 0.25) & (au <= 1.0))
    if shape == "bar":
        return (au <= 1.0) & (av <= 0.18)
    raise ValueError(f"no shape {shape!r}")


def scene_layout(
    seed: int, index: int, min_objects: int = 5, max_objects: int = 12, num_shapes: int = len(SHAPES)
) -> dict[str, np.ndarray]:
    """The objects of a scene (class id 1..num_shapes, radius, centre, angle, painting order), in image units.

    One large object (r = 0.35-0.45), one small (r = 0.03-0.035: at least 10x smaller), the rest
    log-uniform in r = 0.10-0.35; the large one is painted first so that others may cover it.
    """
    rng = np.random.default_rng((seed, index, 1))
    count = int(rng.integers(min_objects, max_objects + 1))
    radii = np.exp(rng.uniform(np.log(0.10), np.log(0.35), count))
    radii[0] = rng.uniform(0.35, 0.45)
    radii[1] = rng.uniform(0.03, 0.035)
    order = rng.permutation(count)
    return {
        "classes": rng.integers(1, num_shapes + 1, count),
        "radii": radii,
        "centres": rng.uniform(-0.05, 1.05, (count, 2)),
        "angles": rng.uniform(0, 2 * np.pi, count),
        "order": np.concatenate([[0], order[order != 0]]),
    }


def render_scene(
    seed: int, index: int, size: int, min_objects: int = 5, max_objects: int = 12, shapes: tuple[str, ...] = SHAPES
):
    """One scene at ``size`` x ``size``: (image uint8 HxWx3, mask uint8 HxW); label k is ``shapes[k - 1]``."""
    rng = np.random.default_rng((seed, index))
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size  # pixel centres in [0, 1]
    y, x = coords[:, None], coords[None, :]

    # Textured background: a nearly grey colour modulated by a smooth random field and a weak grating.
    c0 = rng.uniform(60, 195) + rng.uniform(-10, 10, 3)
    coarse = rng.uniform(-1, 1, (5, 5)).astype(np.float32)
    cy = np.clip(y * 4, 0, 4 - 1e-6)
    cx = np.clip(x * 4, 0, 4 - 1e-6)
    iy, ix = cy.astype(int), cx.astype(int)
    fy, fx = cy - iy, cx - ix
    smooth = (
        coarse[iy, ix] * (1 - fy) * (1 - fx)
        + coarse[iy + 1, ix] * fy * (1 - fx)
        + coarse[iy, ix + 1] * (1 - fy) * fx
        + coarse[iy + 1, ix + 1] * fy * fx
    )
    shade = 25 * smooth + 20 * (_grating(rng, x, y, 2) - 0.5)
    image = (c0 + shade[..., None] * _unit(rng)).astype(np.float32)
    label = np.zeros((size, size), dtype=np.uint8)

    layout = scene_layout(seed, index, min_objects, max_objects, len(shapes))
    classes, radii, centres, angles = layout["classes"], layout["radii"], layout["centres"], layout["angles"]
    count = len(classes)
    # Saturated colours of random hue and brightness (chroma 70-110 in RGB distance from grey)
    # against the nearly grey background: colour says "object", never which class.
    colours_a = np.stack([rng.uniform(70, 185) + _chroma(rng) * rng.uniform(70, 110) for _ in range(count)])
    colours_b = colours_a + np.stack([_unit(rng) * rng.uniform(0, 30) for _ in range(count)])
    texture_seeds = rng.integers(0, 2**31, count)

    for k in layout["order"]:
        # Rasterise inside the object's bounding box only (every shape lies within 1.2 r).
        reach = 1.2 * radii[k]
        y0, y1 = np.searchsorted(coords, [centres[k, 1] - reach, centres[k, 1] + reach])
        x0, x1 = np.searchsorted(coords, [centres[k, 0] - reach, centres[k, 0] + reach])
        if y0 >= y1 or x0 >= x1:
            continue
        dx = x[:, x0:x1] - np.float32(centres[k, 0])
        dy = y[y0:y1] - np.float32(centres[k, 1])
        cos, sin, inv_r = np.float32(np.cos(angles[k])), np.float32(np.sin(angles[k])), np.float32(1 / radii[k])
        u = (cos * dx + sin * dy) * inv_r
        v = (cos * dy - sin * dx) * inv_r
        inside = _shape_mask(shapes[classes[k] - 1], u, v)
        tex = _grating(np.random.default_rng(texture_seeds[k]), u, v, 1)
        obj = colours_a[k] + (colours_b[k] - colours_a[k]) * tex[..., None]
        window = image[y0:y1, x0:x1]
        window[inside] = obj[inside]
        label[y0:y1, x0:x1][inside] = classes[k]

    # Clutter: thin scribbles of moderate contrast, labelled background.
    for _ in range(int(rng.integers(0, 4))):
        p, q = rng.uniform(0, 1, 2), rng.uniform(-0.3, 0.3, 2)
        direction = q / (np.linalg.norm(q) + 1e-9)
        along = (x - p[0]) * direction[0] + (y - p[1]) * direction[1]
        across = np.abs(-(x - p[0]) * direction[1] + (y - p[1]) * direction[0])
        line = (across <= 0.7 / size + 0.002) & (along >= 0) & (along <= np.linalg.norm(q))
        image = np.where(line[..., None], c0 + _unit(rng) * rng.uniform(20, 60), image)
        label = np.where(line, 0, label).astype(np.uint8)

    # Sensor noise and a global contrast change.
    image = (image - 128) * rng.uniform(0.85, 1.15) + 128 + rng.normal(0, 3, image.shape)
    return image.clip(0, 255).astype(np.uint8), label


def generate(
    count: int,
    size: int,
    seed: int,
    min_objects: int = 5,
    max_objects: int = 12,
    start: int = 0,
    shapes: tuple[str, ...] = SHAPES,
) -> tuple[np.ndarray, np.ndarray]:
    """Scenes ``start .. start + count - 1`` as arrays (N x H x W x 3 uint8, N x H x W uint8)."""
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    masks = np.empty((count, size, size), dtype=np.uint8)
    for i in range(count):
        images[i], masks[i] = render_scene(seed, start + i, size, min_objects, max_objects, shapes)
    return images, masks


def load_or_generate(
    count: int,
    size: int,
    seed: int,
    min_objects: int = 5,
    max_objects: int = 12,
    use_cache: bool = True,
    shapes: tuple[str, ...] = SHAPES,
) -> tuple[np.ndarray, np.ndarray]:
    """`generate`, cached on disk; a corrupt or partial cache file is regenerated."""
    check_shapes(shapes)
    key = f"v{GENERATOR_VERSION}-n{count}-s{size}-seed{seed}-o{min_objects}-{max_objects}"
    if shapes != SHAPES:
        key += "-" + "-".join(shapes)
    folder = cache_dir() / "synthetic"
    image_file, mask_file = folder / f"{key}-images.npy", folder / f"{key}-masks.npy"
    if use_cache and image_file.is_file() and mask_file.is_file():
        try:
            images, masks = np.load(image_file, allow_pickle=False), np.load(mask_file, allow_pickle=False)
            if images.shape == (count, size, size, 3) and masks.shape == (count, size, size):
                return images, masks
        except (OSError, ValueError):
            pass  # fall through and regenerate
    images, masks = generate(count, size, seed, min_objects, max_objects, shapes=shapes)
    if use_cache:
        try:
            for path, array in ((image_file, images), (mask_file, masks)):
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.save(f, array)
        except OSError:
            pass  # an unwritable cache only costs regeneration next time
    return images, masks
