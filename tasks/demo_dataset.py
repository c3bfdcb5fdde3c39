"""The project's own demo dataset: search-box queries labelled with one of 14 intents.

The data is generated, not downloaded, so the pipeline runs offline and every run sees the same rows. It is
meant to be *realistic enough to be hard*: queries come from templates and slot vocabularies per intent,
then go through the noise real query logs have (typos, abbreviations, casing, stray punctuation, dropped
accents), intents share vocabulary (``apple`` is a phone, a ticker and a pie; ``jaguar`` is a car, an
animal and a football team) and a small share of labels is swapped for a confusable intent. A fine-tuned
MiniLM should land around 88–95% test accuracy, not 100%; ``docs/demo-dataset.md`` has the measured
TF-IDF baseline and how to reproduce it.

Determinism: everything random comes from one ``random.Random(seed)``; the split a query belongs to comes
from sha256 of its normalized text; nothing depends on ``hash()``, set order, the clock or the platform, so
the same arguments give byte-identical files everywhere.

Regenerate::

    python -m tasks.demo_dataset --out data/demo
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CONFUSABLE_INTENTS",
    "DEMO_INTENTS",
    "INTENT_TRAFFIC_WEIGHTS",
    "SPLIT_NAMES",
    "dedupe_key",
    "generate_demo_dataset",
    "main",
]

SPLIT_NAMES = ("train", "eval", "test")

DEMO_INTENTS: tuple[str, ...] = (
    "product_search",
    "navigation",
    "weather",
    "local_business",
    "how_to",
    "definition",
    "news",
    "sports_scores",
    "flight_status",
    "recipe",
    "lyrics_music",
    "stock_quote",
    "translation",
    "unit_conversion",
)

INTENT_TRAFFIC_WEIGHTS: dict[str, float] = {
    # Relative share of traffic: shopping and "near me" dominate real search logs, conversions and flight
    # lookups are rarer. Largest / smallest = 1.6 / 0.6 < 3, a mild skew on purpose.
    "product_search": 1.6,
    "local_business": 1.45,
    "weather": 1.3,
    "how_to": 1.3,
    "navigation": 1.05,
    "news": 1.0,
    "definition": 0.95,
    "sports_scores": 0.9,
    "recipe": 0.9,
    "lyrics_music": 0.8,
    "translation": 0.7,
    "stock_quote": 0.7,
    "flight_status": 0.6,
    "unit_conversion": 0.6,
}

CONFUSABLE_INTENTS: dict[str, tuple[str, ...]] = {
    # Label noise swaps an intent for one of these (chosen uniformly), never for an arbitrary intent: real
    # annotation mistakes happen between intents a human could argue about for the same query.
    "product_search": ("local_business", "stock_quote", "how_to"),
    "navigation": ("local_business", "flight_status", "how_to"),
    "weather": ("news", "flight_status"),
    "local_business": ("navigation", "product_search", "recipe"),
    "how_to": ("definition", "recipe", "product_search"),
    "definition": ("translation", "how_to"),
    "news": ("sports_scores", "stock_quote", "weather"),
    "sports_scores": ("news",),
    "flight_status": ("navigation", "weather", "news"),
    "recipe": ("how_to", "local_business"),
    "lyrics_music": ("news", "definition"),
    "stock_quote": ("news", "product_search"),
    "translation": ("definition", "how_to"),
    "unit_conversion": ("how_to", "recipe", "stock_quote"),
}

# Shape of a query, drawn per row: terse 1–2 token queries, ordinary ones, and long conversational ones.
_SHORT_SHARE = 0.22
_LONG_SHARE = 0.08
_LONG_MIN_WORDS = 12
_LONG_MAX_WORDS = 20

# Surface noise rates, per query.
_TYPO_RATE = 0.12
_SECOND_TYPO_RATE = 0.15  # of the queries that got one typo
_ABBREVIATION_RATE = 0.35  # queries whose abbreviable phrases may be shortened
_ACCENT_DROP_RATE = 0.4  # of queries with accented letters (US keyboards)

# A query already in its split is kept again only this often: repeats exist in real logs but should be rare.
_REPEAT_KEEP_RATE = 0.1
# Consecutive rejected draws after which repeats are accepted, and after which generation gives up.
_RELAX_REPEATS_AFTER = 300
_GIVE_UP_AFTER = 50_000
# Every split gets at least this share of the hash space, so tiny splits still fill in reasonable time.
_MIN_SPLIT_SHARE = 0.1

# ----------------------------------------------------------------------------------------- vocabularies

# The tables below are packed by hand, several entries a line, so the vocabulary stays readable.
# fmt: off
_CITIES = (
    "new york", "los angeles", "chicago", "houston", "phoenix", "philadelphia", "san diego", "dallas",
    "austin", "seattle", "denver", "boston", "miami", "atlanta", "portland", "las vegas", "nashville",
    "detroit", "minneapolis", "san francisco", "washington dc", "orlando", "new orleans", "charlotte",
    "salt lake city", "kansas city", "london", "paris", "berlin", "madrid", "rome", "amsterdam", "dublin",
    "toronto", "vancouver", "montréal", "mexico city", "são paulo", "tokyo", "seoul", "sydney", "melbourne",
    "singapore", "dubai", "zürich", "münchen", "barcelona", "lisbon", "jacksonville", "buffalo",
)
_MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
)
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WHEN = (
    "today", "tomorrow", "tonight", "this weekend", "next week", "on saturday", "on sunday", "right now",
    "this morning", "this afternoon", "friday", "monday", "next 10 days", "", "", "",
)
# When people ask whether a place is open ("open next 10 days" is a forecast phrase, not a shop one).
_OPEN_WHEN = (
    "today", "tonight", "now", "tomorrow", "on sunday", "on christmas", "this weekend", "on thanksgiving",
    "late", "", "",
)
_RELATIVES = (
    "mom", "dad", "wife", "husband", "son", "daughter", "boyfriend", "girlfriend", "grandma", "boss",
)
_LANDMARKS = (
    "central park", "golden gate bridge", "eiffel tower", "times square", "the louvre", "disneyland",
    "yosemite", "grand canyon", "madison square garden", "wembley stadium", "fenway park", "union station",
    "penn station", "statue of liberty", "space needle", "navy pier", "hollywood sign", "big ben",
    "colosseum", "sagrada família", "brandenburg gate", "niagara falls", "mount rushmore",
    "pike place market",
)
_AIRPORTS = (
    "jfk", "lax", "sfo", "o'hare", "atl", "dfw", "denver airport", "sea-tac", "logan", "mia", "heathrow",
    "gatwick", "cdg", "schiphol", "frankfurt airport", "narita", "haneda", "pearson", "changi", "newark",
)
_HIGHWAYS = ("i-95", "i-5", "the 405", "i-10", "route 66", "m25", "i-35", "the bay bridge", "i-90", "the 101")

# (category, ((brand, product lines), ...)); "x vs y" compares within a category. Brand names double as
# company names for stock_quote and news on purpose.
_BRAND_CATEGORIES: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    ("tech", (
        ("apple", ("iphone 16 pro", "macbook air m3", "airpods pro 2", "ipad mini", "watch ultra 2")),
        ("samsung", ("galaxy s25", "galaxy buds 3", "65 inch qled tv", "odyssey monitor", "galaxy tab s10")),
        ("sony", ("wh-1000xm5", "ps5 pro", "a7 iv", "bravia 55")),
        ("bose", ("quietcomfort ultra", "soundlink")),
        ("garmin", ("forerunner 265", "fenix 8")),
        ("nintendo", ("switch 2", "mario kart world")),
        ("canon", ("eos r50", "pixma printer")),
    )),
    ("shoes and clothes", (
        ("nike", ("air force 1", "air max 90", "pegasus 41", "dunk low", "tech fleece")),
        ("adidas", ("samba og", "ultraboost", "gazelle", "stan smith")),
        ("hoka", ("clifton 9", "bondi 8")),
        ("the north face", ("nuptse jacket", "puffer jacket")),
        ("lululemon", ("align leggings", "belt bag")),
    )),
    ("cars", (
        ("jaguar", ("f-pace", "e-pace", "xf")),
        ("tesla", ("model y", "model 3", "cybertruck")),
        ("ford", ("f-150", "bronco", "mustang")),
    )),
    ("home and toys", (
        ("dyson", ("v15 vacuum", "airwrap", "supersonic hair dryer")),
        ("stanley", ("tumbler 40 oz", "quencher")),
        ("ninja", ("air fryer", "creami")),
        ("kitchenaid", ("stand mixer", "hand mixer")),
        ("samsung", ("bespoke fridge", "front load washer")),
        ("lego", ("millennium falcon", "botanical flowers", "technic bugatti")),
    )),
)
# What people add to pin down a product, per category ("size 9" for shoes, "256gb" for phones).
_VARIANTS = {
    "tech": ("256gb", "in black", "2025 model", "open box", "with case", "1tb"),
    "shoes and clothes": ("size 8", "size 9.5", "size 10", "size 11", "womens size 7", "in white", "xl"),
    "cars": ("2026", "lease", "used", "hybrid", "price 2026"),
    "home and toys": ("in black", "refill", "replacement parts", "bundle", "on sale"),
}
_GENERIC_PRODUCTS = (
    "running shoes", "standing desk", "gaming laptop", "air purifier", "robot vacuum", "mattress",
    "office chair", "winter boots", "espresso machine", "phone case", "car seat", "4k monitor",
    "mechanical keyboard", "electric toothbrush", "stroller", "rain jacket", "umbrella", "snow tires",
    "cast iron skillet", "acoustic guitar", "record player", "noise cancelling headphones", "kitchen scale",
    "meat thermometer", "carry on luggage", "travel pillow", "weather radio", "apple watch band",
)
_PRODUCT_MODIFIERS = (
    "best", "cheap", "buy", "price", "on sale", "deals", "review", "reviews", "for sale", "discount",
    "coupon", "used", "refurbished", "black friday", "2026", "free shipping", "amazon", "near me",
)
_PRICE_CAPS = ("under 100", "under $50", "under 200 dollars", "under 500", "for cheap", "under $1000")
_AUDIENCES = (
    "women", "men", "kids", "beginners", "students", "travel", "home use", "small apartments", "gifts",
)

# (company name, ticker); names overlap the brands above on purpose.
_COMPANIES = (
    ("apple", "AAPL"), ("microsoft", "MSFT"), ("nvidia", "NVDA"), ("tesla", "TSLA"), ("amazon", "AMZN"),
    ("google", "GOOGL"), ("meta", "META"), ("netflix", "NFLX"), ("nike", "NKE"), ("disney", "DIS"),
    ("ford", "F"), ("boeing", "BA"), ("coca cola", "KO"), ("starbucks", "SBUX"), ("walmart", "WMT"),
    ("costco", "COST"), ("target", "TGT"), ("intel", "INTC"), ("amd", "AMD"), ("palantir", "PLTR"),
    ("jpmorgan", "JPM"), ("sony", "SONY"), ("delta", "DAL"), ("uber", "UBER"), ("spotify", "SPOT"),
    ("oracle", "ORCL"), ("snowflake", "SNOW"), ("gamestop", "GME"), ("samsung", "005930"), ("visa", "V"),
)
_CURRENCY_PAIRS = (
    "usd to eur", "eur to usd", "gbp to usd", "usd to yen", "usd to mxn", "cad to usd", "btc to usd",
)
_MARKETS = ("s&p 500", "dow jones", "nasdaq", "ftse 100", "nikkei", "dax", "russell 2000")
_CRYPTO = ("bitcoin", "ethereum", "solana", "dogecoin", "btc", "eth")

# (leagues and events, ((team, home city), ...)): opponents come from the same group, so "lakers vs
# real madrid" never happens. Animal and weather team names (jaguars, thunder, hurricanes) collide with
# definition and weather on purpose.
_LEAGUE_TEAMS: tuple[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], ...] = (
    (("nba", "nba finals"), (
        ("lakers", "los angeles"), ("celtics", "boston"), ("warriors", "san francisco"),
        ("knicks", "new york"), ("bulls", "chicago"), ("heat", "miami"), ("nuggets", "denver"),
        ("thunder", "oklahoma city"), ("suns", "phoenix"), ("mavericks", "dallas"),
    )),
    (("nfl", "super bowl", "monday night football"), (
        ("chiefs", "kansas city"), ("eagles", "philadelphia"), ("cowboys", "dallas"),
        ("packers", "green bay"), ("49ers", "san francisco"), ("bills", "buffalo"), ("ravens", "baltimore"),
        ("lions", "detroit"), ("bears", "chicago"), ("jaguars", "jacksonville"), ("dolphins", "miami"),
        ("panthers", "charlotte"), ("falcons", "atlanta"),
    )),
    (("mlb", "world series"), (
        ("yankees", "new york"), ("dodgers", "los angeles"), ("red sox", "boston"), ("cubs", "chicago"),
        ("mets", "new york"), ("astros", "houston"), ("braves", "atlanta"), ("rangers", "dallas"),
    )),
    (("nhl", "stanley cup"), (
        ("bruins", "boston"), ("maple leafs", "toronto"), ("rangers", "new york"), ("lightning", "tampa"),
        ("hurricanes", "raleigh"), ("canadiens", "montréal"), ("oilers", "edmonton"),
    )),
    (("premier league", "champions league", "la liga", "mls", "world cup qualifiers"), (
        ("real madrid", "madrid"), ("barcelona", "barcelona"), ("man utd", "manchester"),
        ("arsenal", "london"), ("liverpool", "liverpool"), ("chelsea", "london"),
        ("bayern münchen", "münchen"), ("psg", "paris"), ("inter miami", "miami"), ("juventus", "turin"),
        ("atlético madrid", "madrid"),
    )),
)
_TEAMS = tuple(team for _, teams in _LEAGUE_TEAMS for team, _ in teams)
_OTHER_EVENTS = ("march madness", "ncaa football", "wimbledon", "f1", "ufc", "us open", "olympics")
_TRADE_LEAGUES = ("nba", "nfl", "mlb", "nhl", "mls")
_SPORTS_WHEN = ("today", "tonight", "last night", "yesterday", "this weekend", "sunday", "", "")

# (airline, IATA code); "delta" is also a ticker company and "BA" also Boeing's ticker.
_AIRLINES = (
    ("delta", "DL"), ("united", "UA"), ("american airlines", "AA"), ("southwest", "WN"), ("jetblue", "B6"),
    ("alaska airlines", "AS"), ("spirit", "NK"), ("frontier", "F9"), ("lufthansa", "LH"),
    ("british airways", "BA"), ("air france", "AF"), ("klm", "KL"), ("emirates", "EK"), ("ryanair", "FR"),
    ("air canada", "AC"), ("qantas", "QF"), ("turkish airlines", "TK"), ("aeroméxico", "AM"),
    ("iberia", "IB"),
)
_CLOCK_TIMES = ("6am", "7:30", "9:15 am", "noon", "2pm", "4:45 pm", "6:10", "8pm", "10:30 pm", "midnight")

_BUSINESS_TYPES = (
    "pizza", "sushi", "tacos", "coffee shop", "gas station", "pharmacy", "urgent care", "dentist", "vet",
    "barber", "nail salon", "car wash", "gym", "dry cleaner", "hardware store", "grocery store", "mechanic",
    "tire shop", "locksmith", "plumber", "hotel", "brunch", "bakery", "bar", "liquor store", "post office",
    "bank", "atm", "laundromat", "pet store", "florist", "library", "dmv", "car rental", "thrift store",
    "pho", "ramen", "bbq", "ice cream", "farmers market",
)
_CHAINS = (
    "starbucks", "walmart", "target", "costco", "home depot", "mcdonald's", "chipotle", "cvs", "walgreens",
    "whole foods", "trader joe's", "ikea", "best buy", "apple store", "nike outlet", "tesla showroom",
    "in-n-out", "chick-fil-a", "dunkin", "ups store", "kroger", "lowe's", "sephora", "delta sky club",
)
_CUISINES = (
    "thai", "mexican", "italian", "indian", "chinese", "japanese", "korean bbq", "vietnamese", "greek",
    "ethiopian", "vegan", "french", "peruvian", "middle eastern", "soul food",
)

_TASKS = (
    "tie a tie", "change a flat tire", "screenshot on mac", "reset iphone", "factory reset samsung tv",
    "unclog a drain", "fold a fitted sheet", "get rid of fruit flies", "remove a stripped screw",
    "clean a cast iron pan", "jump start a car", "write a cover letter", "lower blood pressure",
    "fix a leaky faucet", "install a ceiling fan", "change apple id password", "delete instagram account",
    "recover deleted photos", "clear cache on chrome", "boil eggs", "cook rice", "plant tomatoes",
    "learn spanish fast", "convert pdf to word", "screen record on windows", "check tire pressure",
    "get a passport", "file taxes online", "renew drivers license", "reset router", "meditate",
    "train a puppy", "play guitar", "read sheet music", "draw a cat", "whistle", "unfreeze a pipe",
    "get a refund from ryanair", "pair airpods", "update ps5",
)
_TOOLS = ("a drill", "a jack", "a plunger", "a computer", "an app", "a credit card", "a ladder", "wifi")
_GADGET_PROBLEMS = (
    "won't turn on", "not charging", "keeps restarting", "overheating", "frozen", "battery draining fast",
    "won't connect to bluetooth", "not connecting to wifi",
)
_SCREEN_PROBLEMS = (
    "won't turn on", "no sound", "screen flickering", "not connecting to wifi", "keeps restarting",
)
_APPLIANCE_PROBLEMS = ("won't start", "leaking", "making a weird noise", "not draining", "smells bad")
# Device -> the problems people report for it, so "fridge not charging" never appears.
_DEVICE_PROBLEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("iphone", _GADGET_PROBLEMS), ("android phone", _GADGET_PROBLEMS), ("macbook", _GADGET_PROBLEMS),
    ("windows laptop", _GADGET_PROBLEMS), ("ps5", _GADGET_PROBLEMS), ("xbox", _GADGET_PROBLEMS),
    ("airpods", _GADGET_PROBLEMS), ("apple watch", _GADGET_PROBLEMS), ("kindle", _GADGET_PROBLEMS),
    ("samsung tv", _SCREEN_PROBLEMS),
    ("printer", ("offline", "not printing", "paper jam", "won't connect to wifi")),
    ("router", ("keeps disconnecting", "slow", "blinking orange", "no internet")),
    ("car", ("won't start", "making a weird noise", "check engine light", "battery dead")),
    ("dishwasher", _APPLIANCE_PROBLEMS), ("washing machine", _APPLIANCE_PROBLEMS),
    ("fridge", ("not cooling", "leaking", "making a weird noise", "ice maker not working")),
)
_APPS = ("instagram", "whatsapp", "chatgpt", "spotify", "netflix", "gmail", "outlook", "snapchat", "tiktok")

_WORDS = (
    "ubiquitous", "serendipity", "ephemeral", "juxtaposition", "benevolent", "pragmatic", "nostalgia",
    "empathy", "paradigm", "irony", "hubris", "quintessential", "schadenfreude", "déjà vu", "naïve", "hygge",
    "rizz", "gaslighting", "mitochondria", "photosynthesis", "inflation", "recession", "ebitda",
    "dividend", "algorithm", "blockchain", "cookie", "python", "java", "mercury", "jaguar", "phoenix",
    "stock", "bond", "hurricane", "el niño", "dew point", "jet lag", "layover", "umami", "sous vide",
    "al dente", "roux", "nautical mile", "light year", "hectare", "knot", "fathom", "offside", "hat trick",
    "encore", "ballad", "etymology", "ad hoc", "status quo", "carpe diem", "bon appétit", "faux pas",
    "target", "oracle", "delta", "thunder", "espresso",
)
# Pairs people actually confuse, for "x vs y" and "difference between x and y".
_WORD_PAIRS = (
    ("affect", "effect"), ("empathy", "sympathy"), ("weather", "whether"), ("stock", "bond"),
    ("irony", "coincidence"), ("latitude", "longitude"), ("hurricane", "typhoon"),
    ("recession", "depression"), ("jaguar", "leopard"), ("espresso", "coffee"), ("hectare", "acre"),
    ("ensure", "insure"), ("principle", "principal"), ("envy", "jealousy"),
    ("baking soda", "baking powder"), ("weird", "wierd"),
)
_ANIMALS = (
    "jaguar", "panther", "falcon", "dolphin", "raven", "phoenix", "puma", "mustang", "cardinal", "bronco",
)
_ACRONYMS = (
    "lol", "fomo", "asap", "diy", "etf", "gdp", "nasa", "scuba", "eta", "tbh", "ngl", "rsvp", "pst", "mpg",
    "bpm", "ootd", "irl", "smh", "ipo", "ufc",
)
_NEWS_TOPICS = (
    "election results", "inflation report", "interest rates", "tariffs", "ai regulation", "climate summit",
    "supreme court ruling", "housing market", "student loans", "minimum wage", "heat wave", "wildfire",
    "flooding", "earthquake", "measles outbreak", "mars mission", "nasa launch", "world cup draw", "oscars",
    "grammys", "met gala", "super bowl halftime show", "gas prices", "government shutdown", "jobs report",
    "bird flu", "solar eclipse", "northern lights", "tornado warning", "oil prices",
)
_CITY_EVENTS = ("protest", "power outage", "fire", "water main break", "marathon", "parade", "strike", "news")
# Weather events that are also news stories; both intents produce them.
_HAZARDS = (
    "heat wave", "tornado warning", "flood watch", "wildfire smoke", "northern lights", "winter storm",
    "air quality alert", "hail", "solar eclipse",
)
_STORM_NAMES = ("ana", "bill", "claudette", "danny", "elsa", "fred", "grace", "henri", "ida", "larry")

# (song, artist); titles collide with other intents on purpose ("hello", "umbrella", "paris", "espresso").
_SONGS = (
    ("anti-hero", "taylor swift"), ("cruel summer", "taylor swift"), ("yellow", "coldplay"),
    ("viva la vida", "coldplay"), ("blinding lights", "the weeknd"), ("hello", "adele"),
    ("someone like you", "adele"), ("shape of you", "ed sheeran"), ("perfect", "ed sheeran"),
    ("bad guy", "billie eilish"), ("birds of a feather", "billie eilish"), ("bohemian rhapsody", "queen"),
    ("imagine", "john lennon"), ("hotel california", "eagles"), ("yesterday", "the beatles"),
    ("despacito", "luis fonsi"), ("tití me preguntó", "bad bunny"), ("halo", "beyoncé"),
    ("crazy in love", "beyoncé"), ("enter sandman", "metallica"), ("dynamite", "bts"),
    ("despechá", "rosalía"), ("god's plan", "drake"), ("espresso", "sabrina carpenter"),
    ("flowers", "miley cyrus"), ("levitating", "dua lipa"), ("apple", "charli xcx"),
    ("paris", "the chainsmokers"), ("hurricane", "kanye west"), ("thunder", "imagine dragons"),
    ("umbrella", "rihanna"), ("fly me to the moon", "frank sinatra"), ("september", "earth wind & fire"),
    ("jolene", "dolly parton"), ("wonderwall", "oasis"), ("mr. brightside", "the killers"),
    ("africa", "toto"), ("la vie en rose", "édith piaf"), ("rain on me", "lady gaga"),
)
_LYRIC_FRAGMENTS = (
    "i got my mind set on you", "we were dancing in the kitchen", "take me home tonight",
    "under the summer rain", "you are my sunshine again", "hold me closer tiny dancer",
    "nananana hey hey", "drive all night to see you", "is this the real life",
)

_PHRASES = (
    "hello", "thank you", "good morning", "i love you", "where is the bathroom", "happy birthday",
    "cheers", "how are you", "excuse me", "good night", "beautiful", "see you later", "the check please",
    "merry christmas", "i'm sorry", "congratulations", "welcome", "nice to meet you", "dog", "water",
    "apple", "weather", "friend", "airport", "how much does it cost",
)
_LANGUAGES = (
    "spanish", "french", "german", "italian", "japanese", "portuguese", "korean", "chinese", "arabic",
    "hindi", "russian", "dutch", "tagalog", "greek", "sign language",
)
_FOREIGN_PHRASES = (
    "gracias", "danke schön", "merci beaucoup", "obrigado", "arigatou", "buenos días", "bonjour",
    "je ne sais quoi", "ciao", "por favor", "te quiero", "mañana", "schadenfreude", "kawaii", "habibi",
    "namaste", "salud", "prost", "sayonara", "hasta luego", "qué pasa", "bon appétit", "c'est la vie",
    "carpe diem", "dolce vita", "wie geht's", "saudade",
)

_DISHES = (
    "apple pie", "apple crisp", "banana bread", "chicken tikka masala", "lasagna", "pad thai", "guacamole",
    "pancakes", "chocolate chip cookies", "crème brûlée", "jalapeño poppers", "beef stew", "ramen",
    "shakshuka", "paella", "tacos al pastor", "mac and cheese", "sourdough bread", "chili", "pho",
    "fried rice", "tiramisu", "brownies", "pumpkin pie", "french toast", "caesar salad", "margarita",
    "pizza dough", "sushi rice", "pierogi", "gnocchi", "jambalaya", "birria tacos", "chicken noodle soup",
    "overnight oats", "espresso martini", "pizza", "sushi", "tacos", "bbq ribs",
)
# Dishes people also look for in restaurants ("best ramen in seattle"); shared with local_business.
_RESTAURANT_DISHES = (
    "pizza", "sushi", "tacos", "ramen", "pho", "pad thai", "bbq ribs", "birria tacos", "chicken tikka masala",
    "paella", "mac and cheese", "tiramisu", "french toast", "crème brûlée", "espresso martini", "pancakes",
)
_INGREDIENTS = (
    "chicken breast", "ground beef", "salmon", "tofu", "apples", "zucchini", "sweet potato", "eggs", "rice",
    "chickpeas", "spinach", "mushrooms", "shrimp", "quinoa", "leftover turkey", "bananas", "pork chops",
)
_DIETS = ("vegan", "keto", "gluten free", "low carb", "dairy free", "healthy", "high protein", "vegetarian")
_APPLIANCES = ("air fryer", "instant pot", "slow cooker", "crock pot", "oven", "grill", "cast iron")

# (from unit, to unit, from unit singular) for conversion queries.
_UNIT_PAIRS = (
    ("miles", "km", "mile"), ("km", "miles", "km"), ("pounds", "kg", "pound"), ("lbs", "kg", "lb"),
    ("kg", "lbs", "kg"), ("inches", "cm", "inch"), ("cm", "inches", "cm"), ("feet", "meters", "foot"),
    ("meters", "feet", "meter"), ("fahrenheit", "celsius", "degree"), ("f", "c", "degree f"),
    ("c", "f", "degree c"), ("celsius", "fahrenheit", "degree"), ("cups", "ml", "cup"),
    ("tablespoons", "teaspoons", "tablespoon"), ("ounces", "grams", "ounce"), ("oz", "ml", "oz"),
    ("liters", "gallons", "liter"), ("gallons", "liters", "gallon"), ("mph", "km/h", "mph"),
    ("acres", "square feet", "acre"), ("gb", "mb", "gb"), ("hp", "kw", "hp"), ("usd", "eur", "dollar"),
    ("eur", "usd", "euro"), ("gbp", "usd", "pound"), ("dollars", "pesos", "dollar"), ("usd", "yen", "dollar"),
    ("btc", "usd", "bitcoin"), ("nautical miles", "km", "nautical mile"), ("stone", "lbs", "stone"),
    ("mm", "inches", "mm"), ("quarts", "liters", "quart"), ("yards", "meters", "yard"),
    ("grams", "cups", "gram"),
)
_BAKING_INGREDIENTS = ("flour", "sugar", "butter", "rice", "oats", "milk", "honey", "cocoa powder")
_TIME_ZONES = ("pst", "est", "cst", "mst", "gmt", "cet", "ist", "jst", "bst", "utc")

# Filler that real users wrap around long queries; shared by every intent so it carries no label signal.
_OPENERS = (
    "hey google", "ok so", "can you tell me", "i need to know", "quick question", "please", "siri",
    "can someone tell me", "i was wondering", "help",
)
_CLOSERS = ("asap", "please", "thanks", "right now", "reddit", "2026", "on my phone", "thank you so much")

# fmt: on

# -------------------------------------------------------------------------------------- slot drawing

Slots = dict[str, str]


def _two(rng: random.Random, pool: Sequence[str]) -> tuple[str, str]:
    """Two different values from a pool (``a to b`` queries with a == b do not happen)."""
    first, second = rng.sample(pool, 2)
    return first, second


def _number(rng: random.Random) -> str:
    """A quantity as people type it: mostly small integers, sometimes decimals or fractions."""
    kind = rng.random()
    if kind < 0.6:
        return str(rng.choice((1, 2, 3, 5, 10, 12, 20, 25, 30, 50, 100, 150, 200, 500, 1000)))
    if kind < 0.85:
        return str(rng.randint(1, 400))
    if kind < 0.95:
        return f"{rng.randint(0, 20)}.{rng.choice((5, 25, 75, 2))}"
    return rng.choice(("1/2", "3/4", "1/3", "1 1/2", "2/3"))


def _brand_items(rng: random.Random) -> tuple[str, str, str, str, str]:
    """A category, a brand and product in it, and a rival product from the same category."""
    category, brands = rng.choice(_BRAND_CATEGORIES)
    (brand, items), (brand2, items2) = rng.sample(brands, 2)
    return category, brand, rng.choice(items), brand2, rng.choice(items2)


def _team_match(rng: random.Random) -> tuple[str, str, str, str]:
    """(team, its home city, an opponent from the same league, a league or event name)."""
    leagues, teams = rng.choice(_LEAGUE_TEAMS)
    (team, home), (team2, _) = rng.sample(teams, 2)
    league = rng.choice(leagues) if rng.random() < 0.8 else rng.choice(_OTHER_EVENTS)
    return team, home, team2, league


def _ticker(rng: random.Random, ticker: str) -> str:
    # Tickers are typed in capitals about half the time, sometimes as a $cashtag.
    roll = rng.random()
    if roll < 0.05:
        return "$" + ticker
    return ticker if roll < 0.5 else ticker.lower()


def _slots_product(rng: random.Random) -> Slots:
    category, brand, item, brand2, item2 = _brand_items(rng)
    city, city2 = _two(rng, _CITIES)
    return {
        "brand": brand,
        "item": item,
        "brand2": brand2,
        "item2": item2,
        "generic": rng.choice(_GENERIC_PRODUCTS),
        "modifier": rng.choice(_PRODUCT_MODIFIERS),
        "price": rng.choice(_PRICE_CAPS),
        "audience": rng.choice(_AUDIENCES),
        "variant": rng.choice(_VARIANTS[category]),
        "relative": rng.choice(_RELATIVES),
        "city": city,
        "city2": city2,
        "team": rng.choice(_TEAMS),
        "artist": rng.choice(_SONGS)[1],
        "chain": rng.choice(_CHAINS),
    }


def _slots_navigation(rng: random.Random) -> Slots:
    city, city2 = _two(rng, _CITIES)
    landmark, landmark2 = _two(rng, _LANDMARKS)
    places = (
        landmark,
        f"{rng.choice(_AIRPORTS)} airport",
        "home",
        "work",
        f"the nearest {rng.choice(_CHAINS)}",
        f"downtown {city}",
        rng.choice(_CHAINS),
        city2,
    )
    place, place2 = _two(rng, places)
    return {
        "city": city,
        "city2": city2,
        "landmark": landmark,
        "landmark2": landmark2,
        "place": place,
        "place2": place2,
        "airport": rng.choice(_AIRPORTS),
        "highway": rng.choice(_HIGHWAYS),
        "when": rng.choice(_WHEN),
        "terminal": str(rng.randint(1, 8)),
        "chain": rng.choice(_CHAINS),
        "station": rng.choice(("subway station", "train station", "bus stop", "metro station")),
    }


def _slots_weather(rng: random.Random) -> Slots:
    team, home, _, _ = _team_match(rng)
    return {
        "city": rng.choice(_CITIES),
        "when": rng.choice(_WHEN),
        "month": rng.choice(_MONTHS),
        "storm": f"hurricane {rng.choice(_STORM_NAMES)}",
        "hazard": rng.choice(_HAZARDS),
        "airport": rng.choice(_AIRPORTS),
        "team": team,
        "home": home,
        "condition": rng.choice(("sunny", "windy", "foggy", "snowing", "raining", "humid", "cold", "hot")),
        "activity": rng.choice(
            ("a picnic", "a beach day", "a hike", "an outdoor wedding", "a bbq", "a road trip", "a concert")
        ),
    }


def _slots_local(rng: random.Random) -> Slots:
    return {
        "type": rng.choice(_BUSINESS_TYPES),
        "chain": rng.choice(_CHAINS),
        "city": rng.choice(_CITIES),
        "landmark": rng.choice(_LANDMARKS),
        "when": rng.choice(_OPEN_WHEN),
        "day": rng.choice(_DAYS),
        "cuisine": rng.choice(_CUISINES),
        "n": str(rng.randint(2, 12)),
        "dish": rng.choice(_RESTAURANT_DISHES),
        "device": rng.choice(_DEVICE_PROBLEMS)[0],
    }


def _slots_how_to(rng: random.Random) -> Slots:
    units = rng.choice(_UNIT_PAIRS)
    device, problems = rng.choice(_DEVICE_PROBLEMS)
    return {
        "task": rng.choice(_TASKS),
        "generic": rng.choice(_GENERIC_PRODUCTS),
        "tool": rng.choice(_TOOLS),
        "device": device,
        "problem": rng.choice(problems),
        "app": rng.choice(_APPS),
        "landmark": rng.choice(_LANDMARKS),
        "dish": rng.choice(_DISHES),
        "u1": units[0],
        "u2": units[1],
        "company": rng.choice(_COMPANIES)[0],
        "word": rng.choice(_WORDS),
        "airline": rng.choice(_AIRLINES)[0],
        "action": rng.choice(("turn it on", "plug it in", "update it", "use it", "restart it")),
    }


def _slots_definition(rng: random.Random) -> Slots:
    pair = rng.choice(_WORD_PAIRS)
    return {
        "word": rng.choice(_WORDS),
        "pair": pair[0],
        "pair2": pair[1],
        "animal": rng.choice(_ANIMALS),
        "acronym": rng.choice(_ACRONYMS),
        "foreign": rng.choice(_FOREIGN_PHRASES),
        "age": str(rng.choice((5, 8, 10, 12))),
    }


def _slots_news(rng: random.Random) -> Slots:
    return {
        "topic": rng.choice(_NEWS_TOPICS + _HAZARDS),
        "company": rng.choice(_COMPANIES)[0],
        "team": rng.choice(_TEAMS),
        "league": rng.choice(_TRADE_LEAGUES),
        "artist": rng.choice(_SONGS)[1],
        "city": rng.choice(_CITIES),
        "event": rng.choice(_CITY_EVENTS),
        "app": rng.choice(_APPS),
        "airline": rng.choice(_AIRLINES)[0],
        "storm": f"hurricane {rng.choice(_STORM_NAMES)}",
        "when": rng.choice(_WHEN),
        "year": rng.choice(("2025", "2026")),
    }


def _slots_sports(rng: random.Random) -> Slots:
    team, home, team2, league = _team_match(rng)
    return {
        "team": team,
        "team2": team2,
        "league": league,
        "when": rng.choice(_SPORTS_WHEN),
        "home": home,
    }


def _slots_flight(rng: random.Random) -> Slots:
    airline, code = rng.choice(_AIRLINES)
    city, city2 = _two(rng, _CITIES)
    number = str(rng.choice((rng.randint(1, 99), rng.randint(100, 999), rng.randint(1000, 2999))))
    return {
        "airline": airline,
        "code": code if rng.random() < 0.5 else code.lower(),
        "num": number,
        "airport": rng.choice(_AIRPORTS),
        "city": city,
        "city2": city2,
        "when": rng.choice(_WHEN),
        "time": rng.choice(_CLOCK_TIMES),
        "relative": rng.choice(_RELATIVES),
    }


def _slots_recipe(rng: random.Random) -> Slots:
    ingredient, ingredient2 = _two(rng, _INGREDIENTS)
    return {
        "dish": rng.choice(_DISHES),
        "ingredient": ingredient,
        "ingredient2": ingredient2,
        "diet": rng.choice(_DIETS),
        "appliance": rng.choice(_APPLIANCES),
        "n": str(rng.randint(2, 12)),
        "cuisine": rng.choice(_CUISINES),
    }


def _slots_lyrics(rng: random.Random) -> Slots:
    song, artist = rng.choice(_SONGS)
    return {
        "song": song,
        "artist": artist,
        "city": rng.choice(_CITIES),
        "fragment": rng.choice(_LYRIC_FRAGMENTS),
        "year": rng.choice(("2025", "2026")),
    }


def _slots_stock(rng: random.Random) -> Slots:
    (name, ticker), (_, ticker2) = rng.sample(_COMPANIES, 2)
    return {
        "name": name,
        "ticker": _ticker(rng, ticker),
        "ticker2": _ticker(rng, ticker2),
        "market": rng.choice(_MARKETS),
        "crypto": rng.choice(_CRYPTO),
        "currency": rng.choice(_CURRENCY_PAIRS),
        "n": str(rng.choice((1, 10, 100, 500, 1000))),
        "when": rng.choice(("today", "this week", "right now", "2026", "after hours", "")),
    }


def _slots_translation(rng: random.Random) -> Slots:
    return {
        "phrase": rng.choice(_PHRASES),
        "lang": rng.choice(_LANGUAGES),
        "foreign": rng.choice(_FOREIGN_PHRASES),
        "song": rng.choice(_SONGS)[0],
    }


def _slots_units(rng: random.Random) -> Slots:
    u1, u2, u1_singular = rng.choice(_UNIT_PAIRS)
    tz1, tz2 = _two(rng, _TIME_ZONES)
    number = _number(rng)
    return {
        "n": number,
        # "5km" and "12oz" are typed glued together, "5nautical miles" is not.
        "n_u1": f"{number}{u1}" if len(u1) <= 3 and number.isdigit() else f"{number} {u1}",
        "u1": u1,
        "u2": u2,
        "u1s": u1_singular,
        "ingredient": rng.choice(_BAKING_INGREDIENTS),
        "clock": rng.choice(_CLOCK_TIMES),
        "tz1": tz1,
        "tz2": tz2,
        "city": rng.choice(_CITIES),
        "currency": rng.choice(_CURRENCY_PAIRS),
    }


# ----------------------------------------------------------------------------------------- templates

Weighted = tuple[tuple[float, str], ...]


@dataclass(frozen=True)
class _IntentSpec:
    slots: Callable[[random.Random], Slots]
    short: Weighted
    """Terse 1–2 token queries; the ones built from shared entity pools are where intents collide."""
    medium: Weighted
    """Ordinary queries, with the word-order variants users actually type listed as separate templates."""
    long: tuple[str, ...]
    """Conversational queries; padded with shared filler to 12–20 words."""


# fmt: off
_SPECS: dict[str, _IntentSpec] = {
    "product_search": _IntentSpec(
        slots=_slots_product,
        short=(
            (3, "{brand}"), (2, "{item}"), (2, "{generic}"), (1, "{brand} {item}"), (0.5, "{team} tickets"),
        ),
        medium=(
            (3, "{brand} {item}"), (2, "{brand} {item} {modifier}"), (2, "{modifier} {brand} {item}"),
            (2, "{modifier} {generic}"), (2, "{generic} {modifier}"), (1.5, "best {generic} {price}"),
            (1.5, "best {generic} for {audience}"), (1, "{generic} for {audience} {price}"),
            (1, "{brand} {item} vs {brand2} {item2}"), (0.7, "{brand} {item} {variant}"),
            (0.7, "where to buy {brand} {item}"), (0.5, "{brand} {item} in stock"),
            (0.6, "{brand} {item} near me"), (0.6, "is the {brand} {item} worth it"),
            (0.8, "{brand} {item} review"), (0.5, "{team} tickets"), (0.5, "{artist} tickets {city}"),
            (0.5, "cheap flights to {city}"), (0.4, "{city} to {city2} flights"),
            (0.4, "cheap hotels in {city}"), (0.6, "{brand} {generic}"),
            (0.5, "{brand} {item} black friday deal"), (0.4, "{generic} at {chain}"), (0.5, "{brand} sale"),
            (0.3, "{brand} {item} how much"), (0.3, "{brand} today"), (0.4, "{generic} buying guide"),
            (0.4, "{brand} price"),
        ),
        long=(
            "looking for a {generic} for my {relative} that is {price} and has good reviews",
            "what is the best {generic} i can buy {price} for {audience} this year",
            "i need a new {generic} before my trip to {city} next week what do you recommend",
            "is the {brand} {item} worth buying right now or should i wait for black friday",
            "{brand} {item} or {brand2} {item2} which one is better for the money",
        ),
    ),
    "navigation": _IntentSpec(
        slots=_slots_navigation,
        short=((2, "{landmark}"), (1, "directions home"), (1, "maps"), (1, "{city} map"), (0.8, "{city}")),
        medium=(
            (3, "directions to {place}"), (1.5, "{place} directions"), (1, "driving directions to {place}"),
            (1, "how to get to {place}"), (1, "how do i get to {place} from {place2}"),
            (1.5, "{city} to {city2}"), (1, "{city} to {city2} drive"), (1, "drive from {city} to {city2}"),
            (0.8, "how long is the drive from {city} to {city2}"), (1, "distance from {city} to {city2}"),
            (1, "how far is {city} from {city2}"), (0.7, "how far is {place}"), (0.8, "route to {place}"),
            (0.8, "{place} map"), (0.6, "map of {city}"), (0.8, "{landmark} address"),
            (0.8, "where is {landmark}"), (0.6, "take me to {place}"), (0.6, "navigate to {place}"),
            (0.8, "{highway} traffic"), (0.6, "traffic on {highway} {when}"),
            (0.8, "train from {city} to {city2}"), (0.5, "bus to {place}"), (0.5, "{landmark} parking"),
            (0.5, "walking directions to {landmark}"), (0.5, "{airport} terminal {terminal} map"),
            (0.5, "closest {station} to {landmark}"), (0.8, "{place} to {place2}"),
            (0.4, "{chain} {city} address"), (0.3, "{landmark} {when}"), (0.5, "nearest {chain}"),
        ),
        long=(
            "what is the fastest way to get from {place} to {place2} {when} without taking {highway}",
            "how long would it take to walk from {landmark} to {landmark2} with two small kids",
            "i need directions from {airport} airport to my hotel near {landmark} and i do not have a car",
            "is it faster to take the train or drive from {city} to {city2} {when}",
        ),
    ),
    "weather": _IntentSpec(
        slots=_slots_weather,
        short=(
            (3, "weather"), (1, "radar"), (1, "forecast"), (2, "{city} weather"), (1, "weather {city}"),
            (1, "{city}"), (0.6, "rain {when}"), (0.4, "{storm}"),
        ),
        medium=(
            (3, "weather {city}"), (3, "{city} weather"), (2, "weather in {city}"),
            (2, "weather {city} {when}"), (2, "{city} weather {when}"), (1, "{when} {city} weather"),
            (1, "weather {when} {city}"), (1, "{city} {when} weather"), (1.5, "weather {when}"),
            (1, "{city} forecast"), (1, "forecast {city} {when}"), (1, "{city} 10 day forecast"),
            (0.6, "hourly weather {city}"), (1.5, "will it rain in {city} {when}"),
            (1, "will it rain {when}"), (1, "is it going to rain {when}"),
            (1, "is it going to snow in {city} {when}"), (0.7, "does it snow in {city} in {month}"),
            (1, "temperature in {city}"), (1, "{city} temperature {when}"), (0.6, "how hot is it in {city}"),
            (0.6, "how cold is {city} in {month}"), (0.5, "{city} humidity"), (0.5, "{city} radar"),
            (0.5, "uv index {city}"), (0.5, "{city} air quality"), (0.4, "pollen count {city}"),
            (0.8, "{city} weather in {month}"), (0.4, "what to wear in {city} {when}"),
            (0.5, "should i bring an umbrella {when}"), (0.5, "{storm} path"), (0.4, "{storm} {city}"),
            (0.7, "{city} {when}"), (0.6, "is it {condition} in {city}"), (0.4, "{city} snow totals"),
            (0.3, "{team} game weather"), (0.3, "sunset time {city}"), (0.6, "{hazard} {city}"),
            (0.5, "{hazard} {when}"), (0.4, "{airport} weather"), (0.3, "{city} {hazard} {when}"),
        ),
        long=(
            "what is the weather going to be like in {city} {when} because we are planning {activity}",
            "do i need a jacket in {city} {when} or is it going to be warm enough for shorts",
            "is it going to rain during the {team} game in {home} {when}",
            "how much snow is {city} expected to get {when} and will the roads be bad",
        ),
    ),
    "local_business": _IntentSpec(
        slots=_slots_local,
        short=((3, "{type}"), (2, "{chain}"), (1, "{cuisine} food"), (0.8, "{city}")),
        medium=(
            (4, "{type} near me"), (1, "{type} nearby"), (1.5, "{type} in {city}"), (1, "{type} {city}"),
            (0.8, "{city} {type}"), (1.5, "best {type} in {city}"), (1, "best {cuisine} food near me"),
            (1, "{cuisine} restaurant {city}"), (0.7, "{cuisine} restaurants near {landmark}"),
            (1.5, "{chain} near me"), (1.5, "{chain} hours"), (0.7, "{chain} hours {when}"),
            (1, "is {chain} open {when}"), (0.8, "{chain} open now"), (0.8, "{type} open now"),
            (0.6, "{type} open {when}"), (0.8, "{chain} {city}"), (0.6, "{chain} phone number"),
            (0.5, "{chain} closing time"), (0.6, "24 hour {type}"), (0.6, "cheap {type} near me"),
            (0.6, "{type} near {landmark}"), (0.5, "{type} reviews {city}"), (0.4, "hotel near {landmark}"),
            (0.4, "{chain} pharmacy hours"), (0.4, "{chain} {city} address"), (0.4, "{type} open on {day}"),
            (0.3, "{cuisine} {type}"), (0.4, "{chain} {when}"), (0.4, "{chain} near {landmark}"),
            (0.6, "best {dish} in {city}"), (0.4, "{dish} {city}"), (0.4, "{dish} delivery"), (0.4, "{dish}"),
            (0.5, "{device} repair near me"), (0.3, "{device} repair"),
        ),
        long=(
            "where can i find a good {cuisine} restaurant near {landmark} that is still open {when}",
            "is there a {type} near me that is open on {day} and takes walk ins",
            "looking for a cheap {cuisine} restaurant in {city} for {n} people {when}",
            "what time does the {chain} on main street close {when} i need to pick something up",
        ),
    ),
    "how_to": _IntentSpec(
        slots=_slots_how_to,
        short=((4, "{task}"), (1, "{device} {problem}"), (0.5, "{app} help")),
        medium=(
            (4, "how to {task}"), (2, "how do i {task}"), (1, "how do you {task}"), (1, "how can i {task}"),
            (1, "{task} tutorial"), (1, "{task} step by step"), (0.7, "easiest way to {task}"),
            (0.7, "best way to {task}"), (0.7, "{task} for beginners"), (0.5, "{task} video"),
            (0.4, "{task} guide"), (0.5, "can i {task} without {tool}"), (1.5, "{device} {problem}"),
            (1, "{device} {problem} fix"), (1, "how to fix {device} {problem}"),
            (1, "why is my {device} {problem}"), (0.7, "{app} not working"),
            (0.3, "how to get to {landmark}"), (0.4, "how to make {dish}"),
            (0.3, "how to convert {u1} to {u2}"), (0.3, "how to buy {company} stock"),
            (0.3, "how to pronounce {word}"), (0.2, "how to check {airline} flight status"),
            (0.5, "{task} reddit"), (0.4, "{device} repair"), (0.3, "{device} {problem} repair"),
            (0.4, "how to choose a {generic}"), (0.3, "how to clean {generic}"),
        ),
        long=(
            "how do i {task} if i don't have {tool} and the store is already closed",
            "my {device} {problem} every time i {action} how do i fix it or do i need a new one",
            "step by step instructions to {task} for someone who has never done it before",
            "what is the easiest way to {task} without paying someone to do it",
        ),
    ),
    "definition": _IntentSpec(
        slots=_slots_definition,
        short=(
            (3, "{word}"), (1.5, "define {word}"), (1.5, "{word} meaning"), (1, "{animal}"),
            (0.5, "{acronym}"), (1, "{foreign}"),
        ),
        medium=(
            (2, "define {word}"), (2, "{word} definition"), (2, "{word} meaning"), (1.5, "meaning of {word}"),
            (2, "what does {word} mean"), (1, "what is {word}"), (1, "what is a {animal}"),
            (1, "{word} synonym"), (0.7, "synonyms for {word}"), (0.5, "{word} antonym"),
            (0.5, "{word} pronunciation"), (0.5, "how to pronounce {word}"), (0.5, "{word} in a sentence"),
            (0.4, "{word} origin"), (0.4, "{pair} vs {pair2}"),
            (0.4, "difference between {pair} and {pair2}"), (0.3, "{word} slang"), (0.3, "is {word} a word"),
            (0.3, "{word} dictionary"), (0.5, "{acronym} stands for"), (0.7, "what does {acronym} stand for"),
            (0.4, "{word} meaning in english"), (0.5, "{animal} facts"), (0.4, "{animal} animal"),
            (0.3, "{acronym} meaning text"), (0.4, "what does {foreign} mean"), (0.4, "{foreign} meaning"),
            (0.3, "{foreign} definition"),
        ),
        long=(
            "what does {word} mean when someone uses it in a text message i keep seeing it",
            "can someone explain what {word} means in simple words for a {age} year old",
            "what is the difference between {pair} and {pair2} i always mix them up",
            "my teacher used the word {word} today and i have no idea what it means",
        ),
    ),
    "news": _IntentSpec(
        slots=_slots_news,
        short=(
            (2, "news"), (2, "{company}"), (1.5, "{artist}"), (1.5, "{team}"), (1.5, "{topic}"),
            (0.5, "{storm}"),
        ),
        medium=(
            (2, "{topic} news"), (1, "news {topic}"), (1, "latest {topic} news"), (0.7, "{topic} update"),
            (1, "{topic} {when}"), (0.5, "{topic} {year}"), (0.5, "what happened with {topic}"),
            (1, "{company} news"), (0.7, "{company} layoffs"), (0.4, "{company} lawsuit"),
            (0.4, "{company} ceo"), (0.5, "{company} earnings"), (0.4, "{company} recall"),
            (0.4, "{company} today"), (0.2, "{company} stock news"), (0.5, "{team} news"),
            (0.5, "{team} trade rumors"), (0.4, "{team} injury report"), (0.3, "{team} coach fired"),
            (0.3, "{league} trade deadline"), (0.4, "{artist} news"), (0.4, "{artist} tour announcement"),
            (0.3, "{artist} new album release date"), (1, "{city} news"), (0.7, "{city} news {when}"),
            (0.7, "what happened in {city}"), (0.5, "{city} power outage"), (0.5, "{city} {event}"),
            (0.6, "is {app} down"), (0.4, "{app} outage"), (0.3, "{airline} outage"),
            (0.3, "{airline} strike"), (0.3, "{storm} update"), (0.5, "breaking news"),
            (0.2, "headlines {when}"), (0.3, "stock market today"), (0.3, "{team} {when}"),
            (0.3, "{city} {when}"), (0.4, "{city} {topic}"), (0.3, "{artist} tour {year}"),
        ),
        long=(
            "what is the latest news about {topic} and how will it affect people living in {city}",
            "did anything happen in {city} {when} i saw a lot of police cars downtown",
            "why is everyone talking about {company} today what did they announce",
            "is it true that the {team} fired their coach after the game {when}",
        ),
    ),
    "sports_scores": _IntentSpec(
        slots=_slots_sports,
        short=((3, "{team}"), (1.5, "{league}"), (2, "{team} score"), (1, "{league} scores")),
        medium=(
            (3, "{team} score"), (1.5, "{team} game"), (2, "{team} vs {team2}"), (1, "{team} {team2}"),
            (1, "{team} vs {team2} score"), (1, "{team} {team2} score"), (1, "{team} score {when}"),
            (1, "{team} game {when}"), (1, "{team} last night"), (1.5, "did the {team} win"),
            (0.7, "did {team} win {when}"), (1, "who won the {team} game"),
            (0.7, "who won {team} vs {team2}"), (0.8, "{team} final score"), (0.6, "{team} live"),
            (0.6, "{team} live score"), (0.5, "{team} result"), (1, "{league} scores"),
            (0.7, "{league} scores {when}"), (0.6, "{league} standings"), (0.3, "{league} live"),
            (0.4, "{team} box score"), (0.5, "{team} highlights"),
            (0.6, "what time is the {team} game {when}"), (0.4, "{team} schedule"),
            (0.7, "{team} vs {team2} {when}"), (0.3, "{league} final score"), (0.5, "{team} {when}"),
            (0.3, "{home} {team} game"),
        ),
        long=(
            "what was the final score of the {team} game {when} i fell asleep before the end",
            "did the {team} beat the {team2} {when} and who scored the most points",
            "how many points did the {team} score against the {team2} {when} and who had the most",
        ),
    ),
    "flight_status": _IntentSpec(
        slots=_slots_flight,
        short=((3, "{code}{num}"), (2, "{airline} {num}"), (1, "{airport} arrivals"), (0.5, "{airline}")),
        medium=(
            (1.5, "{code}{num}"), (1, "{code} {num}"), (1.5, "{airline} {num}"),
            (1.5, "{airline} flight {num}"), (1, "{code}{num} status"), (1, "{airline} {num} status"),
            (1, "flight {code}{num}"), (0.5, "flight {num} {airline}"), (1, "is {code}{num} on time"),
            (1, "is {airline} flight {num} delayed"), (0.6, "{code}{num} arrival"),
            (0.6, "{airline} {num} arrival time"), (0.6, "when does {airline} {num} land"),
            (0.6, "track flight {code}{num}"), (1, "{airport} arrivals"), (0.8, "{airport} departures"),
            (0.6, "{airport} delays"), (0.5, "{airline} delays {when}"), (0.5, "flight status {airline}"),
            (0.6, "{airline} flight status"), (0.5, "{city} to {city2} flight {when}"),
            (0.4, "{airline} {city} to {city2}"), (0.3, "is my flight delayed"),
            (0.4, "where is flight {code}{num}"), (0.4, "{airline} {num} gate"),
            (0.4, "{airport} flight status"), (0.4, "{airline} cancellations {when}"),
            (0.3, "{airline} {when}"), (0.3, "{airport} {when}"), (0.5, "{city} to {city2} {when}"),
            (0.3, "flights {city} to {city2}"),
        ),
        long=(
            "my {airline} flight from {city} to {city2} was supposed to leave at {time} is it still on time",
            "is {airline} flight {num} from {airport} delayed because of the storm in {city2} {when}",
            "what time does {code}{num} actually land at {airport} {when} i need to pick up my {relative}",
        ),
    ),
    "recipe": _IntentSpec(
        slots=_slots_recipe,
        short=((3, "{dish}"), (2, "{dish} recipe"), (0.5, "dinner ideas"), (0.5, "{ingredient} recipes")),
        medium=(
            (4, "{dish} recipe"), (1.5, "recipe for {dish}"), (1, "{dish} recipe easy"),
            (1, "easy {dish} recipe"), (0.7, "easy {dish}"), (1, "best {dish} recipe"),
            (1.2, "how to make {dish}"), (0.7, "homemade {dish}"), (0.8, "{diet} {dish}"),
            (0.8, "{diet} {dish} recipe"), (0.8, "{dish} {appliance}"), (0.5, "{appliance} {dish}"),
            (0.5, "{appliance} recipes"), (1, "{ingredient} recipes"), (0.7, "{ingredient} recipe"),
            (0.6, "what to make with {ingredient}"), (0.6, "{ingredient} and {ingredient2} recipe"),
            (0.4, "{dish} without {ingredient}"), (0.6, "{dish} ingredients"),
            (0.5, "how long to bake {dish}"), (0.6, "how long to cook {ingredient} in {appliance}"),
            (0.4, "{dish} for {n} people"), (0.4, "{cuisine} recipes"), (0.4, "{dish} from scratch"),
            (0.3, "{dish} calories"), (0.5, "dinner ideas with {ingredient}"), (0.6, "{dish}"),
            (0.3, "{cuisine} {dish}"),
        ),
        long=(
            "i have {ingredient} and {ingredient2} in the fridge what can i cook for dinner tonight",
            "easy {diet} {dish} recipe that my kids will actually eat and takes less than 30 minutes",
            "how long do i need to cook {ingredient} in the {appliance} so it does not dry out",
            "what can i make for {n} people with {ingredient} that is not too expensive",
        ),
    ),
    "lyrics_music": _IntentSpec(
        slots=_slots_lyrics,
        short=((3, "{song}"), (2, "{artist}"), (2, "{song} lyrics"), (0.5, "{song} {artist}")),
        medium=(
            (4, "{song} lyrics"), (1, "lyrics {song}"), (1.5, "{song} {artist} lyrics"),
            (1, "{artist} {song} lyrics"), (1, "lyrics to {song}"), (0.5, "{song} lyrics {artist}"),
            (1, "who sings {song}"), (0.6, "{song} song"), (0.6, "{song} chords"),
            (0.4, "{song} guitar tabs"), (0.6, "{song} meaning"), (0.8, "{artist} songs"),
            (0.6, "{artist} new album"), (0.5, "{artist} tour {year}"), (0.5, "{artist} concert {city}"),
            (0.7, "play {song}"), (1, "{song} {artist}"), (0.3, "{song} karaoke"), (0.4, "{song} spotify"),
            (1, "{artist} {song}"), (0.6, "song that goes {fragment}"), (0.3, "{song} remix"),
            (0.3, "{artist} setlist"), (0.4, "{song} music video"), (0.3, "{artist} {city}"),
            (0.4, "{song} by {artist}"),
        ),
        long=(
            "what is the name of the song that goes {fragment} i heard it in a store",
            "who sings the song {song} that was playing on the radio this morning in {city}",
            "what does the song {song} by {artist} actually mean i always thought it was sad",
        ),
    ),
    "stock_quote": _IntentSpec(
        slots=_slots_stock,
        short=((4, "{ticker}"), (2, "{name}"), (1.5, "{ticker} stock"), (1, "{market}"), (0.5, "{crypto}")),
        medium=(
            (2, "{ticker} stock"), (2, "{name} stock"), (2, "{name} stock price"), (1, "{ticker} price"),
            (0.7, "{ticker} share price"), (0.7, "{name} shares"), (0.5, "{ticker} premarket"),
            (0.4, "{ticker} after hours"), (1, "{name} stock {when}"), (0.7, "how is {name} stock doing"),
            (0.5, "is {name} stock a buy"), (0.5, "should i buy {name} stock"), (0.5, "{ticker} dividend"),
            (0.4, "{name} dividend yield"), (0.5, "{ticker} earnings"), (0.4, "{name} earnings date"),
            (0.5, "{ticker} {ticker2}"), (0.5, "{ticker} vs {ticker2}"), (0.4, "{name} market cap"),
            (1, "{market} {when}"), (0.5, "{market} futures"), (1, "{crypto} price"),
            (0.4, "{name} stock forecast"), (0.4, "{ticker} chart"), (0.3, "{name} ipo"),
            (0.3, "{ticker} options"), (0.5, "{name} price"), (0.3, "{name} stock split"),
            (0.4, "{ticker} {when}"), (0.4, "{name} {when}"), (0.3, "{crypto} {when}"), (0.6, "{currency}"),
            (0.4, "{currency} rate {when}"), (0.3, "{n} {currency}"), (0.3, "{crypto} to usd"),
        ),
        long=(
            "how much is one share of {name} worth right now and is it going up {when}",
            "should i sell my {name} stock before the earnings report or hold it a little longer",
            "what is the current price of {crypto} compared to last week because my app is not updating",
        ),
    ),
    "translation": _IntentSpec(
        slots=_slots_translation,
        short=((3, "{foreign}"), (1, "{phrase} {lang}"), (1, "{lang} translator")),
        medium=(
            (3, "{phrase} in {lang}"), (2, "translate {phrase} to {lang}"),
            (1.5, "how do you say {phrase} in {lang}"), (1, "how to say {phrase} in {lang}"),
            (1, "{phrase} {lang}"), (0.6, "{lang} for {phrase}"), (1, "{foreign} in english"),
            (1, "{foreign} meaning"), (1, "what does {foreign} mean"), (0.7, "{foreign} translation"),
            (0.7, "translate {foreign}"), (0.8, "english to {lang}"), (0.8, "{lang} to english"),
            (0.5, "{lang} translator"), (0.5, "{foreign} to english"), (0.5, "translate {lang} to english"),
            (0.4, "{phrase} in {lang} pronunciation"), (0.3, "{song} lyrics in {lang}"),
            (0.4, "{foreign} english"), (0.3, "what language is {foreign}"),
        ),
        long=(
            "how would you say {phrase} in {lang} if you are talking to someone older than you",
            "my friend texted me {foreign} what does that mean in english",
            "what is the most polite way to say {phrase} in {lang} when traveling",
        ),
    ),
    "unit_conversion": _IntentSpec(
        slots=_slots_units,
        short=((2, "{n_u1}"), (2, "{n} {u1}"), (2, "{u1} to {u2}"), (0.5, "converter")),
        medium=(
            (4, "{n} {u1} to {u2}"), (1, "{n_u1} to {u2}"), (1.5, "convert {n} {u1} to {u2}"),
            (1.5, "{n} {u1} in {u2}"), (1, "how many {u2} in {n} {u1}"), (1, "how many {u2} in a {u1s}"),
            (0.7, "how many {u2} is {n} {u1}"), (1.2, "{u1} to {u2}"), (0.5, "{u1} to {u2} conversion"),
            (0.5, "{u1} to {u2} converter"), (0.8, "what is {n} {u1} in {u2}"),
            (0.4, "{n} {u1} equals how many {u2}"), (0.5, "{n} {u1}"),
            (0.5, "{n} cups of {ingredient} in grams"), (0.6, "{clock} {tz1} to {tz2}"),
            (0.3, "{clock} {tz1} in {tz2}"), (0.3, "what time is {clock} {tz1} in {city}"),
            (0.3, "{n} {u1} {u2}"), (0.6, "{n} {currency}"), (0.3, "{currency}"),
        ),
        long=(
            "how many {u2} is {n} {u1} i am trying to follow a recipe from my grandma",
            "if i drive {n} miles how many kilometers is that for my rental car in {city}",
            "what is {n} {u1} in {u2} because the instructions only list the other one",
        ),
    ),
}
# fmt: on

# ----------------------------------------------------------------------------------- surface noise

# QWERTY neighbours: a fat-finger typo replaces a letter with one of these.
# fmt: off
_KEYBOARD_NEIGHBOURS = {
    "q": "wa", "w": "qes", "e": "wrd", "r": "etf", "t": "ryg", "y": "tuh", "u": "yij", "i": "uok", "o": "ipl",
    "p": "ol", "a": "qsz", "s": "adwx", "d": "sfec", "f": "dgrv", "g": "fhtb", "h": "gjyn", "j": "hkum",
    "k": "jli", "l": "ko", "z": "ax", "x": "zcs", "c": "xvd", "v": "cbf", "b": "vng", "n": "bmh", "m": "nj",
}
# Queries starting like this get a question mark now and then.
_QUESTION_STARTS = (
    "what", "how", "who", "when", "where", "why", "is ", "will", "does", "do ", "did", "can", "should",
)
# fmt: on

# (pattern, replacements): the shorthand people type in a search box. Each applies only sometimes.
_ABBREVIATIONS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (re.compile(rf"\b{pattern}\b"), replacements)
    for pattern, replacements in (
        ("new york", ("nyc", "ny")),
        ("los angeles", ("la",)),
        ("san francisco", ("sf",)),
        ("las vegas", ("vegas",)),
        ("washington dc", ("dc",)),
        ("philadelphia", ("philly",)),
        ("how to", ("hw to", "how 2", "howto")),
        ("recipe for", ("recipe 4",)),
        ("please", ("pls", "plz")),
        ("you", ("u",)),
        ("are", ("r",)),
        ("tomorrow", ("tmrw", "tmr", "tomorow")),
        ("tonight", ("tonite",)),
        ("weather", ("wx", "weathr")),
        ("temperature", ("temp",)),
        ("definition", ("def",)),
        ("what is", ("whats", "wat is", "what's")),
        ("what does", ("wat does", "what dose")),
        ("and", ("&", "n")),
        ("with", ("w/",)),
        ("people", ("ppl",)),
        ("because", ("bc", "cuz")),
        ("near me", ("nearby", "near by", "nearme")),
        ("restaurant", ("restaraunt", "resturant")),
        ("directions", ("direction",)),
        ("pounds", ("lbs",)),
        ("thank you", ("ty", "thanku")),
        ("minutes", ("mins",)),
        ("vs", ("v", "versus")),
    )
)


def _typo(rng: random.Random, text: str) -> str:
    """One human typo in one word: swapped, dropped, doubled or fat-fingered letter."""
    words = text.split(" ")
    candidates = [index for index, word in enumerate(words) if sum(ch.isalpha() for ch in word) >= 3]
    if not candidates:
        return text
    index = rng.choice(candidates)
    word = words[index]
    letters = [position for position, ch in enumerate(word) if ch.isalpha()]
    # People rarely get the first letter wrong; the middle and end of words take the hits.
    position = rng.choice(letters[1:])
    kind = rng.choices(("swap", "drop", "double", "neighbour"), weights=(3, 3, 2, 3))[0]
    if kind == "swap":
        other = position + 1 if position + 1 < len(word) else position - 1
        low, high = sorted((position, other))
        word = word[:low] + word[high] + word[low] + word[high + 1 :]
    elif kind == "drop":
        word = word[:position] + word[position + 1 :]
    elif kind == "double":
        word = word[:position] + word[position] + word[position:]
    else:
        neighbours = _KEYBOARD_NEIGHBOURS.get(word[position].lower())
        replacement = rng.choice(neighbours) if neighbours else ""
        word = word[:position] + replacement + word[position + 1 :]
    words[index] = word
    return " ".join(words)


def _abbreviate(rng: random.Random, text: str) -> str:
    for pattern, replacements in _ABBREVIATIONS:
        if pattern.search(text) and rng.random() < 0.5:
            text = pattern.sub(rng.choice(replacements), text, count=1)
    return text


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _apply_casing(rng: random.Random, text: str) -> str:
    roll = rng.random()
    if roll < 0.74:
        return text  # as typed: lowercase, with whatever capitals the slot carried (tickers, flight codes)
    if roll < 0.80:
        return text.lower()
    if roll < 0.92:
        return text[:1].upper() + text[1:]  # phone keyboards capitalise the first letter
    if roll < 0.98:
        return " ".join(word[:1].upper() + word[1:] for word in text.split(" "))
    return text.upper()


def _punctuate(rng: random.Random, text: str) -> str:
    is_question = text.lower().startswith(_QUESTION_STARTS)
    roll = rng.random()
    if is_question and roll < 0.3:
        return text + rng.choice(("?", "?", "?", " ?", "??"))
    if roll < 0.03:
        return text + rng.choice(("?", ".", "!", "..."))
    return text


def _add_surface_noise(rng: random.Random, text: str) -> str:
    if rng.random() < _ABBREVIATION_RATE:
        text = _abbreviate(rng, text)
    if rng.random() < _TYPO_RATE:
        text = _typo(rng, text)
        if rng.random() < _SECOND_TYPO_RATE:
            text = _typo(rng, text)
    if not text.isascii() and rng.random() < _ACCENT_DROP_RATE:
        text = _strip_accents(text)
    text = _apply_casing(rng, text)
    return _punctuate(rng, text)


# -------------------------------------------------------------------------------------- generation


def _choose(rng: random.Random, weighted: Weighted) -> str:
    return rng.choices([template for _, template in weighted], weights=[w for w, _ in weighted])[0]


def _clean_spaces(text: str) -> str:
    return " ".join(text.split())


def _lengthen(rng: random.Random, text: str) -> str:
    """Wrap a long query in shared filler until it has 12–20 words (fillers carry no label signal)."""
    words = text.split()
    if len(words) < _LONG_MIN_WORDS:
        words = rng.choice(_OPENERS).split() + words
    while len(words) < _LONG_MIN_WORDS:
        words += rng.choice(_CLOSERS).split()
    return " ".join(words[:_LONG_MAX_WORDS])


def _draw_query(rng: random.Random, intent: str) -> str:
    spec = _SPECS[intent]
    slots = spec.slots(rng)
    shape = rng.random()
    if shape < _SHORT_SHARE:
        text = _clean_spaces(_choose(rng, spec.short).format_map(slots))
    elif shape < _SHORT_SHARE + _LONG_SHARE:
        text = _lengthen(rng, _clean_spaces(rng.choice(spec.long).format_map(slots)))
    else:
        text = _clean_spaces(_choose(rng, spec.medium).format_map(slots))
    text = _clean_spaces(_add_surface_noise(rng, text))
    return unicodedata.normalize("NFC", text)


def dedupe_key(text: str) -> str:
    """The form two queries must share to count as the same query across splits.

    Casing, accents, spacing and trailing punctuation do not make a query new: ``Weather Paris?`` in test
    is ``weather paris`` from train for an uncased model, so splits are kept apart on this key.
    """
    folded = _strip_accents(unicodedata.normalize("NFC", text)).casefold()
    return " ".join(folded.split()).rstrip("?!. ")


def _split_for(seed: int, key: str, bounds: Sequence[tuple[str, float]]) -> str:
    """The split a query lives in, from a seeded sha256 of its key: stable across machines and runs."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    for split, upper in bounds:
        if point < upper:
            return split
    return bounds[-1][0]


def _split_bounds(sizes: dict[str, int]) -> list[tuple[str, float]]:
    total = sum(sizes.values())
    shares = [max(sizes[split] / total, _MIN_SPLIT_SHARE) for split in SPLIT_NAMES]
    scale = sum(shares)
    bounds: list[tuple[str, float]] = []
    running = 0.0
    for split, share in zip(SPLIT_NAMES, shares, strict=True):
        running += share / scale
        bounds.append((split, running))
    return bounds


def _allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` rows over classes in proportion to ``weights`` (largest remainder, ties by index).

    Every class gets at least one row when ``total`` allows it, so small splits still contain every label.
    """
    count = len(weights)
    if total >= count:
        base = [1] * count
        remaining = total - count
    else:
        base = [0] * count
        remaining = total
    scale = sum(weights)
    exact = [remaining * w / scale for w in weights]
    counts = [b + int(e) for b, e in zip(base, exact, strict=True)]
    order = sorted(range(count), key=lambda i: (-(exact[i] - int(exact[i])), i))
    for index in order[: total - sum(counts)]:
        counts[index] += 1
    return counts


def _noisy_label(rng: random.Random, intent: str, noise_rate: float) -> str:
    if rng.random() < noise_rate:
        return rng.choice(CONFUSABLE_INTENTS[intent])
    return intent


def _generate_rows(sizes: dict[str, int], seed: int, noise_rate: float) -> dict[str, list[tuple[str, str]]]:
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not security
    weights = [INTENT_TRAFFIC_WEIGHTS[intent] for intent in DEMO_INTENTS]
    quotas = {split: _allocate(sizes[split], weights) for split in SPLIT_NAMES}
    bounds = _split_bounds(sizes)
    rows: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLIT_NAMES}
    seen: dict[str, dict[str, int]] = {split: {} for split in SPLIT_NAMES}

    for intent_index, intent in enumerate(DEMO_INTENTS):
        needed = {split: quotas[split][intent_index] for split in SPLIT_NAMES}
        rejected_in_a_row = 0
        while any(needed.values()):
            if rejected_in_a_row > _GIVE_UP_AFTER:
                raise RuntimeError(
                    f"demo dataset: cannot draw enough distinct {intent!r} queries for the requested sizes "
                    f"{sizes}; use fewer rows"
                )
            text = _draw_query(rng, intent)
            key = dedupe_key(text)
            # The split follows from the text itself, so the same query can never land in two splits,
            # and which queries a split gets does not depend on the order they were drawn in.
            split = _split_for(seed, key, bounds)
            if not needed[split]:
                rejected_in_a_row += 1
                continue
            repeat = key in seen[split]
            if repeat and rejected_in_a_row < _RELAX_REPEATS_AFTER and rng.random() >= _REPEAT_KEEP_RATE:
                rejected_in_a_row += 1
                continue
            rejected_in_a_row = 0
            seen[split][key] = seen[split].get(key, 0) + 1
            rows[split].append((text, _noisy_label(rng, intent, noise_rate)))
            needed[split] -= 1

    for split in SPLIT_NAMES:
        rng.shuffle(rows[split])
    return rows


# ------------------------------------------------------------------------------------------- writing


def _encode_jsonl(rows: Sequence[tuple[str, str]]) -> bytes:
    # Bytes, not text mode, so no platform newline translation can change the file.
    lines = (json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n" for text, label in rows)
    return "".join(lines).encode("utf-8")


def _write_temp(directory: Path, name: str, payload: bytes) -> Path:
    # The ".tmp" suffix keeps a leftover from a killed run out of loaders that glob *.jsonl.
    fd, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; a dataset is ordinary data that other users and tools may read.
        Path(temp_name).chmod(0o644)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return Path(temp_name)


def _check_arguments(seed: int, sizes: dict[str, int], noise_rate: float) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    for split, rows in sizes.items():
        if isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0:
            raise ValueError(f"{split}_rows must be a positive integer, got {rows!r}")
    if isinstance(noise_rate, bool) or not isinstance(noise_rate, int | float) or not 0 <= noise_rate < 0.5:
        raise ValueError(f"noise_rate must be a number with 0 <= noise_rate < 0.5, got {noise_rate!r}")


def generate_demo_dataset(
    out_dir: Path,
    *,
    seed: int = 20261128,
    train_rows: int = 6000,
    eval_rows: int = 1200,
    test_rows: int = 1200,
    noise_rate: float = 0.03,
) -> dict[str, Path]:
    """Write ``train.jsonl``, ``eval.jsonl`` and ``test.jsonl`` into ``out_dir``; return their paths.

    Each line is ``{"text": ..., "label": <intent name>}``. The same arguments give byte-identical files
    on any machine. No text (compared by :func:`dedupe_key`) appears in two splits. With probability
    ``noise_rate`` a row's label is replaced by a confusable intent (:data:`CONFUSABLE_INTENTS`). Files are
    replaced atomically, so readers see the previous file or the complete new one.
    """
    sizes = {"train": train_rows, "eval": eval_rows, "test": test_rows}
    _check_arguments(seed, sizes, noise_rate)
    rows = _generate_rows(sizes, seed, noise_rate)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # All three are written to temporary files first, so a failure while writing (disk full) leaves the
    # previous set untouched; only then are they renamed into place.
    temps: dict[str, Path] = {}
    try:
        for split in SPLIT_NAMES:
            temps[split] = _write_temp(out_dir, f"{split}.jsonl", _encode_jsonl(rows[split]))
        paths: dict[str, Path] = {}
        for split in SPLIT_NAMES:
            paths[split] = out_dir / f"{split}.jsonl"
            temps.pop(split).replace(paths[split])  # Path.replace is os.replace: atomic on one filesystem
    finally:
        for leftover in temps.values():
            leftover.unlink(missing_ok=True)
    return paths


# ----------------------------------------------------------------------------------------------- CLI


def _label_table(paths: dict[str, Path]) -> str:
    counts: dict[str, Counter[str]] = {split: Counter() for split in paths}
    for split, path in paths.items():
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                counts[split][json.loads(line)["label"]] += 1
    header = f"{'label':<18}" + "".join(f"{split:>8}" for split in paths)
    lines = [header]
    for label in DEMO_INTENTS:
        lines.append(f"{label:<18}" + "".join(f"{counts[split][label]:>8}" for split in paths))
    lines.append(f"{'total':<18}" + "".join(f"{sum(counts[split].values()):>8}" for split in paths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.demo_dataset",
        description="Generate the deterministic search-query intent demo dataset (train/eval/test JSONL).",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write the split files into")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--train-rows", type=int, default=6000)
    parser.add_argument("--eval-rows", type=int, default=1200)
    parser.add_argument("--test-rows", type=int, default=1200)
    parser.add_argument(
        "--noise-rate", type=float, default=0.03, help="share of labels swapped for a confusable intent"
    )
    args = parser.parse_args(argv)
    try:
        paths = generate_demo_dataset(
            args.out,
            seed=args.seed,
            train_rows=args.train_rows,
            eval_rows=args.eval_rows,
            test_rows=args.test_rows,
            noise_rate=args.noise_rate,
        )
    except ValueError as error:
        parser.error(str(error))
    for split, path in paths.items():
        print(f"{split}: {path}")
    print(_label_table(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
