"""File-based datasets: Cityscapes, PASCAL VOC 2012 and a generic folder of images and masks.

All three index their files up front (a missing mask, or a mask whose image is missing, is an
error naming the file it expected) and check each sample when read (unreadable file, image/mask
size mismatch, label outside the classes and not the ignore index): every error names the file.
Nothing is skipped silently.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from nas.common.errors import UserError
from nas.common.text import read_text

IGNORE_INDEX = 255

# Cityscapes labelIds -> train ids (the 19 evaluated classes); everything else is ignored.
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_EVAL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_MAX_ID = 33

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(UserError):
    """Bad data: the message names the file."""


def read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None


def read_mask(path: Path) -> np.ndarray:
    """Label indices of a mask PNG: a palette PNG's indices (VOC) or a single-channel image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16"):
                raise DatasetError(f"{path}: mask must be a palette or single-channel image, got mode {img.mode}")
            array = np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot read mask ({type(exc).__name__}: {exc})") from None
    return array


class FileSegmentationDataset:
    """(image, mask) pairs on disk with a label map; items are uint8 HxWx3 and uint8 HxW arrays."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        class_names: tuple[str, ...],
        label_map: np.ndarray | None = None,
        max_label: int | None = None,
    ) -> None:
        self.pairs = pairs
        self.class_names = tuple(class_names)
        self.num_classes = len(class_names)
        # ``label_map`` maps raw mask values to train ids (or the ignore index); raw values above
        # ``max_label`` (and not the ignore index) are errors.
        self.label_map = label_map
        self.max_label = self.num_classes - 1 if max_label is None else max_label
        self.fixed_size = False

    def __len__(self) -> int:
        return len(self.pairs)

    def longer_sides(self, most: int | None = None) -> list[int]:
        """The longer side of the images (at most ``most`` of them, evenly spaced), read from their headers."""
        pairs = self.pairs
        if most is not None and len(pairs) > most:
            pairs = [pairs[round(i * (len(pairs) - 1) / max(1, most - 1))] for i in range(most)]
        return [max(image_size(image)) for image, _ in pairs]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)
        raw = read_mask(mask_path)
        if raw.shape != image.shape[:2]:
            raise DatasetError(
                f"{mask_path}: mask size {raw.shape[1]}x{raw.shape[0]} differs from image "
                f"{image_path.name} {image.shape[1]}x{image.shape[0]}"
            )
        bad = (raw > self.max_label) & (raw != IGNORE_INDEX)
        if bad.any():
            value = int(raw[bad][0])
            raise DatasetError(
                f"{mask_path}: label {value} outside the {self.max_label + 1} label values and not the ignore index "
                f"{IGNORE_INDEX}"
            )
        mask = raw.astype(np.uint8) if self.label_map is None else self.label_map[raw.astype(np.int64)]
        return image, mask


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} folder not found")


def _read_lines(path: Path) -> list[str]:
    """The non-blank lines of a text file, stripped."""
    text = read_text(path, DatasetError)
    return [line.strip() for line in text.splitlines() if line.strip()]


def cityscapes(root: str | Path, split: str) -> FileSegmentationDataset:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/<split>/<city>/*_gtFine_labelIds.png``."""
    root = Path(root)
    images_root, masks_root = root / "leftImg8bit" / split, root / "gtFine" / split
    _require_dir(images_root, "Cityscapes image")
    _require_dir(masks_root, "Cityscapes annotation")
    pairs = []
    for image in sorted(images_root.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        mask = masks_root / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not mask.is_file():
            raise DatasetError(f"{mask}: missing mask for {image}")
        pairs.append((image, mask))
    # A mask without its image means a lost image: an error, not silently one sample fewer.
    paired = {mask for _, mask in pairs}
    for mask in sorted(masks_root.glob("*/*_gtFine_labelIds.png")):
        if mask not in paired:
            image = images_root / mask.parent.name / mask.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png")
            raise DatasetError(f"{image}: missing image for {mask}")
    if not pairs:
        raise DatasetError(f"{images_root}: no *_leftImg8bit.png images")
    label_map = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, label_id in enumerate(CITYSCAPES_EVAL_IDS):
        label_map[label_id] = train_id
    return FileSegmentationDataset(pairs, CITYSCAPES_CLASSES, label_map, max_label=CITYSCAPES_MAX_ID)


def voc(root: str | Path, split: str) -> FileSegmentationDataset:
    """``ImageSets/Segmentation/<split>.txt`` ids, ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``
    (or ``SegmentationClassAug/<id>.png``, where train_aug's masks are usually kept)."""
    root = Path(root)
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing}: split list not found")
    ids = _read_lines(listing)
    if not ids:
        raise DatasetError(f"{listing}: empty split list")
    pairs = []
    for image_id in ids:
        image = root / "JPEGImages" / f"{image_id}.jpg"
        mask = root / "SegmentationClass" / f"{image_id}.png"
        if not image.is_file():
            raise DatasetError(f"{image}: missing image listed in {listing.name}")
        if not mask.is_file():
            # train_aug's SBD masks (single-channel, 255 = ignore) live beside VOC's own palette PNGs.
            augmented = root / "SegmentationClassAug" / f"{image_id}.png"
            if not augmented.is_file():
                raise DatasetError(f"{mask}: missing mask for {image} (nor in SegmentationClassAug/)")
            mask = augmented
        pairs.append((image, mask))
    return FileSegmentationDataset(pairs, VOC_CLASSES)


FOLDER_LAYOUTS = (
    "<split>/images/ with <split>/masks/, or images/ and masks/ with a <split>.txt list of ids "
    "(and classes.txt in both)"
)


def folder(root: str | Path, split: str) -> FileSegmentationDataset:
    """A folder of images and masks in either of two layouts, class names in ``classes.txt``:

    - per split: ``<split>/images/<name>.<ext>`` with ``<split>/masks/<name>.png``;
    - flat (what most datasets ship): ``images/``, ``masks/`` and a ``<split>.txt`` list, one image
      per line as an id (``img0``), a file name (``img0.jpg``) or a path (``images/sub/img0.jpg``).

    Mask values are class indices (255: ignore).
    """
    root = Path(root)
    names = _class_names(root / "classes.txt")
    split_dir, listing = root / split, root / f"{split}.txt"
    if (split_dir / "images").is_dir() or (split_dir / "masks").is_dir():
        if listing.is_file():
            raise DatasetError(f"{root}: both {split}/images/ and {split}.txt; keep one layout")
        pairs = _split_folder_pairs(split_dir)
    elif listing.is_file():
        _require_dir(root / "images", "image")
        _require_dir(root / "masks", "mask")
        pairs = _listed_pairs(root, listing)
    else:
        raise DatasetError(f"{root}: no {split!r} split found; accepted layouts: {FOLDER_LAYOUTS}")
    return FileSegmentationDataset(pairs, names)


def _class_names(names_file: Path) -> tuple[str, ...]:
    if not names_file.is_file():
        raise DatasetError(f"{names_file}: class-names file not found (one class name per line)")
    names = tuple(_read_lines(names_file))
    if not names:
        raise DatasetError(f"{names_file}: no class names")
    if len(names) > IGNORE_INDEX:
        raise DatasetError(f"{names_file}: {len(names)} classes; at most {IGNORE_INDEX} fit 8-bit masks")
    return names


def _split_folder_pairs(split_dir: Path) -> list[tuple[Path, Path]]:
    """Every image of ``<split>/images`` with its mask; a mask without its image is an error too."""
    images_root, masks_root = split_dir / "images", split_dir / "masks"
    _require_dir(images_root, "image")
    _require_dir(masks_root, "mask")
    pairs = []
    image_of: dict[str, Path] = {}
    for image in sorted(p for p in images_root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if image.stem in image_of:
            raise DatasetError(f"{image}: {image_of[image.stem].name} has the same name; a mask pairs with one image")
        image_of[image.stem] = image
        mask = masks_root / f"{image.stem}.png"
        if not mask.is_file():
            raise DatasetError(f"{mask}: missing mask for {image}")
        pairs.append((image, mask))
    # A mask without its image means a lost image: an error, not silently one sample fewer.
    for mask in sorted(masks_root.glob("*.png")):
        if mask.stem not in image_of:
            raise DatasetError(f"{images_root / mask.stem}.*: missing image for {mask}")
    if not pairs:
        raise DatasetError(f"{images_root}: no images")
    return pairs


def _listed_pairs(root: Path, listing: Path) -> list[tuple[Path, Path]]:
    """The (image, mask) of every line of ``listing``; a line without either is an error naming it."""
    entries = _read_lines(listing)
    if not entries:
        raise DatasetError(f"{listing}: empty split list")
    pairs = []
    line_of: dict[PurePosixPath, int] = {}
    for number, entry in enumerate(entries, 1):
        where = f"{listing}: line {number} {_shown(entry)}"
        name = _listed_name(entry, where)
        if name in line_of:
            raise DatasetError(f"{where}: listed twice (also line {line_of[name]})")
        line_of[name] = number
        image = _listed_image(root / "images", entry, name, where)
        mask = root / "masks" / f"{name}.png"
        if not mask.is_file():
            raise DatasetError(f"{where}: missing mask {mask}")
        pairs.append((image, mask))
    return pairs


def _shown(entry: str) -> str:
    return repr(entry if len(entry) <= 60 else entry[:57] + "...")


def _listed_name(entry: str, where: str) -> PurePosixPath:
    """The image's path under ``images/`` without its extension (a mask has the same, with .png)."""
    path = PurePosixPath(entry.replace("\\", "/"))
    if not path.parts or path.is_absolute() or ".." in path.parts:
        raise DatasetError(f"{where}: not a path inside the dataset folder")
    if path.parts[0] == "images" and len(path.parts) > 1:
        path = path.relative_to("images")  # a path relative to the dataset folder
    return path.with_suffix("") if path.suffix.lower() in IMAGE_SUFFIXES else path


def _listed_image(images_root: Path, entry: str, name: PurePosixPath, where: str) -> Path:
    suffix = PurePosixPath(entry).suffix
    if suffix.lower() in IMAGE_SUFFIXES:
        image = images_root / name.parent / (name.name + suffix)
        if not image.is_file():
            raise DatasetError(f"{where}: missing image {image}")
        return image
    found = [
        p
        for p in sorted((images_root / name).parent.glob(f"{_glob_escape(name.name)}.*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem == name.name
    ]
    if not found:
        raise DatasetError(f"{where}: missing image {images_root / name}.*")
    if len(found) > 1:
        raise DatasetError(f"{where}: {found[0].name} and {found[1].name} have the same name; list one")
    return found[0]


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)
