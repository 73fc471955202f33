"""Language identification for routing: every text is "vi", "en" or "other".

Pure functions, thread-safe (module state is read-only after import), no network. The py3langid model
is loaded once at import and consulted only when the rules below cannot decide.

How a text is decided
---------------------
1. Normalise (NFC, lower case), drop URLs and e-mail addresses, split into letter tokens (digits,
   punctuation and emoji are separators). A text with no letters at all ("", "12345", "😀👍",
   "https://x.y") gets ``NO_LETTERS_LANG`` (default "other", score 0.0); pass ``no_letters=`` to
   ``detect``/``detect_with_score`` to route such texts elsewhere.
2. Script: tokens in a non-Latin script (CJK, kana, Hangul, Thai, Cyrillic, Arabic, ...) are counted
   in words (for scripts written without spaces, about two characters a word); if they outnumber the
   Latin tokens the text is "other". Otherwise they are ignored and the Latin tokens decide.
3. Each Latin token casts a weighted vote (positive = Vietnamese):
   * +1.0 contains a letter only Vietnamese uses (đ ă ơ ư, or a vowel carrying a tone mark that
     no other major Latin-script language has: ạ ả ấ ầ ẩ ẫ ậ ắ ... ỹ ỵ, ĩ ũ);
   * +1.0 carries only diacritics Vietnamese shares with French/Portuguese/Spanish (à á â ã è é ê ...)
     *and* is a well-formed Vietnamese syllable ("tôi", "là"); a token with such marks that is not a
     Vietnamese syllable ("café", "está") or with letters Vietnamese never uses (ç ñ ü ö ß ...) is
     foreign (-1.0);
   * +1.0 plain ASCII token that is a well-formed Vietnamese syllable (onset + nucleus + coda with the
     orthographic rules c/k/q, g/gh, ng/ngh, ch/nh codas ...) and not a common English word
     ("toi", "muon", "dien", "thoai"), or a chat abbreviation ("ko", "dc", "j", "ntn");
   * ~0 words that are both a Vietnamese syllable and an English word ("ban", "con", "tin", "the",
     "can", "may"); clearly English-leaning ones ("by", "but", "he", "try") count a little for English;
   * -1.0 English function words not shaped like Vietnamese ("what", "with", "how", "and");
     -0.5 other English words ("cheap", "review", "laptop") and unknown Latin words ("iphone",
     "samsung"). Vietnamese queries borrow English nouns freely ("review laptop gaming duoi 20
     trieu" is Vietnamese), English queries rarely borrow Vietnamese grammar, hence the asymmetry;
   * 0 Vietnamese place and dish names that English text uses too ("ha noi", "hanoi", "ho chi minh",
     "pho", "banh mi"): they say nothing about the language around them;
   * +0.3 syllables that are also Romance/Indonesian function words ("la", "de", "si", "su", "que");
     -1.0 frequent words of French/Spanish/German/Indonesian/... that are not Vietnamese-shaped
     ("je", "por", "saya", "und") -- these count as "foreign".
4. Mixed / code-switched text is therefore decided by this weighted majority: score >= +0.3 (or > 0
   with at least one Vietnamese-only letter) is "vi"; score <= -0.5 is not Vietnamese: "en" when most
   of its non-Vietnamese words are known English words and nothing foreign was seen, "other" when
   foreign words outnumber known English ones, otherwise py3langid over all its languages picks "en"
   or "other" (a non-English language must reach probability 0.5, else "en"). Anything in between (near ties, texts of
   only ambiguous words such as "ban tin" or "the con") goes to py3langid, restricted to vi/en unless
   a foreign token or a confident non-vi/en language says "other".

``detect_with_score`` returns a confidence in [0, 1]: from the vote margin when the rules decide,
py3langid's normalised probability otherwise, 0.0 for texts without letters.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from vien.text.syllables import FOLD as _STRIP
from vien.text.syllables import FOLDED_SYLLABLES

VI, EN, OTHER = "vi", "en", "other"
NO_LETTERS_LANG = OTHER

__all__ = ["EN", "NO_LETTERS_LANG", "OTHER", "VI", "detect", "detect_with_score", "is_english_word"]

# --------------------------------------------------------------------------------------------------
# Letters
# --------------------------------------------------------------------------------------------------
_VI_UNIQUE = frozenset("đăơưĩũạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ")
# Diacritics Vietnamese shares with other Latin-script languages.
_VI_SHARED = frozenset("àáâãèéêìíòóôõùúý")
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")

_URL = re.compile(r"(?:https?://|www\.)\S+|\S+@\S+\.\S+|\S+\.(?:com|vn|net|org|io)\S*", re.I)
# Letter runs, keeping English contractions ("don't", "it's") in one token.
_TOKEN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_LATIN_CHARS = re.compile(r"^[a-z\u00c0-\u024f\u1e00-\u1effʼ'’]+$")
# Scripts written without spaces between words: count about two characters a word.
_NOSPACE = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")

# Vietnamese syllables (unaccented spelling): onsets x rhymes with the spelling rules (vien.text.syllables)
_SYLLABLES = FOLDED_SYLLABLES


# --------------------------------------------------------------------------------------------------
# Word lists
# --------------------------------------------------------------------------------------------------
def _by_weight(groups: dict[float, str]) -> dict[str, float]:
    return {word: w for w, words in groups.items() for word in words.split()}


# Vietnamese chat abbreviations and teencode (vote for Vietnamese even though not syllables).
_VI_ABBR = _by_weight(
    {
        1.2: "đc đt vnđ đ nhé ạ",
        1.0: (
            "ko hok dc duoc ntn mik mk mn bn cx ak sdt tphcm thpt thcs ubnd bhxh bhyt cmnd cccd gplx tnhh trieu "
            "nhe nha hnay bjo"
        ),
        0.8: "j",
        0.5: "k hem ns nc ng r uk dt hcm dh vnd bh ck vk oi",
        0.3: "kg vs z v oke o ib",
        0.2: "e t b",
        0.0: "ship shop",
    }
)

# Vietnamese syllables that are also English words: weight <= 0 (English-leaning ones negative).
_AMBIG_WORDS = _by_weight(
    {
        0.0: "tin con ban sang tan chat chin tap pin sim ai ui lay bun vat dan mat tom",
        -0.05: "may top hot long song man bang hang son ton dam ham cam sat bay ran hop",
        -0.1: (
            "hay chip ten hen den net bit ram gap cap nap cat bat sung van an am a i my me no so do go can that "
            "them than not don gay hip lip"
        ),
        -0.15: "the to in on it",
        -0.2: "hat rap lap tram set say day cot men rung hung lung diet yen loan mac",
        -0.3: "run hi nut hit ray rat dip tip lot chop cop dot bet vet met sin rim dim map gum hum sum tech",
        -0.4: "via gin cut cup kit sip rip thin gut goat due tray trim",
        -0.5: "at be he let rich soap gun guy sun sit mom up trip trap tips way",
        -0.6: "but by him yet got try then quiet",
    }
)
# Vietnamese syllables that are also function words of French/Spanish/Italian/Indonesian ("la", "de",
# "si", "su"): a weak vote, so a Romance sentence is not taken for unaccented Vietnamese.
_WEAK_VI = {w: 0.3 for w in "la le de se si mi tu su que di da ma un en y te ti ne lo e o dong".split()}

# Frequent words of other Latin-script languages (not Vietnamese-shaped, not English): foreign votes.
_FOREIGN_WORDS = (
    frozenset(
        """
je tu il nous vous ils est sont les des une pour avec dans pas sur qui c'est ça oui merci bonjour
bonsoir voudrais suis très aussi mais où vie el los las es por para una está hola gracias buenos
buenas dias noches señor quiero como donde dónde qué muy pero también saya apa kabar selamat pagi
terima kasih tidak yang ini itu untuk dengan rumah bisa mau sudah belum ich und nicht ist das der ein
eine mit danke bitte guten morgen wie geht möchte ciao sono della grazie bella che buongiorno questo
obrigado você uma muito não olá een och jag inte
""".split()
    )
    - _SYLLABLES
)  # never outvote a Vietnamese syllable ("tu", "mau", "che", "mit", "het" are Vietnamese too)

# Vietnamese phrases made only of ambiguous words.
_VI_BIGRAMS = frozenset(tuple(p.split()) for p in ("cam on", "so do", "ban be", "con gai", "con trai"))

# Vietnamese names English text uses as well: no vote either way.
_NEUTRAL = frozenset(
    "hanoi saigon danang halong hcmc sapa hue pho tet vietnam viet nguyen mekong dalat nhatrang hoian phuquoc".split()
)
_NEUTRAL_BIGRAMS = frozenset(
    tuple(p.split())
    for p in (
        "ha noi",
        "ho chi",
        "chi minh",
        "sai gon",
        "da nang",
        "hoi an",
        "nha trang",
        "phu quoc",
        "ha long",
        "can tho",
        "hai phong",
        "vung tau",
        "da lat",
        "sa pa",
        "mui ne",
        "ninh binh",
        "ha giang",
        "con dao",
        "quy nhon",
        "phong nha",
        "banh mi",
        "bun cha",
        "bun bo",
        "ao dai",
        "com tam",
        "nuoc mam",
        "cu chi",
        "ben thanh",
        "hoan kiem",
        "tan son",
        "son nhat",
        "noi bai",
        "viet nam",
        "goi cuon",
        "ca phe",
    )
)

# English function words (not Vietnamese-shaped): a full vote for English.
_EN_FUNCTION = frozenset(
    """
the of and or for with from into onto about above after before between during without within against
among through under over near is are was were been being has have had having does did doing done will
would shall should could might must what which who whom whose where when why how there here this these
those they their theirs our ours your yours you she hers its we us his i'm i've i'd you're you've it's
that's what's there's let's don't doesn't didn't can't won't isn't aren't wasn't weren't haven't hasn't
isnt dont doesnt cant wont im ive youre whats thats theres also just only very much many more most
some any every each all both either neither other another such own same few less least best better
near nearest cheap cheapest free good great new old how-to if else because while until unless since
though although whether get gets getting make makes made take takes took find found need needs want
wants like likes know knows show shows use uses using used go goes going went come comes coming see
seen look looking please thanks thank hello yes not never always often sometimes again still even
""".split()
)

# Common English content words (not Vietnamese-shaped): half a vote for English (also used to tell
# English from other Latin-script languages without calling py3langid).
_EN_WORDS = (
    frozenset(
        """
time year people way day man woman child children world life hand part place case week company system
program question work government number night point home water room mother area money story fact month
lot right study book eye job word business issue side kind head house service friend father power hour
game line end member law car city community name president team minute idea kid body information back
parent face others level office door health person art war history party result change morning reason
research girl guy moment air teacher force education foot boy age policy everything process music market
sense nation plan college interest death experience effect class control care field development role
effort rate heart drug show leader light voice wife police mind price report decision son view
relationship town road arm difference value building action model season society tax director position
player record paper space ground form event official matter center couple site project activity star
table need court oil situation cost industry figure street image phone data picture practice piece land
product doctor wall patient worker news test movie north love support technology step baby computer type
attention film tree source organization hair window evidence population truck traffic goal fire bank
weather flight flights ticket tickets hotel hotels restaurant restaurants food recipe recipes coffee
tea breakfast lunch dinner menu delivery shipping order orders store shop shopping online sale sales
discount deal deals buy sell rent apartment apartments visa passport airport train station bus taxi
beach island mountain travel trip tour tours guide museum temple street map weather forecast rain
sunny hot cold medicine hospital clinic symptom symptoms fever pain headache cough treatment vaccine
disease diabetes blood pressure pregnancy insurance lawyer contract divorce property license licence
court legal rights tenant landlord employee employer salary job jobs interview resume university school
students student course courses exam exams scholarship english language learn learning lesson lessons
grammar vocabulary teacher class math science python java javascript code coding programming software
hardware laptop phone phones iphone android windows linux install installation download update error
bug server database cloud api file files password account login email internet wifi network router
website app apps review reviews best top how what why when where which who price prices cheap
affordable near open hours today tomorrow tonight weekend morning evening new used second hand size
color black white red blue green small large big little high low long short fast slow easy hard
difficult simple beautiful famous popular local traditional vietnamese english french chinese japanese
korean american street noodle noodles soup rice chicken beef pork fish seafood vegetarian vegan spicy
sweet sour salt sugar milk bread cake egg eggs fruit fruits vegetables kitchen restaurant cafe bar pub
book booking reservation cancel refund return warranty repair replace battery screen camera charger
cable keyboard mouse headphones speaker tv television fridge refrigerator washing machine air
conditioner fan motorbike motorcycle bike bicycle car cars rental hire parking driving drive driver
flight airline airlines luggage baggage hostel resort villa homestay room rooms night nights per
dollar dollars usd euro exchange rate rates gold stock stocks crypto bitcoin loan mortgage interest
credit card debit bank transfer payment pay paid fee fees tax taxes invoice receipt law laws rule rules
regulation regulations fine fines penalty permit permits requirement requirements document documents
application apply form forms office embassy consulate citizen citizenship immigration residence
temporary permanent work working worker workers holiday holidays festival new year lunar calendar
weather climate season summer winter spring autumn fall tutorial example examples tutorial guide
tips tricks meaning translate translation dictionary definition synonym pronunciation sentence
sentences word words phrase phrases say speak write read listen understand vs versus difference
between compare comparison list lists array function functions class classes object variable loop
string integer error errors exception memory performance speed fix fixing fixed machine learning
deep neural model models training dataset embedding embeddings vector search engine query queries
recommend recommendation recommendations reviews rating ratings near me nearby around opening
closing time times schedule timetable map directions distance far kilometers miles minutes hours
days weeks months years old young kids children family parents baby babies pregnant women men
health healthy diet weight loss exercise gym yoga running sleep stress anxiety depression mental
doctor doctors dentist teeth tooth skin hair eye eyes heart liver kidney stomach cancer flu cold
allergy allergies pill pills dose side effects safe dangerous emergency ambulance pharmacy
""".split()
    )
    - _EN_FUNCTION
)

_EN_SUFFIXES = (
    "tion",
    "tions",
    "sion",
    "ness",
    "ment",
    "ments",
    "ity",
    "ities",
    "able",
    "ible",
    "ful",
    "less",
    "ous",
    "ive",
    "ism",
    "ist",
    "ists",
    "ship",
    "ward",
    "wise",
    "ology",
    "graphy",
    "ally",
    "ically",
    "ing",
    "ings",
    "ed",
    "ly",
    "er",
    "ers",
    "est",
    "'s",
    "’s",
)


def _is_english(tok: str) -> bool:
    if tok in _EN_WORDS or tok in _EN_FUNCTION or tok in _AMBIG_WORDS:
        return True
    for suf, cut in (
        ("'s", 2),
        ("’s", 2),
        ("ies", 3),
        ("es", 2),
        ("s", 1),
        ("ing", 3),
        ("ed", 2),
        ("ed", 1),
        ("er", 2),
        ("ly", 2),
    ):
        if tok.endswith(suf) and len(tok) > cut + 2:
            stem = tok[:-cut]
            if suf == "ies":
                stem += "y"
            if stem in _EN_WORDS or stem in _EN_FUNCTION or stem in _AMBIG_WORDS:
                return True
            if suf == "ing" and (stem + "e") in _EN_WORDS:
                return True
    return len(tok) > 6 and tok.endswith(_EN_SUFFIXES)


# --------------------------------------------------------------------------------------------------
# py3langid fallback (loaded once; classification only reads the model, so it is thread-safe)
# --------------------------------------------------------------------------------------------------
def _load_identifier() -> Any:
    from py3langid import langid as _pl

    cls = _pl.LanguageIdentifier
    if hasattr(cls, "from_model_file"):
        return cls.from_model_file(_pl.MODEL_FILE, norm_probs=True)
    return cls.from_pickled_model(_pl.MODEL_FILE, norm_probs=True)  # py3langid < 0.4


_IDENT = _load_identifier()
_OTHER_MIN_PROB = 0.5  # a non-vi/en language must be at least this sure to win "other"
_STRONG_VI = 1.0  # vote of a word with a Vietnamese-only letter


def _langid_rank(text: str) -> tuple[str, float, float, float]:
    """(best language other than vi, its probability among non-vi languages, p(vi), p(en)) from the
    full model."""
    ranked = _IDENT.rank(text)
    top, p_top = ranked[0] if ranked[0][0] != "vi" else ranked[1]
    p_vi = p_en = 0.0
    for lang, p in ranked:
        if lang == "vi":
            p_vi = p
        elif lang == "en":
            p_en = p
        if p_vi and p_en:
            break
    rest = 1.0 - p_vi
    return top, float(p_top / rest) if rest > 0 else 0.0, float(p_vi), float(p_en)


def _vi_or_en(p_vi: float, p_en: float, score: float) -> tuple[str, float]:
    tot = p_vi + p_en
    if tot <= 0.0 or abs(p_vi - p_en) < 1e-6 * tot:  # py3langid has no opinion (e.g. one short word)
        return (EN if score < 0.0 else VI), 0.5
    return (VI, p_vi / tot) if p_vi > p_en else (EN, p_en / tot)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def is_english_word(word: str) -> bool:
    """Whether `word` is a known English word, Vietnamese-shaped ones included ("top", "ram", "bus"; not
    the Vietnamese-leaning "ban", "tin", "con"): accent restoration leaves such a word alone beside English."""
    w = word.lower()
    return w in _EN_FUNCTION or w in _EN_WORDS or _AMBIG_WORDS.get(w, 0.0) < 0.0


def detect(text: str, *, no_letters: str = NO_LETTERS_LANG) -> str:
    """The language of *text*: ``VI``, ``EN`` or ``OTHER``."""
    return detect_with_score(text, no_letters=no_letters)[0]


def detect_with_score(text: str, *, no_letters: str = NO_LETTERS_LANG) -> tuple[str, float]:
    """The language of *text* and a confidence in [0, 1] (see the module docstring for the rules)."""
    if not text:
        return no_letters, 0.0
    norm = unicodedata.normalize("NFC", text).lower()
    if "." in norm or "@" in norm:
        norm = _URL.sub(" ", norm)
    tokens = _TOKEN.findall(norm)
    if not tokens:
        return no_letters, 0.0

    latin: list[str] = []
    other_units = 0.0
    for tok in tokens:
        if _LATIN_CHARS.match(tok):
            latin.append(tok)
        else:
            n = len(_NOSPACE.findall(tok))
            other_units += max(1.0, n / 2.0) if n else 1.0
    if other_units > len(latin):
        return OTHER, round(other_units / (other_units + len(latin)), 3)

    plain = [t.translate(_STRIP) for t in latin]
    neutral: set[int] = set()
    score = 0.0
    for i in range(len(latin) - 1):
        pair = (plain[i], plain[i + 1])
        if pair in _NEUTRAL_BIGRAMS:
            neutral.add(i)
            neutral.add(i + 1)
        elif pair in _VI_BIGRAMS:
            neutral.add(i)
            neutral.add(i + 1)
            score += 2.0

    weight = score  # total absolute vote, for the confidence
    strong = foreign = en_known = non_vi = 0
    for i, tok in enumerate(latin):
        if i in neutral or plain[i] in _NEUTRAL:
            continue
        abbr = _VI_ABBR.get(tok)
        if abbr is not None:
            score += abbr
            weight += abbr
            continue
        if tok in _FOREIGN_WORDS:
            foreign += 1
            non_vi += 1
            score -= 1.0
            weight += 1.0
            continue
        chars = set(tok)
        if chars <= _ASCII_LETTERS:
            if tok in _SYLLABLES:
                w = _AMBIG_WORDS.get(tok)
                if w is None:
                    w = _WEAK_VI.get(tok)
                if w is None:
                    score += 1.0
                    weight += 1.0
                else:
                    score += w
                    weight += abs(w)
            elif len(tok) > 1 or tok in ("s", "t"):
                non_vi += 1
                if tok in _EN_FUNCTION:
                    en_known += 1
                    score -= 1.0
                    weight += 1.0
                else:
                    if _is_english(tok):
                        en_known += 1
                    score -= 0.5
                    weight += 0.5
            continue
        if chars & _VI_UNIQUE:
            strong += 1
            score += _STRONG_VI
            weight += _STRONG_VI
            continue
        bare = plain[i]
        if chars & _VI_SHARED and set(bare) <= _ASCII_LETTERS and bare in _SYLLABLES:
            score += 1.0
            weight += 1.0
        elif "'" in tok or "’" in tok:
            non_vi += 1
            if _is_english(tok):
                en_known += 1
            score -= 1.0
            weight += 1.0
        else:
            foreign += 1
            non_vi += 1
            score -= 1.0
            weight += 1.0

    conf = min(0.99, 0.5 + 0.5 * abs(score) / weight) if weight else 0.5
    if score >= 0.3 or (score > 0.0 and strong and not foreign):
        return VI, round(conf, 3)
    if score <= -0.5 and not foreign and en_known * 2 >= non_vi and en_known:
        return EN, round(conf, 3)

    if score <= -0.5 and foreign > en_known:
        return OTHER, round(conf, 3)

    top, p_top, p_vi, p_en = _langid_rank(" ".join(latin))
    if score <= -0.5:
        # not Vietnamese: English or another Latin-script language
        if top == EN:
            return EN, round(max(p_en / (p_en + p_vi or 1.0), 0.5), 3)
        if foreign or p_top >= _OTHER_MIN_PROB:
            return OTHER, round(p_top, 3)
        return EN, round(max(p_en / (p_en + p_vi or 1.0), 0.5), 3)
    # near tie: py3langid decides, restricted to vi/en unless something foreign is clearly there
    if top != EN and p_vi < p_top and (foreign or (p_top >= _OTHER_MIN_PROB and score <= 0.0 and en_known == 0)):
        return OTHER, round(p_top, 3)
    return _vi_or_en(p_vi, p_en, score)
