from __future__ import annotations

import random

from demo import basic_scenes as scenes


def _scene(index: int, max_objects: int = 4) -> scenes.Scene:
    rng = random.Random(scenes.scene_seed(0, "train", index))
    return scenes.sample_scene(rng, scenes.scene_key("train", index), max_objects)


def test_same_seed_same_scene_and_splits_differ():
    assert _scene(3) == _scene(3)
    assert scenes.scene_seed(0, "train", 3) != scenes.scene_seed(0, "eval", 3)
    assert len({_scene(i) for i in range(50)}) > 40


def test_dense_caption_names_every_object_and_every_relation():
    for index in range(30):
        scene = _scene(index)
        dense = scenes.dense_caption(scene)
        for obj in scene.objects:
            assert f"A {obj.size} {obj.color} {obj.shape} is {obj.place}." in dense
        n = len(scene.objects)
        assert dense.count(" the ") >= n * (n - 1) // 2
        assert dense.startswith(f"The image shows {scenes.NUMBER_WORDS[n]}")


def test_short_caption_is_short_and_partial():
    rng = random.Random(1)
    for index in range(30):
        scene = _scene(index)
        short = scenes.short_caption(scene, rng)
        assert len(short.split()) < len(scenes.dense_caption(scene).split())
        assert scene.objects[0].name in short
        assert not any(size in short.split() for size in scenes.SIZES)


def test_rendered_pixels_show_each_object_colour_at_its_place():
    for index in range(20):
        scene = _scene(index)
        image = scenes.render_scene(scene, 96)
        for obj in scene.objects:
            center = (int((obj.column + 0.5) * 32), int((obj.row + 0.5) * 32))
            assert image.getpixel(center) == scenes.COLORS[obj.color], (scene, obj)


def test_relations_are_geometric():
    left = scenes.SceneObject("circle", "red", "small", row=0, column=0)
    right = scenes.SceneObject("square", "blue", "small", row=0, column=2)
    below = scenes.SceneObject("diamond", "green", "small", row=2, column=0)
    text = scenes.dense_caption(scenes.Scene("k", "gray", (left, right, below)))
    assert "The red circle is to the left of the blue square." in text
    assert "The red circle is above the green diamond." in text
    assert "The blue square is above and to the right of the green diamond." in text
