"""A deterministic, realistic-looking product catalogue."""

from __future__ import annotations

import random
from collections.abc import Iterator

CATEGORIES = {
    "kitchen": (["Kettle", "Chef Knife", "Frying Pan", "Cutting Board", "Coffee Grinder", "Teapot"], 900, 12000),
    "outdoor": (["Tent", "Backpack", "Headlamp", "Water Bottle", "Hiking Poles", "Sleeping Bag"], 1500, 45000),
    "office": (["Desk Lamp", "Notebook", "Fountain Pen", "Monitor Stand", "Desk Mat", "Stapler"], 300, 15000),
    "audio": (["Headphones", "Bluetooth Speaker", "Turntable", "Microphone", "Earbuds", "Amplifier"], 2500, 60000),
    "home": (["Throw Blanket", "Candle", "Vase", "Wall Clock", "Cushion", "Picture Frame"], 700, 9000),
    "fitness": (["Yoga Mat", "Kettlebell", "Jump Rope", "Foam Roller", "Dumbbell Set", "Resistance Band"], 800, 25000),
}
ADJECTIVES = ["Classic", "Compact", "Deluxe", "Eco", "Nordic", "Pro", "Urban", "Vintage", "Ultralight", "Smart"]
MATERIALS = ["Bamboo", "Steel", "Oak", "Ceramic", "Linen", "Copper", "Recycled", "Walnut", "Carbon", "Wool"]


def products(count: int, seed: int = 20261122) -> Iterator[tuple[str, str, str, str, int, int]]:
    """(sku, name, description, category, price_cents, stock) rows; the same every run."""
    rng = random.Random(seed)
    categories = list(CATEGORIES)
    for index in range(count):
        category = categories[index % len(categories)]
        nouns, low, high = CATEGORIES[category]
        noun = rng.choice(nouns)
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(MATERIALS)} {noun}"
        price_cents = rng.randrange(low, high) // 100 * 100 - 1  # prices end in .99
        stock = rng.randrange(200, 2000)
        article = "An" if name[0] in "AEIOU" else "A"
        description = f"{article} {name.lower()} from our {category} range."
        yield f"{category[:3].upper()}-{index + 1:05d}", name, description, category, price_cents, stock
