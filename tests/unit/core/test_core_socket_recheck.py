"""The periodic re-check of all of a process's open sockets together (core.socket_recheck,
core.consumers.recheck_sockets): the decision table, the task's start and stop, the sockets it
closes (the same answers each socket's own check gives) and its query count as sockets grow."""

import asyncio

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client

from core import consumers
from core.choices import RoleChoices
from core.models import Job
from core.socket_access import (
    CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, SessionFacts, SocketFacts, UserFacts, close_codes,
)
from core.socket_recheck import CLOSE_CHECK_FAILED, SocketRecheck
from hosts.consumers import InventoryConsumer
from hosts.models import Host, HostGroup, HostGroupGrant
from tests.query_counts import assert_constant_query_count

BACKEND = "django.contrib.auth.backends.ModelBackend"
VIEWER_RANK, OPERATOR_RANK = 0, 1

# ---------------------------------------------------------------------------------------------
# The decision, on facts already read.

GOOD = SessionFacts(user_id=7, backend=BACKEND, auth_hash="h7")
ACTIVE_VIEWER = UserFacts(is_active=True, auth_hash="h7", rank=VIEWER_RANK)


@pytest.mark.parametrize("socket, sessions, users, expected", [
    # session, user and role all good
    (SocketFacts(7, "k", RoleChoices.VIEWER), {"k": GOOD}, {7: ACTIVE_VIEWER}, None),
    # a higher role than needed
    (SocketFacts(7, "k", RoleChoices.VIEWER), {"k": GOOD}, {7: UserFacts(True, "h7", 2)}, None),
    # no session key on the socket
    (SocketFacts(7, None, RoleChoices.VIEWER), {"k": GOOD}, {7: ACTIVE_VIEWER}, CLOSE_UNAUTHENTICATED),
    # the session is gone (logged out, expired, purged)
    (SocketFacts(7, "k", RoleChoices.VIEWER), {}, {7: ACTIVE_VIEWER}, CLOSE_UNAUTHENTICATED),
    # the session logs nobody in
    (SocketFacts(7, "k", RoleChoices.VIEWER), {"k": SessionFacts(None, BACKEND, "h7")}, {7: ACTIVE_VIEWER},
     CLOSE_UNAUTHENTICATED),
    # logged in by a backend no longer configured
    (SocketFacts(7, "k", RoleChoices.VIEWER), {"k": SessionFacts(7, "old.Backend", "h7")}, {7: ACTIVE_VIEWER},
     CLOSE_UNAUTHENTICATED),
    # the user was deleted
    (SocketFacts(7, "k", RoleChoices.VIEWER), {"k": GOOD}, {}, CLOSE_UNAUTHENTICATED),
    # the user was deactivated
    (SocketFacts(7, "k", RoleChoices.VIEWER), {"k": GOOD}, {7: UserFacts(False, "h7", -1)}, CLOSE_UNAUTHENTICATED),
    # the password changed since the login
    (SocketFacts(7, "k", RoleChoices.VIEWER), {"k": GOOD}, {7: UserFacts(True, "new", VIEWER_RANK)},
     CLOSE_UNAUTHENTICATED),
    # the session now logs in someone else than the socket was opened for
    (SocketFacts(7, "k", RoleChoices.VIEWER), {"k": SessionFacts(8, BACKEND, "h8")},
     {7: ACTIVE_VIEWER, 8: UserFacts(True, "h8", 2)}, CLOSE_UNAUTHENTICATED),
    # the role is gone
    (SocketFacts(7, "k", RoleChoices.VIEWER), {"k": GOOD}, {7: UserFacts(True, "h7", -1)}, CLOSE_FORBIDDEN),
    # a role, but not the one the socket needs
    (SocketFacts(7, "k", RoleChoices.OPERATOR), {"k": GOOD}, {7: ACTIVE_VIEWER}, CLOSE_FORBIDDEN),
    (SocketFacts(7, "k", RoleChoices.OPERATOR), {"k": GOOD}, {7: UserFacts(True, "h7", OPERATOR_RANK)}, None),
])
def test_close_codes_table(socket, sessions, users, expected):
    assert close_codes({"s": socket}, sessions=sessions, users=users, backends=[BACKEND]) == {"s": expected}


def test_close_codes_answers_every_socket_on_its_own_facts():
    sockets = {1: SocketFacts(7, "a", RoleChoices.VIEWER), 2: SocketFacts(7, "gone", RoleChoices.VIEWER),
               3: SocketFacts(7, "a", RoleChoices.ADMIN)}
    codes = close_codes(sockets, sessions={"a": GOOD}, users={7: ACTIVE_VIEWER}, backends=[BACKEND])
    assert codes == {1: None, 2: CLOSE_UNAUTHENTICATED, 3: CLOSE_FORBIDDEN}


# ---------------------------------------------------------------------------------------------
# The registry and its task, with a check that names sockets to close.

class FakeSocket:
    def __init__(self, name):
        self.name = name
        self.closed_with = None
        self.rechecked = 0

    async def close_for_access(self, code):
        self.closed_with = code

    async def access_rechecked(self):
        self.rechecked += 1


async def _until(condition, what, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def test_the_first_socket_starts_the_task_and_the_last_stops_it():
    async def scenario():
        recheck = SocketRecheck(lambda sockets: {}, lambda: 60.0)
        a, b = FakeSocket("a"), FakeSocket("b")
        assert not recheck.running
        recheck.add(a)
        task = recheck.task
        recheck.add(b)
        assert recheck.running and recheck.task is task  # one task for all sockets
        recheck.discard(a)
        assert recheck.running
        recheck.discard(b)
        await asyncio.sleep(0)
        assert not recheck.running and task.cancelled()
        recheck.add(a)  # a socket opening later starts it again
        assert recheck.running
        recheck.discard(a)

    async_to_sync(scenario)()


@pytest.mark.django_db  # the round runs its check through database_sync_to_async
def test_each_round_closes_the_sockets_the_check_names_and_keeps_the_others():
    seen = []

    def check(sockets):
        seen.append(sorted(s.name for s in sockets))
        return {s: CLOSE_FORBIDDEN for s in sockets if s.name == "bad"}

    async def scenario():
        recheck = SocketRecheck(check, lambda: 0.01)
        good, bad = FakeSocket("good"), FakeSocket("bad")
        recheck.add(good)
        recheck.add(bad)
        await _until(lambda: bad.closed_with is not None, "the bad socket's close")
        recheck.discard(bad)  # as its disconnect does
        await _until(lambda: good.rechecked >= 3, "more rounds")
        recheck.discard(good)
        return good, bad

    good, bad = async_to_sync(scenario)()
    assert bad.closed_with == CLOSE_FORBIDDEN and good.closed_with is None
    assert seen[0] == ["bad", "good"] and seen[-1] == ["good"]  # one call for all sockets, each round


@pytest.mark.django_db  # the round runs its check through database_sync_to_async
def test_a_round_that_fails_closes_its_sockets_and_the_task_goes_on():
    calls = []

    def check(sockets):
        calls.append(len(sockets))
        if len(calls) == 1:
            raise RuntimeError("database away")
        return {}

    async def scenario():
        recheck = SocketRecheck(check, lambda: 0.01)
        first = FakeSocket("first")
        recheck.add(first)
        await _until(lambda: first.closed_with is not None, "the failed round's close")
        recheck.discard(first)
        later = FakeSocket("later")
        recheck.add(later)
        await _until(lambda: later.rechecked >= 1, "a later round")
        recheck.discard(later)
        return first, later

    first, later = async_to_sync(scenario)()
    assert first.closed_with == CLOSE_CHECK_FAILED and later.closed_with is None


@pytest.mark.django_db  # the round runs its check through database_sync_to_async
def test_rounds_never_pile_up_behind_a_slow_check():
    import threading

    release = threading.Event()
    running = []

    def slow(sockets):
        running.append(1)
        release.wait(5)
        return {}

    async def scenario():
        recheck = SocketRecheck(slow, lambda: 0.001)
        socket = FakeSocket("s")
        recheck.add(socket)
        await _until(lambda: running, "the first round")
        await asyncio.sleep(0.1)  # a hundred intervals go by while the round reads
        rounds_while_blocked = recheck.rounds
        release.set()
        await _until(lambda: socket.rechecked >= 2, "rounds after the slow one")
        recheck.discard(socket)
        return rounds_while_blocked

    assert async_to_sync(scenario)() == 1


# ---------------------------------------------------------------------------------------------
# recheck_sockets against the database: the same answers as each socket's own check.

def _session_for(user) -> SessionStore:
    client = Client()
    client.force_login(user)
    return SessionStore(client.session.session_key)


def _socket(cls, user, session, **attrs):
    socket = cls()
    socket.scope = {"user": get_user_model().objects.get(pk=user.pk), "session": session,
                    "url_route": {"kwargs": {}}}
    for name, value in attrs.items():
        setattr(socket, name, value)
    return socket


def _job_socket(user, session, job_id):
    return _socket(consumers.JobConsumer, user, session, job_id=job_id)


@pytest.mark.django_db
def test_recheck_closes_just_the_sockets_whose_access_is_gone(viewer, operator, admin, nobody):
    User = get_user_model()
    keep_v, keep_o = _session_for(viewer), _session_for(operator)
    purged = _session_for(viewer)
    demoted = _user_with_role("dora", "Viewer")
    deactivated = _user_with_role("dean", "Viewer")
    new_password = _user_with_role("paul", "Viewer")
    job = Job.objects.create(kind="test.job", timeout_s=10)
    gone_job = Job.objects.create(kind="test.job", timeout_s=10)
    sockets = {
        "viewer audit": _socket(consumers.AuditConsumer, viewer, keep_v),
        "viewer job": _job_socket(viewer, keep_v, job.pk),
        "operator warnings": _socket(consumers.WarningConsumer, operator, keep_o),
        "operator socket needing operator": _socket(consumers.AuditConsumer, operator, keep_o,
                                                    required_role=RoleChoices.OPERATOR),
        "viewer socket needing operator": _socket(consumers.AuditConsumer, viewer, keep_v,
                                                  required_role=RoleChoices.OPERATOR),
        "purged session": _socket(consumers.AuditConsumer, viewer, purged),
        "no session": _socket(consumers.AuditConsumer, viewer, None),
        "role lost": _socket(consumers.AuditConsumer, demoted, _session_for(demoted)),
        "deactivated": _socket(consumers.AuditConsumer, deactivated, _session_for(deactivated)),
        "password changed": _socket(consumers.AuditConsumer, new_password, _session_for(new_password)),
        "never had a role": _socket(consumers.AuditConsumer, nobody, _session_for(nobody)),
        "job deleted": _job_socket(viewer, keep_v, gone_job.pk),
        "session of another user": _socket(consumers.AuditConsumer, admin, keep_v),
    }
    Session.objects.filter(session_key=purged.session_key).delete()
    demoted.groups.clear()
    User.objects.filter(pk=deactivated.pk).update(is_active=False)
    changed = User.objects.get(pk=new_password.pk)
    changed.set_password("another long passphrase")
    changed.save()
    gone_job.delete()

    closing = consumers.recheck_sockets(list(sockets.values()))

    by_name = {name: closing.get(socket) for name, socket in sockets.items()}
    assert by_name == {
        "viewer audit": None, "viewer job": None, "operator warnings": None,
        "operator socket needing operator": None,
        "viewer socket needing operator": CLOSE_FORBIDDEN,
        "purged session": CLOSE_UNAUTHENTICATED, "no session": CLOSE_UNAUTHENTICATED,
        "role lost": CLOSE_FORBIDDEN, "deactivated": CLOSE_UNAUTHENTICATED,
        "password changed": CLOSE_UNAUTHENTICATED, "never had a role": CLOSE_FORBIDDEN,
        "job deleted": CLOSE_FORBIDDEN, "session of another user": CLOSE_UNAUTHENTICATED,
    }
    # The same answers, socket by socket, as each one's own check (used when its user's access changes).
    assert by_name == {name: socket._access_close_code() for name, socket in sockets.items()}


def _user_with_role(username, role):
    user = get_user_model().objects.create_user(username=username, password="correct horse battery")
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def _hosts(names):
    return [Host.objects.create(name=name, address=f"127.0.0.{n + 10}", auth_method="portal_key", status="reachable")
            for n, name in enumerate(names)]


@pytest.mark.django_db
def test_inventory_sockets_hear_the_hosts_their_user_may_see_now(viewer):
    a1, a2, b1 = _hosts(["a-1", "a-2", "b-1"])
    team_a, team_b = HostGroup.objects.create(name="team-a"), HostGroup.objects.create(name="team-b")
    team_a.hosts.add(a1, a2)
    team_b.hosts.add(b1)
    granted = _user_with_role("gina", None)
    HostGroupGrant.objects.create(group=team_a, user=granted, role="Viewer")
    global_socket = _socket(InventoryConsumer, viewer, _session_for(viewer), visible=frozenset())
    granted_socket = _socket(InventoryConsumer, granted, _session_for(granted), visible=frozenset())
    regranted_socket = _socket(InventoryConsumer, granted, _session_for(granted), visible=frozenset({b1.pk}))

    assert consumers.recheck_sockets([global_socket, granted_socket, regranted_socket]) == {}
    assert global_socket.visible == {a1.pk, a2.pk, b1.pk}
    assert granted_socket.visible == regranted_socket.visible == {a1.pk, a2.pk}
    # The same as each socket's own check reads.
    for socket in (global_socket, granted_socket):
        own = _socket(InventoryConsumer, socket.scope["user"], socket.scope["session"])
        assert own._access_close_code() is None and own.visible == socket.visible

    HostGroupGrant.objects.filter(user=granted).delete()  # the last grant goes: no role at all
    closing = consumers.recheck_sockets([global_socket, granted_socket])
    assert closing == {granted_socket: CLOSE_FORBIDDEN}


@pytest.mark.django_db
def test_a_record_socket_closes_when_its_record_leaves_the_users_groups(trusted_host):
    from migrations_app.models import Migration

    other = _hosts(["elsewhere"])[0]
    team = HostGroup.objects.create(name="team-t")
    team.hosts.add(trusted_host)
    user = _user_with_role("gus", None)
    HostGroupGrant.objects.create(group=team, user=user, role="Viewer")
    vm = trusted_host.vms.first()
    inside = Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=trusted_host,
                                      destination=trusted_host, options={})
    outside = Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=trusted_host,
                                       destination=other, options={})
    from migrations_app.consumers import MigrationConsumer

    session = _session_for(user)
    sockets = [_socket(MigrationConsumer, user, session, migration_id=inside.pk),
               _socket(MigrationConsumer, user, session, migration_id=outside.pk)]
    assert consumers.recheck_sockets(sockets) == {sockets[1]: CLOSE_FORBIDDEN}
    assert [s._access_close_code() for s in sockets] == [None, CLOSE_FORBIDDEN]


# ---------------------------------------------------------------------------------------------
# The cost: a few queries for the whole round, however many sockets.

@pytest.mark.django_db
def test_the_round_reads_the_same_number_of_queries_for_12_sockets_as_for_300(viewer, operator):
    a1, b1 = _hosts(["a-1", "b-1"])
    team = HostGroup.objects.create(name="team-a")
    team.hosts.add(a1)
    granted = _user_with_role("gina", None)
    HostGroupGrant.objects.create(group=team, user=granted, role="Viewer")
    users = [viewer, operator, granted]
    job = Job.objects.create(kind="test.job", timeout_s=10)
    kinds = [
        lambda user, session: _socket(InventoryConsumer, user, session),
        lambda user, session: _socket(consumers.AuditConsumer, user, session),
        lambda user, session: _socket(consumers.WarningConsumer, user, session),
        lambda user, session: _job_socket(user, session, job.pk),
    ]
    sockets = []

    def grow(n):
        for _ in range(n):
            user = users[len(sockets) % len(users)]
            # One browser (session) per socket, as the bench and a fleet of admins have.
            sockets.append(kinds[len(sockets) % len(kinds)](user, _session_for(user)))

    def run():
        closing = consumers.recheck_sockets(sockets)
        # The granted user's job socket closes (the job names no host in their group); nothing else.
        assert {s.scope["user"].pk for s in closing} <= {granted.pk}

    # 12: every kind of socket for every user already (3 users, 4 kinds).
    few, many = assert_constant_query_count(run, grow, few=12, many=300)
    assert few == many <= 10


# ---------------------------------------------------------------------------------------------
# Memory goes back to the system once many of the sockets have gone.

def test_memory_is_handed_back_once_after_a_run_of_closes(monkeypatch):
    from core import socket_recheck

    monkeypatch.setattr(socket_recheck, "SHRINK_DELAY_S", 0.05)
    handed_back = []

    async def scenario():
        recheck = SocketRecheck(lambda sockets: {}, lambda: 60.0, shrunk=lambda: handed_back.append(len(recheck.sockets)))
        sockets = [FakeSocket(n) for n in range(socket_recheck.SHRINK_FROM * 2)]
        for socket in sockets:
            recheck.add(socket)
        for socket in sockets[:socket_recheck.SHRINK_FROM - 1]:  # not yet half of them
            recheck.discard(socket)
        await asyncio.sleep(0.1)
        before_half = list(handed_back)
        for socket in sockets[socket_recheck.SHRINK_FROM - 1:]:  # the rest, one after the other
            recheck.discard(socket)
        await _until(lambda: handed_back, "memory handed back")
        await asyncio.sleep(0.1)
        return before_half

    assert async_to_sync(scenario)() == [] and handed_back == [0]  # once, after the last close


def test_a_few_sockets_coming_and_going_hand_nothing_back(monkeypatch):
    from core import socket_recheck

    monkeypatch.setattr(socket_recheck, "SHRINK_DELAY_S", 0.01)
    handed_back = []

    async def scenario():
        recheck = SocketRecheck(lambda sockets: {}, lambda: 60.0, shrunk=lambda: handed_back.append(1))
        for _ in range(3):
            sockets = [FakeSocket(n) for n in range(socket_recheck.SHRINK_FROM - 1)]
            for socket in sockets:
                recheck.add(socket)
            for socket in sockets:
                recheck.discard(socket)
        await asyncio.sleep(0.1)

    async_to_sync(scenario)()
    assert handed_back == []


def test_on_glibc_the_trim_is_found():
    import platform

    from core.socket_recheck import _malloc_trim, return_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert _malloc_trim() is not None  # else the memory of closed sockets silently stays
    return_freed_memory()
