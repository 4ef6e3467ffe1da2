"""Cooking texts, a category the BBC News model has never seen, made here from a seeded RNG.

Recipe-like paragraphs from a vocabulary of ingredients, verbs and utensils: plainly one
topic to a reader, and to a model trained on them, while the BBC model knows few of the words.
"""

from __future__ import annotations

import random

INGREDIENTS = (
    "flour", "butter", "sugar", "eggs", "garlic", "onions", "shallots", "basil", "thyme",
    "rosemary", "parsley", "cinnamon", "nutmeg", "paprika", "cumin", "saffron", "lemon zest",
    "olive oil", "cream", "yoghurt", "mushrooms", "courgettes", "aubergines", "tomatoes",
    "spinach", "lentils", "chickpeas", "rice", "noodles", "pasta", "chicken thighs",
    "lamb shoulder", "salmon fillets", "prawns", "tofu", "honey", "vanilla", "almonds",
    "walnuts", "breadcrumbs", "stock", "vinegar", "ginger", "chillies", "coriander",
)  # fmt: skip
VERBS = (
    "whisk", "fold", "simmer", "sear", "roast", "braise", "knead", "sieve", "grate", "chop",
    "dice", "stir", "drizzle", "season", "marinate", "blanch", "saute", "bake", "poach",
    "caramelise", "toast", "blend", "reduce", "glaze", "garnish",
)  # fmt: skip
UTENSILS = (
    "saucepan", "frying pan", "baking tray", "mixing bowl", "casserole dish", "wok", "oven",
    "wooden spoon", "whisk", "ladle", "colander", "roasting tin", "skillet", "chopping board",
)  # fmt: skip
TEXTURES = (
    "golden", "crisp", "tender", "fluffy", "glossy", "silky", "fragrant", "caramelised",
    "creamy", "crumbly", "sticky", "smooth", "bubbling", "soft",
)  # fmt: skip
DISHES = (
    "risotto", "curry", "stew", "tart", "soup", "salad", "pie", "casserole", "flatbread",
    "sponge cake", "custard", "omelette", "gratin", "dumplings", "broth", "crumble",
)  # fmt: skip
TEMPLATES = (
    "{Verb} the {a} and the {b} in a {utensil} until {texture}.",
    "Preheat the oven, then {verb} the {a} with a pinch of {b} for {minutes} minutes.",
    "Add the {a} to the {utensil}, {verb} gently and let it {verb2} until {texture}.",
    "For the {dish}, {verb} {grams} grams of {a} with the {b} and a spoonful of {c}.",
    "Taste the {dish}, season with {a}, and serve it {texture} with {b} on the side.",
    "Leave the {a} to rest, then {verb} it into the {dish} with the {b}.",
    "This {texture} {dish} needs {a}, {b} and {c}; {verb} everything in one {utensil}.",
    "Cook the {a} over a low heat for {minutes} minutes, stirring with a {utensil}.",
)


def cooking_text(rng: random.Random, sentences: int = 7) -> str:
    """One recipe-like paragraph; the same RNG state gives the same text."""
    return " ".join(_sentence(rng) for _ in range(sentences))


def _sentence(rng: random.Random) -> str:
    a, b, c = rng.sample(INGREDIENTS, 3)
    verb, verb2 = rng.sample(VERBS, 2)
    return rng.choice(TEMPLATES).format(
        a=a,
        b=b,
        c=c,
        verb=verb,
        Verb=verb.capitalize(),
        verb2=verb2,
        utensil=rng.choice(UTENSILS),
        texture=rng.choice(TEXTURES),
        dish=rng.choice(DISHES),
        minutes=rng.randrange(5, 90, 5),
        grams=rng.randrange(50, 500, 25),
    )


def cooking_texts(count: int, seed: int = 15) -> list[str]:
    rng = random.Random(seed)
    return [cooking_text(rng) for _ in range(count)]
