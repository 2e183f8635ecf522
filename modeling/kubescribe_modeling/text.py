"""Text normalisation shared by data synthesis, training, evaluation and WER.

`normalize_text` maps written English to the spoken-form alphabet the models emit:
lowercase ``a``-``z``, the apostrophe and single spaces. Numbers, ordinals, decimals,
percentages, currency amounts, clock times and dates are written out as words; other
punctuation is dropped. The function is pure and deterministic, so a transcript
normalised at training time and a hypothesis normalised at scoring time agree.

Conventions (one reading per written form, so the mapping is a function):

* cardinals without "and": ``105`` -> "one hundred five"; ``1,200`` -> "one thousand two hundred"
* a bare four-digit number from 1100 to 2099 reads as a year: ``1999`` -> "nineteen ninety nine",
  ``2005`` -> "two thousand five", ``2024`` -> "twenty twenty four"
* digit strings with a leading zero or longer than nine digits are read digit by digit
* ``3.5`` -> "three point five"; ``15%`` -> "fifteen percent"; ``-4`` -> "minus four"
* ``$12.50`` -> "twelve dollars fifty cents"; ``£3`` -> "three pounds"; ``€1`` -> "one euro"
* ``3:05`` -> "three oh five"; ``10:00`` -> "ten o'clock"; ``am``/``pm`` -> "a m"/"p m"
* ``2024-03-15`` -> "march fifteenth twenty twenty four"; ``21st`` -> "twenty first"
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "ALPHABET",
    "cardinal",
    "digits",
    "normalize_text",
    "ordinal",
    "year",
]

#: Every character a normalised transcript may contain.
ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz' ")

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = (
    (10**12, "trillion"),
    (10**9, "billion"),
    (10**6, "million"),
    (10**3, "thousand"),
)
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest or not words:
        words.append(_ONES[rest])
    return words


def cardinal(n: int) -> str:
    """Write a whole number as words: ``cardinal(2105) == "two thousand one hundred five"``."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n >= 10**15:
        raise ValueError(f"number too large to write out: {n}")
    if n < 1000:
        return " ".join(_below_thousand(n))
    words: list[str] = []
    for scale, name in _SCALES:
        if n >= scale:
            count, n = divmod(n, scale)
            words += [*_below_thousand(count), name]
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def ordinal(n: int) -> str:
    """Write an ordinal: ``ordinal(21) == "twenty first"``, ``ordinal(100) == "one hundredth"``."""
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year(n: int) -> str:
    """Read a year as spoken: 1999 -> "nineteen ninety nine", 2005 -> "two thousand five"."""
    if n < 1000 or n > 9999:
        return cardinal(n)
    high, low = divmod(n, 100)
    if n % 1000 < 10 and high % 10 == 0:  # 2000..2009, 1000..1009
        return cardinal(n)
    if low == 0:
        return cardinal(high) + " hundred"
    if low < 10:
        return cardinal(high) + " oh " + cardinal(low)
    return cardinal(high) + " " + cardinal(low)


def digits(s: str) -> str:
    """Read a digit string one digit at a time: ``digits("042") == "zero four two"``."""
    return " ".join(_ONES[int(c)] for c in s if c.isdigit())


def _number(s: str) -> str:
    """Read a plain digit string (commas already removed)."""
    if (len(s) > 1 and s.startswith("0")) or len(s) > 9:
        return digits(s)
    return cardinal(int(s))


def _amount(n: int) -> str:
    """A cardinal, or digit by digit where it is too large to write out."""
    return cardinal(n) if n < 10**15 else digits(str(n))


def _ordinal_or_digits(n: int) -> str:
    return ordinal(n) if n < 10**15 else digits(str(n))


def _decimal(whole: str, frac: str) -> str:
    head = _number(whole) if whole else "zero"
    return head + " point " + digits(frac)


# --- rewrite rules, applied in order -------------------------------------------------------

_CURRENCY = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
_CURRENCY_RE = re.compile(
    r"([$£€])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?:\s?(million|billion|thousand))?\b"
)
_ISO_DATE_RE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTH_DAY_RE = re.compile(
    r"\b(" + "|".join(_MONTHS) + r")\s+(\d{1,2})(?:st|nd|rd|th)?\b(?:,?\s+(\d{4})\b)?",
    re.IGNORECASE,
)
_DAY_MONTH_RE = re.compile(
    r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(of\s+)?(" + "|".join(_MONTHS) + r")\b(?:,?\s+(\d{4})\b)?",
    re.IGNORECASE,
)
_TIME_RE = re.compile(r"\b(\d{1,2}):(\d{2})\b(?:\s*([ap])\.?\s?m\b\.?)?", re.IGNORECASE)
_HOUR_AMPM_RE = re.compile(r"\b(\d{1,2})\s*([ap])\.?\s?m\b\.?", re.IGNORECASE)
_ORDINAL_RE = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_GROUPED_RE = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_DECIMAL_RE = re.compile(r"(?<![\d.])(\d*)\.(\d+)\b")
_NEGATIVE_RE = re.compile(r"(?<![\w\d])-(\d)")
_YEAR_RE = re.compile(r"\b(1[1-9]\d\d|20\d\d)s?\b")
_INTEGER_RE = re.compile(r"\d+")
_ABBREVIATIONS = {
    r"\bmr\.": "mister",
    r"\bmrs\.": "missus",
    r"\bms\.": "miz",
    r"\bdr\.": "doctor",
    r"\bprof\.": "professor",
    r"\bvs\.": "versus",
    r"\betc\.": "et cetera",
    r"\be\.g\.": "for example",
    r"\bi\.e\.": "that is",
    r"\bno\.(?=\s*\d)": "number",
}
_SYMBOLS = {"&": " and ", "+": " plus ", "@": " at ", "#": " number ", "=": " equals "}
_QUOTES = str.maketrans({"‘": "'", "’": "'", "ʼ": "'", "`": "'", "´": "'"})
#: Letters that Unicode does not decompose into a-z plus accents.
_LIGATURES = str.maketrans(
    {"æ": "ae", "œ": "oe", "ø": "o", "ß": "ss", "đ": "d", "ł": "l", "þ": "th", "ð": "d"}
)


def _currency(m: re.Match[str]) -> str:
    symbol, whole, frac, scale = m.group(1), m.group(2), m.group(3), m.group(4)
    one, many, sub_one, sub_many = _CURRENCY[symbol]
    amount = int(whole.replace(",", ""))
    if scale or (frac and len(frac) > 2):  # $2.5 million, $5.999: a decimal, then the unit
        head = _decimal(whole.replace(",", ""), frac) if frac else _amount(amount)
        return f" {head}{' ' + scale.lower() if scale else ''} {many} "
    words = f"{_amount(amount)} {one if amount == 1 else many}"
    if frac:
        cents = int(frac.ljust(2, "0"))
        if cents:
            words += f" {cardinal(cents)} {sub_one if cents == 1 else sub_many}"
    return f" {words} "


def _date(month: int, day: int, yr: str | None) -> str:
    if not 1 <= month <= 12 or not 1 <= day <= 31:
        raise ValueError
    text = f"{_MONTHS[month - 1]} {ordinal(day)}"
    if yr:
        text += " " + year(int(yr))
    return f" {text} "


def _iso_date(m: re.Match[str]) -> str:
    try:
        return _date(int(m.group(2)), int(m.group(3)), m.group(1))
    except ValueError:
        return " " + " ".join(_number(g) for g in m.groups()) + " "


def _month_day(m: re.Match[str]) -> str:
    month = _MONTHS.index(m.group(1).lower()) + 1
    try:
        return _date(month, int(m.group(2)), m.group(3))
    except ValueError:
        return m.group(0)


def _day_month(m: re.Match[str]) -> str:
    day, of, month_name, yr = int(m.group(1)), m.group(2), m.group(3).lower(), m.group(4)
    if not 1 <= day <= 31:
        return m.group(0)
    text = f"{ordinal(day)} {'of ' if of else ''}{month_name}"
    if yr:
        text += " " + year(int(yr))
    return f" {text} "


def _time(m: re.Match[str]) -> str:
    hour, minute, half = int(m.group(1)), int(m.group(2)), m.group(3)
    if hour > 24 or minute > 59:
        return f" {cardinal(hour)} {cardinal(minute)} "
    if minute == 0:
        words = f"{cardinal(hour)} o'clock" if not half else cardinal(hour)
    elif minute < 10:
        words = f"{cardinal(hour)} oh {cardinal(minute)}"
    else:
        words = f"{cardinal(hour)} {cardinal(minute)}"
    if half:
        words += f" {half.lower()} m"
    return f" {words} "


def _hour_ampm(m: re.Match[str]) -> str:
    return f" {_amount(int(m.group(1)))} {m.group(2).lower()} m "


def _year(m: re.Match[str]) -> str:
    words = year(int(m.group(1)))
    if m.group(0).endswith("s"):  # the 1990s -> nineteen nineties
        last = words.split()[-1]
        plural = last[:-1] + "ies" if last.endswith("y") else last + "s"
        words = " ".join([*words.split()[:-1], plural])
    return f" {words} "


def _number_match(m: re.Match[str]) -> str:
    return f" {_number(m.group(0))} "


def normalize_text(text: str) -> str:
    """Return the spoken form of ``text``: lowercase a-z, apostrophes and single spaces.

    >>> normalize_text("Pay $12.50 by March 3rd, 2024 at 3:05 PM.")
    'pay twelve dollars fifty cents by march third twenty twenty four at three oh five p m'
    """
    s = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    s = _CURRENCY_RE.sub(_currency, s)
    s = _ISO_DATE_RE.sub(_iso_date, s)
    s = _MONTH_DAY_RE.sub(_month_day, s)
    s = _DAY_MONTH_RE.sub(_day_month, s)
    s = _TIME_RE.sub(_time, s)
    s = _HOUR_AMPM_RE.sub(_hour_ampm, s)
    s = _PERCENT_RE.sub(
        lambda m: " " + _DECIMAL_RE.sub(lambda d: _decimal(d[1], d[2]), m[1]) + " percent ", s
    )
    s = _ORDINAL_RE.sub(lambda m: f" {_ordinal_or_digits(int(m.group(1)))} ", s)
    s = _GROUPED_RE.sub(lambda m: f" {_amount(int(m.group(0).replace(',', '')))} ", s)
    s = _DECIMAL_RE.sub(lambda m: f" {_decimal(m.group(1), m.group(2))} ", s)
    s = _NEGATIVE_RE.sub(r" minus \1", s)
    s = _YEAR_RE.sub(_year, s)
    s = _INTEGER_RE.sub(_number_match, s)
    s = s.lower().translate(_LIGATURES)
    for pattern, spoken in _ABBREVIATIONS.items():
        s = re.sub(pattern, f" {spoken} ", s)
    for symbol, spoken in _SYMBOLS.items():
        s = s.replace(symbol, spoken)
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c if c in ALPHABET else " " for c in s if not unicodedata.combining(c))
    # An apostrophe survives only inside a word ("don't", "o'clock"), never as a quote mark.
    s = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", s)
    return " ".join(s.split())
