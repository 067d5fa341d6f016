"""Audit the locked dependencies for known vulnerabilities with pip-audit (``make audit``).

pip-audit reports a dependency it could not look up ("not found on PyPI") and still exits 0,
so an audit that checked nothing looks like a clean one. This wrapper says how many of the
locked packages were checked, lists each vulnerability with its fixed versions, and fails:
exit 1 on any vulnerability, exit 2 when some packages could not be checked (unless
``--allow-unchecked``, for machines whose registry mirror carries no vulnerability data).

Usage: python scripts/audit.py [--requirements requirements.txt] [--service pypi|osv] [--allow-unchecked]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", type=Path, default=PROJECT_ROOT / "requirements.txt")
    parser.add_argument("--service", choices=("pypi", "osv"), default="pypi")
    parser.add_argument(
        "--allow-unchecked",
        action="store_true",
        help="exit 0 when nothing vulnerable was found, even if some packages could not be checked",
    )
    args = parser.parse_args()
    command = [str(Path(sys.executable).parent / "pip-audit"), "-r", str(args.requirements), "--no-deps",
               "--disable-pip", "--format", "json", "--progress-spinner", "off",
               "--vulnerability-service", args.service]  # fmt: skip
    audit = subprocess.run(command, capture_output=True, text=True)
    try:
        report = json.loads(audit.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit did not finish (exit {audit.returncode}):\n{audit.stderr[-3000:]}", file=sys.stderr)
        return 2
    return summarise(report["dependencies"], allow_unchecked=args.allow_unchecked)


def summarise(dependencies: list[dict], *, allow_unchecked: bool) -> int:
    """Print what was checked and found; the exit status described in the module docstring."""
    unchecked = [d for d in dependencies if "skip_reason" in d]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    checked = len(dependencies) - len(unchecked)
    print(f"dependency audit: {checked} of {len(dependencies)} locked packages checked, {len(vulnerable)} vulnerable")
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release yet"
            print(f"  {dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixed})")
    if unchecked:
        reasons = Counter(_reason(d["skip_reason"]) for d in unchecked)
        for reason, count in reasons.most_common():
            print(f"  not checked: {count} package(s): {reason}")
    if vulnerable:
        return 1
    if unchecked and not allow_unchecked:
        print("  some packages could not be checked: see above (--allow-unchecked to accept)", file=sys.stderr)
        return 2
    return 0


def _reason(skip_reason: str) -> str:
    # "Dependency not found on PyPI and could not be audited: wrapt (2.5.2)" -> the part before the name
    return skip_reason.rsplit(":", 1)[0]


if __name__ == "__main__":
    sys.exit(main())
