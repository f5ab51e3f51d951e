"""Operations settings: JSON logs, probes kept out of access logs, Sentry, the metrics token{% if cookiecutter.database == "postgresql" %}, the pool{% endif %}."""

import json
import secrets

import pytest

from tests.test_settings import production_settings, run_manage

LOG_TWO_LINES = """
import logging
logging.getLogger("chat.example").warning("something %s", "happened", extra={"chat_id": 7})
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("chat.example").exception("it broke")
"""


def shell(code: str, **env: str):
    result = run_manage("shell", "--verbosity", "0", "-c", code, SECRET_KEY=secrets.token_urlsafe(50), **env)
    assert result.returncode == 0, result.stderr
    return result


def test_logs_are_one_json_object_per_line_with_log_format_json():
    lines = shell(LOG_TWO_LINES, LOG_FORMAT="json").stderr.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("WARNING", "chat.example", "something happened"),
        ("ERROR", "chat.example", "it broke"),
    ]
    assert records[0]["chat_id"] == 7
    assert records[0]["time"].endswith("+00:00")
    assert "ZeroDivisionError" in records[1]["exc_info"]


def test_logs_are_plain_text_by_default():
    stderr = shell(LOG_TWO_LINES).stderr
    assert stderr.startswith("something happened\nit broke\nTraceback")


def test_an_unknown_log_format_is_refused():
    result = run_manage("check", SECRET_KEY=secrets.token_urlsafe(50), LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT must be text or json" in result.stderr


def test_a_server_process_loads_with_its_garbage_collector_tuned_for_serving():
    code = "import gc, config.asgi; print(gc.get_threshold(), gc.get_freeze_count() > 0)"
    output = shell(code).stdout.split()
    assert output == ["(50000,", "20,", "10)", "True"]  # config/collector.py


LOG_ACCESS_LINES = """
import logging
uvicorn = logging.getLogger("uvicorn.access")
uvicorn.addHandler(logging.StreamHandler())
uvicorn.propagate = False
for path in ["/readyz", "/healthz", "/metrics", "/chat/"]:
    uvicorn.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", path, "1.1", 200)
    logging.getLogger("django.channels.server").info("HTTP GET %s 200 [0.01, 10.0.0.1:5000]", path)
"""


def test_probe_requests_stay_out_of_the_access_logs():
    stderr = shell(LOG_ACCESS_LINES, LOG_LEVEL="INFO").stderr
    assert stderr.splitlines() == [
        '10.0.0.1:5000 - "GET /chat/ HTTP/1.1" 200',
        "HTTP GET /chat/ 200 [0.01, 10.0.0.1:5000]",
    ]


SENTRY_STATE = "import json, sentry_sdk; c = sentry_sdk.get_client(); print(json.dumps([c.is_active(), c.dsn]))"
# A DSN on a closed local port: nothing is sent unless an error happens.
DSN = "http://public-key@127.0.0.1:9/42"


@pytest.mark.parametrize(("env", "state"), [({}, [False, None]), ({"SENTRY_DSN": DSN}, [True, DSN])])
def test_sentry_reports_only_when_a_dsn_is_set(env, state):
    assert json.loads(shell(SENTRY_STATE, **env).stdout.strip().splitlines()[-1]) == state


def test_the_readiness_timeout_and_the_metrics_token_come_from_the_environment():
    token = secrets.token_urlsafe(32)
    names = ("READYZ_TIMEOUT_SECONDS", "METRICS_TOKEN")
    assert production_settings(*names) == {names[0]: 2.0, names[1]: ""}
    assert production_settings(*names, READYZ_TIMEOUT_SECONDS="0.5", METRICS_TOKEN=token) == {
        names[0]: 0.5,
        names[1]: token,
    }


def test_a_short_metrics_token_is_refused():
    result = run_manage("check", SECRET_KEY=secrets.token_urlsafe(50), METRICS_TOKEN="short")
    assert result.returncode != 0
    assert "METRICS_TOKEN must be 24 characters or more" in result.stderr
{%- if cookiecutter.database == "postgresql" %}


POSTGRES_URL = "postgres://chat:secret@db.internal:5432/chat"


def test_postgresql_connections_come_from_a_pool_sized_by_the_environment():
    sized = {"DB_POOL_MIN_SIZE": "1", "DB_POOL_MAX_SIZE": "7", "DB_POOL_TIMEOUT": "2.5"}
    database = production_settings("DATABASES", DATABASE_URL=POSTGRES_URL, **sized)["DATABASES"]["default"]
    assert database["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 7, "timeout": 2.5}
    assert database["CONN_MAX_AGE"] == 0
    assert database["CONN_HEALTH_CHECKS"] is True


def test_the_pool_can_be_turned_off_for_an_external_pooler():
    database = production_settings("DATABASES", DATABASE_URL=POSTGRES_URL, DB_POOL="false")["DATABASES"]["default"]
    assert "pool" not in database.get("OPTIONS", {})


def test_persistent_connections_with_the_pool_are_refused():
    env = {"SECRET_KEY": secrets.token_urlsafe(50), "DATABASE_URL": POSTGRES_URL, "CONN_MAX_AGE": "60"}
    result = run_manage("check", **env)
    assert result.returncode != 0
    assert "Set CONN_MAX_AGE=0 with the connection pool" in result.stderr
{%- endif %}
