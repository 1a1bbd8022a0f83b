"""Voices, texts and the speaker-disjoint split.

Train and validation draw from 6 accents x 37 voice variants; the test split uses 2 other
accents x 8 other variants, so test scores measure generalisation to unseen voices.
"""

from __future__ import annotations

import numpy as np

from stapes.tasks.audio.engine import Voice

KEYWORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "yes", "no")

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# espeak-ng voice variants that sound human-ish (robots and monsters left out)
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "klatt6",
    "Alex",
    "Andy",
    "Annie",
    "aunty",
    "belinda",
    "boris",
    "david",
    "ed",
    "edward",
    "grandma",
    "grandpa",
    "iven",
    "john",
    "linda",
    "max",
    "michel",
    "norbert",
    "paul",
    "quincy",
    "rob",
    "robert",
    "steph",
    "travis",
    "victor",
    "zac",
    "whisper",
    "croak",
)
TEST_ACCENTS = ("en-us-nyc", "en-gb-x-gbcwmd")
TEST_VARIANTS = ("m7", "f4", "klatt3", "grandma", "steph", "travis", "zac", "norbert")
SPLITS = ("train", "val", "test")

# Harvard sentences (IEEE 1969, public domain) and a few everyday ones.
SENTENCES = (
    "the birch canoe slid on the smooth planks",
    "glue the sheet to the dark blue background",
    "it is easy to tell the depth of a well",
    "these days a chicken leg is a rare dish",
    "rice is often served in round bowls",
    "the juice of lemons makes fine punch",
    "the box was thrown beside the parked truck",
    "four hours of steady work faced us",
    "a large size in stockings is hard to sell",
    "the boy was there when the sun rose",
    "a rod is used to catch pink salmon",
    "the source of the huge river is the clear spring",
    "kick the ball straight and follow through",
    "help the woman get back to her feet",
    "a pot of tea helps to pass the evening",
    "smoky fires lack flame and heat",
    "the soft cushion broke the man's fall",
    "the salt breeze came across from the sea",
    "the girl at the booth sold fifty bonds",
    "the small pup gnawed a hole in the sock",
    "the fish twisted and turned on the bent hook",
    "press the pants and sew a button on the vest",
    "can you turn the volume down a little please",
    "i will meet you at the station at half past nine",
    "did you remember to buy milk on the way home",
    "the weather will be cloudy with some rain later",
)
VOCABULARY = tuple(
    (
        "the a of and to in is you that it he was for on are as with his they at be this have from "
        "one two three four five six seven eight nine zero yes no hello please water coffee music "
        "morning evening tomorrow station window garden doctor hearing volume louder quieter battery "
        "program phone kitchen table chair"
    ).split()
)


def split_index(split: str) -> int:
    return SPLITS.index(split)


def random_voice(rng: np.random.Generator, split: str) -> Voice:
    """A random voice of the split's speaker pool, speed 110-219 wpm, pitch 20-84, amplitude 60-159."""
    test = split == "test"
    accents = TEST_ACCENTS if test else tuple(a for a in ACCENTS if a not in TEST_ACCENTS)
    variants = TEST_VARIANTS if test else tuple(v for v in VARIANTS if v not in TEST_VARIANTS)
    return Voice(
        accent=str(rng.choice(accents)),
        variant=str(rng.choice(variants)),
        speed=int(rng.integers(110, 220)),
        pitch=int(rng.integers(20, 85)),
        amplitude=int(rng.integers(60, 160)),
    )


def random_utterance(rng: np.random.Generator) -> str:
    """A sentence (half the time) or 1-5 random words."""
    if rng.random() < 0.5:
        return str(rng.choice(SENTENCES))
    return " ".join(str(w) for w in rng.choice(VOCABULARY, size=int(rng.integers(1, 6))))
