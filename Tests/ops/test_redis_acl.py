"""ops/redis: redis-server runs with redis.conf and users.acl (placeholder passwords replaced by
known ones in a copy); the whole cfsign flow works under the role users, Redis refuses none of it
(ACL LOG stays empty), and each forbidden action is refused with NOPERM.

The test copy of users.acl gets one extra user, `ops-test-admin`, used only to read ACL LOG and
the server's settings; the role users are the file's, unchanged but for their passwords.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
import redis

from .ops_support import OPS, RedisServer, make_key, run, start_worker, wait_until

ACL = OPS / "redis" / "users.acl"
CONF = OPS / "redis" / "redis.conf"
ROLES = ("cfsign-producer", "cfsign-worker", "cfsign-operator", "cfsign-autoscaler")
ADMIN = "ops-test-admin"
URL = "https://d111111abcdef8.cloudfront.net/invoices/42.pdf"


def acl_users(text: str) -> dict[str, str]:
    users = {}
    for line in text.splitlines():
        if line.strip():
            m = re.match(r"^user (\S+) ", line)
            assert m, f"Redis ACL files hold only `user` lines (no comments): {line!r}"
            users[m.group(1)] = line
    return users


def readme_producer_example() -> str:
    """The per-app producer line shown in ops/redis/README.md."""
    text = (OPS / "redis" / "README.md").read_text()
    m = re.search(r"^user cfsign-producer-web .*$", text, re.M)
    assert m, "ops/redis/README.md should show a per-app producer user"
    return m.group(0)


def test_acl_file_shape():
    users = acl_users(ACL.read_text())
    assert set(users) == {"default", *ROLES}
    assert re.match(r"^user default off\b", users["default"]), "the passwordless default user must be off"
    for name in ROLES:
        line = users[name]
        passwords = re.findall(r"\s>(\S+)", line)
        assert passwords and all(p.startswith("CHANGE-ME-") for p in passwords), f"{name}: placeholder passwords only"
        assert not re.search(r"\s#[0-9a-f]{64}\b", line), f"{name}: no hashed real passwords either"
        assert " resetkeys resetchannels -@all " in line, f"{name} must start from nothing"
        for pattern in re.findall(r"(?:%[RW]+)?~(\S+?)\)?(?=\s|$)", line):
            assert pattern.startswith("{cfsign}:"), f"{name}: key pattern {pattern} outside the namespace"
        for channel in re.findall(r"&(\S+)", line):
            assert channel == "{cfsign}:keygroup:changed", f"{name}: channel {channel}"
        for dangerous in ("+@all", "+@admin", "+@dangerous", "+flushall", "+keys", "+config|set", "+debug", "allkeys", "allcommands"):
            assert dangerous not in line, f"{name} grants {dangerous}"
    assert "+config|get" in users["cfsign-worker"] and "+config " not in users["cfsign-worker"]


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory):
    folder = tmp_path_factory.mktemp("acl-redis")
    passwords = {name: f"pw-{name}-{secrets.token_hex(8)}" for name in (*ROLES, "cfsign-producer-web", ADMIN)}
    users = acl_users(ACL.read_text())
    lines = [users["default"]]
    for name in ROLES:
        lines.append(re.sub(r">CHANGE-ME-\S+", ">" + passwords[name], users[name]))
    lines.append(readme_producer_example().replace("#<sha256>", ">" + passwords["cfsign-producer-web"]))
    lines.append(f"user {ADMIN} on >{passwords[ADMIN]} ~* &* +@all")
    acl_copy = folder / "users.acl"
    acl_copy.write_text("\n".join(lines) + "\n")
    server = RedisServer(folder / "data", [str(CONF), "--aclfile", str(acl_copy)]).start()
    server.passwords = passwords  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


def client(server: RedisServer, user: str) -> redis.Redis:
    # redis-py sends CLIENT SETINFO on connect; the role users may not, and redis-py ignores that.
    return redis.Redis(host="127.0.0.1", port=server.port, username=user, password=server.passwords[user],
                       socket_timeout=15)


def url(server: RedisServer, user: str) -> str:
    return server.url(user, server.passwords[user])


def refused(conn: redis.Redis, *command) -> None:
    with pytest.raises(redis.exceptions.ResponseError) as caught:
        conn.execute_command(*command)
    error = caught.value
    assert isinstance(error, redis.exceptions.NoPermissionError) or "can't run this command" in str(error), \
        f"{command}: expected NOPERM, got {type(error).__name__}: {error}"


def test_redis_conf_settings_are_in_force(acl_redis):
    admin = client(acl_redis, ADMIN)
    config = {k: v for k, v in admin.config_get("*").items()}
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["aclfile"].endswith("users.acl")
    assert config["proto-max-bulk-len"] == str(1024 * 1024), "redis.conf bounds every element at 1 MB"
    assert admin.acl_getuser("default")["enabled"] is False


def test_a_producer_cannot_push_an_element_over_1_mb(acl_redis):
    """Issue 13, memory: BLMOVE and RPOP hand a worker whole elements and hiredis has no reply-size
    limit, so redis.conf's proto-max-bulk-len bounds the largest job a producer can LPUSH (1 MB,
    Redis's minimum). A 2 MiB push is refused by Redis; a worker then never holds more than one
    element of at most 1 MB beyond its batch."""
    admin = client(acl_redis, ADMIN)
    producer = client(acl_redis, "cfsign-producer")
    before = admin.llen("{cfsign}:jobs")
    with pytest.raises(redis.exceptions.RedisError) as refused_push:
        producer.lpush("{cfsign}:jobs", b"x" * (2 * 1024 * 1024))
    assert "bulk length" in str(refused_push.value) or isinstance(refused_push.value, redis.exceptions.ConnectionError), \
        f"a 2 MiB LPUSH failed for another reason: {refused_push.value!r}"
    assert admin.llen("{cfsign}:jobs") == before, "a 2 MiB LPUSH reached the queue"
    # The bound is exactly 1 MiB: a job that large still goes in (the worker dead-letters it).
    try:
        assert client(acl_redis, "cfsign-producer").lpush("{cfsign}:jobs", b"x" * (1024 * 1024)) == before + 1
    finally:
        admin.delete("{cfsign}:jobs")
    assert admin.ping()


def test_whole_flow_under_role_users(acl_redis, cfsign_bin: Path, tmp_path: Path, worker_help):
    admin = client(acl_redis, ADMIN)
    admin.execute_command("ACL", "LOG", "RESET")
    key = make_key(cfsign_bin, tmp_path / "keys", "KACLTESTONLY1")
    group = tmp_path / "group.json"
    group.write_text(json.dumps({"active": "KACLTESTONLY1", "keys": [{"id": "KACLTESTONLY1", "private_key_file": str(key)}]}))
    operator_url = url(acl_redis, "cfsign-operator")

    stored = run([str(cfsign_bin), "keygroup", "set", str(group), "--check-files", "--redis", operator_url])
    assert stored.returncode == 0, stored.stderr

    # The audit trail as a stream ({cfsign}:audit, XADD), where this worker has the setting.
    auditing = "audit" in worker_help.settings
    worker = start_worker(cfsign_bin, tmp_path, ["--redis", url(acl_redis, "cfsign-worker"), "--worker-id", "ops-acl-w1"],
                          env={"CFSIGN_AUDIT": "stream"} if auditing else None)
    try:
        def fleet() -> dict | None:
            status = run([str(cfsign_bin), "status", "--json", "--redis", operator_url])
            if status.returncode != 0:
                return None
            return json.loads(status.stdout)

        snapshot = wait_until(fleet, 15, "`cfsign status` as operator to show one live worker on version 1")
        assert snapshot["live_workers"] == 1 and snapshot["versions"] == [1], snapshot
        assert snapshot["workers"][0]["heartbeat"]["redis_warning"] is None, "CONFIG GET maxmemory-policy should work"

        producer = client(acl_redis, "cfsign-producer")
        reply_to = "{cfsign}:reply:ops-acl-test"
        producer.lpush("{cfsign}:jobs",
                       json.dumps({"id": "ok-1", "reply_to": reply_to, "url": URL, "expires_in": 600}),
                       json.dumps({"id": "bad-1", "reply_to": reply_to, "url": URL + "#frag", "expires_in": 600}),
                       "this is not a job")
        replies = {}
        for _ in range(2):
            got = producer.blpop(reply_to, timeout=10)
            assert got is not None, worker.stderr()
            reply = json.loads(got[1])
            replies[reply["id"]] = reply
        assert replies["ok-1"]["ok"] is True and "Key-Pair-Id=KACLTESTONLY1" in replies["ok-1"]["url"]
        assert replies["bad-1"]["error"]["code"] == "invalid_url"
        assert producer.expire(reply_to, 30) in (True, False)
        producer.delete(reply_to)

        # The Swift producer client (LPUSH, LPOP, BLPOP) as the producer user.
        requested = run([str(cfsign_bin), "request", URL, "--expires-in", "1h", "--timeout", "10",
                         "--redis", url(acl_redis, "cfsign-producer")])
        assert requested.returncode == 0, requested.stderr
        assert "Key-Pair-Id=KACLTESTONLY1" in requested.stdout

        # A per-app producer (the README's example) is held to its own reply lists.
        web = client(acl_redis, "cfsign-producer-web")
        web_reply = "{cfsign}:reply:web-7-4242-ab"
        web.lpush("{cfsign}:jobs", json.dumps({"id": "web-1", "reply_to": web_reply, "url": URL, "expires_in": 60}))
        assert web.blpop(web_reply, timeout=10) is not None
        refused(web, "LPOP", "{cfsign}:reply:web-70-1")
        refused(web, "LPOP", "{cfsign}:reply:ops-acl-test")

        # Reaping under the worker's user: a registered worker without a heartbeat holding a job.
        ghost = client(acl_redis, "cfsign-worker")
        ghost.sadd("{cfsign}:workers", "ops-acl-ghost")
        ghost.rpush("{cfsign}:inflight:ops-acl-ghost",
                    json.dumps({"id": "ghost-1", "reply_to": reply_to, "url": URL, "expires_in": 60}))
        got = producer.blpop(reply_to, timeout=10)
        assert got is not None and json.loads(got[1])["id"] == "ghost-1", worker.stderr()
        wait_until(lambda: b"ops-acl-ghost" not in ghost.smembers("{cfsign}:workers"), 10, "the ghost to be deregistered")

        # Operator: rotate, show, status, read and clear the dead list.
        rotated = run([str(cfsign_bin), "keygroup", "rotate", "--key-id", "KACLTESTONLY2",
                       "--private-key-file", str(key), "--keep", "1", "--redis", operator_url])
        assert rotated.returncode == 0, rotated.stderr
        wait_until(lambda: (f := fleet()) and f["versions"] == [2], 10, "the worker to sign with version 2")
        shown = run([str(cfsign_bin), "keygroup", "show", "--json", "--redis", operator_url])
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["keygroup"]["version"] == 2
        assert run([str(cfsign_bin), "status", "--redis", operator_url]).returncode == 0
        operator = client(acl_redis, "cfsign-operator")
        if auditing:
            assert operator.xlen("{cfsign}:audit") >= 3
            assert operator.xrevrange("{cfsign}:audit", count=1)
        heartbeat = fleet()["workers"][0]["heartbeat"]
        assert heartbeat["last_error"] is None, heartbeat
        dead = operator.lrange("{cfsign}:dead", 0, -1)
        assert len(dead) == 1 and json.loads(dead[0])["job"] == "this is not a job"
        assert operator.delete("{cfsign}:dead") == 1
    finally:
        exit_code = worker.stop()
    stderr = worker.stderr()
    assert exit_code == 0, stderr
    assert "NOPERM" not in stderr and "Redis refused" not in stderr, stderr
    assert "deregistered" in stderr, stderr
    # Redis logged no refusal for anything above (worker, operator CLI, producers).
    log = admin.execute_command("ACL", "LOG")
    log = [e for e in log if _field(e, "object") != "client|setinfo"]  # redis-py's, see client()
    denials = [entry for entry in log if _field(entry, "username") in {*ROLES}]
    expected_web = [e for e in log if _field(e, "username") == "cfsign-producer-web"]
    assert denials == [], denials
    assert len(expected_web) == 2, "only the two deliberate refusals of the per-app producer"
    assert admin.exists("{cfsign}:workers", "{cfsign}:worker:ops-acl-w1", "{cfsign}:inflight:ops-acl-w1") == 0


def _field(entry, name: str):
    if isinstance(entry, dict):
        value = entry.get(name, entry.get(name.encode()))
    else:  # a flat [key, value, ...] list
        pairs = dict(zip(entry[::2], entry[1::2]))
        value = pairs.get(name, pairs.get(name.encode()))
    return value.decode() if isinstance(value, bytes) else value


def test_producer_may_not(acl_redis):
    producer = client(acl_redis, "cfsign-producer")
    assert producer.ping()
    refused(producer, "GET", "{cfsign}:keygroup")
    refused(producer, "LRANGE", "{cfsign}:inflight:x", 0, -1)
    refused(producer, "GET", "{cfsign}:worker:x")
    refused(producer, "LRANGE", "{cfsign}:jobs", 0, -1)
    refused(producer, "LPOP", "{cfsign}:jobs")
    refused(producer, "BLPOP", "{cfsign}:jobs", 0.1)
    refused(producer, "DEL", "{cfsign}:jobs")
    refused(producer, "EXPIRE", "{cfsign}:jobs", 1)
    refused(producer, "SET", "anything", "x")
    refused(producer, "SET", "{cfsign}:keygroup", "x")
    refused(producer, "SMEMBERS", "{cfsign}:workers")
    refused(producer, "LPUSH", "{cfsign}:reply:someone-else", "forged reply")
    refused(producer, "LPUSH", "{other}:jobs", "x")
    refused(producer, "PUBLISH", "{cfsign}:keygroup:changed", "9")
    refused(producer, "FLUSHALL")
    refused(producer, "KEYS", "*")
    refused(producer, "CONFIG", "GET", "*")
    refused(producer, "XRANGE", "{cfsign}:audit", "-", "+")


def test_worker_may_not(acl_redis):
    worker = client(acl_redis, "cfsign-worker")
    refused(worker, "LPUSH", "{other}:jobs", "x")
    refused(worker, "GET", "{other}:keygroup")
    refused(worker, "LLEN", "unrelated-key")
    refused(worker, "SET", "{cfsign}:keygroup", "{}")
    refused(worker, "DEL", "{cfsign}:keygroup")
    refused(worker, "PUBLISH", "{cfsign}:keygroup:changed", "9")
    refused(worker, "EVAL", "return 1", 0)
    refused(worker, "DEL", "{cfsign}:audit")
    refused(worker, "XTRIM", "{cfsign}:audit", "MAXLEN", 0)
    refused(worker, "XRANGE", "{cfsign}:audit", "-", "+")
    refused(worker, "FLUSHALL")
    refused(worker, "FLUSHDB")
    refused(worker, "KEYS", "*")
    refused(worker, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    refused(worker, "SCRIPT", "FLUSH")
    # enable-debug-command no refuses DEBUG before the ACL is consulted: ask the ACL itself.
    dry = client(acl_redis, ADMIN).execute_command("ACL", "DRYRUN", "cfsign-worker", "DEBUG", "SLEEP", "0")
    assert b"no permissions" in dry, dry
    refused(worker, "ACL", "LIST")


def test_operator_may_not(acl_redis):
    operator = client(acl_redis, "cfsign-operator")
    refused(operator, "FLUSHALL")
    refused(operator, "KEYS", "*")
    refused(operator, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    refused(operator, "LRANGE", "{cfsign}:jobs", 0, -1)
    refused(operator, "LRANGE", "{cfsign}:inflight:x", 0, -1)
    refused(operator, "LPUSH", "{cfsign}:jobs", "x")
    refused(operator, "DEL", "{cfsign}:jobs")
    refused(operator, "SET", "{cfsign}:worker:x", "{}")
    refused(operator, "GET", "{other}:keygroup")
    refused(operator, "XADD", "{cfsign}:audit", "*", "forged", "entry")
    refused(operator, "DEL", "{cfsign}:audit")


def test_autoscaler_reads_only_the_queue_length(acl_redis):
    autoscaler = client(acl_redis, "cfsign-autoscaler")
    assert autoscaler.ping()
    client(acl_redis, "cfsign-producer").lpush("{cfsign}:jobs", "x", "y")
    try:
        assert autoscaler.llen("{cfsign}:jobs") >= 2
        assert autoscaler.type("{cfsign}:jobs") == b"list"
    finally:
        client(acl_redis, ADMIN).delete("{cfsign}:jobs")
    refused(autoscaler, "LLEN", "{cfsign}:keygroup")
    refused(autoscaler, "LLEN", "{cfsign}:dead")
    refused(autoscaler, "LRANGE", "{cfsign}:jobs", 0, -1)
    refused(autoscaler, "LPUSH", "{cfsign}:jobs", "x")
    refused(autoscaler, "RPOP", "{cfsign}:jobs")
    refused(autoscaler, "DEL", "{cfsign}:jobs")


# --- Every shipped user is refused what it should not have ----------------------------------------
#
# Attack 4 (issue 13): a user that may run a script may run any Lua (a busy loop stalls Redis for
# everyone; string.rep grows past maxmemory). No role but the worker, for its own scripts (SCRIPT
# LOAD + EVALSHA), may run or manage scripts or functions, and no role has an admin command.

SHA_OF_RETURN_1 = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"  # SHA1("return 1")
LIBRARY = "#!lua name=cfsignacltest\nredis.register_function('f', function() return 1 end)"

SCRIPT_COMMANDS = {
    "EVAL": ("EVAL", "return 1", 0),
    "EVAL on the jobs key": ("EVAL", "return redis.call('llen', KEYS[1])", 1, "{cfsign}:jobs"),
    "EVALSHA": ("EVALSHA", SHA_OF_RETURN_1, 0),
    "EVAL_RO": ("EVAL_RO", "return 1", 0),
    "EVALSHA_RO": ("EVALSHA_RO", SHA_OF_RETURN_1, 0),
    "SCRIPT LOAD": ("SCRIPT", "LOAD", "return 1"),
    "SCRIPT FLUSH": ("SCRIPT", "FLUSH"),
    "SCRIPT KILL": ("SCRIPT", "KILL"),
    "FUNCTION LOAD": ("FUNCTION", "LOAD", LIBRARY),
    "FUNCTION DELETE": ("FUNCTION", "DELETE", "cfsignacltest"),
    "FUNCTION FLUSH": ("FUNCTION", "FLUSH"),
    "FCALL": ("FCALL", "f", 0),
    "FCALL_RO": ("FCALL_RO", "f", 0),
}
#: What the worker runs its scripts with (RedisConnection.evalScript): allowed to it alone.
WORKER_SCRIPT_COMMANDS = {"EVALSHA", "SCRIPT LOAD"}

ADMIN_COMMANDS = {
    "FLUSHALL": ("FLUSHALL",),
    "FLUSHDB": ("FLUSHDB",),
    "KEYS": ("KEYS", "*"),
    "CONFIG SET": ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"),
    "CONFIG REWRITE": ("CONFIG", "REWRITE"),
    "CONFIG RESETSTAT": ("CONFIG", "RESETSTAT"),
    "ACL LIST": ("ACL", "LIST"),
    "ACL SETUSER": ("ACL", "SETUSER", "intruder", "on", ">pw", "+@all", "~*"),
    "CLIENT LIST": ("CLIENT", "LIST"),
    "CLIENT KILL": ("CLIENT", "KILL", "ID", "999999"),
    "INFO": ("INFO",),
    "SLOWLOG": ("SLOWLOG", "GET"),
    "BGSAVE": ("BGSAVE",),
    "BGREWRITEAOF": ("BGREWRITEAOF",),
    "SWAPDB": ("SWAPDB", "0", "1"),
    "SELECT": ("SELECT", "1"),
    "MIGRATE": ("MIGRATE", "127.0.0.1", "1", "{cfsign}:jobs", "0", "100"),
    "OBJECT": ("OBJECT", "ENCODING", "{cfsign}:jobs"),
    "DUMP": ("DUMP", "{cfsign}:jobs"),
    "RENAME": ("RENAME", "{cfsign}:jobs", "{cfsign}:stolen"),
}
#: Refused before the command would do anything irreversible, so only asked of the ACL (ACL DRYRUN):
#: DEBUG is also off by `enable-debug-command no`, which refuses it before the ACL is consulted.
DRYRUN_ONLY = {
    "DEBUG SLEEP": ("DEBUG", "SLEEP", "0"),
    "DEBUG JMAP": ("DEBUG", "JMAP"),
    "SHUTDOWN": ("SHUTDOWN", "NOSAVE"),
    "MONITOR": ("MONITOR",),
    "REPLICAOF": ("REPLICAOF", "127.0.0.1", "1"),
    "MODULE LOAD": ("MODULE", "LOAD", "/nonexistent.so"),
    "SAVE": ("SAVE",),
    "FAILOVER": ("FAILOVER",),
}
#: The worker reads maxmemory-policy at start (ops/redis/README.md): its one admin-ish command.
WORKER_ADMIN_EXCEPTIONS = {"CONFIG GET"}
ALL_USERS = (*ROLES, "cfsign-producer-web")


def forbidden(user: str) -> dict[str, tuple]:
    """Every command of the matrix above that `user` must be refused."""
    commands = dict(ADMIN_COMMANDS)
    commands["CONFIG GET"] = ("CONFIG", "GET", "*")
    commands.update(SCRIPT_COMMANDS)
    if user == "cfsign-worker":
        for name in WORKER_SCRIPT_COMMANDS | WORKER_ADMIN_EXCEPTIONS:
            commands.pop(name)
    return commands


def dry_refusal(admin: redis.Redis, user: str, command: tuple) -> str | None:
    """None when the ACL would refuse `command` for `user`, else what ACL DRYRUN said."""
    answer = admin.execute_command("ACL", "DRYRUN", user, *command)
    text = answer.decode() if isinstance(answer, bytes) else str(answer)
    return None if "no permissions" in text else text


@pytest.mark.parametrize("user", ALL_USERS)
def test_every_user_is_refused_scripts_functions_and_admin_commands(acl_redis, user):
    """Sent for real: each must come back NOPERM (and the server still holds its data)."""
    admin = client(acl_redis, ADMIN)
    admin.set("{cfsign}:acl-canary", "still here")
    conn = client(acl_redis, user)
    allowed = []
    for name, command in forbidden(user).items():
        try:
            conn.execute_command(*command)
        except redis.exceptions.NoPermissionError:
            continue
        except redis.exceptions.ResponseError as error:
            if "can't run this command" in str(error) or "no permissions" in str(error):
                continue
            allowed.append(f"{name}: ran and failed for another reason: {error}")
            continue
        allowed.append(f"{name}: ran")
    assert allowed == [], f"{user} may run commands it must not have: {allowed}"
    assert admin.get("{cfsign}:acl-canary") == b"still here"
    assert admin.function_list() == [], "a refused FUNCTION LOAD left a library behind"


@pytest.mark.parametrize("user", ALL_USERS)
def test_every_user_is_refused_irreversible_admin_commands_by_the_acl(acl_redis, user):
    admin = client(acl_redis, ADMIN)
    allowed = {name: answer for name, command in DRYRUN_ONLY.items()
               if (answer := dry_refusal(admin, user, command)) is not None}
    assert allowed == {}, f"the ACL lets {user} run: {allowed}"


def test_the_worker_runs_its_own_scripts_only_through_script_load_and_evalsha(acl_redis):
    """What the worker needs (RedisConnection.evalScript), nothing more: a script it loaded runs,
    on its own keys only."""
    worker = client(acl_redis, "cfsign-worker")
    sha = worker.execute_command("SCRIPT", "LOAD", "return redis.call('llen', KEYS[1])")
    assert worker.execute_command("EVALSHA", sha, 1, "{cfsign}:jobs") == 0
    refused(worker, "EVALSHA", sha, 1, "{cfsign}:keygroup-other")
    refused(worker, "EVALSHA", sha, 1, "{other}:jobs")


def test_the_passwordless_default_user_can_do_nothing(acl_redis):
    anonymous = redis.Redis(host="127.0.0.1", port=acl_redis.port, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.eval("return 1", 0)


def granted(line: str) -> set[str]:
    """The commands (`+name`, `+name|sub`) a user line grants, lower-case."""
    return {token[1:].lower() for token in re.split(r"[\s()]+", line) if token.startswith("+")}


EXACT_GRANTS = {
    "cfsign-producer": {"ping", "asking", "lpush", "lpop", "blpop", "del", "expire"},
    "cfsign-autoscaler": {"ping", "type", "llen"},
    "cfsign-operator": {"ping", "asking", "time", "watch", "unwatch", "multi", "exec", "discard", "get", "set",
                        "publish", "smembers", "llen", "xlen", "xrange", "xrevrange", "lrange", "del"},
    # The commands the worker sends (ops/redis/README.md, "cfsign-worker"), scripts' inner calls included.
    "cfsign-worker": {"ping", "asking", "time", "config|get", "script|load", "evalsha", "subscribe", "get", "set",
                      "del", "exists", "expire", "type", "llen", "lrange", "lpush", "rpush", "rpop", "lpop", "lindex",
                      "lrem", "ltrim", "lmove", "blmove", "sadd", "srem", "smembers", "scan", "xadd",
                      "hlen", "hexists", "hincrby", "hdel"},
}


@pytest.mark.parametrize("user", sorted(EXACT_GRANTS))
def test_each_user_is_granted_exactly_its_documented_commands(user):
    line = acl_users(ACL.read_text())[user]
    assert granted(line) == EXACT_GRANTS[user], \
        f"{user}: grants changed; added {granted(line) - EXACT_GRANTS[user]}, removed {EXACT_GRANTS[user] - granted(line)}"
    assert not (granted(line) & {"eval", "eval_ro", "evalsha_ro", "script", "function", "fcall", "fcall_ro",
                                 "script|flush", "script|kill", "@scripting"})


def test_readme_per_app_producer_grants_what_the_producer_does():
    assert granted(readme_producer_example()) == EXACT_GRANTS["cfsign-producer"]
