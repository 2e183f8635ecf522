"""Customer-service sentences from templates, in written form (digits, symbols, dates).

Each call of :func:`template_sentence` fills one template with names, products, amounts,
dates, times, order numbers, phone numbers and addresses drawn from ``rng``; the written form
goes through :func:`kubescribe_modeling.text.normalize_text` to become a transcript, so the
templates also exercise the normaliser. Pure: the same ``random.Random`` state gives the
same sentence.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from kubescribe_modeling.data.resources import load_lines

__all__ = ["TEMPLATES", "template_sentence"]

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _order(rng: random.Random) -> str:
    style = rng.random()
    if style < 0.4:
        return " ".join(rng.choice(string.digits) for _ in range(rng.randint(5, 8)))
    if style < 0.7:
        letters = " ".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(rng.randint(1, 2)))
        return letters + " " + " ".join(rng.choice(string.digits) for _ in range(rng.randint(4, 6)))
    return str(rng.randint(1000, 99999))


def _amount(rng: random.Random) -> str:
    symbol = rng.choices("$£€", weights=(6, 3, 2))[0]
    style = rng.random()
    if style < 0.35:
        return f"{symbol}{rng.randint(1, 99)}.{rng.randint(0, 99):02d}"
    if style < 0.7:
        return f"{symbol}{rng.randint(1, 999)}"
    if style < 0.9:
        return f"{symbol}{rng.randint(1000, 9999):,}"
    return f"{symbol}{rng.randint(1, 999)}.{rng.randint(1, 99):02d}"


def _date(rng: random.Random) -> str:
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    style = rng.random()
    if style < 0.3:
        return f"{_MONTHS[month - 1]} {day}"
    if style < 0.5:
        return f"{_MONTHS[month - 1]} {day}, {rng.randint(1990, 2030)}"
    if style < 0.7:
        return f"the {day}{_suffix(day)} of {_MONTHS[month - 1]}"
    if style < 0.85:
        return f"{rng.randint(2015, 2030)}-{month:02d}-{day:02d}"
    return f"{rng.choice(_WEEKDAYS)}, {_MONTHS[month - 1]} {day}{_suffix(day)}"


def _suffix(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _time(rng: random.Random) -> str:
    hour, minute = (
        rng.randint(1, 12),
        rng.choice((0, 0, 5, 10, 15, 20, 30, 45, 50, rng.randint(0, 59))),
    )
    style = rng.random()
    if style < 0.5:
        return f"{hour}:{minute:02d} {rng.choice(('am', 'pm', 'a.m.', 'PM'))}"
    if style < 0.8:
        return f"{hour}:{minute:02d}"
    return f"{hour} {rng.choice(('am', 'pm'))}"


def _phone(rng: random.Random) -> str:
    groups = (3, 3, 4) if rng.random() < 0.6 else (5, 6)
    return ", ".join(" ".join(rng.choice(string.digits) for _ in range(g)) for g in groups)


def _address(rng: random.Random) -> str:
    street = rng.choice(load_lines("streets.txt")).title()
    return f"{rng.randint(1, 2999)} {street}"


def _count(rng: random.Random) -> str:
    return str(rng.choice((rng.randint(2, 12), rng.randint(13, 100), rng.randint(100, 5000))))


_SLOTS: dict[str, Callable[[random.Random], str]] = {
    "first": lambda r: r.choice(load_lines("first_names.txt")).title(),
    "last": lambda r: r.choice(load_lines("last_names.txt")).title(),
    "product": lambda r: r.choice(load_lines("products.txt")),
    "city": lambda r: r.choice(load_lines("cities.txt")).title(),
    "weekday": lambda r: r.choice(_WEEKDAYS),
    "order": _order,
    "amount": _amount,
    "date": _date,
    "time": _time,
    "phone": _phone,
    "address": _address,
    "count": _count,
    "percent": lambda r: f"{r.choice((5, 10, 15, 20, 25, 30, 40, 50, r.randint(1, 99)))}%",
    "days": lambda r: str(r.randint(2, 30)),
    "zip": lambda r: " ".join(r.choice(string.digits) for _ in range(5)),
}

TEMPLATES: tuple[str, ...] = (
    "Hello, my name is {first} {last} and I'm calling about order {order}.",
    "I placed an order on {date} and it still hasn't arrived.",
    "Your order number is {order}. Is there anything else I can help you with?",
    "The total comes to {amount}, including tax and shipping.",
    "I was charged {amount} twice on my card last {weekday}.",
    "Can I speak to {first} about my refund, please?",
    "Your appointment is confirmed for {date} at {time}.",
    "We can deliver the {product} on {weekday} between {time} and {time}.",
    "Please send it to {address}, {city}, zip code {zip}.",
    "My phone number is {phone}.",
    "You can reach me on {phone} after {time}.",
    "The {product} I bought for {amount} stopped working after {days} days.",
    "I'd like to return the {product}; the receipt number is {order}.",
    "Your refund of {amount} will be processed within {days} business days.",
    "There's a {percent} discount on all orders over {amount} until {date}.",
    "Thank you for calling, {first}. Your case number is {order}.",
    "We have {count} units of the {product} in stock at our {city} store.",
    "The technician will arrive on {date} between {time} and {time}.",
    "I've been on hold since {time} and nobody has answered.",
    "Could you confirm the billing address? It's {address}.",
    "The account is under the name {first} {last}.",
    "Your subscription renews on {date} for {amount} a month.",
    "I moved to {address} in {city} last month.",
    "Can you change the delivery date to {date}, please?",
    "The last payment of {amount} was received on {date}.",
    "Mr. {last} will call you back before {time} tomorrow.",
    "Dr. {last} has an opening on {weekday} at {time}.",
    "We shipped {count} packages to {city} yesterday.",
    "Your balance is {amount} and the minimum payment is {amount}.",
    "Please hold while I transfer you to {first} in billing.",
    "Is {address} still the best address for you, {first}?",
    "Our store in {city} opens at {time} on {weekday}.",
    "The {product} is on sale for {amount}, that's {percent} off.",
    "I need to cancel order {order} before it ships.",
    "Ms. {last} asked for a callback on {phone}.",
    "The tracking number is {order} and it was last scanned in {city}.",
    "You've earned {count} reward points since {date}.",
    "Hi, this is {first} from customer support. How can I help you today?",
    "Sorry, I didn't catch that. Could you repeat the order number?",
    "The warranty on your {product} expires on {date}.",
    "We'll credit {amount} to your account by {weekday}.",
    "I ordered {count} of them but only received half.",
    "My flight to {city} leaves at {time} on {date}.",
    "Reservation for {count} people under {last} at {time}, please.",
    "The meeting with {first} {last} moved to {time} on {weekday}.",
    "Interest is charged at {percent} per year on balances over {amount}.",
    "Please verify the last four digits of your card: {zip}.",
    "It's {time} and the {product} still hasn't been delivered to {address}.",
    "{first}, your package was left at the front door at {time}.",
    "We received your complaint on {date}; reference {order}.",
    "An upgrade costs {amount} extra per month.",
    "The shop on {address} closes at {time} on weekends.",
    "Is {first} {last} the primary account holder?",
    "Your new card will arrive in {days} days.",
    "I was quoted {amount} but the invoice says {amount}.",
    "On {date} we will be closed for maintenance from {time} to {time}.",
    "Your order of {count} items totalling {amount} has been confirmed.",
    "Please call us back at {phone} with reference number {order}.",
)


def template_sentence(rng: random.Random) -> str:
    """Fill one random template; the result is written form (pass it to ``normalize_text``)."""
    template = rng.choice(TEMPLATES)
    out: list[str] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if field is not None:
            out.append(_SLOTS[field](rng))
    return "".join(out)
