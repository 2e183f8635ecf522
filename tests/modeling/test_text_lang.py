"""Per-language normalisation: tables of written form -> spoken form, one normaliser applied to
reference and hypothesis alike."""

from __future__ import annotations

import pytest
from kubescribe_modeling.decode import word_error_rate
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.text import normalize_text
from kubescribe_modeling.text_lang import cardinal_es, normalize_text_es, normalizer


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "cero"),
        (1, "uno"),
        (15, "quince"),
        (16, "dieciséis"),
        (21, "veintiuno"),
        (22, "veintidós"),
        (30, "treinta"),
        (31, "treinta y uno"),
        (99, "noventa y nueve"),
        (100, "cien"),
        (101, "ciento uno"),
        (500, "quinientos"),
        (555, "quinientos cincuenta y cinco"),
        (1000, "mil"),
        (1001, "mil uno"),
        (2000, "dos mil"),
        (21000, "veintiún mil"),
        (31000, "treinta y un mil"),
        (100000, "cien mil"),
        (101000, "ciento un mil"),
        (1000000, "un millón"),
        (2000000, "dos millones"),
        (21000000, "veintiún millones"),
        (-4, "menos cuatro"),
    ],
)
def test_spanish_cardinals(number: int, words: str) -> None:
    assert cardinal_es(number) == words


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        # accents and the tilde fold: the Asterisk transcripts are written without them
        ("Contraseña inválida", "contrasena invalida"),
        ("Trés para expulsar al último usuario.", "tres para expulsar al ultimo usuario"),
        ("¿Está seguro? ¡Gracias!", "esta seguro gracias"),
        ("Pingüino", "pinguino"),
        # digits become words, as the voice reads them
        ("Marque 1 para la extensión", "marque uno para la extension"),
        ("marque 21 ahora", "marque veintiuno ahora"),
        ("3.5 segundos", "tres punto cinco segundos"),
        ("15% de descuento", "quince por ciento de descuento"),
        ("1,500 pesos", "mil quinientos pesos"),
        ("extensión 007", "extension cero cero siete"),
        ("  varios    espacios ", "varios espacios"),
    ],
)
def test_spanish_normalisation(written: str, spoken: str) -> None:
    assert normalize_text_es(written) == spoken


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("Please enter your password followed by the pound key.", None),
        ("Call-Forward on No Answer.", "call forward on no answer"),
        ("Press 1 to mute, 2 to lock.", "press one to mute two to lock"),
        ("You have 21 new messages.", "you have twenty one new messages"),
    ],
)
def test_english_is_the_toolkit_normaliser(written: str, spoken: str | None) -> None:
    norm = normalizer("en-US")
    assert norm is normalize_text
    assert norm(written) == (spoken or written.lower().rstrip("."))


def test_the_same_normaliser_makes_written_and_spoken_forms_agree() -> None:
    # A model emits words without accents; the reference has digits and accents: zero WER.
    norm = normalizer("es_MX")
    reference = "Marque 2 para la extensión número 31"
    hypothesis = "marque dos para la extension numero treinta y uno"
    assert word_error_rate([norm(reference)], [norm(hypothesis)]) == 0.0
    # without normalising, the same pair scores errors: the normaliser does the work
    assert word_error_rate([reference.lower()], [hypothesis]) > 0.3


def test_unknown_language_is_refused() -> None:
    with pytest.raises(ModelingError, match="no text normaliser"):
        normalizer("xx")
