"""The bounded cache: clear when full, never more than its limit."""

from __future__ import annotations

import pytest

from service.common.bounded_cache import BoundedCache


def test_a_kept_value_is_found_and_a_missing_one_is_none() -> None:
    cache: BoundedCache[str, int] = BoundedCache(3)
    cache.put("a", 1)
    assert cache.get("a") == 1
    assert cache.get("b") is None


def test_storing_into_a_full_cache_forgets_everything_before_it() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a hit does not matter: this is not LRU
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (None, None, 3, 1)


def test_replacing_a_key_of_a_full_cache_clears_it_too() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("b", 20)
    assert (cache.get("a"), cache.get("b")) == (None, 20)


def test_setdefault_keeps_the_first_value_of_a_key() -> None:
    cache: BoundedCache[str, object] = BoundedCache(2)
    first, second = object(), object()
    assert cache.setdefault("a", first) is first
    assert cache.setdefault("a", second) is first
    assert len(cache) == 1


def test_setdefault_of_a_new_key_into_a_full_cache_clears_it_first() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.setdefault("b", 20) == 2  # present: nothing is forgotten
    assert cache.setdefault("c", 3) == 3
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, None, 3)


def test_making_room_clears_only_when_the_batch_would_not_fit() -> None:
    cache: BoundedCache[str, int] = BoundedCache(3)
    cache.put("a", 1)
    cache.make_room(2)
    assert cache.get("a") == 1
    cache.make_room(3)
    assert len(cache) == 0


def test_pop_and_clear_forget() -> None:
    cache: BoundedCache[str, int] = BoundedCache(3)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.pop("a") == 1
    assert cache.pop("a") is None
    assert "b" in cache and "a" not in cache
    cache.clear()
    assert len(cache) == 0 and cache.get("b") is None


def test_get_still_reads_the_cache_after_it_was_cleared() -> None:
    cache: BoundedCache[str, int] = BoundedCache(1)
    cache.put("a", 1)
    cache.put("b", 2)  # full: cleared in place, so the bound get sees the new entry
    assert cache.get("b") == 2


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BoundedCache(0)
