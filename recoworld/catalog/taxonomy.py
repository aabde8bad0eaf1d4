"""The named content taxonomy behind the synthetic catalog.

Topics sit in groups so that "different but related" has a meaning: topics of one
group get nearby embedding centroids, and the simulated users' instructions name
related topics from the same group. Keywords feed titles and descriptions so that
items read like real content to LLM users and ToolRec.
"""

from __future__ import annotations

from dataclasses import dataclass

# group -> topic -> subtopic -> keywords
TAXONOMY: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "food": {
        "cooking": {
            "weeknight dinners": ("one-pan pasta", "stir-fry", "sheet-pan chicken", "fried rice"),
            "knife skills": ("julienne", "brunoise", "chef's knife", "whetstone"),
            "world cuisines": ("ramen", "tagine", "mole", "biryani"),
            "meal prep": ("batch cooking", "freezer meals", "lunch boxes", "grain bowls"),
        },
        "baking": {
            "bread": ("sourdough", "focaccia", "baguette", "starter"),
            "pastry": ("croissant", "puff pastry", "eclair", "lamination"),
            "cakes": ("layer cake", "buttercream", "chiffon", "bundt"),
            "cookies": ("brown butter", "shortbread", "macarons", "biscotti"),
        },
        "drinks": {
            "coffee": ("espresso", "pour-over", "latte art", "cold brew"),
            "cocktails": ("negroni", "old fashioned", "bitters", "mezcal"),
            "wine": ("pinot noir", "natural wine", "tasting notes", "terroir"),
            "tea": ("matcha", "oolong", "gongfu", "chai"),
        },
    },
    "sports": {
        "football": {
            "match highlights": ("last-minute winner", "derby", "penalty shootout", "hat-trick"),
            "tactics": ("pressing", "false nine", "back three", "counter-attack"),
            "transfers": ("deadline day", "release clause", "loan deal", "wonderkid"),
            "fan culture": ("ultras", "away days", "chants", "matchday vlog"),
        },
        "basketball": {
            "game recaps": ("buzzer beater", "triple-double", "overtime", "comeback"),
            "skills": ("crossover", "step-back three", "post moves", "free throws"),
            "draft": ("mock draft", "prospects", "combine", "lottery"),
            "streetball": ("pickup games", "dunk contest", "and-one", "court tour"),
        },
        "running": {
            "marathon training": ("long run", "tempo", "taper", "race pace"),
            "trail running": ("ultra", "vert", "switchbacks", "mountain race"),
            "gear": ("carbon plate", "running watch", "trail shoes", "hydration vest"),
            "beginner running": ("couch to 5k", "form tips", "first race", "easy pace"),
        },
    },
    "tech": {
        "programming": {
            "python": ("type hints", "asyncio", "packaging", "numpy tricks"),
            "web development": ("react", "css grid", "server components", "htmx"),
            "systems": ("rust", "memory safety", "profiling", "lock-free queues"),
            "career": ("code review", "system design interview", "promotion", "remote work"),
        },
        "gadgets": {
            "phones": ("camera test", "battery life", "foldable", "unboxing"),
            "laptops": ("thin and light", "thermals", "keyboard review", "battery test"),
            "audio": ("noise cancelling", "earbuds", "dac", "studio monitors"),
            "smart home": ("home assistant", "smart lights", "robot vacuum", "thermostat"),
        },
        "ai": {
            "machine learning": ("transformers", "fine-tuning", "embeddings", "reinforcement learning"),
            "ai news": ("model release", "benchmark", "open weights", "policy"),
            "ai tools": ("coding assistant", "image generation", "agents", "prompting"),
            "ai ethics": ("bias", "alignment", "privacy", "copyright"),
        },
    },
    "entertainment": {
        "movies": {
            "reviews": ("spoiler-free review", "director's cut", "box office", "sequel"),
            "film analysis": ("cinematography", "editing", "score", "long take"),
            "classics": ("film noir", "new wave", "silent era", "cult classic"),
            "trailers": ("teaser", "first look", "breakdown", "easter eggs"),
        },
        "music": {
            "live sessions": ("acoustic set", "tiny desk", "rooftop gig", "unplugged"),
            "production": ("mixing", "synth patches", "drum programming", "sampling"),
            "album reviews": ("debut album", "deep cuts", "comeback record", "b-sides"),
            "music history": ("jazz age", "punk", "hip-hop origins", "britpop"),
        },
        "gaming": {
            "let's plays": ("speedrun", "first playthrough", "hardcore mode", "co-op"),
            "game reviews": ("indie gem", "open world", "roguelike", "remaster"),
            "esports": ("grand final", "clutch round", "team comms", "patch meta"),
            "retro games": ("pixel art", "cartridge", "arcade", "emulation"),
        },
    },
    "lifestyle": {
        "travel": {
            "city guides": ("lisbon", "kyoto", "mexico city", "istanbul"),
            "budget travel": ("hostels", "night trains", "backpacking", "points hacking"),
            "road trips": ("van life", "coastal drive", "national parks", "camping"),
            "travel food": ("street food", "night market", "local breakfast", "food tour"),
        },
        "fashion": {
            "streetwear": ("sneaker drop", "oversized fit", "thrift haul", "capsule"),
            "tailoring": ("suit fit", "alterations", "fabric guide", "bespoke"),
            "sustainable fashion": ("repair", "slow fashion", "second hand", "mending"),
            "beauty": ("skincare routine", "sunscreen", "makeup tutorial", "fragrance"),
        },
        "home": {
            "interior design": ("small apartment", "color palette", "lighting", "rental hacks"),
            "diy": ("woodworking", "tile repair", "shelving", "power tools"),
            "gardening": ("houseplants", "raised beds", "composting", "tomatoes"),
            "organization": ("declutter", "minimalism", "closet system", "label maker"),
        },
    },
    "knowledge": {
        "science": {
            "space": ("black holes", "mars rover", "telescope", "exoplanets"),
            "physics": ("quantum", "relativity", "thermodynamics", "particle collider"),
            "biology": ("evolution", "microbiome", "genetics", "cells"),
            "chemistry": ("reactions", "periodic table", "polymers", "lab safety"),
        },
        "history": {
            "ancient history": ("rome", "egypt", "bronze age", "silk road"),
            "modern history": ("cold war", "industrial revolution", "decolonisation", "space race"),
            "military history": ("naval battles", "logistics", "fortresses", "codebreaking"),
            "history mysteries": ("lost cities", "shipwrecks", "unsolved", "archives"),
        },
        "finance": {
            "personal finance": ("budgeting", "emergency fund", "credit score", "side hustle"),
            "investing": ("index funds", "dividends", "compounding", "portfolio"),
            "economics": ("inflation", "interest rates", "housing market", "supply chains"),
            "crypto": ("bitcoin", "defi", "wallet security", "stablecoins"),
        },
    },
    "wellbeing": {
        "fitness": {
            "strength training": ("deadlift", "progressive overload", "hypertrophy", "form check"),
            "home workouts": ("no equipment", "hiit", "resistance bands", "15-minute"),
            "mobility": ("stretching", "hip mobility", "posture", "foam rolling"),
            "calisthenics": ("pull-ups", "handstand", "muscle-up", "planche"),
        },
        "yoga": {
            "vinyasa": ("flow", "sun salutation", "balance poses", "power yoga"),
            "restorative yoga": ("yin", "bolster", "deep stretch", "evening practice"),
            "breathwork": ("box breathing", "pranayama", "nervous system", "calm"),
            "yoga for beginners": ("first class", "basic poses", "alignment", "props"),
        },
        "mental health": {
            "mindfulness": ("meditation", "body scan", "journaling", "gratitude"),
            "productivity": ("deep work", "time blocking", "habit tracking", "burnout"),
            "sleep": ("sleep hygiene", "circadian rhythm", "naps", "insomnia"),
            "relationships": ("communication", "boundaries", "friendship", "loneliness"),
        },
    },
    "nature": {
        "animals": {
            "pets": ("puppy training", "cat behaviour", "adoption", "pet care"),
            "wildlife": ("safari", "migration", "predators", "rewilding"),
            "ocean life": ("coral reef", "whales", "octopus", "deep sea"),
            "birds": ("birdwatching", "owls", "birdsong", "feeders"),
        },
        "outdoors": {
            "hiking": ("day hike", "thru-hike", "summit", "trail map"),
            "climbing": ("bouldering", "sport climbing", "crimps", "belay"),
            "camping": ("tent setup", "campfire cooking", "wild camping", "ultralight"),
            "fishing": ("fly fishing", "lures", "catch and release", "river"),
        },
        "climate": {
            "climate science": ("carbon cycle", "ice cores", "heatwaves", "models"),
            "renewables": ("solar panels", "heat pumps", "wind farms", "batteries"),
            "sustainability": ("zero waste", "recycling", "carbon footprint", "repair cafe"),
            "cities": ("bike lanes", "urban heat", "public transit", "green roofs"),
        },
    },
}

FORMATS: tuple[str, ...] = (
    "guide", "deep dive", "quick tips", "explainer", "vlog", "review",
    "tutorial", "story", "challenge", "interview", "documentary", "live stream",
)
TITLE_TEMPLATES: tuple[str, ...] = (
    "{Kw}: The {Adj} {Format}",
    "{Adj} {Kw} in 10 Minutes",
    "Why Everyone Gets {Kw} Wrong",
    "{Kw} vs {Kw2}: An Honest {Format}",
    "I Tried {Kw} for 30 Days",
    "The {Adj} Guide to {Sub}",
    "{Sub}: {Kw} Explained",
    "{Kw2} and {Kw}, a {Adj} {Format}",
)
ADJECTIVES: tuple[str, ...] = (
    "Ultimate", "Beginner's", "Surprising", "Complete", "Honest", "Hidden", "Essential",
    "Lazy", "Pro", "Minimalist", "Definitive", "Weird", "Cozy", "Fast",
)
CREATOR_PARTS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("Blue", "North", "Tiny", "Wild", "Golden", "Quiet", "Urban", "Lucky", "Bright", "Slow",
     "Iron", "Paper", "Velvet", "Cosmic", "Honest", "Rusty"),
    ("Fox", "Kitchen", "Lab", "Studio", "Journal", "Works", "Atlas", "Club", "Notes", "House",
     "Trail", "Signal", "Garden", "Bench", "Desk", "Harbor"),
)


@dataclass(frozen=True)
class Taxonomy:
    """Flat, index-based view of the taxonomy, used by the catalog's integer columns."""

    groups: tuple[str, ...]
    topics: tuple[str, ...]
    topic_group: tuple[int, ...]
    subtopics: tuple[str, ...]
    subtopic_topic: tuple[int, ...]
    keywords: tuple[tuple[str, ...], ...]

    @classmethod
    def default(cls, n_topics: int | None = None) -> Taxonomy:
        """The built-in taxonomy, optionally cut to the first `n_topics` topics (round-robin over groups)."""
        ordered: list[tuple[str, str]] = []
        per_group = [list(topics) for topics in TAXONOMY.values()]
        for rank in range(max(len(t) for t in per_group)):
            for group, topics in zip(TAXONOMY, per_group):
                if rank < len(topics):
                    ordered.append((group, topics[rank]))
        if n_topics is not None:
            if not 1 <= n_topics <= len(ordered):
                raise ValueError(f"n_topics must be in [1, {len(ordered)}], got {n_topics}")
            ordered = ordered[:n_topics]
        groups = tuple(dict.fromkeys(g for g, _ in ordered))
        topic_names = tuple(t for _, t in ordered)
        subtopics: list[str] = []
        sub_topic: list[int] = []
        keywords: list[tuple[str, ...]] = []
        for t_idx, (group, topic) in enumerate(ordered):
            for sub, kws in TAXONOMY[group][topic].items():
                subtopics.append(sub)
                sub_topic.append(t_idx)
                keywords.append(kws)
        return cls(
            groups=groups,
            topics=topic_names,
            topic_group=tuple(groups.index(g) for g, _ in ordered),
            subtopics=tuple(subtopics),
            subtopic_topic=tuple(sub_topic),
            keywords=tuple(keywords),
        )
