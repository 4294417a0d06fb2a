"""A corpus of bad configs generated from the schema itself: for every property a value of the
wrong type (and for an integer its default as a float) and, where the schema bounds it, one just
out of range; for every section an unknown key and a value that is not a mapping. Each must stop
aimo.config.load with a one-line ValueError that names the key (so a key added to the schema
without a type, a bound or `additionalProperties: false` shows up here), and Snakemake's own dry
run must stop on one as well. No engine."""

import pytest
import yaml
from conftest import ROOT, copy_workflow, overrides, snakemake

from aimo import config

pytestmark = pytest.mark.needs("unit")

SCHEMA = yaml.safe_load(config.SCHEMA.read_text())
UNKNOWN = "no_such_key"
# a value of another type than the property's first (non-null) type
WRONG_TYPE = {
    "integer": 2.5,
    "number": "x",
    "string": 5,
    "boolean": "yes",
    "array": "x",
    "object": "x",
}


def sections(node, path=()):
    """(path, schema) of every object section (properties or property names), depth first."""
    if node.get("type") == "object" and ("properties" in node or "propertyNames" in node):
        yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from sections(sub, (*path, key))


def leaves(node, path=()):
    """(path, schema) of every property that is not a section with properties of its own."""
    for key, sub in node.get("properties", {}).items():
        if "properties" in sub:
            yield from leaves(sub, (*path, key))
        else:
            yield (*path, key), sub


def just_out(schema) -> list:
    """Values just outside the property's bounds (none where it has none)."""
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    step = 1 if "integer" in types else 0.01
    out = []
    if "minimum" in schema:
        out.append(schema["minimum"] - step)
    if "exclusiveMinimum" in schema:
        out.append(schema["exclusiveMinimum"])
    if "maximum" in schema:
        out.append(schema["maximum"] + step)
    if "exclusiveMaximum" in schema:
        out.append(schema["exclusiveMaximum"])
    if "enum" in schema:
        out.append("not-an-option")
    if "minLength" in schema:
        out.append("")
    if "minItems" in schema:
        out.append([])
    if "minimum" in schema.get("items", {}):
        out.append([schema["items"]["minimum"] - 1])
    return out


def nested(path, value) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


def corpus():
    """(id, overlay, the names its message must hold) of every bad config."""
    cases = []
    for path, schema in leaves(SCHEMA):
        key = (".".join(path),)
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        wrong = WRONG_TYPE[next(t for t in types if t != "null")]
        cases.append((f"{key[0]}={wrong!r}", nested(path, wrong), key))
        cases += [(f"{key[0]}={v!r}", nested(path, v), key) for v in just_out(schema)]
        # 4.0 is an integer to JSON Schema, not to range(): the default written as a float
        default = schema.get("default")
        if "integer" in types and isinstance(default, int) and not isinstance(default, bool):
            cases.append((f"{key[0]}={float(default)!r}", nested(path, float(default)), key))
        if schema.get("items", {}).get("type") == "integer" and default:
            floats = [float(k) for k in default]
            cases.append((f"{key[0]}={floats!r}", nested(path, floats), key))
    for path, _ in sections(SCHEMA):
        key = ".".join(path) or "config"
        cases.append((f"{key}.{UNKNOWN}", nested((*path, UNKNOWN), 1), (f"{key}: ", UNKNOWN)))
        if path:  # a section that is not a mapping
            cases.append((f"{key}=7", nested(path, 7), (key,)))
    return cases


CORPUS = corpus()


def test_the_schema_types_every_property_and_closes_every_section():
    untyped = [".".join(p) for p, s in leaves(SCHEMA) if "type" not in s]
    assert not untyped, untyped
    open_ = [
        ".".join(p) or "config"
        for p, s in sections(SCHEMA)
        if "properties" in s and s.get("additionalProperties") is not False
    ]
    assert not open_, open_
    assert len(list(sections(SCHEMA))) >= 20 and len(CORPUS) >= 250, len(CORPUS)


@pytest.mark.parametrize("overlay, names", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_a_bad_config_stops_load_naming_the_key(tmp_path, overlay, names):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(overlay))
    with pytest.raises(ValueError) as err:
        config.load([ROOT / "config.yaml", path])
    message = str(err.value)
    assert all(name in message for name in names) and "\n" not in message, message


@pytest.mark.needs("workflow")
@pytest.mark.parametrize(
    "overlay, named",
    [
        ("vote: {critque_weight: 1}\n", "critque_weight"),  # the schema, in the Snakefile
        ("online: {min_s: 300, max_s: 240}\n", "online.min_s (300) > online.max_s (240)"),
    ],
    ids=["schema", "check"],
)
def test_a_dry_run_stops_on_a_bad_overlay_naming_the_key(tmp_path, overlay, named):
    workdir = copy_workflow(tmp_path)
    proc = snakemake(workdir, "-n", *overrides(workdir, "bad.yaml", overlay), check=False)
    assert proc.returncode != 0 and named in proc.stdout, proc.stdout[-3000:]
