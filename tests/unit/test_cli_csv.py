"""The onboarding CSV: every problem with its line number, BOM/CRLF, non-ASCII names; name derivation."""

from __future__ import annotations

import re

import pytest

from gateway_operator.cli.csvimport import parse_users_csv
from gateway_operator.cli.names import is_dns1123_label, name_for_email

TIERS = {"drafting", "coding", "architect"}


def problems(text: str | bytes, tiers: set[str] | None = TIERS) -> list[tuple[int, str]]:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return [(p.line, p.reason) for p in parse_users_csv(data, tiers).problems]


def test_guide_example_parses() -> None:
    result = parse_users_csv(
        b"email,tier,alias\n"
        b"alice@company.com,architect,Alice Smith\n"
        b"bob@company.com,coding,Bob Jones\n"
        b"charlie@company.com,drafting,Charlie Brown\n",
        TIERS,
    )
    assert result.ok
    assert [(u.line, u.email, u.tier, u.alias, u.name) for u in result.users] == [
        (2, "alice@company.com", "architect", "Alice Smith", "alice-company-com"),
        (3, "bob@company.com", "coding", "Bob Jones", "bob-company-com"),
        (4, "charlie@company.com", "drafting", "Charlie Brown", "charlie-company-com"),
    ]


def test_every_problem_is_reported_with_its_line() -> None:
    found = problems(
        "email,tier,alias\n"
        "alice@company.com,architect,Alice\n"  # 2 ok
        "not-an-email,coding,X\n"  # 3 bad email
        "bob@company.com,gold,Bob\n"  # 4 unknown tier
        "ALICE@Company.com,coding,Again\n"  # 5 duplicate (case-insensitive)
        "carol@company.com\n"  # 6 missing column
        "dave@company.com,,Dave\n"  # 7 empty tier
        "erin@company.com,coding,Erin,extra\n"  # 8 too many fields
    )
    lines = {line: reason for line, reason in found}
    assert sorted(lines) == [3, 4, 5, 6, 7, 8]
    assert "bad email 'not-an-email'" in lines[3]
    assert "unknown tier 'gold'" in lines[4] and "architect, coding, drafting" in lines[4]
    assert "duplicate email" in lines[5] and "first on line 2" in lines[5]
    assert "missing column 'tier'" in lines[6]
    assert lines[7] == "tier is empty"
    assert "4 fields, expected 3" in lines[8]


def test_bom_and_crlf_are_handled() -> None:
    data = "\ufeffemail,tier,alias\r\nalice@company.com,architect,Alice\r\nbob@company.com,coding,Bob\r\n"
    result = parse_users_csv(data.encode("utf-8"), TIERS)
    assert result.ok, result.problems
    assert [u.email for u in result.users] == ["alice@company.com", "bob@company.com"]
    assert result.users[1].alias == "Bob"  # no stray \r


def test_non_ascii_names_are_kept_and_quoted_commas_work() -> None:
    data = 'email,tier,alias\nzoe@company.com,coding,"Zoë Ünïcode, 名前"\n'
    result = parse_users_csv(data.encode("utf-8"), TIERS)
    assert result.ok
    assert result.users[0].alias == "Zoë Ünïcode, 名前"


def test_non_ascii_email_is_rejected() -> None:
    assert problems("email,tier\nzoë@company.com,coding\n")[0][0] == 2


def test_header_problems() -> None:
    assert problems("alice@company.com,architect,Alice\n") == [
        (1, "missing header row; the first line must be 'email,tier,alias'")
    ]
    missing = problems("email,alias\nalice@company.com,Alice\n")
    assert missing[0][0] == 1 and "missing column 'tier'" in missing[0][1]
    unknown = problems("email,tier,team\nalice@company.com,coding,x\n")
    assert unknown[0][0] == 1 and "unknown column 'team'" in unknown[0][1]
    assert problems("")[0][1].startswith("empty file")


def test_columns_in_any_order_alias_optional_and_blank_lines_skipped() -> None:
    result = parse_users_csv(b"Tier , EMAIL\n\ncoding,bob@company.com\n\n", TIERS)
    assert result.ok
    assert (result.users[0].line, result.users[0].tier, result.users[0].alias) == (3, "coding", None)


def test_tier_is_case_folded_and_unknown_tiers_unchecked_without_a_list() -> None:
    result = parse_users_csv(b"email,tier\nbob@company.com,Coding\n", TIERS)
    assert result.ok and result.users[0].tier == "coding"
    assert parse_users_csv(b"email,tier\nbob@company.com,anything\n", None).ok


def test_invalid_utf8_reports_the_line() -> None:
    data = b"email,tier,alias\nalice@company.com,coding,ok\nbob@company.com,coding,\xff\xfe\n"
    found = problems(data)
    assert found[0][0] == 3 and "UTF-8" in found[0][1]


def test_a_multiline_quoted_alias_is_one_row() -> None:
    result = parse_users_csv(
        b'email,tier,alias\nbob@company.com,coding,"Bob\nJones"\ncarl@company.com,coding,C\n', TIERS
    )
    assert result.ok
    assert [u.alias for u in result.users] == ["Bob\nJones", "C"]


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("alice@company.com", "alice-company-com"),
        ("Alice@Company.COM", "alice-company-com"),
        ("bob2@mail.example.org", "bob2-mail-example-org"),
    ],
)
def test_plain_addresses_get_readable_names(email: str, expected: str) -> None:
    assert name_for_email(email) == expected


def test_lossy_addresses_get_a_hash_suffix_and_never_collide() -> None:
    emails = [
        "alice.smith@company.com",
        "alice-smith@company.com",
        "alice_smith@company.com",
        "alice+smith@company.com",
        "alice@smith.company.com",  # plain: alice-smith-company-com
        "alice.smith.company@com.de",
    ]
    names = [name_for_email(e) for e in emails]
    assert len(set(names)) == len(names)
    for email, name in zip(emails[:4], names[:4], strict=True):
        assert re.fullmatch(r"alice-smith-company-com-[0-9a-f]{8}", name), (email, name)
    assert names[4] == "alice-smith-company-com"


def test_names_are_deterministic_valid_labels_even_for_long_addresses() -> None:
    long_email = "a" * 60 + "." + "b" * 60 + "@" + "c" * 50 + ".example.com"
    name = name_for_email(long_email)
    assert name == name_for_email(long_email.upper())
    assert is_dns1123_label(name) and len(name) <= 63
    # a plain address whose last label looks like our hash suffix takes the hashed form
    tricky = name_for_email("a@b.deadbeef")
    assert tricky != "a-b-deadbeef" and is_dns1123_label(tricky)
