"""Strings from the network reach logs and terminals escaped: no control character, no forged
line, no terminal escape sequence (the one helper, and the places that print such strings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from krnet.core.model.text import printable
from krnet.core.protocol.messages import Error
from krnet.core.protocol.parse import raise_if_error
from krnet.errors import ProtocolError
from tests.unit.test_status import clean_env, overlay, populate, runner, status_of

__all__ = ["clean_env"]  # a fixture used by name

HOSTILE = "ok\x1b[2J\x1b]0;owned\x07\n2026-12-01 INFO krnet.runner joined as runner 3\r\u202eevil"


def test_printable_escapes_every_control_character() -> None:
    text = printable(HOSTILE)
    assert text.isprintable()
    assert text == (
        "ok\\x1b[2J\\x1b]0;owned\\x07\\n2026-12-01 INFO krnet.runner joined as runner 3"
        "\\r\\u202eevil"
    )
    assert printable("runner-a é 10.1.0.0/16") == "runner-a é 10.1.0.0/16"


def test_an_unauthenticated_error_is_escaped_and_marked() -> None:
    forged = Error(type="error", code="internal", message=HOSTILE)
    with pytest.raises(ProtocolError) as caught:
        raise_if_error(forged, "host")
    message = str(caught.value)
    assert message.isprintable()
    assert message.startswith('host refused (internal); its unauthenticated message: "ok\\x1b')


def test_the_overlay_table_escapes_what_runners_reported() -> None:
    from krnet.core.observe.status import render_overlay_table

    observed = {"error": HOSTILE, "network": "kohakuriver-net\x1b[31m"}
    status = status_of(runner(1, observed=observed))
    text = render_overlay_table(status)
    assert all(line.isprintable() for line in text.splitlines())
    assert "joined as runner 3" in text  # shown, as text
    assert not any(line.startswith("2026-12-01") for line in text.splitlines())


def test_node_overlay_escapes_heartbeat_strings_and_json_stays_json(
    clean_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from krnet.core.record.store import Store

    populate(tmp_path)
    with Store.open(tmp_path) as store:
        store.heartbeat(1, now=store.runners()[0].last_seen, observed={"error": HOSTILE})
    code, out = overlay(capsys, tmp_path)
    assert code == 0 and "\x1b" not in out and "\r" not in out
    assert not any("INFO krnet.runner" in line[:30] for line in out.splitlines())
    code, out = overlay(capsys, tmp_path, "--json")
    assert code == 0 and "\x1b" not in out
    [first, _] = json.loads(out)["runners"]
    assert any(HOSTILE in mismatch for mismatch in first["mismatches"])  # the value, unchanged


def test_doctor_lines_escape_network_strings() -> None:
    import io

    from krnet.commands.doctor import print_checks
    from krnet.core.observe.diagnose.check import Check

    out = io.StringIO()
    print_checks([Check("far_end", "fail", f"runner 1 ({HOSTILE})", HOSTILE, 1)], out)
    assert all(line.isprintable() for line in out.getvalue().splitlines())
    assert len(out.getvalue().splitlines()) == 2
