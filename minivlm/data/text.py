"""A built-in English corpus for tokenizers and small language models; nothing to download.

    sentences = corpus(n_sentences=5000, seed=0)    # list of str, the same for the same seed

Every sentence is lower-case, ends with a full stop, and comes from one of a few templates
whose words obey rules a small model can learn (and a reader can check):

    subject, verb, object    "the two hungry cats chase a mouse."  (plural nouns take plural verbs)
    counting shapes          "there are three red circles."        (one -> "there is", singular)
    where things are         "the blue star is left of the green square."
    arithmetic               "four plus five is nine."  "12 + 7 = 19."   (always correct)
    word problems            "anna has three apples and gets two more, so she has five apples."
    counting on              "six, seven, eight, nine."            (consecutive numbers)
    facts                    "a spider has eight legs."  "a cow says moo."  "snow is white."
                             "the capital of france is paris."  "a baker bakes bread."
    questions and answers    "how many legs does an ant have? six."  "what colour is coal? black."
    order                    "after monday comes tuesday."  "the month after may is june."
    opposites                "the opposite of hot is cold."
    comparisons              "an elephant is bigger than a mouse."  (from a fixed size order)
    colour mixing            "blue and yellow make green."

Sentences are drawn independently: pick a template uniformly, then fill it from
`random.Random(seed)`, so the corpus is reproducible on every platform.
"""

import random

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "pink",
           "brown", "grey"]
SHAPES = ["circle", "square", "triangle", "star", "heart", "hexagon", "diamond", "cross",
          "rectangle", "oval"]
# (singular, plural)
ANIMALS = [("cat", "cats"), ("dog", "dogs"), ("mouse", "mice"), ("bird", "birds"),
           ("horse", "horses"), ("fox", "foxes"), ("sheep", "sheep"), ("cow", "cows"),
           ("fish", "fish"), ("rabbit", "rabbits"), ("lion", "lions"), ("frog", "frogs"),
           ("duck", "ducks"), ("goat", "goats"), ("wolf", "wolves"), ("bear", "bears")]
ADJECTIVES = ["hungry", "sleepy", "happy", "little", "angry", "brave", "lazy", "clever", "tiny",
              "noisy", "quiet", "friendly", "old", "young"]
# (with a singular subject, with a plural subject)
VERBS = [("chases", "chase"), ("sees", "see"), ("likes", "like"), ("follows", "follow"),
         ("watches", "watch"), ("finds", "find"), ("helps", "help"), ("hears", "hear"),
         ("visits", "visit"), ("meets", "meet")]
PLACES = ["above", "below", "left of", "right of", "next to", "inside", "behind", "in front of"]

UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

LEGS = {"spider": "eight", "ant": "six", "bee": "six", "dog": "four", "cat": "four",
        "horse": "four", "bird": "two", "duck": "two", "crab": "ten", "chicken": "two",
        "octopus": "eight", "beetle": "six", "kangaroo": "two"}
SOUNDS = {"cow": "moo", "dog": "woof", "cat": "meow", "duck": "quack", "sheep": "baa",
          "owl": "hoot", "lion": "roar", "snake": "hiss", "pig": "oink", "horse": "neigh"}
THING_COLOURS = {"snow": "white", "grass": "green", "the sky": "blue", "the sun": "yellow",
                 "coal": "black", "a banana": "yellow", "a tomato": "red", "milk": "white",
                 "a leaf": "green", "the sea": "blue", "an orange": "orange", "a plum": "purple"}
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]
OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"),
             ("fast", "slow"), ("old", "new"), ("happy", "sad"), ("light", "dark"),
             ("open", "closed"), ("full", "empty"), ("left", "right"), ("early", "late")]
BY_SIZE = ["ant", "bee", "mouse", "frog", "rabbit", "cat", "dog", "sheep", "horse", "bear",
           "elephant", "whale"]                                  # smallest first
# (name, pronoun)
PEOPLE = [("anna", "she"), ("maria", "she"), ("sofia", "she"), ("emma", "she"), ("lucy", "she"),
          ("olivia", "she"), ("hannah", "she"), ("grace", "she"), ("tom", "he"), ("david", "he"),
          ("oliver", "he"), ("james", "he"), ("samuel", "he"), ("peter", "he"), ("leo", "he"),
          ("daniel", "he"), ("clara", "she"), ("julia", "she"), ("nina", "she"),
          ("rosa", "she"), ("felix", "he"), ("hugo", "he"), ("oscar", "he"), ("victor", "he")]
# (singular, plural)
THINGS = [("apple", "apples"), ("pear", "pears"), ("cherry", "cherries"), ("lemon", "lemons"),
          ("cookie", "cookies"), ("book", "books"), ("pencil", "pencils"), ("ball", "balls"),
          ("marble", "marbles"), ("coin", "coins"), ("sticker", "stickers"),
          ("flower", "flowers"), ("egg", "eggs"), ("cup", "cups"), ("candle", "candles"),
          ("shell", "shells"), ("banana", "bananas"), ("carrot", "carrots"),
          ("potato", "potatoes"), ("balloon", "balloons"), ("button", "buttons"),
          ("strawberry", "strawberries"), ("sandwich", "sandwiches"), ("feather", "feathers")]
CAPITALS = {"france": "paris", "germany": "berlin", "italy": "rome", "spain": "madrid",
            "japan": "tokyo", "china": "beijing", "egypt": "cairo", "kenya": "nairobi",
            "brazil": "brasilia", "canada": "ottawa", "mexico": "mexico city",
            "india": "new delhi", "russia": "moscow", "greece": "athens", "norway": "oslo",
            "sweden": "stockholm", "poland": "warsaw", "portugal": "lisbon",
            "australia": "canberra", "argentina": "buenos aires", "ireland": "dublin",
            "austria": "vienna", "hungary": "budapest", "finland": "helsinki",
            "denmark": "copenhagen", "turkey": "ankara", "peru": "lima", "chile": "santiago",
            "thailand": "bangkok", "vietnam": "hanoi", "morocco": "rabat", "ghana": "accra"}
JOBS = {"baker": "bakes bread", "farmer": "grows food", "teacher": "teaches children",
        "doctor": "helps sick people", "pilot": "flies planes", "painter": "paints pictures",
        "builder": "builds houses", "fisherman": "catches fish", "writer": "writes books",
        "singer": "sings songs", "driver": "drives buses", "gardener": "grows flowers",
        "tailor": "sews clothes", "postman": "delivers letters", "librarian": "lends books"}
MIXES = [("blue", "yellow", "green"), ("red", "yellow", "orange"), ("red", "blue", "purple"),
         ("red", "white", "pink"), ("black", "white", "grey")]


def number_word(n):
    """0..99 -> English words: 7 -> "seven", 42 -> "forty two"."""
    if n < 20:
        return UNITS[n]
    tens, units = divmod(n, 10)
    return TENS[tens] + ("" if units == 0 else " " + UNITS[units])


def with_article(noun):
    """"a" or "an" before a noun: "an elephant", "a cat"."""
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def subject_verb_object(rng):
    count = rng.choice([1, 1, 1, 2, 3, 4])
    singular, plural = rng.choice(ANIMALS)
    verb_singular, verb_plural = rng.choice(VERBS)
    adjective = rng.choice(ADJECTIVES)
    if count == 1:
        subject = f"the {adjective} {singular} {verb_singular}"
    else:
        subject = f"the {number_word(count)} {adjective} {plural} {verb_plural}"
    obj = rng.choice([a for a in ANIMALS if a[0] != singular])[0]
    return f"{subject} {rng.choice(['the', 'a'])} {obj}."


def counting_shapes(rng):
    count, colour, shape = rng.randint(1, 12), rng.choice(COLOURS), rng.choice(SHAPES)
    if count == 1:
        return f"there is one {colour} {shape}."
    return f"there are {number_word(count)} {colour} {shape}s."


def where_things_are(rng):
    first, second = rng.sample([(c, s) for c in COLOURS for s in SHAPES], 2)
    return f"the {first[0]} {first[1]} is {rng.choice(PLACES)} the {second[0]} {second[1]}."


def arithmetic(rng):
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    if rng.random() < 0.5:
        symbol, word, result = "+", "plus", a + b
    else:
        a, b = max(a, b), min(a, b)
        symbol, word, result = "-", "minus", a - b
    if rng.random() < 0.5:
        return f"{a} {symbol} {b} = {result}."
    return f"{number_word(a)} {word} {number_word(b)} is {number_word(result)}."


def word_problem(rng):
    (name, pronoun), (_, plural) = rng.choice(PEOPLE), rng.choice(THINGS)
    have, get = rng.randint(2, 20), rng.randint(1, 9)
    return (f"{name} has {number_word(have)} {plural} and gets {number_word(get)} more, "
            f"so {pronoun} has {number_word(have + get)} {plural}.")


def counting_on(rng):
    start = rng.randint(0, 90)
    return ", ".join(number_word(n) for n in range(start, start + rng.randint(3, 6))) + "."


def fact(rng):
    kind = rng.choice(["legs", "sound", "colour", "capital", "job"])
    if kind == "legs":
        animal = rng.choice(list(LEGS))
        return f"{with_article(animal)} has {LEGS[animal]} legs."
    if kind == "sound":
        animal = rng.choice(list(SOUNDS))
        return f"{with_article(animal)} says {SOUNDS[animal]}."
    if kind == "colour":
        thing = rng.choice(list(THING_COLOURS))
        return f"{thing} is {THING_COLOURS[thing]}."
    if kind == "capital":
        country = rng.choice(list(CAPITALS))
        return f"the capital of {country} is {CAPITALS[country]}."
    job = rng.choice(list(JOBS))
    return f"{with_article(job)} {JOBS[job]}."


def question(rng):
    if rng.random() < 0.5:
        animal = rng.choice(list(LEGS))
        return f"how many legs does {with_article(animal)} have? {LEGS[animal]}."
    thing = rng.choice(list(THING_COLOURS))
    return f"what colour is {thing}? {THING_COLOURS[thing]}."


def order(rng):
    if rng.random() < 0.5:
        i = rng.randrange(len(DAYS))
        return f"after {DAYS[i]} comes {DAYS[(i + 1) % len(DAYS)]}."
    i = rng.randrange(len(MONTHS))
    return f"the month after {MONTHS[i]} is {MONTHS[(i + 1) % len(MONTHS)]}."


def opposite(rng):
    word, other = rng.choice(OPPOSITES)
    if rng.random() < 0.5:
        word, other = other, word
    return f"the opposite of {word} is {other}."


def comparison(rng):
    small, big = sorted(rng.sample(range(len(BY_SIZE)), 2))
    if rng.random() < 0.5:
        return f"{with_article(BY_SIZE[big])} is bigger than {with_article(BY_SIZE[small])}."
    return f"{with_article(BY_SIZE[small])} is smaller than {with_article(BY_SIZE[big])}."


def colour_mixing(rng):
    first, second, mixed = rng.choice(MIXES)
    if rng.random() < 0.5:
        first, second = second, first
    return f"{first} and {second} make {mixed}."


TEMPLATES = [subject_verb_object, counting_shapes, where_things_are, arithmetic, word_problem,
             counting_on, fact, question, order, opposite, comparison, colour_mixing]


def corpus(n_sentences=5000, seed=0):
    """n_sentences English sentences (list of str), the same for the same seed."""
    if n_sentences < 0:
        raise ValueError(f"n_sentences must be >= 0, got {n_sentences}")
    rng = random.Random(seed)
    return [rng.choice(TEMPLATES)(rng) for _ in range(n_sentences)]
