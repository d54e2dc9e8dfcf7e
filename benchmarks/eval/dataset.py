"""The labelled prompt set: QA with checkable answers, repetition-driving prompts, free-form text.

Every item belongs to one prompt template and every template to one split, so the held-out
half asks in phrasings (and about entities) the fit half never saw. Items are built by code
from the tables below; nothing is sampled at random except the arithmetic operands (seeded).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

FIT, HELDOUT = "fit", "heldout"

QA_TOKENS = 32
REPETITION_TOKENS = 80
FREE_TOKENS = 64
SAMPLED = {"do_sample": True, "temperature": 0.7, "top_p": 0.95}
# repetition_penalty < 1 rewards repeating what is already there: the standard way to drive loops.
LOOP_PENALTY = {"repetition_penalty": 0.7}


@dataclass(frozen=True)
class Item:
    id: str
    category: str  # arithmetic | fact | repetition | free
    template: str
    split: str
    prompt: str
    chat: bool
    max_new_tokens: int
    generate_kwargs: dict = field(default_factory=dict)
    answers: tuple[str, ...] = ()  # accepted answers (QA only)
    operands: tuple[int, ...] = ()  # arithmetic only: numbers of the question itself

    @property
    def batch_key(self) -> tuple:
        return (self.chat, self.max_new_tokens, tuple(sorted(self.generate_kwargs.items())))


ARITHMETIC_TEMPLATES = (
    ("arith_what_is", FIT, "What is {a} {op} {b}?"),
    ("arith_calculate", HELDOUT, "Calculate {a} {op} {b}."),
    ("arith_equation", FIT, "Solve: {a} {op} {b} = ?"),
    ("arith_result_of", HELDOUT, "What is the result of {a} {op} {b}? Give the number."),
)
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
# Operand ranges from easy to hard, so the model is right sometimes and wrong sometimes.
_RANGES = ((1, 9), (10, 99), (100, 999))

CAPITALS = {
    "France": ("Paris",), "Germany": ("Berlin",), "Italy": ("Rome",), "Spain": ("Madrid",), "Japan": ("Tokyo",),
    "China": ("Beijing",), "Russia": ("Moscow",), "Canada": ("Ottawa",), "Australia": ("Canberra",),
    "Brazil": ("Brasília", "Brasilia"), "Egypt": ("Cairo",), "India": ("New Delhi", "Delhi"),
    "Mexico": ("Mexico City",), "Argentina": ("Buenos Aires",), "the United Kingdom": ("London",),
    "Ireland": ("Dublin",), "Portugal": ("Lisbon",), "Greece": ("Athens",), "Turkey": ("Ankara",),
    "Poland": ("Warsaw",), "Sweden": ("Stockholm",), "Norway": ("Oslo",), "Finland": ("Helsinki",),
    "Denmark": ("Copenhagen",), "the Netherlands": ("Amsterdam",), "Belgium": ("Brussels",),
    "Austria": ("Vienna",), "Switzerland": ("Bern", "Berne"), "Hungary": ("Budapest",),
    "the Czech Republic": ("Prague",), "Kenya": ("Nairobi",), "Nigeria": ("Abuja",), "South Korea": ("Seoul",),
    "Thailand": ("Bangkok",), "Vietnam": ("Hanoi",), "Indonesia": ("Jakarta",), "Peru": ("Lima",),
    "Chile": ("Santiago",), "Colombia": ("Bogotá", "Bogota"), "Iran": ("Tehran",), "Iraq": ("Baghdad",),
    "Saudi Arabia": ("Riyadh",), "Pakistan": ("Islamabad",), "the Philippines": ("Manila",),
    "New Zealand": ("Wellington",), "Cuba": ("Havana",), "Morocco": ("Rabat",), "Ukraine": ("Kyiv", "Kiev"),
    "Romania": ("Bucharest",), "Venezuela": ("Caracas",), "Ethiopia": ("Addis Ababa",), "Ghana": ("Accra",),
}
AUTHORS = {
    "Romeo and Juliet": ("Shakespeare",), "Pride and Prejudice": ("Austen",), "1984": ("Orwell",),
    "Harry Potter": ("Rowling",), "War and Peace": ("Tolstoy",), "The Odyssey": ("Homer",),
    "Don Quixote": ("Cervantes",), "Hamlet": ("Shakespeare",), "On the Origin of Species": ("Darwin",),
    "Moby-Dick": ("Melville",), "The Great Gatsby": ("Fitzgerald",), "Oliver Twist": ("Dickens",),
    "Frankenstein": ("Shelley",), "The Hobbit": ("Tolkien",), "The Adventures of Tom Sawyer": ("Twain",),
    "Crime and Punishment": ("Dostoevsky", "Dostoyevsky"), "Animal Farm": ("Orwell",),
    "Les Misérables": ("Hugo",), "The Divine Comedy": ("Dante",), "A Christmas Carol": ("Dickens",),
}
SYMBOLS = {  # multi-letter symbols only: a lone capital letter is too easy to match by accident
    "gold": ("Au",), "silver": ("Ag",), "iron": ("Fe",), "sodium": ("Na",), "helium": ("He",), "lead": ("Pb",),
    "copper": ("Cu",), "mercury": ("Hg",), "calcium": ("Ca",), "zinc": ("Zn",), "tin": ("Sn",),
    "chlorine": ("Cl",), "neon": ("Ne",), "magnesium": ("Mg",),
}
GENERAL = (  # (question, accepted answers)
    ("How many legs does a spider have?", ("8", "eight")),
    ("What is the largest planet in the solar system?", ("Jupiter",)),
    ("Which planet is known as the Red Planet?", ("Mars",)),
    ("At what temperature in Celsius does water boil at sea level?", ("100",)),
    ("How many continents are there on Earth?", ("7", "seven")),
    ("What is the largest ocean on Earth?", ("Pacific",)),
    ("What is the tallest mountain in the world?", ("Everest",)),
    ("How many days are there in a week?", ("7", "seven")),
    ("How many hours are there in a day?", ("24", "twenty-four")),
    ("What is the fastest land animal?", ("cheetah",)),
    ("What is the largest mammal?", ("blue whale",)),
    ("Who was the first person to walk on the Moon?", ("Armstrong",)),
    ("Who invented the telephone?", ("Bell",)),
    ("Who developed the theory of relativity?", ("Einstein",)),
    ("Who was the first president of the United States?", ("Washington",)),
    ("What is the currency of Japan?", ("yen",)),
    ("What language is spoken in Brazil?", ("Portuguese",)),
    ("How many sides does a hexagon have?", ("6", "six")),
    ("What gas do plants absorb from the air for photosynthesis?", ("carbon dioxide", "CO2")),
    ("What is the hardest natural substance?", ("diamond",)),
    ("What is the smallest prime number?", ("2", "two")),
    ("What is the square root of 81?", ("9", "nine")),
    ("How many minutes are there in an hour?", ("60", "sixty")),
    ("What is the freezing point of water in Fahrenheit?", ("32",)),
    ("Which organ pumps blood through the human body?", ("heart",)),
    ("What is the chemical formula of water?", ("H2O",)),
    ("How many planets are in the solar system?", ("8", "eight")),
    ("Who painted the Mona Lisa?", ("Leonardo", "da Vinci")),
)

# (template, split, phrasing, entity table); the entity tables are halved between the splits.
FACT_TEMPLATES = (
    ("fact_capital_what", FIT, "What is the capital of {x}?", "capitals", 0),
    ("fact_capital_which", HELDOUT, "Which city is the capital of {x}?", "capitals", 1),
    ("fact_author_who_wrote", FIT, "Who wrote {x}?", "authors", 0),
    ("fact_author_name", HELDOUT, "Name the author of {x}.", "authors", 1),
    ("fact_symbol_what", FIT, "What is the chemical symbol for {x}?", "symbols", 0),
    ("fact_symbol_which", HELDOUT, "Which chemical symbol does {x} have?", "symbols", 1),
    ("fact_general_plain", FIT, "{x}", "general", 0),
    ("fact_general_short", HELDOUT, "Answer briefly: {x}", "general", 1),
)

LOOP_SENTENCES = (
    "I am a cat.", "The sun is hot.", "We go to school.", "This is a pen.", "The dog runs fast.",
    "I like green apples.", "The sky is blue today.", "She sells sea shells.", "Rain falls on the town.",
    "He reads a book.", "The car is red.", "Birds can fly high.", "My name is Tom.", "The tea is cold.",
    "Time flies like an arrow.", "The river flows to the sea.", "I love my family.", "Snow is white.",
    "The moon shines at night.", "We eat bread every day.",
)
TOPICS = (
    "the sea", "a lost dog", "winter", "a robot", "friendship", "the moon", "a small town", "a dragon",
    "coffee", "the forest", "a library", "rain", "a train journey", "the desert", "music", "a garden",
    "a lighthouse", "autumn", "a city at night", "a mountain", "a cat", "the ocean", "a birthday", "a bridge",
    "spring", "a clock", "the stars", "a river", "a market", "an island",
)
CONCEPTS = (
    "photosynthesis", "gravity", "a neural network", "inflation", "the water cycle", "democracy",
    "electricity", "evolution", "the internet", "climate change", "a black hole", "vaccines", "recycling",
    "the stock market", "DNA", "volcanoes", "the immune system", "solar power", "earthquakes", "a computer",
    "the human heart", "tides", "rainbows", "magnets", "sound", "clouds", "bacteria", "the Roman Empire",
    "renewable energy", "a budget",
)
OPENINGS = (
    "The history of the bicycle began", "Every morning, the old fisherman", "Cooking rice well requires",
    "The first thing to know about bees is that", "In the middle of the city there was",
    "Learning a new language is", "The train left the station and", "Scientists recently discovered that",
    "My favourite season is autumn because", "The museum opened its doors in", "When the storm finally passed,",
    "A good night's sleep helps", "The recipe calls for", "On the top of the hill stood",
    "The football match started", "Most people do not realise that", "The village school had",
    "After years of research, the team", "The letter arrived on a Tuesday and", "Walking in the park,",
    "The new phone has", "Long ago, in a quiet kingdom,", "The teacher asked the class to",
    "Gardening is a hobby that", "At the edge of the forest", "The company announced that",
    "Water is important because", "The children built a", "Our trip to the mountains", "The old house",
)

# (template, split, phrasing, chat?, generate kwargs, fill-ins); loops are labelled by the text check.
REPETITION_TEMPLATES = (
    ("rep_raw_copies", FIT, "{x} {x} {x}", False, {}, LOOP_SENTENCES),
    ("rep_penalty_story", FIT, "Write a short story about {x}.", True, LOOP_PENALTY, TOPICS),
    ("rep_penalty_poem", HELDOUT, "Write a poem about {x}.", True, LOOP_PENALTY, TOPICS),
    ("rep_raw_lines", HELDOUT, "{x}\n{x}\n", False, {}, LOOP_SENTENCES),
)
FREE_TEMPLATES = (
    ("free_explain", FIT, "Explain {x} in simple terms.", True, SAMPLED, CONCEPTS),
    ("free_raw_continue", FIT, "{x}", False, SAMPLED, OPENINGS),
    ("free_story_sampled", HELDOUT, "Write a short story about {x}.", True, SAMPLED, TOPICS),
    ("free_describe", HELDOUT, "Describe {x} to a friend.", True, SAMPLED, CONCEPTS),
)


def build_items(per_template: int | None = None) -> list[Item]:
    """All items; `per_template` keeps only the first n of each template (for smoke runs)."""
    items = [*_arithmetic(), *_facts(), *_prompted(REPETITION_TEMPLATES, "repetition", REPETITION_TOKENS),
             *_prompted(FREE_TEMPLATES, "free", FREE_TOKENS)]
    if per_template is None:
        return items
    kept, counts = [], {}
    for item in items:
        counts[item.template] = counts.get(item.template, 0) + 1
        if counts[item.template] <= per_template:
            kept.append(item)
    return kept


def _arithmetic(per_template: int = 48) -> list[Item]:
    rng = random.Random(8)
    items = []
    for template, split, phrasing in ARITHMETIC_TEMPLATES:
        for k in range(per_template):
            op = "+-*"[k % 3]
            low, high = _RANGES[(k // 3) % 3]
            a, b = rng.randint(low, high), rng.randint(low, high)
            if op == "*":  # keep products within what a person does in their head
                b = rng.randint(2, 12)
            if op == "-" and b > a:
                a, b = b, a
            items.append(Item(
                id=f"{template}-{k:03d}", category="arithmetic", template=template, split=split,
                prompt=phrasing.format(a=a, op=op, b=b), chat=True, max_new_tokens=QA_TOKENS,
                answers=(str(_OPS[op](a, b)),), operands=(a, b),
            ))
    return items


def _facts() -> list[Item]:
    tables = {
        "capitals": list(CAPITALS.items()),
        "authors": list(AUTHORS.items()),
        "symbols": list(SYMBOLS.items()),
        "general": list(GENERAL),
    }
    items = []
    for template, split, phrasing, table, half in FACT_TEMPLATES:
        entries = tables[table][half::2]
        for k, (entity, answers) in enumerate(entries):
            # Greedy and one sampled answer per question: the same template, so the same split.
            for decoding, kwargs in (("greedy", {}), ("sampled", SAMPLED)):
                items.append(Item(
                    id=f"{template}-{k:03d}-{decoding}", category="fact", template=template, split=split,
                    prompt=phrasing.format(x=entity), chat=True, max_new_tokens=QA_TOKENS,
                    generate_kwargs=dict(kwargs), answers=tuple(answers),
                ))
    return items


def _prompted(templates, category: str, max_new_tokens: int) -> list[Item]:
    items = []
    for template, split, phrasing, chat, kwargs, fills in templates:
        for k, fill in enumerate(fills):
            items.append(Item(
                id=f"{template}-{k:03d}", category=category, template=template, split=split,
                prompt=phrasing.format(x=fill), chat=chat, max_new_tokens=max_new_tokens,
                generate_kwargs=dict(kwargs),
            ))
    return items


SMOKE_TOKENS = 12


def smoke_items() -> list[Item]:
    """One greedy item from each of four templates (QA and repetition, both splits), 12 new tokens."""
    wanted = ("arith_what_is", "fact_capital_which", "rep_raw_copies", "rep_raw_lines")
    first = {}
    for item in build_items():
        if item.template in wanted and item.template not in first and not item.generate_kwargs.get("do_sample"):
            first[item.template] = item
    return [dataclasses.replace(first[t], max_new_tokens=SMOKE_TOKENS) for t in wanted if t in first]
