"""Spanish training text: customer-service sentences written for this toolkit, numbers, and
random everyday words (wordfreq), in written form (pass them to ``normalize_text_es``).

None of it comes from the Asterisk transcripts: those are the real-speech dev and test sets,
and :func:`kubescribe_modeling.data.realvoices.leaks` drops any sentence that would repeat one.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["spanish_sentence"]

_NAMES = ("María", "José", "Guadalupe", "Juan", "Luis", "Carmen", "Fernanda", "Alejandro",
          "Sofía", "Miguel", "Lucía", "Ricardo", "Patricia", "Andrés", "Elena", "Jorge",
          "Valeria", "Diego", "Gabriela", "Raúl")  # fmt: skip
_SURNAMES = ("García", "Hernández", "López", "Martínez", "González", "Pérez", "Rodríguez",
             "Sánchez", "Ramírez", "Torres", "Flores", "Rivera", "Gómez", "Díaz", "Cruz",
             "Morales", "Reyes", "Jiménez", "Ruiz", "Vargas")  # fmt: skip
_CITIES = ("Guadalajara", "Monterrey", "Puebla", "Oaxaca", "Mérida", "Tijuana", "Querétaro",
           "Toluca", "Madrid", "Sevilla", "Bogotá", "Lima", "Santiago", "Caracas", "Quito",
           "Veracruz", "Cancún", "Morelia", "Valencia", "Barcelona")  # fmt: skip
_THINGS = ("su factura", "el pedido", "la tarjeta", "su cuenta", "la reservación", "el paquete",
           "su contrato", "la cita", "el reembolso", "su saldo", "la garantía", "el servicio",
           "la línea", "su plan", "el envío", "la transferencia")  # fmt: skip
_DAYS = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")
_MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
           "septiembre", "octubre", "noviembre", "diciembre")  # fmt: skip
_TEMPLATES = (
    "Buenos días, habla {name}, ¿en qué le puedo ayudar?",
    "Quisiera saber el estado de {thing}, por favor.",
    "Mi número de cliente es {digits}.",
    "El total a pagar es de {n} pesos con {small} centavos.",
    "Tengo una cita el {day} {day_n} de {month} a las {hour}.",
    "Necesito cambiar la dirección de {thing} a {city}.",
    "Le llamo de {city} porque {thing} no ha llegado.",
    "¿Me puede repetir el número de confirmación?",
    "Sí, mi nombre es {name} {surname}.",
    "No, gracias, eso es todo por hoy.",
    "El cargo de {n} pesos aparece dos veces en {thing}.",
    "Voy a transferir su llamada con {name} del departamento de ventas.",
    "Su solicitud quedó registrada con el folio {digits}.",
    "¿Podría confirmar su fecha de nacimiento?",
    "Nací el {day_n} de {month} de {year}.",
    "Quiero cancelar {thing} a partir del {day_n} de {month}.",
    "Tenemos {small} sucursales en {city}.",
    "El horario de atención es de {hour} a {hour2} de {day} a {day2}.",
    "Disculpe la espera, en un momento le atiendo.",
    "¿Cuál es el saldo de {thing}?",
    "Mi correo es {first} punto {last} arroba ejemplo punto com.",
    "Por favor anote el número {digits}.",
    "La entrega está programada para el {day} por la tarde.",
    "Hubo un problema con {thing}, ¿lo puede revisar?",
    "{name} {surname} vive en la calle {surname2} número {small}.",
    "Le recuerdo que {thing} vence el {day_n} de {month}.",
    "El vuelo a {city} sale a las {hour} y llega a las {hour2}.",
    "Quiero hablar con un supervisor, por favor.",
    "Gracias por su paciencia, {name}.",
    "Son {n} kilómetros de {city} a {city2}.",
)


def _fill(template: str, rng: random.Random) -> str:
    hour = rng.randint(1, 12)
    return template.format(
        name=rng.choice(_NAMES),
        first=rng.choice(_NAMES),
        surname=rng.choice(_SURNAMES),
        surname2=rng.choice(_SURNAMES),
        last=rng.choice(_SURNAMES),
        city=rng.choice(_CITIES),
        city2=rng.choice(_CITIES),
        thing=rng.choice(_THINGS),
        day=rng.choice(_DAYS),
        day2=rng.choice(_DAYS),
        day_n=rng.randint(1, 31),
        month=rng.choice(_MONTHS),
        year=rng.randint(1940, 2024),
        hour=hour,
        hour2=min(hour + rng.randint(1, 8), 12),
        n=rng.choice([rng.randint(2, 99), rng.randint(100, 999), rng.randint(1000, 99999)]),
        small=rng.randint(2, 60),
        digits=" ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(4, 8))),
    )


def _words(rng: random.Random) -> str:
    from wordfreq import top_n_list

    vocabulary = _vocabulary(top_n_list)
    return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(3, 12)))


_VOCAB: list[str] = []


def _vocabulary(top_n_list: Callable[..., list[str]]) -> list[str]:
    if not _VOCAB:
        _VOCAB.extend(w for w in top_n_list("es", 8000) if w.isalpha())
    return _VOCAB


def spanish_sentence(rng: random.Random, words_share: float = 0.4) -> str:
    """A template sentence, or (``words_share`` of the time) random frequent words."""
    if rng.random() < words_share:
        return _words(rng)
    return _fill(rng.choice(_TEMPLATES), rng)
