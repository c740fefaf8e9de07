"""The built-in demo corpus: short synthetic articles from templates, for trying newsclf offline.

Every article is generated here from the templates below by a seeded generator; none is copied
from a real source, and every person, organisation and town in them is made up. "Real" articles
are written in a neutral wire-service style, "fake" ones in a sensational clickbait style. Both
draw on the same topics, and each style borrows sentences from the other (quoted outrage in real
reports, calm-sounding claims in fake ones), with a few labels flipped, so a classifier has to
learn the style from several cues and cannot reach 100%.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from newsclf.data import PrepareResult, Source

DEMO_VERSION = "1"  # bump when the templates change: the corpus (and its sha256) changes with it
DEMO_SEED = 20240611  # the corpus is fixed; --seed only changes how it is split
N_FAKE, N_REAL = 270, 250
LABEL_NOISE = 0.03  # share of articles whose label is flipped
MIN_WORDS, MAX_WORDS = 40, 120

FIRST = ["Mara", "Daniel", "Priya", "Tomas", "Elena", "Kwame", "Sofia", "Jonah", "Lina", "Oskar",
         "Ruth", "Felix", "Amara", "Victor", "Nadia", "Hugo"]  # fmt: skip
LAST = ["Velden", "Okafor", "Marsh", "Lindqvist", "Ortega", "Hale", "Brandt", "Castell", "Novak",
        "Reyes", "Whitcombe", "Adeyemi", "Sorensen", "Pryce"]  # fmt: skip
ROLES = ["Senator", "Governor", "Minister", "Mayor", "Representative", "Commissioner"]
PLACES = ["Riverton", "Northfield", "Port Alden", "Westbrook", "Lakeside County", "Eastmoor",
          "Greyhaven", "the northern province", "the coastal region", "Millbrook"]  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
MONTHS = ["January", "March", "April", "June", "September", "October", "November"]

# Shared topic vocabulary: both classes write about the same things.
TOPICS = {
    "economy": {
        "orgs": [
            "the finance ministry",
            "the central bank",
            "the national statistics office",
            "the Treasury",
            "the chamber of commerce",
        ],  # fmt: skip
        "things": [
            "inflation",
            "interest rates",
            "the budget deficit",
            "fuel prices",
            "wages",
            "the jobs report",
            "property taxes",
        ],  # fmt: skip
        "measures": ["a tax relief bill", "a new spending plan", "a fuel subsidy", "a minimum wage increase"],
    },
    "health": {
        "orgs": [
            "the health ministry",
            "the regional hospital board",
            "the medicines agency",
            "the public health institute",
        ],  # fmt: skip
        "things": [
            "vaccine supplies",
            "hospital waiting lists",
            "drug prices",
            "the flu season",
            "emergency room staffing",
        ],  # fmt: skip
        "measures": ["a hospital funding bill", "new vaccine guidelines", "a drug pricing rule"],
    },
    "election": {
        "orgs": [
            "the electoral commission",
            "the state election board",
            "the opposition party",
            "the governing coalition",
        ],  # fmt: skip
        "things": [
            "voter registration",
            "the ballot count",
            "campaign donations",
            "postal voting",
            "district boundaries",
        ],  # fmt: skip
        "measures": ["a voter ID law", "new campaign finance rules", "a redistricting plan"],
    },
    "climate": {
        "orgs": [
            "the environment agency",
            "the energy regulator",
            "the weather service",
            "the national grid operator",
        ],  # fmt: skip
        "things": [
            "flood defences",
            "power prices",
            "emission targets",
            "the drought",
            "wind farm permits",
        ],  # fmt: skip
        "measures": ["a carbon levy", "a flood protection plan", "a coal plant closure schedule"],
    },
    "technology": {
        "orgs": [
            "the data protection authority",
            "the telecoms regulator",
            "the digital ministry",
            "a parliamentary committee",
        ],  # fmt: skip
        "things": [
            "facial recognition cameras",
            "online privacy",
            "5G masts",
            "social media rules",
            "a data breach",
        ],  # fmt: skip
        "measures": ["an online safety bill", "a ban on facial recognition", "new privacy rules"],
    },
    "crime": {
        "orgs": [
            "the police department",
            "the prosecutor's office",
            "the justice ministry",
            "the border agency",
        ],  # fmt: skip
        "things": [
            "burglary rates",
            "police funding",
            "the court backlog",
            "border checks",
            "a fraud investigation",
        ],  # fmt: skip
        "measures": ["a sentencing reform bill", "a police budget increase", "new border rules"],
    },
    "education": {
        "orgs": [
            "the education ministry",
            "the teachers' union",
            "the school board",
            "the university council",
        ],  # fmt: skip
        "things": [
            "tuition fees",
            "teacher salaries",
            "exam results",
            "school closures",
            "the curriculum review",
        ],  # fmt: skip
        "measures": ["a school funding formula", "a tuition freeze", "a teacher pay deal"],
    },
}

# Wire-service style: attributed, measured, specific.
WIRE = [
    "{Org} said on {day} that {thing} rose {pct} percent in {month}, in line with forecasts.",
    "{Org} said on {day} that {thing} fell {pct} percent in {month}, slightly below expectations.",
    "{person}, a spokesperson for {org}, told reporters the review would be completed by {month}.",
    "The figures were published in a report by {org} on {day}.",
    "Analysts said the change had been widely expected and would have a limited effect on {thing}.",
    "{Org} did not respond to a request for comment.",
    "The proposal still needs the approval of the upper house, which is due to vote in {month}.",
    "Officials in {place} said about {n} households had been affected, according to a statement.",
    "{role} {person} declined to give further details, citing the ongoing review.",
    "The measure passed by a vote of {n1} to {n2} after a debate that lasted several hours.",
    "{role} {person} said the government would publish a full assessment of {thing} next month.",
    "The plan, first announced in {month}, would cost about {n} million over three years.",
    "{Org} has said it will hold public hearings on {measure} in {place}.",
    "Opposition lawmakers said they would seek changes to {measure} before the final vote.",
    "Data released on {day} showed {thing} unchanged from the previous quarter.",
    "{role} {person} told a news conference in {place} that talks would continue next week.",
    "A court in {place} is expected to rule on the case in {month}.",
    "It was not immediately clear how {measure} would affect {thing} in {place}.",
]

# Quoted or attributed strong words: real reports contain emotion too (noise for the real class).
WIRE_CHARGED = [
    '"This is a disgrace," {role} {person} told reporters after the vote on {measure}.',
    "Critics called the decision on {thing} shocking and said it would hurt families in {place}.",
    'Protesters outside the building in {place} chanted "shame" as {org} met on {day}.',
    '"People are furious, and they have every right to be," {person} said of {thing}.',
]

# Clickbait style: emotive, vague sourcing, calls to share.
SENSATIONAL = [
    "You won't believe what {role} {person} just said about {thing}!",
    "The mainstream media is REFUSING to cover this story about {thing}.",
    "Insiders say {org} has been hiding the truth about {thing} for YEARS.",
    "This is an absolute DISGRACE and every single person in {place} should be furious.",
    "Share this before it gets deleted!",
    "Wake up, people: the official line on {thing} is being used to control you.",
    "{role} {person} got DESTROYED after trying to lie about {thing} on live TV.",
    "Patriots across {place} are outraged, and honestly, who can blame them?",
    "What are they so afraid of? The answer will SHOCK you.",
    "Sources close to {org} claim the numbers on {thing} were completely faked.",
    "Watch the video below and see for yourself what they are hiding!",
    "The elites behind {measure} are laughing at you right now.",
    "This is the story they DON'T want you to read.",
    "Unbelievable. Just unbelievable. The whole story about {thing} is a scam and everybody knows it.",
    "We told you this would happen, and nobody listened!",
    "{role} {person} should resign TODAY after this bombshell about {measure}.",
]

# Calm-sounding but unsourced claims: fake news that reads almost like a report (hard cases).
SUBTLE = [
    "According to several posts shared online, {org} quietly changed its policy on {thing}.",
    "Some observers believe the real figures on {thing} are much higher than reported.",
    "It is claimed that {role} {person} met privately with donors before backing {measure}.",
    "Reportedly, officials in {place} were told not to discuss {thing} in public.",
    "A document seen by readers of this site suggests {measure} was drafted by lobbyists.",
    "Many residents of {place} say they were never informed about {measure}.",
    "Questions remain about why {org} delayed its report on {thing} until after {month}.",
]

REAL_TITLES = [
    "{Org_t} says {thing} rose {pct} percent in {month}",
    "{Org_t} holds {thing} steady, cites uncertainty",
    "{place} lawmakers approve {measure}",
    "{role} {person} to meet {org} officials on {thing}",
    "Vote on {measure} delayed until {month}",
    "{Org_t} opens review of {thing} in {place}",
    "Court in {place} to rule on {measure} challenge",
    "Talks on {measure} to resume next week, officials say",
]
FAKE_TITLES = [
    "BREAKING: {role} {person} EXPOSED Over {Thing} Scandal",
    "WATCH: {role} {person} Gets Humiliated On Live TV [VIDEO]",
    "They Don't Want You To Know This About {Thing}",
    "{role} {person} Just Made A HUGE Announcement About {Thing} - Everyone Is Furious",
    "SHOCKING: What {Org_t} Is Hiding About {Thing} Will Make You Sick",
    "The Truth About {Measure_t} The Media Won't Tell You",
    "{place} Residents OUTRAGED After {Measure_t} Secretly Passed",
    "Is {Thing} A Scam? Insiders Finally Speak Out",
    "{role} {person} caught lying about {thing} again",  # some fake titles are calm
    "What really happened with {measure} in {place}",
]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _title_case(s: str) -> str:
    return " ".join(w if w.isupper() else _cap(w) for w in s.split())


def _slots(rng: random.Random, topic: dict) -> dict[str, str]:
    org = rng.choice(topic["orgs"])
    thing = rng.choice(topic["things"])
    measure = rng.choice(topic["measures"])
    n1 = rng.randint(40, 90)
    return {
        "org": org,
        "Org": _cap(org),
        "Org_t": _title_case(org.removeprefix("the ")),
        "thing": thing,
        "Thing": _title_case(thing),
        "measure": measure,
        "Measure_t": _title_case(measure.removeprefix("a ").removeprefix("an ").removeprefix("new ")),
        "person": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "role": rng.choice(ROLES),
        "place": rng.choice(PLACES),
        "day": rng.choice(DAYS),
        "month": rng.choice(MONTHS),
        "pct": f"{rng.randint(1, 9)}.{rng.randint(0, 9)}",
        "n": str(rng.choice([120, 250, 400, 800, 1200, 3500, 9000])),
        "n1": str(n1),
        "n2": str(rng.randint(10, n1 - 5)),
    }


def _article(rng: random.Random, label: int) -> tuple[str, str]:
    topic = TOPICS[rng.choice(sorted(TOPICS))]
    slots = _slots(rng, topic)
    if label == 1:
        pools = [(WIRE, 0.82), (WIRE_CHARGED, 0.13), (SUBTLE, 0.05)]
        title_pool = REAL_TITLES
    elif rng.random() < 0.15:  # the hard fakes: calm and vague
        pools = [(SUBTLE, 0.6), (WIRE, 0.35), (SENSATIONAL, 0.05)]
        title_pool = FAKE_TITLES[-2:]
    else:
        pools = [(SENSATIONAL, 0.55), (SUBTLE, 0.2), (WIRE, 0.25)]
        title_pool = FAKE_TITLES
    sentences: list[str] = []
    words = 0
    target = rng.randint(MIN_WORDS + 10, MAX_WORDS - 15)
    while words < target:
        r, acc = rng.random(), 0.0
        for pool, p in pools:  # noqa: B007  (the pool picked is the one the loop breaks on)
            acc += p
            if r < acc:
                break
        s = rng.choice(pool).format(**slots)
        if s in sentences:
            continue
        if words + len(s.split()) > MAX_WORDS:
            break
        sentences.append(s)
        words += len(s.split())
    return rng.choice(title_pool).format(**slots), " ".join(sentences)


def generate_articles(
    n_fake: int = N_FAKE, n_real: int = N_REAL, *, seed: int = DEMO_SEED
) -> list[tuple[str, str, int]]:
    """(title, text, label) for n_fake + n_real distinct synthetic articles, label 0 = fake, 1 = real."""
    rng = random.Random(seed)
    out: list[tuple[str, str, int]] = []
    seen: set[str] = set()
    for label in [0] * n_fake + [1] * n_real:
        while True:
            title, text = _article(rng, label)
            if text not in seen and MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                seen.add(text)
                break
        noisy = 1 - label if rng.random() < LABEL_NOISE else label
        out.append((title, text, noisy))
    rng.shuffle(out)
    return out


def demo_source() -> Source:
    """The demo corpus as a `newsclf.data.Source` for `prepare_dataset`."""
    from newsclf.data import Source

    articles = tuple(generate_articles())
    digest = hashlib.sha256(json.dumps(articles, ensure_ascii=False).encode()).hexdigest()
    return Source(
        "demo",
        articles=articles,
        description={"name": "newsclf-demo", "version": DEMO_VERSION, "sha256": digest, "rows": len(articles)},
    )


def prepare_demo(out_dir: Path, *, seed: int = 42, force: bool = False) -> PrepareResult:
    """Prepare the built-in demo corpus (generated, offline, seconds) into out_dir."""
    from newsclf.data import prepare_dataset

    return prepare_dataset(demo_source(), out_dir, seed=seed, force=force)
