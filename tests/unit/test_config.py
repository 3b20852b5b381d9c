from pathlib import Path

import pytest

from gateway.config import SHIPPED_RULES_DIR, config_from_dict, load_config, parse_hostport
from gateway.errors import ConfigError
from gateway.model import OnError


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return info.value.problems


def test_shipped_example_config_loads() -> None:
    config = load_config(SHIPPED_RULES_DIR / "gateway.example.toml")
    assert config.smtp.listen == "127.0.0.1:2525"
    assert config.relay.domains == ("example.test",)
    assert config.rules_dir == SHIPPED_RULES_DIR


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert config.storage_dir == Path("var")
    assert config.rules_dir == SHIPPED_RULES_DIR


def test_unknown_keys_are_errors_everywhere() -> None:
    problems = problems_of({"smtp": {"lisen": "x"}, "bogus": {}, "checks": {"headers": {"x": 1}}})
    assert any(p.startswith("smtp.lisen: unknown key") for p in problems)
    assert any(p.startswith("bogus: unknown key") for p in problems)
    assert any(p.startswith("checks.headers.x: unknown key") for p in problems)


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        {
            "smtp": {"max_recipients": "ten", "listen": "nohost:port:x"},
            "relay": {"domains": [], "port": 70000},
            "dns": {"nameservers": ["resolver.example"]},
            "checks": {"gtube": {"on_error": "explode"}},
        }
    )
    text = "\n".join(problems)
    assert "smtp.max_recipients: expected an integer" in text
    assert "relay.domains: at least one recipient domain is required" in text
    assert "relay.port: 70000 is not a TCP port" in text
    assert "dns.nameservers: 'resolver.example' is not an IP address" in text
    assert "checks.gtube.on_error: 'explode' is not one of" in text


def test_types_are_strict() -> None:
    assert any("expected a number" in p for p in problems_of({"dns": {"timeout_s": "2"}}))
    assert any("expected true or false" in p for p in problems_of({"relay": {"tls_verify": 1}}))
    assert any("is not one of" in p for p in problems_of({"smtp": {"bare_lf": "allow"}}))


def test_limits_must_be_positive() -> None:
    problems = problems_of({"smtp": {"max_message_bytes": 0, "idle_timeout_s": -1}})
    assert "smtp.max_message_bytes: must be greater than 0" in problems
    assert "smtp.idle_timeout_s: must be greater than 0" in problems


def test_data_rate_and_ipv6_prefix_are_bounded() -> None:
    problems = problems_of({"smtp": {"min_data_rate": 0, "ipv6_prefix_length": 129}})
    assert problems == [
        "smtp.min_data_rate: must be greater than 0",
        "smtp.ipv6_prefix_length: must be between 1 and 128",
    ]


def test_stress_at_is_a_share_of_the_connections() -> None:
    assert problems_of({"smtp": {"stress_at": 0}}) == [
        "smtp.stress_at: must be a share of max_connections in (0, 1]"
    ]
    assert config_from_dict({"smtp": {"stress_at": 1}}).smtp.stress_at == 1.0


def test_message_memory_must_fit_a_message_of_the_largest_size() -> None:
    limits = {"max_message_bytes": 1000, "max_inflight_bytes": 999}
    [problem] = problems_of({"smtp": {**limits, "max_inflight_bytes_per_ip": 1000}})
    assert problem.startswith("smtp.max_inflight_bytes: must be at least max_message_bytes")
    [problem] = problems_of(
        {"smtp": {**limits, "max_inflight_bytes": 1000, "max_inflight_bytes_per_ip": 999}}
    )
    assert problem.startswith("smtp.max_inflight_bytes_per_ip: must be at least max_message")
    limits = {"max_message_bytes": 1000, "max_inflight_bytes": 1000}
    config = config_from_dict({"smtp": {**limits, "max_inflight_bytes_per_ip": 1000}})
    assert config.smtp.max_inflight_bytes == config.smtp.max_inflight_bytes_per_ip == 1000


def test_values_are_converted() -> None:
    config = config_from_dict(
        {
            "relay": {"domains": ["Example.TEST"]},
            "dns": {"nameservers": ["127.0.0.1:5353", "::1"], "timeout_s": 1},
            "checks": {"gtube": {"on_error": "tempfail"}},
        }
    )
    assert config.dns.timeout_s == 1.0
    assert config.dns.nameservers == ("127.0.0.1:5353", "::1")
    assert config.checks.gtube.on_error is OnError.TEMPFAIL


def test_bad_files_give_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[smtp\nlisten=", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(broken)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, 53) == expected


def test_non_finite_numbers_and_reply_injection_are_refused() -> None:
    text = "\n".join(
        problems_of({"smtp": {"idle_timeout_s": float("nan"), "session_timeout_s": float("inf")}})
    )
    assert "smtp.idle_timeout_s: expected a finite number" in text
    assert "smtp.session_timeout_s: expected a finite number" in text
    text = "\n".join(
        problems_of({"smtp": {"banner": "ready\r\n250 forged", "hostname": "mx.example.org\r\nX"}})
    )
    assert "smtp.banner: only printable ASCII" in text
    assert "smtp.hostname: 'mx.example.org\\r\\nX' is not a host name" in text


def test_a_missing_relative_model_names_the_directory_it_was_read_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        config_from_dict({"checks": {"classifier": {"model": "models/x.skops"}}})
    message = str(refused.value)
    assert f"no such file 'models/x.skops' (from {tmp_path})" in message
    assert "gateway train --out DIR" in message


def test_classifier_thresholds_and_known_words_are_checked() -> None:
    text = "\n".join(
        problems_of({"checks": {"classifier": {"min_known_words": -1, "ham_threshold": 0.6}}})
    )
    assert "checks.classifier.min_known_words: must be 0 or more" in text
    assert "checks.classifier: need 0 <= ham_threshold < spam_threshold <= 1" in text
    config = config_from_dict({"checks": {"classifier": {"min_known_words": 0}}})
    assert config.checks.classifier.min_known_words == 0
