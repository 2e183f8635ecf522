"""Per-language text normalisation: one function per language, for references and hypotheses.

WER compares a reference with a hypothesis after both went through the *same* normaliser,
chosen by the model's language (:func:`normalizer`). English is :mod:`kubescribe_modeling.text`.
Spanish (:func:`normalize_text_es`) writes numbers out as words and folds accents, because the
Asterisk Spanish transcripts are written without accents and with digits, while a model may
emit either:

* ``21`` -> "veintiuno"; ``100`` -> "cien", ``105`` -> "ciento cinco"; ``2000`` -> "dos mil";
  ``21000`` -> "veintiun mil" (apocope before *mil* and *millón*); ``1000000`` -> "un millon"
* ``3.5`` -> "tres punto cinco"; ``15%`` -> "quince por ciento"; a leading zero or more than
  nine digits: digit by digit
* accents and the tilde fold (``contraseña`` -> "contrasena", ``último`` -> "ultimo"); the
  output holds only ``a``-``z`` and single spaces.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.text import normalize_text

__all__ = ["cardinal_es", "normalize_text_es", "normalizer"]

_ONES_ES = [
    "cero",
    "uno",
    "dos",
    "tres",
    "cuatro",
    "cinco",
    "seis",
    "siete",
    "ocho",
    "nueve",
    "diez",
    "once",
    "doce",
    "trece",
    "catorce",
    "quince",
    "dieciséis",
    "diecisiete",
    "dieciocho",
    "diecinueve",
    "veinte",
    "veintiuno",
    "veintidós",
    "veintitrés",
    "veinticuatro",
    "veinticinco",
    "veintiséis",
    "veintisiete",
    "veintiocho",
    "veintinueve",
]
_TENS_ES = ("", "", "", "treinta", "cuarenta", "cincuenta", "sesenta", "setenta", "ochenta",
            "noventa")  # fmt: skip
_HUNDREDS_ES = ("", "ciento", "doscientos", "trescientos", "cuatrocientos", "quinientos",
                "seiscientos", "setecientos", "ochocientos", "novecientos")  # fmt: skip


def _below_thousand_es(n: int) -> list[str]:
    if n == 100:
        return ["cien"]
    hundreds, rest = divmod(n, 100)
    words = [_HUNDREDS_ES[hundreds]] if hundreds else []
    if rest >= 30:
        tens, ones = divmod(rest, 10)
        words.append(_TENS_ES[tens])
        if ones:
            words += ["y", _ONES_ES[ones]]
    elif rest or not words:
        words.append(_ONES_ES[rest])
    return words


def _apocope(words: list[str]) -> list[str]:
    """``uno`` -> ``un`` before a noun (*mil*, *millón*): veintiún mil, treinta y un mil."""
    if words and words[-1] == "uno":
        return [*words[:-1], "un"]
    if words and words[-1] == "veintiuno":
        return [*words[:-1], "veintiún"]
    return words


def cardinal_es(n: int) -> str:
    """A whole number in Spanish words (with accents): ``cardinal_es(2105) == "dos mil ciento
    cinco"``."""
    if n < 0:
        return "menos " + cardinal_es(-n)
    if n >= 10**12:
        raise ValueError(f"number too large to write out: {n}")
    millions, rest = divmod(n, 10**6)
    thousands, units = divmod(rest, 1000)
    words: list[str] = []
    if millions:
        words += ["un", "millón"] if millions == 1 else [*_apocope(_below_thousand_es(millions)),
                                                          "millones"]  # fmt: skip
    if thousands:
        words += ["mil"] if thousands == 1 else [*_apocope(_below_thousand_es(thousands)), "mil"]
    if units or not words:
        words += _below_thousand_es(units)
    return " ".join(words)


def _digits_es(s: str) -> str:
    return " ".join(_ONES_ES[int(c)] for c in s)


def _number_es(s: str) -> str:
    if (len(s) > 1 and s.startswith("0")) or len(s) > 9:
        return _digits_es(s)
    return cardinal_es(int(s))


_GROUPED_ES = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_DECIMAL_ES = re.compile(r"(?<![\d.])(\d+)\.(\d+)\b")
_PERCENT_ES = re.compile(r"%")
_INTEGER = re.compile(r"\d+")


def normalize_text_es(text: str) -> str:
    """The spoken form of Spanish ``text``: lowercase a-z and single spaces, accents folded.

    >>> normalize_text_es("Marque 21 para la extensión número 3.5, ¡gracias!")
    'marque veintiuno para la extension numero tres punto cinco gracias'
    """
    s = unicodedata.normalize("NFKC", text)
    s = _GROUPED_ES.sub(lambda m: f" {cardinal_es(int(m.group(0).replace(',', '')))} ", s)
    s = _DECIMAL_ES.sub(lambda m: f" {_number_es(m[1])} punto {_digits_es(m[2])} ", s)
    s = _PERCENT_ES.sub(" por ciento ", s)
    s = _INTEGER.sub(lambda m: f" {_number_es(m.group(0))} ", s)
    s = unicodedata.normalize("NFKD", s.lower())
    s = "".join(c if "a" <= c <= "z" else " " for c in s if not unicodedata.combining(c))
    return " ".join(s.split())


_NORMALIZERS: dict[str, Callable[[str], str]] = {"en": normalize_text, "es": normalize_text_es}


def normalizer(language: str) -> Callable[[str], str]:
    """The normaliser of a language tag (``en``, ``en-US``, ``es_MX`` …)."""
    base = language.replace("_", "-").split("-")[0].lower()
    try:
        return _NORMALIZERS[base]
    except KeyError:
        raise ModelingError(
            f"no text normaliser for language {language!r} (known: {', '.join(_NORMALIZERS)})"
        ) from None
