"""scripts/audit.py over pip-audit's JSON report: an audit that checked nothing never passes as clean."""

import audit

CLEAN = {"name": "numpy", "version": "2.1.3", "vulns": []}
VULNERABLE = {
    "name": "urllib3",
    "version": "2.2.1",
    "vulns": [{"id": "GHSA-34jh-p97f-mpxf", "fix_versions": ["2.2.2"]}],
}
UNCHECKED = {"name": "wrapt", "version": "2.5.2",
             "skip_reason": "Dependency not found on PyPI and could not be audited: wrapt (2.5.2)"}  # fmt: skip


def test_a_vulnerability_fails_with_its_fixed_version(capsys):
    assert audit.summarise([CLEAN, VULNERABLE, UNCHECKED], allow_unchecked=True) == 1
    printed = capsys.readouterr().out
    assert "2 of 3 locked packages checked, 1 vulnerable" in printed
    assert "urllib3 2.2.1: GHSA-34jh-p97f-mpxf (fixed in 2.2.2)" in printed


def test_unchecked_packages_fail_unless_accepted(capsys):
    assert audit.summarise([CLEAN, UNCHECKED], allow_unchecked=False) == 2
    assert "not checked: 1 package(s): Dependency not found on PyPI and could not be audited" in capsys.readouterr().out
    assert audit.summarise([CLEAN, UNCHECKED], allow_unchecked=True) == 0
    assert audit.summarise([CLEAN], allow_unchecked=False) == 0
