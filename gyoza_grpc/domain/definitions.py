"""Op definitions: named, versioned, immutable templates of runs.

A definition's name is the op's id; each deploy adds a version (a semantic version), and the
latest version by semantic-version precedence (1.10.0 > 1.9.0, 1.0.0-rc.1 < 1.0.0) is the
default. A run made from a definition inherits its image, constraints, retry policy and event
delivery; its inputs are validated against the definition's input specs.

`Version.key` encodes precedence as bytes whose plain byte order is semver order, so the store
can find "the latest version" with an ORDER BY on an indexed column of either backend.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument, NotFound
from gyoza_grpc.domain.inputs import (
    InputSpec,
    input_spec_violations,
    normalise_specs,
    validate_inputs,
)
from gyoza_grpc.domain.model import (
    DEFAULT_PRIORITY,
    JSON,
    Constraints,
    EventDelivery,
    RetryPolicy,
    RunSpec,
)
from gyoza_grpc.domain.runs import spec_violations

MAX_NAME_LEN = 128
MAX_VERSION_LEN = 128
MAX_DESCRIPTION_LEN = 10_000

_NAME = re.compile(r"[a-z0-9_-]+", re.ASCII)
# https://semver.org/#is-there-a-suggested-regular-expression-regex-to-check-a-semver-string,
# with [0-9] for \d (Python's \d also matches non-ASCII digits).
_NUM = r"0|[1-9][0-9]*"
_PRE_ID = r"0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*"
_SEMVER = re.compile(
    rf"(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>(?:{_PRE_ID})(?:\.(?:{_PRE_ID}))*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)


# -- names and versions ----------------------------------------------------------------------


def name_problem(name: str) -> str | None:
    """Why `name` is not a definition name, or None."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LEN or not _NAME.fullmatch(name):
        return f"must be 1 to {MAX_NAME_LEN} lower-case letters, digits, '-' or '_', got {name!r}"
    return None


def _num_key(digits: str) -> bytes:
    # Length first, then the digits: fewer digits is a smaller number (no leading zeros).
    return bytes([len(digits)]) + digits.encode("ascii")


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """A semantic version, ordered (and equal) by its precedence key; build metadata, which
    semver ignores for precedence, only breaks ties so that the order is total."""

    key: bytes
    text: str = field(compare=False)
    major: int = field(compare=False)
    minor: int = field(compare=False)
    patch: int = field(compare=False)
    prerelease: tuple[str, ...] = field(compare=False)
    build: str = field(compare=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        """Raises ValueError for anything but a semantic version."""
        m = _SEMVER.fullmatch(text) if len(text) <= MAX_VERSION_LEN else None
        if m is None:
            raise ValueError(
                "must be a semantic version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] "
                f"(e.g. 1.0.0 or 2.1.0-rc.1), got {text!r}"
            )
        pre = tuple(m["pre"].split(".")) if m["pre"] else ()
        key = _num_key(m["major"]) + _num_key(m["minor"]) + _num_key(m["patch"])
        if pre:
            # A pre-release sorts before its release (0x01 < 0x02). Identifiers compare in
            # turn: numeric ones numerically and below alphanumeric ones (0x01 < 0x02),
            # alphanumeric ones in ASCII order (NUL-terminated, so a prefix sorts first),
            # and a shorter list first (the list's 0x00 end sorts below any identifier).
            key += b"\x01"
            for ident in pre:
                if ident.isdigit():
                    key += b"\x01" + _num_key(ident)
                else:
                    key += b"\x02" + ident.encode("ascii") + b"\x00"
            key += b"\x00"
        else:
            key += b"\x02"
        key += b"\x00" + (m["build"] or "").encode("ascii")
        return cls(
            key=key,
            text=text,
            major=int(m["major"]),
            minor=int(m["minor"]),
            patch=int(m["patch"]),
            prerelease=pre,
            build=m["build"] or "",
        )

    def __str__(self) -> str:
        return self.text


def version_problem(version: str) -> str | None:
    try:
        Version.parse(version)
    except ValueError as err:
        return str(err)
    return None


def check_name(name: str, field: str = "name") -> str:
    problem = name_problem(name)
    if problem is not None:
        raise InvalidArgument.field(field, problem)
    return name


def check_version(version: str, field: str = "version") -> str:
    """A version of a request, where empty means "the latest" (or "every version")."""
    if version:
        problem = version_problem(version)
        if problem is not None:
            raise InvalidArgument.field(field, problem)
    return version


def definition_not_found(name: str, version: str = "") -> NotFound:
    if version:
        return NotFound(
            f"definition '{name}' version '{version}' not found",
            reason="DEFINITION_NOT_FOUND",
            metadata={"name": name, "version": version},
        )
    return NotFound(
        f"definition '{name}' not found", reason="DEFINITION_NOT_FOUND", metadata={"name": name}
    )


# -- definitions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Definition:
    """One version of an op. `created_at` is set when the store first adds it."""

    name: str
    version: str
    image: str
    description: str = ""
    input_specs: Mapping[str, InputSpec] = field(default_factory=dict)
    output_specs: Mapping[str, InputSpec] = field(default_factory=dict)
    constraints: Constraints = field(default_factory=Constraints)
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    event_delivery: EventDelivery = field(default_factory=EventDelivery)
    created_at: datetime | None = None

    @property
    def semver(self) -> Version:
        return Version.parse(self.version)


def definition_violations(d: Definition, prefix: str = "definition") -> list[FieldViolation]:
    """Every problem with `d`, each at `prefix.<field>`."""
    out: list[FieldViolation] = []
    problem = name_problem(d.name)
    if problem is not None:
        out.append(FieldViolation(f"{prefix}.name", problem))
    problem = version_problem(d.version) if d.version else "must not be empty"
    if problem is not None:
        out.append(FieldViolation(f"{prefix}.version", problem))
    if len(d.description) > MAX_DESCRIPTION_LEN:
        out.append(
            FieldViolation(
                f"{prefix}.description", f"must be at most {MAX_DESCRIPTION_LEN} characters"
            )
        )
    # What a run inherits is checked exactly as CreateRun checks it.
    template = RunSpec(
        image=d.image,
        constraints=d.constraints,
        retry_policy=d.retry_policy,
        event_delivery=d.event_delivery,
    )
    out.extend(
        FieldViolation(f"{prefix}.{v.field}", v.description) for v in spec_violations(template)
    )
    out.extend(input_spec_violations(d.input_specs, f"{prefix}.input_specs"))
    out.extend(input_spec_violations(d.output_specs, f"{prefix}.output_specs"))
    return out


def new_definition(d: Definition, now: datetime) -> Definition:
    """`d` validated (InvalidArgument listing every violation) and normalised (defaults in
    their type's normal form), created at `now`."""
    violations = definition_violations(d)
    if violations:
        raise InvalidArgument.for_fields(violations)
    return dataclasses.replace(
        d,
        input_specs=normalise_specs(d.input_specs),
        output_specs=normalise_specs(d.output_specs),
        created_at=now,
    )


def _encode(value: object) -> object:
    if isinstance(value, timedelta):
        return value // timedelta(microseconds=1)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def _digest(doc: Any) -> str:
    text = json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_encode
    )
    return hashlib.sha256(text.encode()).hexdigest()


def definition_fingerprint(d: Definition) -> str:
    """A digest of the body of `d` (everything but created_at): re-sending a version is a
    no-op exactly when the fingerprints match."""
    body = dataclasses.asdict(dataclasses.replace(d, created_at=None))
    return _digest(body)


# -- runs made from a definition -------------------------------------------------------------


def run_spec_for(
    d: Definition,
    inputs: Mapping[str, Any],
    *,
    priority: int | None = None,
    request_id: str = "",
) -> RunSpec:
    """The RunSpec of a run made from `d`: the inputs validated against its input specs
    (InvalidArgument listing every violation) with defaults filled in; image, constraints,
    retry policy and event delivery inherited; the request's priority (5 when unset)."""
    return RunSpec(
        image=d.image,
        priority=DEFAULT_PRIORITY if priority is None else priority,
        inputs=validate_inputs(d.input_specs, inputs),
        constraints=d.constraints,
        retry_policy=d.retry_policy,
        event_delivery=d.event_delivery,
        op_definition=d.name,
        definition_version=d.version,
        request_id=request_id,
    )


def request_fingerprint(name: str, version: str, inputs: JSON, priority: int | None) -> str:
    """A digest of a CreateRunFromDefinition request but its request_id. It covers the
    request as sent (an empty version stays empty), so repeating a request returns its first
    run even after a newer version became the latest."""
    return _digest(
        {
            "from_definition": name,
            "version": version,
            "inputs": inputs,
            "priority": priority,
        }
    )
