"""Synthetic scenes for the CPU demo: coloured shapes with sizes and positions, and their captions.

Each scene has a short, alt-text-like caption (what web data gives) and a dense caption naming every
object, its colour, size and place, and the relations between objects (what a good recaptioner gives).
The dense caption is ground truth, so it can stand in for a provided recaption column.
"""

from __future__ import annotations

import dataclasses
import random

from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "beige": (225, 210, 180),
    "teal": (60, 140, 140),
    "pink": (240, 180, 200),
}
SHAPES = ("circle", "square", "triangle", "diamond")
# Alt-text templates for the short captions ({} the objects, {bg} the background).
SHORT_TEMPLATES = ("{}", "photo of {}", "{} on a {bg} background", "picture with {}")
SIZES: dict[str, float] = {"small": 0.12, "medium": 0.18, "large": 0.25}  # radius as a share of the side
# A 3x3 grid of places; names read like captions ("in the top left").
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")


@dataclasses.dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int  # 0 top .. 2 bottom
    column: int  # 0 left .. 2 right

    @property
    def place(self) -> str:
        if (self.row, self.column) == (1, 1):
            return "in the center"
        if self.row == 1:
            return f"on the {COLUMNS[self.column]}"
        if self.column == 1:
            return f"at the {ROWS[self.row]}"
        return f"in the {ROWS[self.row]} {COLUMNS[self.column]}"

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclasses.dataclass(frozen=True)
class Scene:
    key: str
    background: str
    objects: tuple[SceneObject, ...]


def sample_scene(rng: random.Random, key: str, max_objects: int) -> Scene:
    """Objects in distinct grid cells, with distinct colour+shape so captions are unambiguous."""
    num_objects = rng.randint(1, max_objects)
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], num_objects)
    names = rng.sample([(s, c) for s in SHAPES for c in COLORS], num_objects)
    objects = tuple(
        SceneObject(shape=shape, color=color, size=rng.choice(list(SIZES)), row=row, column=col)
        for (row, col), (shape, color) in zip(cells, names)
    )
    return Scene(key=key, background=rng.choice(list(BACKGROUNDS)), objects=objects)


def render_scene(scene: Scene, image_size_px: int) -> Image.Image:
    image = Image.new("RGB", (image_size_px, image_size_px), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    cell = image_size_px / 3
    for obj in scene.objects:
        cx, cy = (obj.column + 0.5) * cell, (obj.row + 0.5) * cell
        r = SIZES[obj.size] * image_size_px
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    return image


def short_caption(scene: Scene, rng: random.Random) -> str:
    """Alt-text style: names at most two objects, no sizes or places, like most web captions."""
    named = [f"a {o.name}" for o in scene.objects[:2]]
    subject = " and ".join(named)
    template = rng.choice(SHORT_TEMPLATES)
    return template.format(subject, bg=scene.background)


def _relation(a: SceneObject, b: SceneObject) -> str:
    if a.row == b.row:
        return "to the left of" if a.column < b.column else "to the right of"
    if a.column == b.column:
        return "above" if a.row < b.row else "below"
    vertical = "above" if a.row < b.row else "below"
    horizontal = "left" if a.column < b.column else "right"
    return f"{vertical} and to the {horizontal} of"


def dense_caption(scene: Scene) -> str:
    """Every object with colour, size and place, then every pairwise relation, in reading order."""
    count = len(scene.objects)
    noun = "object" if count == 1 else "objects"
    sentences = [f"The image shows {NUMBER_WORDS[count]} {noun} on a plain {scene.background} background."]
    for obj in scene.objects:
        sentences.append(f"A {obj.size} {obj.name} is {obj.place}.")
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1 :]:
            sentences.append(f"The {a.name} is {_relation(a, b)} the {b.name}.")
    return " ".join(sentences)


def scene_seed(base_seed: int, split: str, index: int) -> int:
    """Independent of sharding: the same scene comes out whatever samples_per_shard is."""
    return (base_seed * 1_000_003 + (0 if split == "train" else 7_919) * 1_000_000_007 + index) % (2**63)


def scene_key(split: str, index: int) -> str:
    return f"{split}-{index:07d}"


def vocabulary_corpus() -> list[str]:
    """Every word the captions can use, for training the tiny tokenizer on the scene language."""
    words = [*COLORS, *BACKGROUNDS, *SHAPES, *SIZES, *ROWS, *COLUMNS, *NUMBER_WORDS]
    lines = [" ".join(words)]
    rng = random.Random(0)
    for i in range(200):
        scene = sample_scene(rng, scene_key("vocab", i), max_objects=4)
        lines.append(short_caption(scene, rng))
        lines.append(dense_caption(scene))
    return lines
