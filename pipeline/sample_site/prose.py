"""Seeded prose for the sample website: English articles, foreign pages, spam and comments.

A small phrase grammar (sentence frames whose `<SLOT>`s expand recursively) over a topic
vocabulary, so every article reads as plain English with terminal punctuation yet shares few
word 5-grams with any other article. Frames are drawn from a shuffled deck so no frame repeats
inside an article until all have been used: that keeps Gopher's duplicated n-gram shares low.
Everything is a pure function of a `random.Random`, so the same seed gives the same text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

_SLOT = re.compile(r"<([A-Z]+)>")


def _words(text: str) -> list[str]:
    """Items of a `|`-separated list wrapped over lines (a line break counts as a space)."""
    return [item.strip() for item in " ".join(text.split()).split("|") if item.strip()]


def _names(text: str) -> list[str]:
    """Single-word items separated by whitespace."""
    return text.split()


def _table(text: str) -> dict[str, list[str]]:
    """Blank-line separated records `key; field; field...` (fields may be `|` lists)."""
    records = [" ".join(block.split()) for block in text.strip().split("\n\n")]
    rows = [[field.strip() for field in record.split(";")] for record in records]
    return {key: fields for key, *fields in rows}


# One record per topic: key; name in titles; nouns; roles; adjectives; regular verbs.
_TOPICS = """
cycling; City Cycling; bike lane|cargo bike|repair shop|commuter route|junction|bike
rack|traffic signal|bridge crossing|delivery trailer|bike station;
commuter|mechanic|planner|courier|shop owner; protected|narrow|electric|painted|uphill|two-way;
widen|resurface|redesign|signpost|reroute

bees; Beekeeping; hive|apiary|honey harvest|queen bee|wildflower meadow|swarm|smoker|brood
frame|colony|pollen sample; beekeeper|gardener|orchard owner|bee inspector|farmer;
healthy|wild|sheltered|flowering|fragile|humming; inspect|relocate|harvest|pollinate|requeen

fishing; Coastal Fishing; harbor|trawler|fish market|lobster pot|sea wall|mooring|catch
limit|ice plant|net loft|tide table; fisher|deckhand|harbor master|fishmonger|marine biologist;
coastal|stormy|offshore|salt-stained|tidal|inshore; land|haul|moor|auction|unload

libraries; Public Libraries; reading room|branch library|card catalog|lending desk|story
hour|archive|study carrel|mobile library|book club|microfilm reader;
librarian|archivist|volunteer|student|reader; quiet|digitized|rare|overdue|well-thumbed|lending;
catalog|borrow|digitize|archive|shelve

baking; Home Baking; sourdough starter|bread oven|flour mill|bakery|proofing basket|cinnamon
bun|pastry case|kitchen scale|dough|market stall; baker|miller|pastry chef|apprentice|customer;
crusty|fresh|wholegrain|warm|rustic|sour; knead|bake|proof|season|glaze

astronomy; Amateur Astronomy; telescope|observatory|star chart|meteor shower|dark sky
reserve|eyepiece|comet|planetarium|lunar eclipse|light meter;
stargazer|astronomer|photographer|science teacher|park ranger;
dark|clear|faint|distant|cloudless|bright; observe|photograph|calibrate|align|chart

rail; Regional Rail; branch line|signal box|station platform|timetable|freight yard|sleeper
car|level crossing|ticket office|locomotive|viaduct; conductor|engineer|passenger|signal
operator|rail enthusiast; rural|electrified|overnight|restored|delayed|narrow-gauge;
schedule|electrify|reopen|connect|repaint

gardens; Community Gardening; allotment|raised bed|compost heap|greenhouse|seed library|rain
barrel|tool shed|orchard|vegetable plot|hedge; gardener|volunteer|neighbor|retiree|grower;
organic|overgrown|shared|fertile|muddy|sunny; plant|water|prune|harvest|compost

rivers; River Restoration; floodplain|weir|riverbank|salmon run|wetland|culvert|fish ladder|mill
pond|water meadow|gravel bar; ecologist|angler|hydrologist|landowner|river warden;
shallow|restored|flooded|winding|clean|silted; dredge|restore|replant|stabilize|reconnect

hiking; Mountain Walking; trail|summit|mountain
hut|footpath|ridge|trailhead|waymark|shelter|mountain pass|scree slope; hiker|guide|hut
warden|walker|volunteer ranger; steep|rocky|windswept|remote|marked|alpine;
climb|maintain|waymark|repair|explore

news; Local Journalism; newsroom|printing press|weekly paper|front page|letters page|photo
desk|subscription|editorial|court report|notice board; reporter|editor|press
photographer|subscriber|columnist; weekly|independent|printed|investigative|loyal|regional;
publish|report|print|fact-check|edit

jazz; Live Jazz; jazz club|rehearsal room|trumpet|double bass|jam session|record
shop|bandstand|set list|piano|festival stage; musician|drummer|promoter|listener|music student;
smoky|late-night|improvised|brassy|acoustic|swinging; rehearse|perform|record|arrange|improvise

boats; Wooden Boat Building; boatyard|hull|slipway|sail loft|rowing boat|workbench|oak
plank|mast|tiller|dry dock; shipwright|carpenter|sailor|apprentice|boat owner;
wooden|clinker-built|seaworthy|varnished|traditional|leaky; caulk|varnish|launch|restore|plane

solar; Village Solar Power; solar panel|battery bank|power cooperative|inverter|rooftop
array|grid connection|heat pump|meter|substation|wind turbine;
engineer|electrician|homeowner|cooperative member|installer;
renewable|rooftop|efficient|shared|cheap|reliable; install|generate|connect|insulate|monitor

birds; Birdwatching; bird hide|estuary|migration route|nest box|heron colony|feeder|ringing
station|marsh|field guide|spotting scope; birdwatcher|ornithologist|wildlife
photographer|reserve warden|volunteer counter; migratory|rare|early|patient|coastal|shy;
count|ring|photograph|identify|feature

pottery; Studio Pottery; kiln|pottery wheel|glaze|studio|clay pit|teapot|workshop|craft
fair|stoneware jug|firing; potter|art student|gallery owner|collector|teacher;
glazed|handmade|fired|earthy|unfinished|speckled; glaze|fire|shape|sculpt|exhibit

chess; Club Chess; chess club|tournament|opening|endgame|rating list|chess clock|community
hall|puzzle|simultaneous display|league match; player|coach|arbiter|organizer|junior;
rapid|tactical|competitive|friendly|quiet|crowded; analyze|practice|host|organize|review

mills; Historic Mills; watermill|millstone|mill race|grain store|waterwheel|sluice
gate|granary|heritage trail|visitor center|flour sack;
miller|historian|millwright|trustee|volunteer guide;
historic|derelict|water-powered|listed|working|restored; repair|document|reopen|convert|restore
"""
NOUNS = _names("""
project building meeting budget idea visitor school neighborhood event season survey grant
workshop report festival proposal committee market street archive weekend volunteer
""")
ROLES = _words("""
retired teacher|council member|longtime resident|local historian|volunteer coordinator|small
business owner|former mayor|graduate student|project manager|district nurse|parent of
three|university researcher
""")
ADJS = _names("""
steady modest ambitious practical familiar unusual remarkable durable crowded seasonal regional
traditional modern affordable expensive simple complicated independent informal small early
recent surprising lasting temporary overlooked costly popular fragile neglected valuable
""")
VERBS = _names("""
improve support reduce protect affect change limit extend test measure compare explain describe
follow study track replace design finance question challenge transform strengthen manage handle
collect share expand adopt examine influence encourage require combine balance prepare deliver
survey evaluate consider discuss promote preserve celebrate welcome attract upgrade defend visit
adapt rescue invite
""")
MOODS = _names("""
experienced younger older skeptical eager cautious hopeful stubborn patient busy worried
optimistic curious divided confident
""")
ABSTRACT = _names("""
funding attention confidence patience interest demand pressure tradition progress equipment
training knowledge research competition cooperation trust enthusiasm experience planning
maintenance curiosity skepticism momentum investment safety quality access recognition goodwill
paperwork
""")
OPENERS = _words("""
In recent years|For many residents|At first glance|According to local records|Not
surprisingly|By most accounts|Even so|On a typical morning|In practice|Looking back|For
now|Until recently|Over the following months|In the meantime|To the surprise of many|At the same
time|In hindsight|On paper|In the long run|Every so often|By late autumn|During the first
winter|For better or worse|Above all|Once again|Oddly enough|More importantly|Before long|In
many ways|As a result
""")
TIMES = _words("""
every spring|on weekday mornings|during the long winter|at the end of each season|after heavy
rain|on most weekends|each autumn|late in the evening|before the summer crowds arrive|in the
early hours|twice a month|throughout the year|after the harvest|during school holidays|in the
dry months|at the start of the year|on market days|when the weather turns
""")
NUMBERS = _names("""
two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty
""")
FIRST = _names("""
Anna Ben Clara Daniel Elena Felix Grace Henry Iris James Kara Leo Maya Noah Olivia Peter Quinn
Rosa Samuel Tara Usha Victor Wendy Yusuf Zoe Amir Bea Caleb Dina Ezra Fatima Gus Hana Ivan Jonah
Keiko Lena Marco Nadia Oscar Priya Rafael Sofia Tomas
""")
LAST = _names("""
Abbott Baines Carver Dalton Ellison Fairweather Greaves Hartley Ingram Jessop Kendrick Lowell
Marlowe Nash Okafor Pemberton Quayle Radcliffe Sutton Thackeray Underwood Vance Whitlock Yardley
Achebe Brennan Castillo Delacroix Eriksen Fontaine Gallagher Haddad Ivanova Jansen Kowalski
Lindqvist Moreau Nakamura Oyelaran Petrov Rahman Santos Takahashi Varga
""")
_PLACE_HEAD = _names("""
Ash Bram Cal Dun Elm Fen Glen Hart Ivy Kes Lark Mar Nor Oak Pen Quar Rav Sil Thorn Wil Wren
Brack Hol Stan Lang
""")
_PLACE_TAIL = _names("""
ford mere wick dale ton bury field stead moor haven brook worth by combe ley
""")
TOPICS = _table(_TOPICS)


def plural(noun: str) -> str:
    """English plural of the last word by rule (the vocabulary avoids irregular nouns)."""
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


def third_person(verb: str) -> str:
    return plural(verb)  # the same spelling rules: watches, carries, plants


def past(verb: str) -> str:
    """Past participle of a regular verb (the vocabulary avoids doubled consonants)."""
    if verb.endswith("e"):
        return verb + "d"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ied"
    return verb + "ed"


def place_name(rng: random.Random) -> str:
    return rng.choice(_PLACE_HEAD) + rng.choice(_PLACE_TAIL)


def person_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def capitalize(text: str) -> str:
    """Upper-case the first letter (after any opening quote)."""
    match = re.search(r"[A-Za-z]", text)
    if not match:
        return text
    return text[: match.start()] + match.group().upper() + text[match.end() :]


def title_case(text: str) -> str:
    small = {"a", "an", "the", "of", "in", "for", "and", "to", "on", "from", "its", "than", "that"}
    words = text.split()
    return " ".join(w if (i and w in small) else w[:1].upper() + w[1:] for i, w in enumerate(words))


def tidy(text: str) -> str:
    """Collapse spaces left by empty slots and choose a/an by the next word's sound."""
    text = re.sub(r" {2,}", " ", text).strip()
    text = re.sub(r" ([,.;:?!])", r"\1", text)
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])(?!uni|use|one)", r"\1n ", text)


class Grammar:
    """Expands `<SLOT>` templates; slots are word lists or callables of the Grammar."""

    def __init__(self, rng: random.Random, slots: dict[str, list[str] | Callable[[], str]]):
        self.rng = rng
        self.slots = slots

    def expand(self, template: str, depth: int = 0) -> str:
        if depth > 8:
            raise RecursionError(f"sample grammar recursion too deep at {template!r}")

        def fill(match: re.Match[str]) -> str:
            value = self.slots[match.group(1)]
            picked = value() if callable(value) else self.rng.choice(value)
            return self.expand(picked, depth + 1)

        return _SLOT.sub(fill, template)


# Actors (<ACT> plural, <ACTS> singular) do things to objects; things (<PL>, <SG>) have
# properties or undergo things in the passive. That typing keeps most sentences sensible.
_CLAUSES = _words("""
<ACT> <ADV> <V> <OBJ>|<ACTS> <VS> <OBJ> <TIME>|<ACT> in <PLACE> have <VED> <OBJ>|<SG> has been
<VED> twice since <YEAR>|<SG> is <DEG> <ADJ>|<PL> are <DEG> <ADJ> <TIME>|the <ABS> around <PL> has
<TREND> <TIME>|few <N> <V> <OBJ> without <ABS>|<ACT> can <V> <OBJ> with little <ABS>|<ACT> rarely
<V> <OBJ> on their own|<ACTS> still <VS> <OBJ>|nobody has <VED> <OBJ> quite like the <N> of
<PLACE>|<ACT> tend to <V> <OBJ> <TIME>|<PL> were <VED> by <N> <TIME>|<SG> was <VED> in <YEAR>|<N>
<VED> <OBJ> long before anyone <VED> <OBJ>|the cost of <PL> has <TREND>|<NN> now <V> <OBJ>
together|<SG> depends on <ABS> as much as on <ABS>|<PL> need more <ABS> than <ABS>|<ACT> want more
<ABS> for <PL>|<ACT> worry about the <ABS> of <PL>|<ACT> plan to <V> <OBJ> <TIME>
""")
_SENTENCES = _words("""
<OPEN>, <CL>.|<CL>, <CONJ> <CL>.|<CL> <SUB> <CL>.|<PERSON>, <ROLE> in <PLACE>, <REP> that <CL>.|
"<CLC>," <LAST> <REP>.|<CLC>.|For the <N>, <CL>.|There are now <NUM> <NPL> in <PLACE>, and <CL>.|
Nobody in <PLACE> expected that <CL>.|What surprised the <N> most was that <CL>.|It took <NUM> years
before <CL>.|Why do <ACT> <V> <OBJ>?|Some <N> <V> <OBJ>, while others <V> <OBJ>.|According to
<PERSON>, <CL>.|By <YEAR>, <CL>.|<NUMC> <N> <VED> <OBJ> last year, up from <NUM> the year before.|
The <ABS> behind <PL> is <ADJ>, and <CL>.|In <PLACE>, <CL>, and <CL>.|<CLC>, or at least that is
what the <N> of <PLACE> <BELIEVE>.|Not everyone agrees that <CL>.|Critics argue that <CL>, but the
<N> <BELIEVE> that <CL>.|<CLC>; <CL>.|The <NSG> on the edge of <PLACE> is a good example: <CL>.|
When <CL>, <CL>.|If <CL>, <CL>.|The <N> in <PLACE> are <DEG> <MOOD> about <ABS>.|Ask the <N> in
<PLACE> about <PL> and most will tell you that <CL>.|That was <NUM> years ago, and <CL>.|One <RB>
put it simply: <CL>.|The first <NSG> opened in <YEAR>, and <CL>.|Since then, <CL>.|Much of the <ABS>
comes from <N>, who <V> <OBJ> <TIME>.|"<CLC>," <REP> <PERSON>, who has <VED> <OBJ> for <NUM> years.|
Few places show this better than <PLACE>, where <CL>.|The lesson, the <N> say, is that <CL>.|For
<PERSON>, the answer is <ANSWER>: <CL>.|<PERSON> still remembers the day the first <NSG> was <VED>.|
Even in <PLACE>, <CL>.|Is it possible that <CL>?|<CLC>, which surprised the <N> <TIME>.
""")
_HEADINGS = _words("""
<ADJC> <NPLC> in <PLACE>|What the <NC> Want From <ABSC>|The Question of <ABSC>|
Counting the <NPLC>|A <ADJC> Season for <NC>|Looking Ahead in <PLACE>|Where the <ABSC> Comes From|
Between <PLACE> and <PLACE>|The Trouble With <NPLC>|Lessons From the <NSGC>""")
TITLES = _words("""
How <PLACE> Learned to Love Its <NPLC>|The Quiet Return of <ADJC> <NPLC> in <PLACE>|What <NUMC>
Years of <TOPIC> Taught <PLACE>|Inside the <NSGC> That Changed <TOPIC> in <PLACE>|Why <NPLC> in
<PLACE> Matter More Than Ever|The <NC> of <PLACE> and the Fight for <ABSC>|A Field Guide to the
<ADJC> <NPLC> of <PLACE>|The Long, Slow Revival of <TOPIC> in <PLACE>|Notes From a <ADJC> <NSGC> in
<PLACE>|The <NPLC> of <PLACE> Are Changing, and Here Is Why|Can <PLACE> Save Its <NPLC>?|<NUMC>
Things We Learned From the <NC> of <PLACE>|In <PLACE>, a <ADJC> Fight Over <NPLC>|The People
Keeping <TOPIC> Alive in <PLACE>|What Happened to the <NPLC> of <PLACE>?|A Year With the <NC> of
<PLACE>|<TOPIC> on a Shoestring: Lessons From <PLACE>|Why <PLACE> Is Betting on <NPLC>|The Unlikely
Comeback of the <NSGC> in <PLACE>|Meet the <NC> Rethinking <TOPIC> in <PLACE>|After <NUMC> Years,
<PLACE> Reopens Its <NSGC>|The <ADJC> Economics of <TOPIC> in <PLACE>""")

_COMMENTS = _words("""
Great piece. I grew up near <PLACE> and the <NPL> there were always <ADJ>.|Thanks for writing
this, my grandmother was one of the <N> you mention.|I am not convinced. <CLC>.|Does anyone know
whether the <NSG> in <PLACE> is still open on Sundays?|Lovely read, I shared it with my
neighbors.|This matches what we saw in <PLACE> last spring.|Would love a follow-up on the
<NPL>!|As one of the <N> here, I can say <CL>.""")


class EnglishWriter:
    """Writes one article's worth of prose about a topic, with a small cast of people/places."""

    def __init__(self, rng: random.Random, topic: str):
        self.rng = rng
        self.topic = topic
        name, nouns, roles, adjs, verbs = TOPICS[topic]
        nouns_l, roles_l, adjs_l, verbs_l = map(_words, (nouns, roles, adjs, verbs))
        self.places = sorted({place_name(rng) for _ in range(3)})
        self.people = [person_name(rng) for _ in range(3)]
        mix = self._mix

        def verb(form: Callable[[str], str]) -> Callable[[], str]:
            return lambda: form(mix(verbs_l, VERBS, 0.5))

        slots: dict[str, list[str] | Callable[[], str]] = {
            "ACT": _words("the <N>|<N>|the <MOOD> <N>|many <N>|local <N>|<NN>|the <N> of <PLACE>"),
            "ACTS": _words("<PERSON>|<LAST>|one <MOOD> <RB>|<PERSON>, <ROLE>,|the <RB> next door"),
            "PL": _words("""<DETP> <NPL>|<DETP> <ADJ> <NPL>|the <NPL> of <PLACE>|<DETP> <NPL>
                near the <NSG>"""),
            "SG": _words("""the <NSG>|the <ADJ> <NSG>|a <ADJ> <NSG>|a <NSG>|the <NSG> in
                <PLACE>|every <NSG>|the old <NSG>|<PLACE>'s <NSG>"""),
            "OBJ": _words("<PL>|<SG>|<ABS>|the <ABS> of <PL>|their <NPL>|their <ADJ> <NSG>"),
            "DETP": ["the", "many", "some", "most", "these", "several", "local", "", "the newer"],
            "NSG": lambda: mix(nouns_l, NOUNS, 0.8),
            "NPL": lambda: plural(mix(nouns_l, NOUNS, 0.8)),
            "N": lambda: plural(rng.choice(roles_l)),
            "NN": lambda: " and ".join(plural(role) for role in rng.sample(roles_l, 2)),
            "RB": lambda: rng.choice(roles_l + ROLES),
            "ROLE": lambda: "a " + rng.choice(ROLES + roles_l),
            "ADJ": lambda: mix(adjs_l, ADJS, 0.4),
            "V": verb(lambda v: v),
            "VS": verb(third_person),
            "VED": verb(past),
            "ABS": ABSTRACT,
            "PLACE": self.places,
            "PERSON": self.people,
            "LAST": lambda: rng.choice(self.people).split()[-1],
            "TIME": TIMES,
            "OPEN": OPENERS,
            "NUM": NUMBERS,
            "NUMC": lambda: capitalize(rng.choice(NUMBERS)),
            "YEAR": lambda: str(rng.randint(1950, 2021)),
            "CL": _CLAUSES,
            "CLC": lambda: capitalize(self.grammar.expand("<CL>")),
            "ADV": ["often", "usually", "sometimes", "now", "still", "quietly", "rarely", ""],
            "DEG": ["surprisingly", "rather", "remarkably", "increasingly", "fairly", "quite"],
            "TREND": ["grown", "faded", "shifted", "returned", "steadied", "doubled", "slipped"],
            "CONJ": ["and", "but", "so", "yet"],
            "SUB": ["because", "although", "while", "even though", "since", "whenever", "until"],
            "REP": ["said", "explained", "noted", "argued", "recalled", "admitted", "pointed out"],
            "MOOD": MOODS,
            "ANSWER": ["simple", "obvious", "practical", "complicated", "personal", "modest"],
            "BELIEVE": ["believe", "argue", "hope", "suspect", "insist", "claim"],
            "TOPIC": [name],
            "ADJC": lambda: title_case(mix(adjs_l, ADJS, 0.5)),
            "NPLC": lambda: title_case(plural(rng.choice(nouns_l))),
            "NSGC": lambda: title_case(rng.choice(nouns_l)),
            "NC": lambda: title_case(plural(rng.choice(roles_l))),
            "ABSC": lambda: title_case(rng.choice(ABSTRACT)),
        }
        self.grammar = Grammar(rng, slots)
        self._deck: list[str] = []

    def _mix(self, topical: list[str], generic: list[str], p_topical: float) -> str:
        return self.rng.choice(topical if self.rng.random() < p_topical else generic)

    def sentence(self) -> str:
        if not self._deck:  # a fresh shuffled deck: no frame repeats before all are used
            self._deck = self.rng.sample(_SENTENCES, len(_SENTENCES))
        return capitalize(tidy(self.grammar.expand(self._deck.pop())))

    def title(self, frame: str | None = None) -> str:
        return tidy(self.grammar.expand(frame or self.rng.choice(TITLES)))

    def heading(self) -> str:
        return tidy(self.grammar.expand(self.rng.choice(_HEADINGS)))

    def paragraph(self, sentences: int) -> str:
        return " ".join(self.sentence() for _ in range(sentences))

    def body(self, min_words: int, max_words: int, min_paragraphs: int = 5) -> list[str]:
        """Paragraphs (and an occasional sub-heading) of min..max words, max as a hard cap."""
        target = self.rng.randint(min_words, max_words)
        lines: list[str] = []
        words = paragraphs = 0
        while words < target or paragraphs < min_paragraphs:
            if paragraphs in (3, 7) and self.rng.random() < 0.6:
                lines.append(self.heading())
            sentences: list[str] = []
            for _ in range(self.rng.randint(2, 5)):
                sentence = self.sentence()
                if sentences and words + len(sentence.split()) > max_words:
                    break
                sentences.append(sentence)
                words += len(sentence.split())
            lines.append(" ".join(sentences))
            paragraphs += 1
        return lines

    def comments(self, count: int) -> list[str]:
        """Reader comments (distinct frames): on topic, and never part of the article body."""
        frames = self.rng.sample(_COMMENTS, min(count, len(_COMMENTS)))
        return [capitalize(tidy(self.grammar.expand(frame))) for frame in frames]


# Foreign prose, one record per language: code; subjects; verbs; objects; times; openers;
# predicative adjectives; sentence frames. Subjects/objects carry their own articles, so no
# agreement rules are needed.
_FOREIGN = """
fr; la mairie|le marché couvert|la bibliothèque municipale|le club de randonnée|la coopérative
agricole|le musée du village|l'association des habitants|le conseil régional|la petite
boulangerie|le port de pêche|l'école primaire|la gare centrale|le festival d'été|le jardin
partagé;
accueille|organise|soutient|prépare|présente|finance|protège|transforme|attire|réunit|propose|améliore|restaure|découvre;
de nombreux visiteurs|les familles du quartier|une exposition consacrée à l'histoire locale|des
ateliers pour les enfants|les producteurs de la région|un nouveau projet culturel|les anciens
bâtiments|des concerts en plein air|les jeunes agriculteurs|une collection de photographies
anciennes; chaque printemps|depuis plusieurs années|pendant les vacances scolaires|tous les
samedis matin|au début de l'automne|chaque été|deux fois par mois; Selon les habitants|Depuis
quelques années|Pour beaucoup de familles|Au début|En réalité|Cette année encore|Comme souvent|À
la surprise générale;
indispensable|utile|fragile|célèbre|agréable|populaire|accessible|remarquable|modeste|calme;
<OPEN>, <S> <V> <O> <T>.|<SC> <V> <O> à <P>, et <S> <V> <O>.|À <P>, <S> reste <A>, mais <S> <V>
<O> <T>.|« Nous voulons que <S> reste <A> », explique <PERSON>, qui habite à <P> depuis <NUM>
ans.|Beaucoup de gens pensent que <S> <V> <O>.|Pourtant, <S> <V> aussi <O> <T>.|Il faut dire que
<S> <V> <O> depuis longtemps.|Les habitants de <P> savent que <S> <V> <O>.|Cette année, <S> <V>
<O> grâce au soutien de la commune.

de; die Stadtbibliothek|der Wochenmarkt|das kleine Museum|der Wanderverein|die Bäckerei am
Marktplatz|das Dorffest|die Gemeinde|der Hafen|die Grundschule|der Gemeinschaftsgarten|das
Rathaus|die Genossenschaft;
organisiert|unterstützt|zeigt|plant|fördert|schützt|verändert|begrüßt|bietet|sammelt|renoviert|finanziert;
viele Besucher|einen neuen Rundweg|die Familien aus der Nachbarschaft|eine Ausstellung über die
Geschichte der Region|Kurse für Kinder und Jugendliche|die Landwirte aus der Umgebung|alte
Gebäude|Konzerte unter freiem Himmel|junge Handwerker|eine Sammlung historischer Fotografien;
jeden Frühling|seit vielen Jahren|in den Sommerferien|jeden Samstagmorgen|im Herbst|seit dem
letzten Winter|zweimal im Monat; Seit einigen Jahren|Trotzdem|Inzwischen|Im Moment|Auch in
diesem Jahr|Schon bald|Zum Glück|Nach langer Planung;
wichtig|beliebt|bekannt|wertvoll|ruhig|bescheiden|lebendig|unverzichtbar; <SC> <V> <T>
<O>.|<OPEN> <V> <S> <O>.|In <P> ist <S> sehr <A>, aber <S> <V> <T> <O>.|„Wir hoffen, dass <S>
<A> bleibt“, sagt <PERSON>, der seit <NUM> Jahren in <P> lebt.|Viele Menschen glauben, dass <S>
<O> <V>.|Die Einwohner von <P> wissen, dass <S> <T> <O> <V>.|Dieses Jahr <V> <S> <O> mit Hilfe
der Gemeinde.|Außerdem <V> <S> <T> <O>.

es; el ayuntamiento|el mercado municipal|la biblioteca del barrio|el club de montaña|la
cooperativa agrícola|el pequeño museo|la asociación de vecinos|el puerto pesquero|la escuela
primaria|la estación de tren|el festival de verano|el huerto comunitario;
organiza|apoya|presenta|protege|transforma|atrae|reúne|propone|mejora|restaura|recibe|financia;
a muchos visitantes|a las familias del barrio|una exposición sobre la historia local|talleres
para niños|a los productores de la región|un nuevo proyecto cultural|los edificios
antiguos|conciertos al aire libre|a los jóvenes agricultores|una colección de fotografías
antiguas; cada primavera|desde hace varios años|durante las vacaciones escolares|todos los
sábados por la mañana|a principios del otoño|cada verano|dos veces al mes; Según los
vecinos|Desde hace unos años|Para muchas familias|Al principio|En realidad|Este año también|Como
siempre|Para sorpresa de todos;
importante|popular|accesible|agradable|útil|frágil|imprescindible|humilde|fundamental|especial;
<OPEN>, <S> <V> <O> <T>.|<SC> <V> <O> en <P>, y <S> <V> <O>.|En <P>, <S> sigue siendo <A>, pero
<S> <V> <O> <T>.|«Queremos que <S> siga siendo <A>», explica <PERSON>, que vive en <P> desde
hace <NUM> años.|Mucha gente piensa que <S> <V> <O>.|Sin embargo, <S> también <V> <O> <T>.|Hay
que decir que <S> <V> <O> desde hace tiempo.|Los vecinos de <P> saben que <S> <V> <O>.|Este año,
<S> <V> <O> gracias al apoyo del municipio.
"""
FOREIGN = _table(_FOREIGN)


_FOREIGN_TITLES = {
    "fr": "À <P>, <S> <V> <O>",
    "de": "In <P> <V> <S> <O>",
    "es": "En <P>, <S> <V> <O>",
}


def foreign_page(
    rng: random.Random, language: str, min_words: int, paragraphs: int
) -> tuple[str, list[str]]:
    """A title and plain paragraphs of French/German/Spanish prose from the tables above."""
    subjects, verbs, objects, times, openers, adjs, frames = map(_words, FOREIGN[language])
    places, people = [place_name(rng) for _ in range(2)], [person_name(rng) for _ in range(2)]
    grammar = Grammar(
        rng,
        {
            "S": subjects, "V": verbs, "O": objects, "T": times, "OPEN": openers, "A": adjs,
            "P": places, "PERSON": people, "NUM": [str(n) for n in range(3, 40)],
            "SC": lambda: capitalize(rng.choice(subjects)),
        },
    )  # fmt: skip
    lines: list[str] = []
    deck: list[str] = []
    while sum(len(line.split()) for line in lines) < min_words or len(lines) < paragraphs:
        sentences = []
        for _ in range(rng.randint(3, 5)):
            deck = deck or rng.sample(frames, len(frames))
            sentences.append(grammar.expand(deck.pop()))
        lines.append(" ".join(sentences))
    return capitalize(grammar.expand(_FOREIGN_TITLES[language])), lines


SPAM_KEYWORDS = [
    ("cheap replica watches", "best price", "free shipping", "buy now"),
    ("online casino bonus", "free spins", "instant payout", "play now"),
    ("weight loss pills", "lose weight fast", "miracle diet", "order today"),
    ("payday loans", "no credit check", "instant approval", "apply now"),
]


def spam_body(rng: random.Random, keywords: tuple[str, ...]) -> list[str]:
    """Keyword-stuffed lines: repeated n-grams and duplicate lines, as Gopher's rules target."""
    main, *rest = keywords
    variants = [
        f"{main.capitalize()} {rest[0]} {main} {rest[1]}.",
        f"Best {main} {main} {rest[2]} {main}!",
        f"{main.capitalize()} {main} {main} {rest[0]} {rest[1]} {rest[2]}.",
        f"Top {main} {rest[1]} {main} {rest[0]} {main}.",
    ]
    return [rng.choice(variants) for _ in range(rng.randint(14, 20))]


_SHORT = _words("""
Our office is closed for the holiday. We reopen on Monday morning.|Correction: an earlier
version of this story misspelled the name of a bakery in <PLACE>.|Photos from the spring fair in
<PLACE> are coming soon. Check back later this week.|The <PLACE> walking group meets at nine on
Saturday. Bring water and good boots.|Update: the talk in <PLACE> has been moved to Thursday
evening. Tickets remain valid.""")


def short_body(rng: random.Random) -> list[str]:
    """A notice of a sentence or two: far under Gopher's 50-word minimum."""
    grammar = Grammar(rng, {"PLACE": lambda: place_name(rng)})
    return [grammar.expand(rng.choice(_SHORT))]


def link_farm_anchors(rng: random.Random, count: int) -> list[str]:
    """Anchor texts for a page that is nothing but outbound links."""
    keywords = [kw for group in SPAM_KEYWORDS for kw in group]
    return [f"{rng.choice(keywords)} {place_name(rng)}" for _ in range(count)]
