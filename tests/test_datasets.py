"""Datasets: the synthetic generator and fixture trees in the Cityscapes, VOC and folder layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proxy_tasks.datasets import DatasetError, SyntheticDataset, cityscapes, folder, voc
from proxy_tasks.datasets import synthetic as syn
from proxy_tasks.datasets.files import CITYSCAPES_EVAL_IDS


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _png(path: Path, array: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array.astype(np.uint8))
    if palette:  # a VOC-style palette PNG: pixel values are class indices
        img = Image.fromarray(array.astype(np.uint8), mode="P")
        img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    img.save(path)


def _rgb(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3)).astype(np.uint8)


# ------------------------------------------------------------------------------------ synthetic
def test_synthetic_scenes_are_deterministic_and_resolution_independent() -> None:
    a_img, a_mask = syn.render_scene(3, 7, 96)
    b_img, b_mask = syn.render_scene(3, 7, 96)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(syn.render_scene(3, 8, 96)[1], a_mask)
    # The same scene at twice the resolution has (nearly) the same label layout.
    big = syn.render_scene(3, 7, 192)[1]
    agreement = (big[::2, ::2] == a_mask).mean()
    assert agreement > 0.9


def test_synthetic_classes_are_shapes_with_sizes_spanning_10x() -> None:
    images, masks = syn.generate(24, 128, seed=0)
    assert images.shape == (24, 128, 128, 3) and masks.shape == (24, 128, 128)
    assert set(np.unique(masks)) <= set(range(len(syn.CLASSES)))
    assert set(np.unique(masks)) == set(range(len(syn.CLASSES)))  # every class occurs
    # Colour carries no class information: the mean colour of a class varies widely across images.
    disk_colours = [images[i][masks[i] == 1].mean(0) for i in range(24) if (masks[i] == 1).sum() > 20]
    assert np.std(disk_colours, axis=0).min() > 25


def test_synthetic_object_sizes_span_10x_in_every_scene() -> None:
    for index in range(200):
        layout = syn.scene_layout(0, index, 3, 7)
        assert layout["radii"].max() / layout["radii"].min() >= 10
        assert 3 <= len(layout["classes"]) <= 7 and layout["order"][0] == 0
    # ... and the small object is really drawn: where it is painted last and lies inside the
    # image, its class shows around its centre (at 256 px its radius is 7-9 px).
    checked = 0
    for index in range(40):
        layout = syn.scene_layout(0, index)
        cx, cy = (layout["centres"][1] * 256).astype(int)
        if layout["order"][-1] == 1 and 0 <= cx < 256 and 0 <= cy < 256:
            mask = syn.render_scene(0, index, 256)[1]
            r = int(layout["radii"][1] * 256)
            window = mask[max(0, cy - r) : cy + r + 1, max(0, cx - r) : cx + r + 1]
            assert (window == layout["classes"][1]).sum() >= r  # a ring has a hole at its centre
            checked += 1
    assert checked >= 2


def test_synthetic_objects_stay_visible_at_proxy_resolution() -> None:
    # No object is smaller than r = 3 % of the image (about 4 px at the 128 px proxy), and the
    # large one covers a good part of it, so the proxy has something to learn at every scale.
    radii = np.concatenate([syn.scene_layout(0, index, 2, 4)["radii"] for index in range(300)])
    assert radii.min() >= 0.03 and radii.max() <= 0.45
    assert (radii >= 0.35).sum() >= 300  # one large object per scene


def test_synthetic_colour_marks_objects_but_not_their_class() -> None:
    # The background is nearly grey and objects are saturated: chroma (max - min channel) tells
    # object from background, while each class takes every hue.
    images, masks = syn.generate(48, 96, seed=1, min_objects=2, max_objects=4)
    chroma = images.max(-1).astype(int) - images.min(-1).astype(int)
    assert np.median(chroma[masks == 0]) < 30 < 60 < np.median(chroma[masks > 0])
    hues = [images[i][masks[i] == 1].mean(0).argmax() for i in range(48) if (masks[i] == 1).sum() > 20]
    assert len(set(hues)) == 3  # the dominant channel of disks varies: red, green and blue disks


def test_synthetic_shape_subset_relabels_and_keeps_the_layout(_cache: Path) -> None:
    # The same scene drawn with disks only and with rings only: the same objects in the same
    # places (the layout does not depend on which shapes), rings being disks with holes.
    disks = syn.render_scene(2, 5, 128, 2, 4, shapes=("disk",))[1]
    rings = syn.render_scene(2, 5, 128, 2, 4, shapes=("ring",))[1]
    assert set(np.unique(disks)) == {0, 1} and set(np.unique(rings)) <= {0, 1}
    assert 0.4 < (rings == 1).sum() / (disks == 1).sum() < 0.9  # a ring keeps 1 - 0.55^2 of its disk
    # A subset's labels run 1..len(shapes) in its order, and every one of them occurs.
    data = SyntheticDataset(24, 64, seed=0, min_objects=2, max_objects=4, shapes=("ring", "bar", "disk"))
    assert data.class_names == ("background", "ring", "bar", "disk") and data.num_classes == 4
    assert set(np.unique(data.masks)) == {0, 1, 2, 3}
    # Cached apart from the full vocabulary: the default dataset of the same seed is different.
    assert not np.array_equal(SyntheticDataset(24, 64, seed=0, min_objects=2, max_objects=4).masks, data.masks)
    assert len(list((_cache / "synthetic").glob("*-masks.npy"))) == 2
    with pytest.raises(ValueError, match="shapes: must be distinct names"):
        SyntheticDataset(4, 32, seed=0, shapes=("disk", "star"))


def test_synthetic_dataset_is_cached_and_survives_a_corrupt_cache(_cache: Path) -> None:
    first = SyntheticDataset(6, 32, seed=5)
    files = sorted((_cache / "synthetic").glob("*.npy"))
    assert len(files) == 2
    files[0].write_bytes(b"garbage")
    again = SyntheticDataset(6, 32, seed=5)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.masks, again.masks)
    image, mask = again[2]
    assert image.shape == (32, 32, 3) and mask.shape == (32, 32) and len(again) == 6


# ------------------------------------------------------------------------------------ cityscapes
def _cityscapes_tree(root: Path) -> None:
    for split, city, n in (("train", "aachen", 2), ("val", "lindau", 1)):
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _rgb(seed=i))
            label_ids = np.full((12, 16), 7, dtype=np.uint8)  # road
            label_ids[:4] = 26  # car
            label_ids[4:6] = 0  # unlabeled -> ignore
            label_ids[6, :] = 33  # bicycle
            _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
            _png(root / "gtFine" / split / city / f"{stem}_gtFine_color.png", _rgb(seed=9))


def test_cityscapes_layout_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    _cityscapes_tree(tmp_path)
    train = cityscapes(tmp_path, "train")
    assert len(train) == 2 and train.num_classes == 19 and train.class_names[13] == "car"
    image, mask = train[0]
    assert image.shape == (12, 16, 3)
    assert mask[0, 0] == 13 and mask[4, 0] == 255 and mask[6, 0] == 18 and mask[11, 0] == 0
    assert len(CITYSCAPES_EVAL_IDS) == 19
    assert len(cityscapes(tmp_path, "val")) == 1


def test_cityscapes_missing_mask_names_the_file(tmp_path: Path) -> None:
    _cityscapes_tree(tmp_path)
    missing = tmp_path / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(DatasetError, match=f"{missing}: missing mask"):
        cityscapes(tmp_path, "train")


def test_cityscapes_mask_without_its_image_names_the_image(tmp_path: Path) -> None:
    _cityscapes_tree(tmp_path)
    lost = tmp_path / "leftImg8bit" / "train" / "aachen" / "aachen_000001_000019_leftImg8bit.png"
    lost.unlink()
    with pytest.raises(DatasetError, match=f"{lost}: missing image for .*aachen_000001_000019_gtFine_labelIds.png"):
        cityscapes(tmp_path, "train")


def test_cityscapes_label_outside_the_ids_names_the_file(tmp_path: Path) -> None:
    _cityscapes_tree(tmp_path)
    bad = tmp_path / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png"
    ids = np.full((12, 16), 7, dtype=np.uint8)
    ids[3, 3] = 40
    _png(bad, ids)
    with pytest.raises(DatasetError, match=f"{bad}: label 40 outside the 34 label values"):
        cityscapes(tmp_path, "val")[0]


# ------------------------------------------------------------------------------------ voc
def _voc_tree(root: Path) -> None:
    ids = ["2007_000032", "2007_000039", "2007_000063"]
    for k, image_id in enumerate(ids):
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(seed=k)).save(root / "JPEGImages" / f"{image_id}.jpg")
        mask = np.zeros((12, 16), dtype=np.uint8)
        mask[2:6, 3:9] = 15  # person
        mask[2, 3:9] = 255  # boundary
        _png(root / "SegmentationClass" / f"{image_id}.png", mask, palette=True)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (sets / "val.txt").write_text(ids[2] + "\n")


def test_voc_layout_reads_palette_indices(tmp_path: Path) -> None:
    _voc_tree(tmp_path)
    train = voc(tmp_path, "train")
    assert len(train) == 2 and train.num_classes == 21 and train.class_names[15] == "person"
    image, mask = train[1]
    assert image.shape == (12, 16, 3)
    assert mask[3, 4] == 15 and mask[2, 4] == 255 and mask[0, 0] == 0
    assert Image.open(tmp_path / "SegmentationClass" / "2007_000032.png").mode == "P"


def test_voc_size_mismatch_names_the_mask(tmp_path: Path) -> None:
    _voc_tree(tmp_path)
    bad = tmp_path / "SegmentationClass" / "2007_000063.png"
    _png(bad, np.zeros((10, 16), dtype=np.uint8), palette=True)
    with pytest.raises(DatasetError, match=f"{bad}: mask size 16x10 differs from image 2007_000063.jpg 16x12"):
        voc(tmp_path, "val")[0]


def test_voc_unreadable_image_names_the_file(tmp_path: Path) -> None:
    _voc_tree(tmp_path)
    bad = tmp_path / "JPEGImages" / "2007_000039.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=f"{bad}: cannot read image"):
        voc(tmp_path, "train")[1]


def test_voc_label_outside_classes_and_missing_list(tmp_path: Path) -> None:
    _voc_tree(tmp_path)
    bad = tmp_path / "SegmentationClass" / "2007_000063.png"
    mask = np.zeros((12, 16), dtype=np.uint8)
    mask[0, 0] = 21
    _png(bad, mask, palette=True)
    with pytest.raises(DatasetError, match=f"{bad}: label 21 outside the 21 label values"):
        voc(tmp_path, "val")[0]
    with pytest.raises(DatasetError, match=r"test\.txt: split list not found"):
        voc(tmp_path, "test")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_bytes(b"\xff\xfe2007\n")
    with pytest.raises(DatasetError, match=r"val\.txt: not a UTF-8 text file"):
        voc(tmp_path, "val")


# ------------------------------------------------------------------------------------ folder
def _folder_tree(root: Path) -> None:
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("sky\nground\ntree\n")
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            _png(root / split / "images" / f"img{i}.png", _rgb(seed=i))
            mask = np.zeros((12, 16), dtype=np.uint8)
            mask[6:] = 1
            mask[8:, 10:] = 2
            _png(root / split / "masks" / f"img{i}.png", mask)


def test_folder_layout(tmp_path: Path) -> None:
    _folder_tree(tmp_path)
    train = folder(tmp_path, "train")
    assert train.class_names == ("sky", "ground", "tree") and len(train) == 3
    image, mask = train[2]
    assert image.shape == (12, 16, 3) and mask[0, 0] == 0 and mask[7, 0] == 1 and mask[9, 12] == 2


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "train" / "masks" / "img1.png").unlink(), "masks/img1.png: missing mask"),
        (
            lambda r: (r / "train" / "images" / "img1.png").unlink(),
            r"images/img1\.\*: missing image for .*masks/img1.png",
        ),
        (lambda r: _png(r / "train" / "images" / "img1.jpg", _rgb()), r"images/img1.png: img1.jpg has the same name"),
        (lambda r: (r / "classes.txt").write_bytes(b"sky\n\xff\n"), "classes.txt: not a UTF-8 text file"),
        (lambda r: (r / "classes.txt").unlink(), "classes.txt: class-names file not found"),
        (lambda r: (r / "classes.txt").write_text("\n"), "classes.txt: no class names"),
        (lambda r: _png(r / "train" / "masks" / "img0.png", np.full((12, 16), 3)), "img0.png: label 3 outside"),
        (lambda r: _png(r / "train" / "masks" / "img0.png", _rgb()), "img0.png: mask must be a palette"),
        (lambda r: (r / "train" / "masks" / "img0.png").write_bytes(b""), "img0.png: cannot read mask"),
    ],
)
def test_folder_bad_data_names_the_file(tmp_path: Path, damage, message: str) -> None:
    _folder_tree(tmp_path)
    damage(tmp_path)
    with pytest.raises(DatasetError, match=message):
        data = folder(tmp_path, "train")
        for i in range(len(data)):
            data[i]


def _flat_folder_tree(root: Path, train: str = "img0\nimg1.png\nimages/sub/img2.jpg\n", val: str = "img3\n") -> None:
    """The flat layout: images/ (one in a subfolder, one a JPEG), masks/, and train.txt / val.txt lists."""
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("sky\nground\ntree\n")
    mask = np.zeros((12, 16), dtype=np.uint8)
    mask[6:] = 1
    mask[8:, 10:] = 2
    for name in ("img0", "img1", "sub/img2", "img3"):
        image = root / "images" / f"{name}.png"
        _png(image, _rgb(seed=len(name)))
        _png(root / "masks" / f"{name}.png", mask)
    jpeg = root / "images" / "sub" / "img2.png"
    Image.open(jpeg).convert("RGB").save(jpeg.with_suffix(".jpg"))
    jpeg.unlink()
    (root / "train.txt").write_text(train)
    (root / "val.txt").write_text(val)


def test_folder_flat_layout_reads_ids_names_and_paths(tmp_path: Path) -> None:
    _flat_folder_tree(tmp_path)
    train, val = folder(tmp_path, "train"), folder(tmp_path, "val")
    assert [image.relative_to(tmp_path).as_posix() for image, _ in train.pairs] == [
        "images/img0.png",
        "images/img1.png",
        "images/sub/img2.jpg",
    ]
    assert [mask.relative_to(tmp_path).as_posix() for _, mask in train.pairs][2] == "masks/sub/img2.png"
    assert len(val) == 1 and train.class_names == ("sky", "ground", "tree")
    image, mask = train[2]
    assert image.shape == (12, 16, 3) and mask[0, 0] == 0 and mask[7, 0] == 1 and mask[9, 12] == 2


@pytest.mark.parametrize(
    ("train", "damage", "message"),
    [
        ("img0\nimg9\n", None, r"train\.txt: line 2 'img9': missing image .*images/img9\.\*$"),
        ("img0.png\nimg9.jpg\n", None, r"train\.txt: line 2 'img9.jpg': missing image .*images/img9\.jpg$"),
        ("img0\nimg1\n", lambda r: (r / "masks" / "img1.png").unlink(), r"line 2 'img1': missing mask .*masks/img1"),
        ("img0\nimg0.png\n", None, r"line 2 'img0.png': listed twice \(also line 1\)"),
        ("img0\n../img1\n", None, r"line 2 '\.\./img1': not a path inside the dataset folder"),
        ("img0\n", lambda r: _png(r / "images" / "img0.jpg", _rgb()), r"line 1 'img0': img0.jpg and img0.png have"),
        ("\n\n", None, r"train\.txt: empty split list"),
        ("img0\n", lambda r: shutil.rmtree(r / "masks"), r"masks: mask folder not found"),
        ("img0\n", lambda r: (r / "train.txt").unlink(), r"no 'train' split found; accepted layouts: <split>/images/"),
        ("img0\n", lambda r: (r / "train" / "images").mkdir(parents=True), r"both train/images/ and train\.txt"),
    ],
)
def test_folder_flat_layout_errors_name_the_line(tmp_path: Path, train: str, damage, message: str) -> None:
    _flat_folder_tree(tmp_path, train=train)
    if damage is not None:
        damage(tmp_path)
    with pytest.raises(DatasetError, match=message) as caught:
        folder(tmp_path, "train")
    assert "\n" not in str(caught.value)


def test_folder_without_either_layout_names_both(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("a\nb\n")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"or images/ and masks/ with a <split>\.txt list"):
        folder(tmp_path, "val")


def test_voc_train_aug_masks_come_from_segmentation_class_aug(tmp_path: Path) -> None:
    # train_aug: VOC's own palette masks where they exist, SBD's single-channel ones from SegmentationClassAug/.
    _voc_tree(tmp_path)
    extra = "2008_000002"
    Image.fromarray(_rgb(seed=9)).save(tmp_path / "JPEGImages" / f"{extra}.jpg")
    sbd = np.full((12, 16), 255, dtype=np.uint8)
    sbd[4:8, 4:8] = 7  # car
    _png(tmp_path / "SegmentationClassAug" / f"{extra}.png", sbd)
    (tmp_path / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(f"2007_000032\n{extra}\n")
    train_aug = voc(tmp_path, "train_aug")
    assert [mask.parent.name for _, mask in train_aug.pairs] == ["SegmentationClass", "SegmentationClassAug"]
    _, mask = train_aug[1]
    assert mask[5, 5] == 7 and mask[0, 0] == 255
    (tmp_path / "SegmentationClassAug" / f"{extra}.png").unlink()
    missing = f"SegmentationClass/{extra}.png: missing mask .*nor in SegmentationClassAug/"
    with pytest.raises(DatasetError, match=missing):
        voc(tmp_path, "train_aug")
