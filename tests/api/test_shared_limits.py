"""Fair use across processes: on a PostgreSQL store, two `vec serve` API processes count
one key's requests in the same place, so together they allow the limit once (before, each
process counted alone: N processes allowed N times the limit). Sign-in attempts from one
address are counted across them too."""
from __future__ import annotations


from tests.api.conftest import distributed_store
from tests.api.server import MODE_MARKS, running, start_server

pytestmark = MODE_MARKS["distributed"]

LIMIT = 20


def test_two_api_processes_allow_one_keys_limit_once(tmp_path, postgres_server, kafka_broker):
    extra = {"VEC_API_RATE_LIMIT": f"{LIMIT}/hour", "VEC_DASHBOARD_SIGNIN_LIMIT": "4/hour"}
    with distributed_store(postgres_server, kafka_broker, tmp_path, with_fleet=False, **extra) as (env, _):
        with running(start_server("distributed", tmp_path, env, name="first")) as first, \
                running(start_server("distributed", tmp_path, env, name="second")) as second:
            account = first.new_account("shared")  # the admin token has limits of its own
            key = first.new_key(account, scopes=("read",))["key"]
            clients = [first.client(key), second.client(key)]
            answers = [clients[i % 2].get(f"/v1/accounts/{account}/credits") for i in range(LIMIT + 10)]
            codes = [a.status_code for a in answers]
            assert codes.count(200) == LIMIT and codes[LIMIT:] == [429] * 10, codes
            assert {i % 2 for i, code in enumerate(codes) if code == 200} == {0, 1}  # both processes served
            assert all(int(a.headers["retry-after"]) >= 1 for a in answers[LIMIT:])
            attempts = [(first, second)[i % 2].client(None).post("/dashboard/signin", data={"token": f"wrong-{i}"})
                        for i in range(6)]
            assert [a.status_code for a in attempts] == [401] * 4 + [429] * 2
