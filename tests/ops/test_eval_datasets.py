"""Each evaluation-set loader on a small fixture written here, and its errors naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops import eval_datasets as ds


def test_karpathy_keeps_the_split_and_five_captions_per_image(tmp_path: Path):
    images = [
        {
            "filepath": "val2014",
            "filename": f"{i}.jpg",
            "split": split,
            "sentences": [{"raw": f"cap {i}.{k} "} for k in range(5)],
        }
        for i, split in enumerate(["test", "train", "test"])
    ]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images}))
    data = ds.karpathy("coco", tmp_path / "dataset_coco.json", tmp_path / "img")
    assert data.images == [
        str(tmp_path / "img" / "val2014" / "0.jpg"),
        str(tmp_path / "img" / "val2014" / "2.jpg"),
    ]
    assert len(data.captions) == 10 and data.caption_image == [0] * 5 + [1] * 5
    assert data.captions[0] == "cap 0.0" and data.captions_per_image()[1] == [5, 6, 7, 8, 9]
    (tmp_path / "bad.json").write_text(json.dumps({"images": [{"split": "test", "sentences": []}]}))
    with pytest.raises(ValueError, match=r"bad\.json: images\[0\]: no field 'filename'"):
        ds.karpathy("coco", tmp_path / "bad.json", tmp_path)


def test_caption_folders_pair_images_and_texts_by_name(tmp_path: Path):
    (tmp_path / "image").mkdir()
    (tmp_path / "caption").mkdir()
    for stem in ("b", "a"):
        (tmp_path / "image" / f"{stem}.jpg").write_bytes(b"x")
        (tmp_path / "caption" / f"{stem}.txt").write_text(f"long caption {stem}\n")
    data = ds.caption_folders("urban1k", tmp_path)
    assert [Path(p).stem for p in data.images] == ["a", "b"] and data.captions == [
        "long caption a",
        "long caption b",
    ]
    (tmp_path / "image" / "c.png").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"c\.txt: missing caption"):
        ds.caption_folders("urban1k", tmp_path)


def test_sharegpt4v_takes_the_gpt_turn_and_the_first_thousand(tmp_path: Path):
    rows = [
        {
            "image": f"sam/{i}.jpg",
            "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": f"dense {i}"}],
        }
        for i in range(5)
    ]
    (tmp_path / "share.json").write_text(json.dumps(rows))
    data = ds.sharegpt4v("sharegpt4v-1k", tmp_path / "share.json", tmp_path, max_images=3)
    assert data.captions == ["dense 0", "dense 1", "dense 2"] and data.images[2].endswith("sam/2.jpg")


def test_docci_and_xm3600_and_caption_tsv(tmp_path: Path):
    lines = [
        {"image_file": f"{i}.jpg", "description": f"desc {i}", "split": "test" if i else "train"}
        for i in range(3)
    ]
    (tmp_path / "docci.jsonlines").write_text("\n".join(json.dumps(r) for r in lines))
    docci = ds.docci("docci", tmp_path / "docci.jsonlines", tmp_path)
    assert docci.captions == ["desc 1", "desc 2"]

    xm = [{"image/key": "k1", "en": {"caption": ["a dog"]}, "zh": {"caption": ["一只狗", "小狗"]}}]
    (tmp_path / "captions.jsonl").write_text(json.dumps(xm, ensure_ascii=False)[1:-1])
    data = ds.xm3600("xm3600-zh", tmp_path / "captions.jsonl", tmp_path, "zh")
    assert (
        data.captions == ["一只狗", "小狗"]
        and data.language == "zh"
        and data.images == [str(tmp_path / "k1.jpg")]
    )
    with pytest.raises(ValueError, match=r"captions\.jsonl:1: no field 'de'"):
        ds.xm3600("xm3600-de", tmp_path / "captions.jsonl", tmp_path, "de")

    (tmp_path / "cn.txt").write_text("100#0\t一只猫\n100#1\t猫在睡觉\n200#0\t一辆车\n")
    (tmp_path / "test_ids.txt").write_text("200\n100\n")
    cn = ds.caption_tsv("coco-cn", tmp_path / "cn.txt", tmp_path, "zh", ids_file=tmp_path / "test_ids.txt")
    assert cn.images == [str(tmp_path / "200.jpg"), str(tmp_path / "100.jpg")] and cn.caption_image == [
        0,
        1,
        1,
    ]
    (tmp_path / "broken.txt").write_text("100#0 no tab here\n")
    with pytest.raises(ValueError, match=r"broken\.txt:1: expected"):
        ds.caption_tsv("coco-cn", tmp_path / "broken.txt", tmp_path, "zh")


def test_image_folder_classes(tmp_path: Path):
    for name, count in (("golden_retriever", 2), ("tabby_cat", 3)):
        (tmp_path / name).mkdir()
        for i in range(count):
            (tmp_path / name / f"{i}.jpg").write_bytes(b"x")
    data = ds.image_folder_classes("pets", tmp_path, max_per_class=2)
    assert data.class_names == ["golden retriever", "tabby cat"] and data.labels == [0, 0, 1, 1]


def _class_folders(root: Path, names: list[str]) -> None:
    for folder in names:
        (root / folder).mkdir(parents=True)
        (root / folder / "a.jpg").write_bytes(b"x")  # only listed, never decoded here


def test_imagenet_wordnet_id_folders_get_clips_class_names_and_templates(tmp_path: Path):
    """The standard val layout names folders by WordNet id: prompts must say "tench", not "n01440764"."""
    from ops.zero_shot_names import clip_imagenet_templates, imagenet_metadata

    _class_folders(tmp_path, ["n01440764", "n01443537", "n15075141"])
    data = ds.image_folder_classes("imagenet", tmp_path)
    assert data.class_names == ["tench", "goldfish", "toilet paper"]
    metadata = imagenet_metadata()
    assert len(metadata["wnids"]) == len(set(metadata["wnids"])) == len(metadata["class_names"]) == 1000
    assert metadata["wnids"] == sorted(metadata["wnids"])  # the standard label order
    templates = clip_imagenet_templates()
    assert len(templates) == 80 and all("{}" in t for t in templates)


def test_id_named_folders_without_names_are_an_error_naming_the_folder(tmp_path: Path):
    _class_folders(tmp_path / "set", ["n99999999", "n01440764"])  # not all ImageNet-1k ids
    with pytest.raises(ValueError, match=r"set: class folders are named by id \(n99999999"):
        ds.image_folder_classes("odd", tmp_path / "set")
    (tmp_path / "names.json").write_text(json.dumps({"n99999999": "unicorn", "n01440764": "tench fish"}))
    named = ds.image_folder_classes("odd", tmp_path / "set", names_file=str(tmp_path / "names.json"))
    assert named.class_names == ["tench fish", "unicorn"]  # sorted folders: n01440764, n99999999
    (tmp_path / "names.txt").write_text("only one\n")
    with pytest.raises(ValueError, match=r"names.txt: 1 names for 2 class folders"):
        ds.image_folder_classes("odd", tmp_path / "set", names_file=str(tmp_path / "names.txt"))
