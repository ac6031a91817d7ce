"""ActorPool: the one failure policy of worker sets, aggregators and replay shards."""

from __future__ import annotations

import pytest

from rldataflow.runtime import ActorDiedError, get_runtime
from rldataflow.runtime.actor_pool import ActorPool


class Counter:
    def __init__(self, start: int) -> None:
        self.value = start

    def get(self) -> int:
        return self.value

    def ping(self) -> str:
        return "ok"


class Broken:
    def __init__(self) -> None:
        raise ValueError("bad env id 'Nope-v0'")


@pytest.fixture(params=["inline", "process"])
def runtime(request):
    rt = get_runtime(request.param)
    yield rt
    rt.shutdown()


def _pool(rt, size=3, **kwargs):
    made: list[tuple[int, int]] = []

    def make(slot: int, restarts: int):
        made.append((slot, restarts))
        return rt.create_actor(Counter, 100 * slot + restarts, name=f"Counter-{slot}")

    return ActorPool(rt, size, make, kind="counter", **kwargs), made


def test_a_dead_actor_is_replaced_in_its_slot_and_brought_up_to_date(runtime):
    seen: list[int] = []
    pool, made = _pool(runtime, on_restart=lambda slot, actor: seen.append(slot))
    held = pool.actors  # holders of the list see replacements
    victim = pool[1]
    runtime.kill(victim)
    new = pool.replace_dead(1, victim, ActorDiedError(victim.name, "Counter", "killed"))
    assert pool[1] is new and held[1] is new and pool.slot_of(new) == 1
    assert new.call("get").result() == 101  # the factory saw one restart of slot 1
    assert made[-1] == (1, 1) and seen == [1]
    assert pool.num_restarts == 1 and pool.restarts_of == [0, 1, 0]
    assert [a.call("get").result() for a in pool] == [0, 101, 200]
    pool.stop()
    assert len(pool) == 0


def test_without_restarts_the_death_is_the_error(runtime):
    pool, _ = _pool(runtime, size=1, restart_failed=False)
    victim = pool[0]
    error = ActorDiedError(victim.name, "Counter", "killed")
    with pytest.raises(ActorDiedError):
        pool.replace_dead(0, victim, error)
    stranger = runtime.create_actor(Counter, 0)
    pool.restart_failed = True
    with pytest.raises(ActorDiedError):  # not in the pool: nothing to replace
        pool.replace_dead(0, stranger, error)
    pool.stop()


def test_a_constructor_error_names_the_actor_and_leaves_nothing_running(runtime):
    created = []

    def make(slot: int, restarts: int):
        cls = Broken if slot == 2 else Counter
        actor = runtime.create_actor(cls, *(() if cls is Broken else (slot,)),
                                     name=f"{cls.__name__}-{slot}")
        created.append(actor)
        return actor

    with pytest.raises(Exception, match="Nope-v0"):
        ActorPool(runtime, 3, make)
    for actor in created[:2]:  # the pool stopped the ones it had made
        with pytest.raises(ActorDiedError):
            actor.call("get").result(timeout=10)


def test_recreate_dead_replaces_what_fails_the_health_check():
    rt = get_runtime("process")
    try:
        pool, _ = _pool(rt, size=2)
        rt.kill(pool[0])
        assert pool.health_check(timeout=10) == [0]
        assert pool.recreate_dead(timeout=10) == 1
        assert pool.health_check(timeout=10) == []
        pool.stop()
    finally:
        rt.shutdown()
