"""The base of every ledger aggregate and the registry of event types.

Every event carries the ``actor`` who caused it and an explicit, stable ``TOPIC``
(``mlledger.<aggregate>.<Event>.v<N>``), so renaming or moving a class never
orphans stored events. The registry maps each topic to its event class and each
aggregate type name to its class; anything else read from the store is refused
as an unknown event type instead of being imported by name.
"""

from __future__ import annotations

from typing import Any, ClassVar

from eventsourcing.domain import Aggregate

from domain.errors import UnknownEventType

_EVENT_TYPES: dict[str, tuple[type[Aggregate.Event], type[LedgerAggregate]]] = {}
_AGGREGATE_TYPES: dict[str, type[LedgerAggregate]] = {}
_LIBRARY_EVENT_NAMES = {"Event", "Created"}


class LedgerAggregate(Aggregate):
    """An aggregate whose events are sealed, signed and chained by the ledger."""

    AGGREGATE_TYPE: ClassVar[str] = ""

    class Event(Aggregate.Event):
        """Base of every ledger event: who caused it."""

        actor: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("AGGREGATE_TYPE") or cls.__name__
        cls.AGGREGATE_TYPE = name
        if _AGGREGATE_TYPES.get(name, cls) is not cls:
            raise TypeError(f"aggregate type {name!r} is defined twice")
        _AGGREGATE_TYPES[name] = cls
        for attr, value in cls.__dict__.items():
            if not (isinstance(value, type) and issubclass(value, Aggregate.Event)):
                continue
            topic = getattr(value, "TOPIC", None)
            if topic is None:
                if attr in _LIBRARY_EVENT_NAMES:
                    continue
                raise TypeError(f"{cls.__name__}.{attr} needs an explicit TOPIC")
            registered = _EVENT_TYPES.get(topic)
            if registered is not None and registered[0].__qualname__ != value.__qualname__:
                raise TypeError(f"topic {topic!r} is used by two event classes")
            _EVENT_TYPES[topic] = (value, cls)


def event_class(topic: str) -> type[Aggregate.Event]:
    """The event class registered for ``topic``, or :class:`UnknownEventType`."""
    try:
        return _EVENT_TYPES[topic][0]
    except KeyError:
        raise UnknownEventType(f"unknown event type {topic!r}", field="type") from None


def aggregate_type_of(topic: str) -> str:
    """The aggregate type name that owns events of ``topic``."""
    try:
        return _EVENT_TYPES[topic][1].AGGREGATE_TYPE
    except KeyError:
        raise UnknownEventType(f"unknown event type {topic!r}", field="type") from None


def aggregate_class(name: str) -> type[LedgerAggregate]:
    """The aggregate class registered under the type name ``name``."""
    try:
        return _AGGREGATE_TYPES[name]
    except KeyError:
        raise UnknownEventType(f"unknown aggregate type {name!r}", field="aggregate_type") from None


def is_known_topic(topic: str) -> bool:
    """True when ``topic`` names a registered event type."""
    return topic in _EVENT_TYPES


def known_topics() -> list[str]:
    """Every registered event topic, sorted."""
    return sorted(_EVENT_TYPES)
